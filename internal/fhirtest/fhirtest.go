// Package fhirtest runs caseroom's FHIR R4 test server: Medplum's engine (npm, pinned in server/package.json)
// behind the project's own node script, server/server.js. It installs the npm packages from the committed lock file,
// starts the server on a free port and drives its test-control endpoints (failure injection, reset, SMART clients).
// It is test and development tooling; nothing in the bot imports it.
package fhirtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caseroom/caseroom/internal/childproc"
)

// ServerDirEnv names the environment variable that overrides the directory of server.js and its package.json.
const ServerDirEnv = "CASEROOM_FHIRTEST_DIR"

// Timeouts for installing, starting and stopping the server and for test-control requests.
const (
	startTimeout   = 30 * time.Second
	stopTimeout    = 5 * time.Second
	controlTimeout = 10 * time.Second
)

// ErrNodeUnavailable is returned (wrapped) when node or npm is not installed: callers in tests skip, or fail in CI.
var ErrNodeUnavailable = errors.New("node and npm are required for the FHIR test server")

// ServerDir returns the directory that holds server.js: $CASEROOM_FHIRTEST_DIR if set, otherwise
// internal/fhirtest/server under the project root (the nearest directory at or above the working directory that
// holds go.mod).
func ServerDir() (string, error) {
	if dir := os.Getenv(ServerDirEnv); dir != "" {
		return filepath.Abs(dir)
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("failed to get working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "internal", "fhirtest", "server"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod found at or above the working directory (set %s)", ServerDirEnv)
		}
		dir = parent
	}
}

// EnsureInstalled runs `npm ci` in ServerDir unless node_modules already holds every package at the version that
// package-lock.json pins (as npm records it in node_modules/.package-lock.json, whoever ran the install: this
// function, CI's `npm ci --prefix internal/fhirtest/server` or a developer). An exclusive lock on
// ServerDir/.install.lock keeps parallel callers (test binaries of several packages) from installing at once.
func EnsureInstalled(ctx context.Context) error {
	dir, err := ServerDir()
	if err != nil {
		return err
	}
	return ensureInstalled(ctx, dir)
}

func ensureInstalled(ctx context.Context, dir string) error {
	want, err := readLock(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return fmt.Errorf("failed to read the FHIR test server's package-lock.json: %w", err)
	}
	if installed(dir, want) {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNodeUnavailable, err)
	}
	if _, err = exec.LookPath("node"); err != nil {
		return fmt.Errorf("%w: %v", ErrNodeUnavailable, err)
	}
	unlock, err := childproc.LockFile(ctx, filepath.Join(dir, ".install.lock"))
	if err != nil {
		return err
	}
	defer unlock()
	// Another process may have installed while this one waited for the lock.
	if installed(dir, want) {
		return nil
	}
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in %s failed: %w\n%s", dir, err, out)
	}
	if !installed(dir, want) {
		return fmt.Errorf("npm ci in %s did not install what package-lock.json pins", dir)
	}
	return nil
}

// lockedPackages maps a package's path (such as node_modules/@medplum/core) to its pinned version.
type lockedPackages map[string]string

// readLock reads the packages of an npm lock file (package-lock.json or node_modules/.package-lock.json).
func readLock(path string) (lockedPackages, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if err = json.Unmarshal(raw, &lock); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make(lockedPackages, len(lock.Packages))
	for name, p := range lock.Packages {
		if name != "" { // "" is the project itself
			out[name] = p.Version
		}
	}
	return out, nil
}

// installed reports whether node_modules holds every package of want at its version.
func installed(dir string, want lockedPackages) bool {
	have, err := readLock(filepath.Join(dir, "node_modules", ".package-lock.json"))
	if err != nil || len(want) == 0 {
		return false
	}
	for name, version := range want {
		if have[name] != version {
			return false
		}
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(name), "package.json")); err != nil {
			return false
		}
	}
	return true
}

// Server is a running FHIR test server. It holds no real patient data: everything is in memory.
type Server struct {
	// URL is the FHIR base URL, such as http://127.0.0.1:41234/fhir/R4.
	URL string
	// Root is the server's root URL, such as http://127.0.0.1:41234.
	Root string
	// TokenURL is the SMART Backend Services token endpoint.
	TokenURL string

	http *http.Client
	proc *childproc.Process
	tail *childproc.Tail

	stopOnce sync.Once
}

// Start installs the npm packages if needed (see EnsureInstalled) and starts `node server.js --port 0`, returning
// once it listens. ctx bounds the start-up only: the server runs until Stop, or until the calling process dies.
func Start(ctx context.Context) (*Server, error) {
	return StartOnPort(ctx, 0)
}

// StartOnPort is Start on a given port of 127.0.0.1 (0 picks a free one): a test can stop a server and start an
// empty one where the first was, as an EHR that went down and came back.
func StartOnPort(ctx context.Context, listenPort int) (*Server, error) {
	dir, err := ServerDir()
	if err != nil {
		return nil, err
	}
	if err = ensureInstalled(ctx, dir); err != nil {
		return nil, err
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNodeUnavailable, err)
	}

	s := &Server{
		http: &http.Client{Timeout: controlTimeout},
		tail: &childproc.Tail{Max: 16 << 10},
	}
	cmd := exec.Command(node, "server.js", "--port", strconv.Itoa(listenPort), "--host", "127.0.0.1")
	cmd.Dir = dir
	port := make(chan int, 1)
	cmd.Stdout = &portWriter{port: port, rest: s.tail}
	cmd.Stderr = s.tail
	if s.proc, err = childproc.Start(cmd, nil); err != nil {
		return nil, fmt.Errorf("failed to start the FHIR test server: %w", err)
	}

	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	select {
	case p := <-port:
		s.Root = "http://127.0.0.1:" + strconv.Itoa(p)
		s.URL = s.Root + "/fhir/R4"
		s.TokenURL = s.Root + "/auth/token"
		return s, nil
	case <-s.proc.Done():
		return nil, fmt.Errorf("the FHIR test server exited during start-up:\n%s", s.tail.String())
	case <-ctx.Done():
		s.Stop()
		return nil, fmt.Errorf("the FHIR test server did not start listening: %w\n%s", ctx.Err(), s.tail.String())
	}
}

// portWriter receives the server's stdout: it sends the port of the first "listening <port>" line and copies
// everything else to rest.
type portWriter struct {
	port chan<- int
	rest io.Writer
	line []byte
	sent bool
}

func (w *portWriter) Write(p []byte) (int, error) {
	if w.sent {
		return w.rest.Write(p)
	}
	w.line = append(w.line, p...)
	for {
		i := bytes.IndexByte(w.line, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := strings.TrimSpace(string(w.line[:i]))
		w.line = w.line[i+1:]
		if n, err := strconv.Atoi(strings.TrimPrefix(line, "listening ")); err == nil && strings.HasPrefix(line, "listening ") {
			w.port <- n
			w.sent = true
			_, _ = w.rest.Write(w.line)
			w.line = nil
			return len(p), nil
		}
		_, _ = fmt.Fprintln(w.rest, line)
	}
}

// Stop ends the server (SIGTERM, then SIGKILL after 5 seconds). It is safe to call more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.proc.Stop(stopTimeout)
		s.http.CloseIdleConnections()
	})
}

// LogTail returns what the server wrote to stderr (and to stdout after its first line), for diagnostics.
func (s *Server) LogTail() string {
	return s.tail.String()
}

// Fail makes the next count FHIR requests answer status (such as 503 or 429) with an OperationOutcome, and with a
// Retry-After header of whole seconds if retryAfter > 0. count 0 cancels an earlier Fail.
func (s *Server) Fail(ctx context.Context, status, count int, retryAfter time.Duration) error {
	body := map[string]any{"status": status, "count": count}
	if retryAfter > 0 {
		body["retryAfter"] = int(retryAfter.Round(time.Second) / time.Second)
	}
	return s.control(ctx, http.MethodPost, "/test/fail", body, nil)
}

// FailWrites makes the next count FHIR requests with method (such as "POST") answer status with an
// OperationOutcome whose details text and diagnostics are diagnostics (a server that echoes what it refused).
func (s *Server) FailWrites(ctx context.Context, method string, status, count int, diagnostics string) error {
	body := map[string]any{"status": status, "count": count, "method": method, "diagnostics": diagnostics}
	return s.control(ctx, http.MethodPost, "/test/fail", body, nil)
}

// Reset brings the server back to its state after Start: no resources, no pending failures, no SMART clients,
// no tokens, zero Stats.
func (s *Server) Reset(ctx context.Context) error {
	return s.control(ctx, http.MethodPost, "/test/reset", nil, nil)
}

// RegisterSMARTClient registers a SMART Backend Services client whose public keys the token endpoint fetches from
// jwksURL. From then on FHIR requests need a bearer token from TokenURL. Tokens live for 300 seconds.
func (s *Server) RegisterSMARTClient(ctx context.Context, clientID, jwksURL string) error {
	return s.RegisterSMARTClientWithLifetime(ctx, clientID, jwksURL, 300*time.Second)
}

// RegisterSMARTClientWithLifetime is RegisterSMARTClient with the lifetime of the tokens issued to the client.
func (s *Server) RegisterSMARTClientWithLifetime(ctx context.Context, clientID, jwksURL string, lifetime time.Duration) error {
	body := map[string]any{"client_id": clientID, "jwks_url": jwksURL, "token_lifetime": int(lifetime / time.Second)}
	return s.control(ctx, http.MethodPost, "/test/smart-client", body, nil)
}

// RequireBearer makes the server accept token as a static bearer token; from then on FHIR requests need one.
func (s *Server) RequireBearer(ctx context.Context, token string) error {
	return s.control(ctx, http.MethodPost, "/test/bearer", map[string]any{"token": token}, nil)
}

// Count returns how many resources of resourceType match the FHIR search params, bypassing authentication and
// failure injection: e.g. Count(ctx, "Observation", url.Values{"identifier": {"urn:caseroom:observation|$ev/hr"}}).
func (s *Server) Count(ctx context.Context, resourceType string, params url.Values) (int, error) {
	q := url.Values{"type": {resourceType}}
	for k, v := range params {
		q[k] = v
	}
	var out struct {
		Count int `json:"count"`
	}
	err := s.control(ctx, http.MethodGet, "/test/count?"+q.Encode(), nil, &out)
	return out.Count, err
}

// Stats counts requests since Start or the last Reset.
type Stats struct {
	FHIRRequests  int `json:"fhir_requests"`
	TokenRequests int `json:"token_requests"`
	TokensIssued  int `json:"tokens_issued"`
	JWKSFetches   int `json:"jwks_fetches"`
}

// Stats returns the request counters.
func (s *Server) Stats(ctx context.Context) (Stats, error) {
	var out Stats
	err := s.control(ctx, http.MethodGet, "/test/stats", nil, &out)
	return out, err
}

// control calls a test-control endpoint.
func (s *Server) control(ctx context.Context, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.Root+path, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("FHIR test server %s %s: %w", method, strings.SplitN(path, "?", 2)[0], err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("FHIR test server %s %s: HTTP %d: %s", method, strings.SplitN(path, "?", 2)[0], resp.StatusCode, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}
