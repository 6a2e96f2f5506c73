//go:build !unix

package main

// restrictUmask does nothing where there is no umask; tightenPermissions still applies.
func restrictUmask() {}
