package dendrite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// Files that Start keeps in Options.Dir.
const (
	configFile     = "dendrite.yaml"
	privateKeyFile = "matrix_key.pem"
	tlsCertFile    = "tls.crt"
	tlsKeyFile     = "tls.key"
	logFile        = "dendrite.log"
)

// writeConfig makes sure Dir holds a Dendrite config and keys for serverName, then rewrites the parts of the config
// that Start controls. An existing config is kept (so are its server name and data); a new one comes from
// `generate-config -ci`. It returns the server name and shared registration secret in force.
func writeConfig(ctx context.Context, bins Binaries, opts *Options, serverName string) (name, secret string, err error) {
	path := filepath.Join(opts.Dir, configFile)
	if _, statErr := os.Stat(path); errors.Is(statErr, os.ErrNotExist) {
		out, err := exec.CommandContext(ctx, bins.GenerateConfig, "-ci", "-dir", opts.Dir, "-server", serverName).Output()
		if err != nil {
			return "", "", fmt.Errorf("failed to generate Dendrite config: %w", commandError(err))
		}
		if err = os.WriteFile(path, out, 0o600); err != nil {
			return "", "", fmt.Errorf("failed to write Dendrite config: %w", err)
		}
	}
	if err = ensureKeys(ctx, bins, opts); err != nil {
		return "", "", err
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("failed to read Dendrite config: %w", err)
	}
	var cfg map[string]any
	if err = yaml.Unmarshal(raw, &cfg); err != nil {
		return "", "", fmt.Errorf("failed to parse Dendrite config %s: %w", path, err)
	}
	name, _ = lookup(cfg, "global", "server_name").(string)
	if name == "" {
		return "", "", fmt.Errorf("no global.server_name in Dendrite config %s", path)
	}

	registrations := make([]any, 0, len(opts.AppServiceRegistrations))
	for _, reg := range opts.AppServiceRegistrations {
		abs, err := filepath.Abs(reg)
		if err != nil {
			return "", "", err
		}
		registrations = append(registrations, abs)
	}
	logLevel := opts.LogLevel
	if logLevel == "" {
		logLevel = "info"
	}

	// A relative private key path would be resolved against Dendrite's working directory.
	set(cfg, filepath.Join(opts.Dir, privateKeyFile), "global", "private_key")
	set(cfg, !opts.PersistentJetStream, "global", "jetstream", "in_memory")
	set(cfg, filepath.Join(opts.Dir, "jetstream"), "global", "jetstream", "storage_path")
	// Dendrite logs to stderr, which Start sends to Options.Stdout or Dir/dendrite.log.
	set(cfg, []any{map[string]any{"type": "std", "level": logLevel}}, "logging")
	set(cfg, registrations, "app_service_api", "config_files")
	// Loopback federation uses self-signed certificates; with validation on, federation fails silently.
	set(cfg, true, "federation_api", "disable_tls_validation")
	set(cfg, false, "client_api", "rate_limiting", "enabled")
	set(cfg, false, "client_api", "registration_disabled")
	secret, _ = lookup(cfg, "client_api", "registration_shared_secret").(string)
	if secret == "" {
		secret = DefaultSharedSecret
		set(cfg, secret, "client_api", "registration_shared_secret")
	}

	out, err := yaml.Marshal(cfg)
	if err != nil {
		return "", "", fmt.Errorf("failed to encode Dendrite config: %w", err)
	}
	if err = os.WriteFile(path, out, 0o600); err != nil {
		return "", "", fmt.Errorf("failed to write Dendrite config: %w", err)
	}
	return name, secret, nil
}

// DefaultSharedSecret is the registration shared secret of configs made by `generate-config -ci`.
const DefaultSharedSecret = "complement"

// ensureKeys generates the signing key and, for federation, the TLS certificate if Dir lacks them.
func ensureKeys(ctx context.Context, bins Binaries, opts *Options) error {
	var args []string
	keyPath := filepath.Join(opts.Dir, privateKeyFile)
	if !exists(keyPath) {
		args = append(args, "-private-key", keyPath)
	}
	certPath, tlsKeyPath := filepath.Join(opts.Dir, tlsCertFile), filepath.Join(opts.Dir, tlsKeyFile)
	if opts.Federation && (!exists(certPath) || !exists(tlsKeyPath)) {
		args = append(args, "-tls-cert", certPath, "-tls-key", tlsKeyPath, "-keysize", "2048")
	}
	if len(args) == 0 {
		return nil
	}
	cmd := exec.CommandContext(ctx, bins.GenerateKeys, args...)
	cmd.Dir = opts.Dir
	if _, err := cmd.Output(); err != nil {
		return fmt.Errorf("failed to generate Dendrite keys: %w", commandError(err))
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// commandError adds a failed command's stderr to its error.
func commandError(err error) error {
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) && len(exitErr.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, exitErr.Stderr)
	}
	return err
}

// lookup returns the value at the path of keys in nested YAML maps, or nil.
func lookup(m map[string]any, keys ...string) any {
	var cur any = m
	for _, key := range keys {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[key]
	}
	return cur
}

// set stores value at the path of keys in nested YAML maps, creating the maps on the way.
func set(m map[string]any, value any, keys ...string) {
	for _, key := range keys[:len(keys)-1] {
		next, ok := m[key].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[key] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = value
}
