//go:build caseroomprofile

package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// startProfile, in profiling builds (-tags caseroomprofile, made by `caseroom-bench -cpuprofile`), writes a CPU
// profile of the whole run to the file named by CASEROOM_CPUPROFILE. The returned function ends the profile; it is
// called on a clean shutdown.
func startProfile() (stop func(), err error) {
	path := os.Getenv("CASEROOM_CPUPROFILE")
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("CASEROOM_CPUPROFILE: %w", err)
	}
	if err = pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("CASEROOM_CPUPROFILE: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}
