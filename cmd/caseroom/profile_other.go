//go:build !caseroomprofile

package main

// startProfile does nothing outside profiling builds (see profile_caseroomprofile.go).
func startProfile() (stop func(), err error) { return func() {}, nil }
