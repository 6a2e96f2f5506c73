package ehr_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caseroom/caseroom/ehr"
)

func TestErrorRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  *ehr.Error
		want bool
	}{
		{"network", &ehr.Error{Err: errors.New("connection refused")}, true},
		{"408", &ehr.Error{Status: 408}, true},
		{"429", &ehr.Error{Status: 429}, true},
		{"500", &ehr.Error{Status: 500}, true},
		{"503", &ehr.Error{Status: 503}, true},
		{"400", &ehr.Error{Status: 400}, false},
		{"401", &ehr.Error{Status: 401}, false},
		{"404", &ehr.Error{Status: 404}, false},
		{"409", &ehr.Error{Status: 409}, false},
		{"412", &ehr.Error{Status: 412}, false},
		{"422", &ehr.Error{Status: 422}, false},
		{"200 with a bad body", &ehr.Error{Status: 200}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Retryable(); got != tt.want {
				t.Errorf("Retryable() = %v, want %v", got, tt.want)
			}
			if got := ehr.IsRetryable(fmt.Errorf("wrapped: %w", tt.err)); got != tt.want {
				t.Errorf("IsRetryable(wrapped) = %v, want %v", got, tt.want)
			}
		})
	}
	if ehr.IsRetryable(context.Canceled) || ehr.IsRetryable(nil) {
		t.Error("IsRetryable is true for a non-*Error")
	}
}

func TestErrorMessage(t *testing.T) {
	e := &ehr.Error{Op: "POST Observation", Status: 422, RetryAfter: 0, Outcome: &ehr.OperationOutcome{Issue: []ehr.OperationOutcomeIssue{
		{Severity: "error", Code: "required", Details: &ehr.CodeableConcept{Text: "Observation.status is required"}, Expression: []string{"Observation.status"}},
		{Severity: "warning", Code: "code-invalid", Diagnostics: "Unknown code 'x'"},
	}}}
	// The server's words (details text, diagnostics) are left out: they may echo the record (see TestErrorTextHoldsNoServerText).
	want := "fhir POST Observation: HTTP 422 Unprocessable Entity: error required at Observation.status; warning code-invalid"
	if got := e.Error(); got != want {
		t.Errorf("Error() =\n%s\nwant\n%s", got, want)
	}
}

// TestClientTimeout: a server that does not answer within Config.Timeout gives a retryable network error.
func TestClientTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c, err := ehr.New(ehr.Config{BaseURL: srv.URL + "/fhir", Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Search(context.Background(), "Patient", map[string][]string{"name": {"Private Name"}})
	var e *ehr.Error
	if !errors.As(err, &e) || e.Status != 0 || !e.Retryable() {
		t.Fatalf("got %v, want a retryable network error", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %v for a 100ms timeout", time.Since(start))
	}
	if strings.Contains(err.Error(), "Private") || strings.Contains(err.Error(), "name=") {
		t.Errorf("error %q holds the query", err)
	}
}

func TestRetryAfterHeader(t *testing.T) {
	tests := []struct {
		name   string
		header string
		want   time.Duration
	}{
		{"seconds", "7", 7 * time.Second},
		{"absent", "", 0},
		{"garbage", "soon", 0},
		{"negative", "-3", 0},
		// An HTTP date has whole seconds (up to 1 s lost) and the request takes a while on a loaded machine.
		{"HTTP date", time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat), 87 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.header != "" {
					w.Header().Set("Retry-After", tt.header)
				}
				w.WriteHeader(http.StatusServiceUnavailable)
			}))
			defer srv.Close()
			c, _ := ehr.New(ehr.Config{BaseURL: srv.URL})
			_, err := c.Search(context.Background(), "Patient", nil)
			var e *ehr.Error
			if !errors.As(err, &e) {
				t.Fatalf("got %v", err)
			}
			if e.RetryAfter < tt.want || e.RetryAfter > tt.want+3*time.Second || (tt.want == 0 && e.RetryAfter != 0) {
				t.Errorf("RetryAfter = %v, want %v", e.RetryAfter, tt.want)
			}
		})
	}
}

func TestRetry(t *testing.T) {
	fast := ehr.RetryPolicy{Attempts: 4, MinDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}
	tests := []struct {
		name     string
		errs     []error // returned by successive calls; nil afterwards
		attempts int
		wantErr  bool
	}{
		{"success at once", nil, 1, false},
		{"two transient failures", []error{&ehr.Error{Status: 503}, &ehr.Error{Err: errors.New("reset")}}, 3, false},
		{"permanent failure stops", []error{&ehr.Error{Status: 400}}, 1, true},
		{"plain error stops", []error{errors.New("bug")}, 1, true},
		{"attempts run out", []error{&ehr.Error{Status: 500}, &ehr.Error{Status: 500}, &ehr.Error{Status: 500}, &ehr.Error{Status: 500}}, 4, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			err := ehr.Retry(context.Background(), fast, func(context.Context) error {
				calls++
				if calls <= len(tt.errs) {
					return tt.errs[calls-1]
				}
				return nil
			})
			if calls != tt.attempts || (err != nil) != tt.wantErr {
				t.Errorf("%d calls, err %v; want %d calls, error %v", calls, err, tt.attempts, tt.wantErr)
			}
		})
	}

	t.Run("context ends the wait", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := ehr.Retry(ctx, ehr.RetryPolicy{Attempts: 5, MinDelay: time.Minute, MaxDelay: time.Minute},
			func(context.Context) error { return &ehr.Error{Status: 503} })
		if !ehr.IsRetryable(err) || time.Since(start) > 5*time.Second {
			t.Errorf("got %v after %v", err, time.Since(start))
		}
	})
}
