package dendrite

import (
	"context"
	"os"
	"testing"
	"time"

	"maunium.net/go/mautrix"
)

// requireOrSkip fails the test on err when CI is set, and skips it otherwise: Dendrite is required in CI, while
// a developer without the binaries (or a network to build them) can still run the other tests.
func requireOrSkip(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("Dendrite is required in CI: %v", err)
	}
	t.Skipf("Dendrite unavailable (set CI to make this fail): %v", err)
}

// testBinaries installs (or finds) the Dendrite binaries.
func testBinaries(t *testing.T) Binaries {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	toolsDir, err := DefaultToolsDir()
	requireOrSkip(t, err)
	bins, err := EnsureBinaries(ctx, toolsDir)
	requireOrSkip(t, err)
	return bins
}

// startServer starts a Dendrite in a temporary directory and stops it when the test ends.
func startServer(t *testing.T, opts Options) *Server {
	t.Helper()
	opts.Binaries = testBinaries(t)
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := Start(ctx, opts)
	requireOrSkip(t, err)
	t.Cleanup(srv.Stop)
	return srv
}

func testContext(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

func mustRegister(ctx context.Context, t *testing.T, srv *Server, localpart string, admin bool) *mautrix.Client {
	t.Helper()
	cli, err := srv.RegisterUser(ctx, localpart, localpart+"-password", admin)
	if err != nil {
		t.Fatalf("RegisterUser(%s): %v", localpart, err)
	}
	if cli.UserID != srv.UserID(localpart) || cli.AccessToken == "" || cli.DeviceID == "" {
		t.Fatalf("RegisterUser(%s) gave user %q, device %q, token set %v", localpart, cli.UserID, cli.DeviceID, cli.AccessToken != "")
	}
	return cli
}

// TestResetPassword: Dendrite's admin API sets a password (for appservice users too, which lets a bot answer the
// password prompt of cross-signing key upload) and keeps the user's devices logged in.
func TestResetPassword(t *testing.T) {
	srv := startServer(t, Options{})
	ctx := testContext(t, 30*time.Second)
	admin := mustRegister(ctx, t, srv, "admin", true)
	carol := mustRegister(ctx, t, srv, "carol", false)
	if err := ResetPassword(ctx, admin, srv.UserID("carol"), "carol-new-password"); err != nil {
		t.Fatalf("ResetPassword: %v", err)
	}
	if _, err := srv.Login(ctx, "carol", "carol-new-password"); err != nil {
		t.Fatalf("login with the reset password: %v", err)
	}
	if _, err := srv.Login(ctx, "carol", "carol-password"); err == nil {
		t.Fatal("login with the old password worked after ResetPassword")
	}
	if resp, err := carol.Whoami(ctx); err != nil || resp.UserID != carol.UserID {
		t.Fatalf("carol's device after ResetPassword: whoami = %+v, %v", resp, err)
	}
}
