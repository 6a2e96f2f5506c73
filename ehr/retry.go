package ehr

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// RetryPolicy says how often and how long Retry tries. The zero value means DefaultRetryPolicy.
type RetryPolicy struct {
	// Attempts is the most calls of fn, the first included.
	Attempts int
	// MinDelay is the backoff before the second attempt; it doubles for each further one, up to MaxDelay.
	MinDelay time.Duration
	// MaxDelay caps the backoff. A Retry-After longer than MaxDelay ends Retry with that error, so that the caller
	// (the outbox) can schedule the next attempt itself.
	MaxDelay time.Duration
}

// DefaultRetryPolicy suits one delivery attempt of the outbox: 4 tries within about 10 seconds.
var DefaultRetryPolicy = RetryPolicy{Attempts: 4, MinDelay: 500 * time.Millisecond, MaxDelay: 5 * time.Second}

// Retry calls fn until it succeeds, returns an error that is not retryable (see IsRetryable), the attempts run out
// or ctx ends. Between attempts it waits an exponential backoff with jitter (between half and all of MinDelay ×
// 2^n, at most MaxDelay), or the server's Retry-After when that is longer. It returns fn's last error.
func Retry(ctx context.Context, p RetryPolicy, fn func(ctx context.Context) error) error {
	if p.Attempts <= 0 {
		p = DefaultRetryPolicy
	}
	var err error
	for attempt := 0; attempt < p.Attempts; attempt++ {
		if attempt > 0 {
			delay := p.backoff(attempt)
			var e *Error
			if errors.As(err, &e) && e.RetryAfter > delay {
				if e.RetryAfter > p.MaxDelay {
					return err
				}
				delay = e.RetryAfter
			}
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return err
			case <-t.C:
			}
		}
		if err = fn(ctx); err == nil || !IsRetryable(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// backoff returns the jittered delay before attempt n (n >= 1).
func (p RetryPolicy) backoff(n int) time.Duration {
	d := p.MinDelay
	for i := 1; i < n && d < p.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, p.MaxDelay)
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}
