package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/caseroom/caseroom/config"
)

func TestSQLiteFile(t *testing.T) {
	tests := []struct {
		name, uri, want string
	}{
		{name: "uri form", uri: "file:/data/caseroom.db?_txlock=immediate", want: "/data/caseroom.db"},
		{name: "escaped uri path", uri: "file:/data/50%25/caseroom.db", want: "/data/50%/caseroom.db"},
		{name: "relative uri", uri: "file:data/caseroom.db", want: "data/caseroom.db"},
		{name: "file url", uri: "file:///data/caseroom.db?mode=rwc", want: "/data/caseroom.db"},
		{name: "plain path", uri: "/data/caseroom.db?_busy_timeout=5000", want: "/data/caseroom.db"},
		{name: "memory", uri: ":memory:", want: ""},
		{name: "memory uri", uri: "file::memory:?cache=shared", want: ""},
		{name: "memory mode", uri: "file:x?mode=memory", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sqliteFile(tt.uri); got != tt.want {
				t.Fatalf("sqliteFile(%q) = %q, want %q", tt.uri, got, tt.want)
			}
		})
	}
}

func TestTightenPermissions(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dataDir, 0o755); err != nil { // whatever the test's umask
		t.Fatal(err)
	}
	cfg := &config.Config{DataDir: dataDir}
	cfg.Database.Type = config.DBTypeSQLite
	cfg.Database.URI = "file:caseroom.db?_txlock=immediate"
	cfg.Logging.File = filepath.Join(dataDir, "caseroom.log")
	files := []string{"caseroom.db", "caseroom.db-wal", "caseroom.db-shm", "caseroom.log"}
	for _, name := range files {
		path := filepath.Join(dataDir, name)
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	private := filepath.Join(dataDir, "other")
	if err := os.WriteFile(private, nil, 0o400); err != nil {
		t.Fatal(err)
	}
	if err := tightenPermissions(cfg, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	checkMode(t, dataDir, 0o700)
	for _, name := range files {
		checkMode(t, filepath.Join(dataDir, name), 0o600)
	}
	checkMode(t, private, 0o400) // narrower modes are left alone
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != want {
		t.Errorf("%s has mode %04o, want %04o", path, got, want)
	}
}
