//go:build unix

package main

import "syscall"

// restrictUmask makes every file and directory caseroom creates from now on private to its user (config,
// registration, database and its WAL files, log), whatever the umask it was started with.
func restrictUmask() {
	syscall.Umask(0o077)
}
