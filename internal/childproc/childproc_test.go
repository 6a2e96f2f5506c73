package childproc

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"sync/atomic"
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

func TestWaitReady(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	if err := WaitReady(ctx, srv.Client(), srv.URL, time.Millisecond, nil); err != nil {
		t.Fatalf("WaitReady = %v, want nil after the third answer", err)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("asked %d times, want 3", n)
	}

	exited := make(chan struct{})
	close(exited)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) }))
	defer down.Close()
	if err := WaitReady(ctx, down.Client(), down.URL, time.Millisecond, exited); !errors.Is(err, ErrExited) {
		t.Fatalf("WaitReady with the program gone = %v, want ErrExited", err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := WaitReady(short, down.Client(), down.URL, time.Millisecond, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReady past the deadline = %v, want context.DeadlineExceeded", err)
	}
}

// TestProcessStopAndKill: Stop ends a program that obeys SIGTERM without killing it and kills one that ignores it;
// Done is closed and Err tells how it ended.
func TestProcessStopAndKill(t *testing.T) {
	obeys, err := Start(exec.Command("sleep", "60"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if killed := obeys.Stop(5 * time.Second); killed {
		t.Errorf("a program that ends on SIGTERM was killed")
	}
	<-obeys.Done()
	if obeys.Err() == nil {
		t.Errorf("a program ended by a signal reports no error")
	}

	exited := make(chan struct{})
	ignores, err := Start(exec.Command("sh", "-c", `trap "" TERM; sleep 60 & wait`), func() { close(exited) })
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the shell set its trap
	if killed := ignores.Stop(300 * time.Millisecond); !killed {
		t.Errorf("a program that ignores SIGTERM was not killed")
	}
	select {
	case <-exited:
	default:
		t.Errorf("onExit did not run before Done was closed")
	}
	ignores.Stop(time.Second) // stopping again does nothing
}
