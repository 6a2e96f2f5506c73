package childproc

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

func TestTailKeepsTheEnd(t *testing.T) {
	tail := &Tail{Max: 10}
	_, _ = tail.Write([]byte("line one\nline two\n"))
	if got := tail.String(); got != "line two" {
		t.Fatalf("tail = %q, want the last 10 bytes trimmed", got)
	}
	tail.Reset()
	_, _ = tail.Write([]byte("a\nb\nc\n"))
	if got := tail.LastLines(2); got != "b\nc" {
		t.Fatalf("last lines = %q", got)
	}
}

func TestLockFileIsExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := LockFile(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err = LockFile(ctx, path); err == nil {
		t.Fatal("a second lock was granted while the first was held")
	}
	unlock()
	again, err := LockFile(context.Background(), path)
	if err != nil {
		t.Fatalf("lock not free after unlock: %v", err)
	}
	again()
}
