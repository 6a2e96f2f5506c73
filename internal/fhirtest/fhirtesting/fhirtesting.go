// Package fhirtesting gives Go tests a running FHIR test server (see package fhirtest). When node or npm is missing
// the test is skipped, or fails when CI is set (internal/testdb.Unavailable); any other start-up problem fails it.
package fhirtesting

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/caseroom/caseroom/internal/fhirtest"
	"github.com/caseroom/caseroom/internal/testdb"
)

// installTimeout bounds npm ci plus the start of the server.
const installTimeout = 5 * time.Minute

// Start starts a server of the test's own, stopped when the test ends.
func Start(t testing.TB) *fhirtest.Server {
	t.Helper()
	srv, err := start()
	if err != nil {
		fail(t, err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

var shared struct {
	once sync.Once
	srv  *fhirtest.Server
	err  error
}

// Shared returns one server for the whole test binary, Reset for the calling test. Tests that use it must not run
// in parallel with each other. The server ends with the test binary.
func Shared(t testing.TB) *fhirtest.Server {
	t.Helper()
	shared.once.Do(func() {
		shared.srv, shared.err = start()
	})
	if shared.err != nil {
		fail(t, shared.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := shared.srv.Reset(ctx); err != nil {
		t.Fatalf("failed to reset the FHIR test server: %v\n%s", err, shared.srv.LogTail())
	}
	return shared.srv
}

func start() (*fhirtest.Server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), installTimeout)
	defer cancel()
	return fhirtest.Start(ctx)
}

func fail(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, fhirtest.ErrNodeUnavailable) {
		testdb.Unavailable(t, err)
	}
	t.Fatalf("failed to start the FHIR test server: %v", err)
}
