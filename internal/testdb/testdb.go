// Package testdb gives tests a fresh database on each engine caseroom supports: a SQLite file in a temp dir and a
// new database on the PostgreSQL server named by CASEROOM_TEST_POSTGRES (default 127.0.0.1:5432).
package testdb

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.mau.fi/util/random"

	_ "github.com/lib/pq" // postgres driver

	"github.com/caseroom/caseroom/store"
)

// DefaultPostgres is the maintenance URL used when CASEROOM_TEST_POSTGRES is unset.
const DefaultPostgres = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Engine names a database engine under test.
type Engine string

const (
	SQLite   Engine = "sqlite"
	Postgres Engine = "postgres"
)

// ForEach runs fn as a subtest once per engine, each with a fresh, empty database.
func ForEach(t *testing.T, fn func(t *testing.T, cfg store.Config)) {
	t.Helper()
	for _, engine := range []Engine{SQLite, Postgres} {
		t.Run(string(engine), func(t *testing.T) {
			fn(t, New(t, engine))
		})
	}
}

// New makes a fresh database on engine and drops it when the test ends. When PostgreSQL cannot be reached the test
// fails if CI is set and is skipped otherwise.
func New(t *testing.T, engine Engine) store.Config {
	t.Helper()
	switch engine {
	case SQLite:
		path := filepath.Join(t.TempDir(), "caseroom.db")
		return store.Config{Type: "sqlite3-fk-wal", URI: "file:" + path + "?_txlock=immediate", MaxIdleConns: 2}
	case Postgres:
		return newPostgres(t)
	default:
		t.Fatalf("unknown engine %q", engine)
		return store.Config{}
	}
}

func newPostgres(t *testing.T) store.Config {
	t.Helper()
	admin := os.Getenv("CASEROOM_TEST_POSTGRES")
	if admin == "" {
		admin = DefaultPostgres
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := sql.Open("postgres", admin)
	if err == nil {
		err = db.PingContext(ctx)
	}
	if err != nil {
		if db != nil {
			_ = db.Close()
		}
		Unavailable(t, fmt.Errorf("PostgreSQL at %s: %w", redact(admin), err))
	}
	name := "caseroom_test_" + strings.ToLower(random.String(12))
	if _, err = db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		_ = db.Close()
		t.Fatalf("failed to create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		_ = db.Close()
	})
	uri := strings.Replace(admin, "/postgres?", "/"+name+"?", 1)
	if uri == admin {
		t.Fatalf("CASEROOM_TEST_POSTGRES must name the postgres database with a query string, got %s", redact(admin))
	}
	return store.Config{Type: "postgres", URI: uri, MaxIdleConns: 2}
}

// Unavailable reports a real component that could not be started: a failure when CI is set, a skip otherwise.
func Unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("required component unavailable (CI is set, so this fails instead of skipping): %v", err)
	}
	t.Skipf("component unavailable: %v", err)
}

func redact(uri string) string {
	if i := strings.Index(uri, "@"); i > 0 {
		if j := strings.Index(uri, "://"); j >= 0 && j < i {
			return uri[:j+3] + "…" + uri[i:]
		}
	}
	return uri
}
