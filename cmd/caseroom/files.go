package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"

	"github.com/rs/zerolog"

	"github.com/caseroom/caseroom/config"
)

// Modes of what caseroom keeps on disk: the data directory, and every file in it or written by it (config,
// registration, database, log), is readable by caseroom's user only.
const (
	privateDirMode  fs.FileMode = 0o700
	privateFileMode fs.FileMode = 0o600
)

// sqliteSidecars are the files SQLite keeps next to a database.
var sqliteSidecars = []string{"-wal", "-shm", "-journal"}

// tightenPermissions makes the data directory, the SQLite database with its sidecar files and the log file private
// to caseroom's user where an earlier run (or an operator) left them readable by others. Files made from now on
// are private already (see restrictUmask); this covers the ones that exist.
func tightenPermissions(cfg *config.Config, log zerolog.Logger) error {
	paths := map[string]fs.FileMode{}
	if cfg.DataDir != "" {
		paths[cfg.DataDir] = privateDirMode
	}
	if cfg.Database.Type == config.DBTypeSQLite {
		if db := sqliteFile(cfg.DatabaseURI()); db != "" {
			paths[db] = privateFileMode
			for _, suffix := range sqliteSidecars {
				paths[db+suffix] = privateFileMode
			}
		}
	}
	if cfg.Logging.File != "" {
		paths[cfg.Logging.File] = privateFileMode
	}
	for path, want := range paths {
		info, err := os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("failed to check permissions of %s: %w", path, err)
		}
		if have := info.Mode().Perm(); have&^want != 0 {
			if err = os.Chmod(path, want); err != nil {
				return fmt.Errorf("failed to make %s private (mode %04o): %w", path, want, err)
			}
			log.Warn().Str("path", path).Str("old_mode", fmt.Sprintf("%04o", have)).Str("new_mode", fmt.Sprintf("%04o", want)).
				Msg("Made a data file private to caseroom's user")
		}
	}
	return nil
}

// sqliteFile is the file path of a SQLite database URI as resolved by config.DatabaseURI ("" for in-memory
// databases).
func sqliteFile(uri string) string {
	if rest, ok := strings.CutPrefix(uri, "file:"); ok {
		path, query, _ := strings.Cut(rest, "?")
		if strings.HasPrefix(path, "//") {
			u, err := url.Parse(uri)
			if err != nil {
				return ""
			}
			path, query = u.Path, u.RawQuery
		} else if unescaped, err := url.PathUnescape(path); err == nil {
			path = unescaped
		}
		if path == "" || strings.HasPrefix(path, ":memory:") || strings.Contains(query, "mode=memory") {
			return ""
		}
		return path
	}
	path, _, _ := strings.Cut(uri, "?")
	if path == "" || path == ":memory:" {
		return ""
	}
	return path
}
