package childproc

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"
)

// ErrExited is WaitReady's error when the program exited before it was ready.
var ErrExited = errors.New("exited before it was ready")

// AnswersOK reports whether a GET of url answers 200.
func AnswersOK(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// WaitReady asks url every interval until it answers 200. It returns ErrExited when exited is closed first (the
// program is gone), and ctx's error when ctx ends first.
func WaitReady(ctx context.Context, client *http.Client, url string, interval time.Duration, exited <-chan struct{}) error {
	for {
		if AnswersOK(ctx, client, url) {
			return nil
		}
		select {
		case <-exited:
			return ErrExited
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
