// Package integration holds caseroom's end-to-end tests: the caseroom binary against real Dendrite homeservers,
// driven by real Matrix clients. The tests fail (rather than skip) when CI is set and a component cannot start.
package integration
