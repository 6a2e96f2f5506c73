// Package dendrite runs a real Dendrite homeserver for caseroom's tests and local development: it installs the
// pinned Dendrite binaries, writes a config, starts and stops the process and registers users.
package dendrite

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/caseroom/caseroom/internal/childproc"
	"github.com/caseroom/caseroom/internal/homeserver"
)

// Timeouts for starting and stopping Dendrite.
const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
)

// Options configures Start.
type Options struct {
	// Dir holds the config, keys, databases and log. If it already holds a config from an earlier Start, that config
	// (with its server name) and the data are reused.
	Dir string
	// ServerName defaults to "localhost:<HTTP port>", or "localhost:<HTTPS port>" with Federation: other servers
	// reach a server at the port in its name.
	ServerName string
	// HTTPAddr is the client API address; "" picks a free port on 127.0.0.1.
	HTTPAddr string
	// Federation also serves HTTPS (the federation API) on HTTPSAddr with a self-signed certificate.
	Federation bool
	// HTTPSAddr is the federation address; "" takes the port of a reused config's server name or a free port on
	// 127.0.0.1.
	HTTPSAddr string
	// AppServiceRegistrations are paths of appservice registration files.
	AppServiceRegistrations []string
	// PersistentJetStream keeps Dendrite's queues (such as events not yet delivered to an appservice) on disk
	// under Dir across restarts; by default they are in memory.
	PersistentJetStream bool
	// LogLevel is Dendrite's log level; "" means info.
	LogLevel string
	// Stdout receives Dendrite's log; nil appends it to Dir/dendrite.log.
	Stdout io.Writer
	// Binaries are the Dendrite programs; the zero value means EnsureBinaries(ctx, DefaultToolsDir()).
	Binaries Binaries
}

// Server is a running Dendrite.
type Server struct {
	homeserver.Base
	// FederationURL is the HTTPS base URL of the federation API; empty without Options.Federation.
	FederationURL string
	// Dir is the absolute data directory.
	Dir string
	// ConfigPath is the absolute path of the Dendrite config file.
	ConfigPath string

	bins   Binaries
	args   []string
	stdout io.Writer
	tail   *childproc.Tail

	mu   sync.Mutex
	proc *childproc.Process
}

// Start writes a config into opts.Dir and starts Dendrite, returning once its client API answers. ctx bounds the
// start-up only: the server runs until Stop or Kill, or until the calling process dies.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("dendrite: Options.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	opts.Dir = dir
	if err = os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create Dendrite directory: %w", err)
	}
	if opts.Binaries.Dendrite == "" {
		toolsDir, err := DefaultToolsDir()
		if err != nil {
			return nil, err
		}
		if opts.Binaries, err = EnsureBinaries(ctx, toolsDir); err != nil {
			return nil, err
		}
	}

	existingName, err := readServerName(filepath.Join(dir, configFile))
	if err != nil {
		return nil, err
	}
	if existingName != "" && opts.ServerName != "" && opts.ServerName != existingName {
		return nil, fmt.Errorf("dendrite: %s already holds server %q, not %q", dir, existingName, opts.ServerName)
	}
	httpAddr, err := addrOrFreePort(opts.HTTPAddr)
	if err != nil {
		return nil, err
	}
	var httpsAddr string
	if opts.Federation {
		httpsAddr = opts.HTTPSAddr
		if httpsAddr == "" && existingName != "" {
			_, port, err := net.SplitHostPort(existingName)
			if err != nil {
				return nil, fmt.Errorf("dendrite: cannot take the federation port from server name %q: %w", existingName, err)
			}
			httpsAddr = net.JoinHostPort("127.0.0.1", port)
		}
		if httpsAddr, err = addrOrFreePort(httpsAddr); err != nil {
			return nil, err
		}
	}
	name := existingName
	if name == "" {
		name = opts.ServerName
	}
	if name == "" {
		addr := httpAddr
		if opts.Federation {
			addr = httpsAddr
		}
		_, port, _ := net.SplitHostPort(addr)
		name = "localhost:" + port
	}

	name, secret, err := writeConfig(ctx, opts.Binaries, &opts, name)
	if err != nil {
		return nil, err
	}
	s := &Server{
		Base:       homeserver.Base{URL: "http://" + dialAddr(httpAddr), ServerName: name, SharedSecret: secret},
		Dir:        dir,
		ConfigPath: filepath.Join(dir, configFile),
		bins:       opts.Binaries,
		stdout:     opts.Stdout,
		tail:       &childproc.Tail{Max: 32 << 10},
	}
	s.args = []string{"-config", s.ConfigPath, "-http-bind-address", httpAddr, "-really-enable-open-registration"}
	if opts.Federation {
		s.FederationURL = "https://" + dialAddr(httpsAddr)
		s.args = append(s.args, "-https-bind-address", httpsAddr,
			"-tls-cert", filepath.Join(dir, tlsCertFile), "-tls-key", filepath.Join(dir, tlsKeyFile))
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err = s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Stop asks Dendrite to shut down (SIGTERM) and kills it if it has not exited within 10 seconds. It does nothing
// if the server is not running.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stop()
}

// Kill ends Dendrite at once (SIGKILL), as a crash would.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.Kill()
	}
}

// Restart stops Dendrite and starts it again with the same config, ports and data.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stop()
	return s.start(ctx)
}

func (s *Server) stop() {
	if s.proc != nil {
		s.proc.Stop(stopTimeout)
	}
}

// start launches the dendrite binary and waits until it answers. The caller holds s.mu.
func (s *Server) start(ctx context.Context) error {
	out := s.stdout
	var logFileHandle *os.File
	if out == nil {
		f, err := os.OpenFile(filepath.Join(s.Dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("failed to open Dendrite log: %w", err)
		}
		logFileHandle, out = f, f
	}
	s.tail.Reset()
	w := io.MultiWriter(out, s.tail)
	cmd := exec.Command(s.bins.Dendrite, s.args...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = w, w
	p, err := childproc.Start(cmd, func() {
		if logFileHandle != nil {
			_ = logFileHandle.Close()
		}
	})
	if err != nil {
		if logFileHandle != nil {
			_ = logFileHandle.Close()
		}
		return err
	}
	s.proc = p
	if err := s.waitReady(ctx, p); err != nil {
		p.Kill()
		return fmt.Errorf("%w; last lines of the Dendrite log:\n%s", err, s.tail.LastLines(30))
	}
	return nil
}

// waitReady polls the client API (and the federation API, if served) until both answer.
func (s *Server) waitReady(ctx context.Context, p *childproc.Process) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, // self-signed certificate
	}
	defer client.CloseIdleConnections()
	urls := []string{s.URL + "/_matrix/client/versions"}
	if s.FederationURL != "" {
		urls = append(urls, s.FederationURL+"/_matrix/key/v2/server")
	}
	for _, url := range urls {
		err := childproc.WaitReady(ctx, client, url, 50*time.Millisecond, p.Done())
		if errors.Is(err, childproc.ErrExited) {
			return fmt.Errorf("dendrite exited during start-up: %v", p.Err())
		} else if err != nil {
			return fmt.Errorf("dendrite did not answer %s: %w", url, err)
		}
	}
	return nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	return homeserver.FreePort()
}

// addrOrFreePort returns addr, or 127.0.0.1 with a free port if addr is empty.
func addrOrFreePort(addr string) (string, error) {
	if addr != "" {
		return addr, nil
	}
	port, err := FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// dialAddr turns a bind address into one to connect to: a wildcard host becomes 127.0.0.1.
func dialAddr(bind string) string {
	host, port, err := net.SplitHostPort(bind)
	if err != nil {
		return bind
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// readServerName returns the server name of an existing config at path, or "" if there is none.
func readServerName(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("failed to read Dendrite config: %w", err)
	}
	var cfg struct {
		Global struct {
			ServerName string `yaml:"server_name"`
		} `yaml:"global"`
	}
	if err = yaml.Unmarshal(raw, &cfg); err != nil {
		return "", fmt.Errorf("failed to parse Dendrite config %s: %w", path, err)
	}
	return cfg.Global.ServerName, nil
}

// LogTail returns up to n last lines that Dendrite logged since it was last started, for diagnostics.
func (s *Server) LogTail(n int) string {
	return s.tail.LastLines(n)
}
