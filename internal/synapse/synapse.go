// Package synapse runs a real Synapse homeserver (from PyPI, pinned) for caseroom's tests and local development:
// it installs Synapse into a virtualenv under the project's tools directory, writes a config, starts and stops the
// process and registers users.
package synapse

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/caseroom/caseroom/internal/childproc"
	"github.com/caseroom/caseroom/internal/homeserver"
)

// Timeouts for starting and stopping Synapse (a Python program: its start takes seconds, not milliseconds).
const (
	readyTimeout = 90 * time.Second
	stopTimeout  = 15 * time.Second
)

const (
	configFile    = "homeserver.yaml"
	logFile       = "synapse.log"
	logConfigFile = "log.yaml"
)

// Options configures Start.
type Options struct {
	// Dir holds the config, signing key, database, media and log. If it already holds a config from an earlier
	// Start, that config (with its server name, port and secrets) and the data are reused.
	Dir string
	// ServerName defaults to "localhost:<HTTP port>".
	ServerName string
	// HTTPAddr is the client API address; "" picks a free port on 127.0.0.1.
	HTTPAddr string
	// Federation also serves the federation API over HTTPS (a self-signed certificate) on FederationAddr, and lets
	// Synapse federate with servers on loopback without checking their certificates. The server name then
	// defaults to "localhost:<federation port>": other servers reach a server at the port in its name.
	Federation bool
	// FederationAddr is the federation address; "" takes the port of a reused config or a free port on 127.0.0.1.
	FederationAddr string
	// AppServiceRegistrations are paths of appservice registration files.
	AppServiceRegistrations []string
	// LogLevel is the level of Synapse's log: debug, info, warn (or warning) or error; "" means info, Synapse's
	// default. Synapse logs every request at info, which costs it time under load.
	LogLevel string
	// Stdout receives Synapse's log; nil appends it to Dir/synapse.log.
	Stdout io.Writer
	// Python is the interpreter of a virtualenv with Synapse; "" means EnsureInstalled(ctx, the tools directory).
	Python string
}

// Server is a running Synapse.
type Server struct {
	homeserver.Base
	// FederationURL is the HTTPS base URL of the federation API; empty without Options.Federation.
	FederationURL string
	// Dir is the absolute data directory.
	Dir string
	// ConfigPath is the absolute path of the Synapse config file.
	ConfigPath string

	python string
	stdout io.Writer
	tail   *childproc.Tail

	mu   sync.Mutex
	proc *childproc.Process
}

// Start writes a config into opts.Dir and starts Synapse, returning once its client API answers. ctx bounds the
// start-up only: the server runs until Stop or Kill, or until the calling process dies.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("synapse: Options.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	if err = os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create Synapse directory: %w", err)
	}
	if opts.Python == "" {
		toolsDir, err := homeserver.DefaultToolsDir()
		if err != nil {
			return nil, err
		}
		if opts.Python, err = EnsureInstalled(ctx, toolsDir); err != nil {
			return nil, err
		}
	}
	s := &Server{Dir: dir, ConfigPath: filepath.Join(dir, configFile), python: opts.Python, stdout: opts.Stdout,
		tail: &childproc.Tail{Max: 32 << 10}}
	cfg, err := s.writeConfig(ctx, opts)
	if err != nil {
		return nil, err
	}
	s.URL = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.port))
	if cfg.federationPort != 0 {
		s.FederationURL = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.federationPort))
	}
	s.ServerName, s.SharedSecret = cfg.serverName, cfg.sharedSecret

	s.mu.Lock()
	defer s.mu.Unlock()
	if err = s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// writtenConfig is what the rest of the harness needs from the config file.
type writtenConfig struct {
	serverName, sharedSecret string
	port, federationPort     int
}

// writeConfig writes Dir/homeserver.yaml (reusing the server name, port and secrets of an earlier one) and makes the
// signing key if it is missing.
func (s *Server) writeConfig(ctx context.Context, opts Options) (*writtenConfig, error) {
	old, err := readConfig(s.ConfigPath)
	if err != nil {
		return nil, err
	}
	cfg := &writtenConfig{}
	if old != nil {
		cfg.serverName, _ = old["server_name"].(string)
		cfg.sharedSecret, _ = old["registration_shared_secret"].(string)
		if listeners, ok := old["listeners"].([]any); ok {
			for i, l := range listeners {
				if l, ok := l.(map[string]any); ok && i == 0 {
					cfg.port, _ = l["port"].(int)
				} else if ok && opts.Federation {
					cfg.federationPort, _ = l["port"].(int)
				}
			}
		}
		if opts.ServerName != "" && opts.ServerName != cfg.serverName {
			return nil, fmt.Errorf("synapse: %s already holds server %q, not %q", s.Dir, cfg.serverName, opts.ServerName)
		}
	}
	if opts.HTTPAddr != "" {
		_, port, err := net.SplitHostPort(opts.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("synapse: bad HTTPAddr %q: %w", opts.HTTPAddr, err)
		}
		if cfg.port, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("synapse: bad HTTPAddr %q: %w", opts.HTTPAddr, err)
		}
	}
	logLevel, err := pythonLogLevel(opts.LogLevel)
	if err != nil {
		return nil, err
	}
	if cfg.port == 0 {
		if cfg.port, err = homeserver.FreePort(); err != nil {
			return nil, err
		}
	}
	if opts.Federation && opts.FederationAddr != "" {
		_, port, err := net.SplitHostPort(opts.FederationAddr)
		if err != nil {
			return nil, fmt.Errorf("synapse: bad FederationAddr %q: %w", opts.FederationAddr, err)
		}
		if cfg.federationPort, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("synapse: bad FederationAddr %q: %w", opts.FederationAddr, err)
		}
	}
	if opts.Federation && cfg.federationPort == 0 {
		if cfg.federationPort, err = homeserver.FreePort(); err != nil {
			return nil, err
		}
	}
	if cfg.serverName == "" {
		cfg.serverName = opts.ServerName
	}
	if cfg.serverName == "" && opts.Federation {
		cfg.serverName = "localhost:" + strconv.Itoa(cfg.federationPort)
	} else if cfg.serverName == "" {
		cfg.serverName = "localhost:" + strconv.Itoa(cfg.port)
	}
	secrets := map[string]string{}
	for _, key := range []string{"registration_shared_secret", "macaroon_secret_key", "form_secret"} {
		if v, ok := old[key].(string); ok && v != "" {
			secrets[key] = v
		} else {
			secrets[key] = randomSecret()
		}
	}
	cfg.sharedSecret = secrets["registration_shared_secret"]

	// Rate limits are lifted: tests and the development setup send far more than one user would.
	unlimited := map[string]any{"per_second": 10000, "burst_count": 100000}
	registrations := opts.AppServiceRegistrations
	if registrations == nil {
		registrations = []string{}
	}
	conf := map[string]any{
		"server_name": cfg.serverName,
		"pid_file":    filepath.Join(s.Dir, "homeserver.pid"),
		"listeners": []any{map[string]any{
			"port": cfg.port, "bind_addresses": []string{"127.0.0.1"}, "type": "http", "tls": false,
			"x_forwarded": false, "resources": []any{map[string]any{"names": []string{"client", "federation"}, "compress": false}},
		}},
		"database":                                 map[string]any{"name": "sqlite3", "args": map[string]any{"database": filepath.Join(s.Dir, "homeserver.db")}},
		"media_store_path":                         filepath.Join(s.Dir, "media"),
		"signing_key_path":                         filepath.Join(s.Dir, "signing.key"),
		"trusted_key_servers":                      []any{},
		"suppress_key_server_warning":              true,
		"report_stats":                             false,
		"enable_registration":                      true,
		"enable_registration_without_verification": true,
		"app_service_config_files":                 registrations,
		"rc_message":                               unlimited,
		"rc_registration":                          unlimited,
		"rc_login":                                 map[string]any{"address": unlimited, "account": unlimited, "failed_attempts": unlimited},
		"rc_joins":                                 map[string]any{"local": unlimited, "remote": unlimited},
		"rc_joins_per_room":                        unlimited,
		"rc_invites":                               map[string]any{"per_room": unlimited, "per_user": unlimited, "per_issuer": unlimited},
		"rc_key_requests":                          unlimited,
		"rc_admin_redaction":                       unlimited,
		"rc_3pid_validation":                       unlimited,
		"rc_media_create":                          unlimited,
		"rc_delayed_event_mgmt":                    unlimited,
		"rc_room_creation":                         unlimited,
		"rc_reports":                               unlimited,
		"rc_presence":                              map[string]any{"per_user": unlimited},
		"rc_federation":                            map[string]any{"window_size": 1000, "sleep_limit": 10000, "sleep_delay": 1, "reject_limit": 10000, "concurrent": 100},
		"experimental_features": map[string]any{
			// Appservice extensions that mautrix-go implements (to-device events and device lists pushed in
			// transactions), switched on so that caseroom can use them where the homeserver offers them.
			"msc2409_to_device_messages_enabled": true,
			"msc3202_transaction_extensions":     true,
		},
	}
	for k, v := range secrets {
		conf[k] = v
	}
	if logLevel != "" {
		path := filepath.Join(s.Dir, logConfigFile)
		if err = writeLogConfig(path, logLevel); err != nil {
			return nil, err
		}
		conf["log_config"] = path
	}
	if opts.Federation {
		certPath, keyPath := filepath.Join(s.Dir, "tls.crt"), filepath.Join(s.Dir, "tls.key")
		if _, err := os.Stat(certPath); errors.Is(err, os.ErrNotExist) {
			if err = homeserver.WriteSelfSignedCert(certPath, keyPath); err != nil {
				return nil, err
			}
		}
		conf["listeners"] = append(conf["listeners"].([]any), map[string]any{
			"port": cfg.federationPort, "bind_addresses": []string{"127.0.0.1"}, "type": "http", "tls": true,
			"x_forwarded": false, "resources": []any{map[string]any{"names": []string{"federation"}, "compress": false}},
		})
		conf["tls_certificate_path"] = certPath
		conf["tls_private_key_path"] = keyPath
		// Other test servers have self-signed certificates too, and live on loopback, which Synapse refuses to
		// federate with by default.
		conf["federation_verify_certificates"] = false
		conf["ip_range_whitelist"] = []string{"127.0.0.0/8", "::1/128"}
	}
	raw, err := yaml.Marshal(conf)
	if err != nil {
		return nil, err
	}
	if err = os.WriteFile(s.ConfigPath, raw, 0o600); err != nil {
		return nil, fmt.Errorf("failed to write Synapse config: %w", err)
	}
	if _, err = os.Stat(filepath.Join(s.Dir, "signing.key")); errors.Is(err, os.ErrNotExist) {
		gen := exec.CommandContext(ctx, s.python, "-m", "synapse.app.homeserver", "-c", s.ConfigPath, "--generate-keys")
		gen.Dir = s.Dir
		if out, err := gen.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("failed to generate the Synapse signing key: %w\n%s", err, tail(out))
		}
	}
	return cfg, nil
}

// pythonLogLevel is the Python logging level of a LogLevel ("" for "").
func pythonLogLevel(level string) (string, error) {
	switch strings.ToLower(level) {
	case "":
		return "", nil
	case "debug", "info", "warning", "error":
		return strings.ToUpper(level), nil
	case "warn":
		return "WARNING", nil
	}
	return "", fmt.Errorf("synapse: unknown LogLevel %q (want debug, info, warn or error)", level)
}

// writeLogConfig writes a Python logging config that sends Synapse's log at level to stderr, in the format Synapse
// uses without one.
func writeLogConfig(path, level string) error {
	logCfg := map[string]any{
		"version": 1,
		"formatters": map[string]any{"precise": map[string]any{
			"format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s",
		}},
		"handlers":                 map[string]any{"console": map[string]any{"class": "logging.StreamHandler", "formatter": "precise"}},
		"root":                     map[string]any{"level": level, "handlers": []string{"console"}},
		"disable_existing_loggers": false,
	}
	if level == "DEBUG" {
		// Synapse's SQL logger writes access tokens at debug; Synapse's own default keeps it at info.
		logCfg["loggers"] = map[string]any{"synapse.storage.SQL": map[string]any{"level": "INFO"}}
	}
	raw, err := yaml.Marshal(logCfg)
	if err != nil {
		return err
	}
	if err = os.WriteFile(path, raw, 0o600); err != nil {
		return fmt.Errorf("failed to write Synapse log config: %w", err)
	}
	return nil
}

// readConfig returns the config file at path as a map, or nil if there is none.
func readConfig(path string) (map[string]any, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to read Synapse config: %w", err)
	}
	var cfg map[string]any
	if err = yaml.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("failed to parse Synapse config %s: %w", path, err)
	}
	return cfg, nil
}

func randomSecret() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Stop asks Synapse to shut down (SIGTERM) and kills it if it has not exited within 15 seconds. It does nothing if
// the server is not running.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.Stop(stopTimeout)
	}
}

// Kill ends Synapse at once (SIGKILL), as a crash would.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.Kill()
	}
}

// Restart stops Synapse and starts it again with the same config, port and data.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.Stop(stopTimeout)
	}
	return s.start(ctx)
}

// start launches Synapse and waits until it answers. The caller holds s.mu.
func (s *Server) start(ctx context.Context) error {
	out := s.stdout
	var logFileHandle *os.File
	if out == nil {
		f, err := os.OpenFile(filepath.Join(s.Dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("failed to open Synapse log: %w", err)
		}
		logFileHandle, out = f, f
	}
	closeLog := func() {
		if logFileHandle != nil {
			_ = logFileHandle.Close()
		}
	}
	s.tail.Reset()
	w := io.MultiWriter(out, s.tail)
	cmd := exec.Command(s.python, "-m", "synapse.app.homeserver", "-c", s.ConfigPath)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = w, w
	p, err := childproc.Start(cmd, closeLog)
	if err != nil {
		closeLog()
		return err
	}
	s.proc = p
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	err = childproc.WaitReady(ctx, client, s.URL+"/_matrix/client/versions", 100*time.Millisecond, p.Done())
	if err == nil && s.FederationURL != "" {
		tlsClient := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the self-signed certificate
		}}
		defer tlsClient.CloseIdleConnections()
		err = childproc.WaitReady(ctx, tlsClient, s.FederationURL+"/_matrix/key/v2/server", 100*time.Millisecond, p.Done())
	}
	if errors.Is(err, childproc.ErrExited) {
		err = fmt.Errorf("synapse exited during start-up: %v", p.Err())
	} else if err != nil {
		err = fmt.Errorf("synapse did not answer: %w", err)
	}
	if err != nil {
		p.Kill()
		return fmt.Errorf("%w; last lines of the Synapse log:\n%s", err, s.tail.LastLines(30))
	}
	return nil
}

// LogTail returns up to n last lines that Synapse logged since it was last started, for diagnostics.
func (s *Server) LogTail(n int) string {
	return s.tail.LastLines(n)
}

var _ homeserver.Server = (*Server)(nil)

// Implementation is "synapse".
func (s *Server) Implementation() string { return "synapse" }

// LogFile is Dir/synapse.log, unless Options.Stdout took the log.
func (s *Server) LogFile() string {
	if s.stdout != nil {
		return ""
	}
	return filepath.Join(s.Dir, logFile)
}
