package ehr

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// FHIRContentType is the media type of FHIR JSON.
const FHIRContentType = "application/fhir+json"

// DefaultTimeout bounds one request (including reading the answer) when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// maxResponseSize bounds what the client reads of one answer.
const maxResponseSize = 32 << 20

// Config configures a Client.
type Config struct {
	// BaseURL is the FHIR R4 base, such as https://ehr.example.org/fhir/R4.
	BaseURL string
	// Timeout bounds each request; zero means DefaultTimeout.
	Timeout time.Duration
	// Auth adds credentials to each request; nil means NoAuth.
	Auth Auth
	// HTTPClient sends the requests; nil means a new client. Its Timeout is overridden by Timeout.
	HTTPClient *http.Client
}

// Client talks FHIR R4 REST to one server. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	auth    Auth
	http    *http.Client
	timeout time.Duration
}

// New returns a client for cfg.BaseURL.
func New(cfg Config) (*Client, error) {
	base, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("invalid FHIR base URL: %w", err)
	}
	if (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("invalid FHIR base URL %q: want http(s)://host/path", cfg.BaseURL)
	}
	if base.RawQuery != "" || base.Fragment != "" {
		return nil, fmt.Errorf("invalid FHIR base URL %q: no query or fragment allowed", cfg.BaseURL)
	}
	c := &Client{base: base, auth: cfg.Auth, timeout: cfg.Timeout}
	if c.auth == nil {
		c.auth = NoAuth{}
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if cfg.HTTPClient != nil {
		hc := *cfg.HTTPClient
		c.http = &hc
	} else {
		c.http = &http.Client{}
	}
	c.http.Timeout = c.timeout
	return c, nil
}

// BaseURL returns the FHIR base URL without a trailing slash.
func (c *Client) BaseURL() string { return c.base.String() }

// Transaction posts a transaction Bundle and returns the transaction-response. The server applies all entries or
// none; an entry that fails fails the whole call with an *Error for that entry.
func (c *Client) Transaction(ctx context.Context, bundle *Bundle) (*Bundle, error) {
	if bundle == nil || bundle.Type != "transaction" {
		return nil, errors.New("ehr: Transaction needs a Bundle of type transaction")
	}
	var out Bundle
	if _, err := c.do(ctx, http.MethodPost, "", nil, nil, bundle, &out); err != nil {
		return nil, err
	}
	if out.Type != "transaction-response" {
		return nil, &Error{Op: "POST transaction", Status: http.StatusOK,
			detail: fmt.Sprintf("answer is a Bundle of type %q, not transaction-response", out.Type)}
	}
	if len(out.Entry) != len(bundle.Entry) {
		return nil, &Error{Op: "POST transaction", Status: http.StatusOK,
			detail: fmt.Sprintf("answer has %d entries for %d sent", len(out.Entry), len(bundle.Entry))}
	}
	// A server that runs a transaction as a batch answers 200 with per-entry errors: never take that as success.
	for i, e := range out.Entry {
		if code := e.Response.StatusCode(); code < 200 || code > 299 {
			err := &Error{Op: fmt.Sprintf("POST transaction entry %d", i), Status: code}
			if e.Response != nil && len(e.Response.Outcome) > 0 {
				var oo OperationOutcome
				if json.Unmarshal(e.Response.Outcome, &oo) == nil {
					err.Outcome = &oo
				}
			}
			return nil, err
		}
	}
	return &out, nil
}

// Create posts res (its id is ignored by the server) and decodes the stored resource into out, if out is not nil.
// With ifNoneExist (such as IdentifierQuery(system, value)) it is a conditional create: when a resource already
// matches, nothing is written, out receives the match and created is false.
func (c *Client) Create(ctx context.Context, res Resource, ifNoneExist url.Values, out any) (created bool, err error) {
	typ, _ := res.ResourceKey()
	var header http.Header
	if len(ifNoneExist) > 0 {
		header = http.Header{"If-None-Exist": {ifNoneExist.Encode()}}
	}
	status, err := c.do(ctx, http.MethodPost, typ, nil, header, res, out)
	if err != nil {
		return false, err
	}
	return status == http.StatusCreated, nil
}

// Read fetches resourceType/id into out (such as *Patient).
func (c *Client) Read(ctx context.Context, resourceType, id string, out any) error {
	if err := checkID(resourceType, id); err != nil {
		return err
	}
	_, err := c.do(ctx, http.MethodGet, resourceType+"/"+id, nil, nil, nil, out)
	return err
}

// Update puts res at its id and decodes the stored version into out, if out is not nil. A non-empty ifMatch is the
// version the update expects (a versionId, or an ETag like W/"3"): if the stored version differs, the server
// answers 412 and nothing is written.
func (c *Client) Update(ctx context.Context, res Resource, ifMatch string, out any) error {
	typ, id := res.ResourceKey()
	if err := checkID(typ, id); err != nil {
		return err
	}
	var header http.Header
	if ifMatch != "" {
		if !strings.Contains(ifMatch, `"`) {
			ifMatch = `W/"` + ifMatch + `"`
		}
		header = http.Header{"If-Match": {ifMatch}}
	}
	_, err := c.do(ctx, http.MethodPut, typ+"/"+id, nil, header, res, out)
	return err
}

// Search runs a type-level search, such as Search(ctx, "Observation", url.Values{"subject": {"Patient/1"}}),
// and returns the first page (a searchset Bundle; follow its "next" link for more).
func (c *Client) Search(ctx context.Context, resourceType string, params url.Values) (*Bundle, error) {
	if !validID(resourceType) {
		return nil, fmt.Errorf("ehr: invalid resource type %q", resourceType)
	}
	var out Bundle
	if _, err := c.do(ctx, http.MethodGet, resourceType, params, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// checkID refuses a type or id that would change the request path.
func checkID(resourceType, id string) error {
	if !validID(resourceType) || !validID(id) {
		return fmt.Errorf("ehr: invalid resource type or id %q/%q", resourceType, id)
	}
	return nil
}

// validID reports whether s is a valid FHIR id (also good enough for a resource type): [A-Za-z0-9.-]{1,64}.
func validID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// do sends one request and decodes a 2xx answer into out. path is relative to the base ("" for the base itself).
// It returns the HTTP status; any failure is an *Error, or the context's error when ctx ended.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, header http.Header, body, out any) (int, error) {
	op := method + " " + path
	if path == "" {
		op = method + " transaction"
	}
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return 0, fmt.Errorf("ehr: failed to encode %s: %w", op, err)
		}
	}
	u := *c.base
	if path != "" {
		u.Path += "/" + path
		u.RawPath = ""
	}
	u.RawQuery = query.Encode()

	// One retry after a 401 when the Auth holds a token that the server may have forgotten (restart, revocation).
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(raw))
		if err != nil {
			return 0, fmt.Errorf("ehr: failed to build %s: %w", op, err)
		}
		if raw == nil {
			req.Body, req.GetBody, req.ContentLength = http.NoBody, nil, 0
		} else {
			req.Header.Set("Content-Type", FHIRContentType+"; charset=utf-8")
		}
		req.Header.Set("Accept", FHIRContentType)
		for k, v := range header {
			req.Header[k] = v
		}
		if err = c.auth.Authorize(ctx, req); err != nil {
			return 0, err
		}
		status, err := c.send(ctx, op, req, out)
		var e *Error
		if attempt == 0 && errors.As(err, &e) && e.Status == http.StatusUnauthorized {
			if inv, ok := c.auth.(tokenInvalidator); ok && inv.invalidate(req.Header.Get("Authorization")) {
				continue
			}
		}
		return status, err
	}
}

func (c *Client) send(ctx context.Context, op string, req *http.Request, out any) (int, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, fmt.Errorf("ehr: %s: %w", op, ctx.Err())
		}
		return 0, &Error{Op: op, Err: stripURL(err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseSize+1))
	if err == nil && len(raw) > maxResponseSize {
		return resp.StatusCode, &Error{Op: op, Status: resp.StatusCode, detail: fmt.Sprintf("answer larger than %d bytes", maxResponseSize)}
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, fmt.Errorf("ehr: %s: %w", op, ctx.Err())
		}
		// The answer was cut off: as retryable as a network error (writes are idempotent).
		return 0, &Error{Op: op, Err: stripURL(err)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &Error{Op: op, Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
		var oo OperationOutcome
		if json.Unmarshal(raw, &oo) == nil && oo.ResourceType == "OperationOutcome" {
			e.Outcome = &oo
		}
		return resp.StatusCode, e
	}
	if out != nil {
		if len(bytes.TrimSpace(raw)) == 0 {
			return resp.StatusCode, &Error{Op: op, Status: resp.StatusCode, detail: "answer has no body (Prefer: return=minimal?)"}
		}
		if err := json.Unmarshal(raw, out); err != nil {
			// Not the decoder's message: it can quote a value of the answer.
			return resp.StatusCode, &Error{Op: op, Status: resp.StatusCode, detail: "answer is not valid FHIR JSON"}
		}
	}
	return resp.StatusCode, nil
}

// stripURL drops the URL from a *url.Error: search URLs can hold patient data.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP-date. It returns 0 when absent or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// Error is a failed request. Status is 0 for a network error (then Err holds it). The message never holds request
// bodies, query values or tokens, nor the words of the server's OperationOutcome (details text, diagnostics), which
// servers fill with the offending value (a patient's name, a note): only the status and, per issue, its severity,
// code and location (see OperationOutcome.Summary), so it may be logged, stored and shown. The full OperationOutcome
// stays in Outcome for code that needs it; never log or show its String.
type Error struct {
	// Op names the request, such as "POST Observation" or "POST transaction"; it never holds query values.
	Op string
	// Status is the HTTP status, 0 if no answer arrived.
	Status int
	// Outcome is the server's OperationOutcome, if it sent one.
	Outcome *OperationOutcome
	// RetryAfter is the server's Retry-After, 0 if none.
	RetryAfter time.Duration
	// Err is the underlying network or protocol error, if any.
	Err error

	detail string // more text, such as an OAuth error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("fhir " + e.Op + ": ")
	switch {
	case e.Status != 0:
		b.WriteString("HTTP " + strconv.Itoa(e.Status))
		if text := http.StatusText(e.Status); text != "" {
			b.WriteString(" " + text)
		}
	default:
		b.WriteString("network error")
	}
	if s := e.Outcome.Summary(); s != "" {
		b.WriteString(": " + s)
	}
	if e.detail != "" {
		b.WriteString(": " + e.detail)
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	if e.RetryAfter > 0 {
		b.WriteString(" (retry after " + e.RetryAfter.String() + ")")
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether the same request may succeed later: a network error, 408, 429 or a 5xx. Other 4xx
// answers are permanent.
func (e *Error) Retryable() bool {
	switch {
	case e.Status == 0:
		return e.Err != nil
	case e.Status == http.StatusRequestTimeout, e.Status == http.StatusTooManyRequests:
		return true
	default:
		return e.Status >= 500 && e.Status <= 599
	}
}

// IsRetryable reports whether err is an *Error that is Retryable.
func IsRetryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Retryable()
}
