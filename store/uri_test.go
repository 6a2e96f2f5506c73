package store

import "testing"

func TestWithStatementCache(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"file:caseroom.db?_txlock=immediate", "file:caseroom.db?_txlock=immediate&_stmt_cache_size=128"},
		{"caseroom.db", "caseroom.db?_stmt_cache_size=128"},
		{"file:caseroom.db?_stmt_cache_size=0", "file:caseroom.db?_stmt_cache_size=0"},
	} {
		if got := withStatementCache(tc.in); got != tc.want {
			t.Errorf("withStatementCache(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
