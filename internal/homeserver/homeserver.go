// Package homeserver holds what the harnesses of the homeservers caseroom is tested against (Dendrite and Synapse)
// share: free loopback ports, shared-secret registration and password login.
package homeserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// ToolsDirEnv names the environment variable that overrides DefaultToolsDir.
const ToolsDirEnv = "CASEROOM_TOOLS_DIR"

// DefaultToolsDir returns the directory that holds the project's tools (the homeserver binaries and virtualenvs):
// $CASEROOM_TOOLS_DIR if set, otherwise .tools in the project root (the nearest directory at or above the working
// directory that holds go.mod).
func DefaultToolsDir() (string, error) {
	if dir := os.Getenv(ToolsDirEnv); dir != "" {
		return filepath.Abs(dir)
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("failed to get working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, ".tools"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod found at or above the working directory (set %s)", ToolsDirEnv)
		}
		dir = parent
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("failed to find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RegisterUser creates an account on the homeserver at baseURL through shared-secret registration
// (/_synapse/admin/v1/register, which Synapse and Dendrite both serve; admin makes it a server admin) and returns a
// client logged in as it, on the device the registration made.
func RegisterUser(ctx context.Context, baseURL, secret, localpart, password string, admin bool) (*mautrix.Client, error) {
	cli, err := mautrix.NewClient(baseURL, "", "")
	if err != nil {
		return nil, err
	}
	registerURL := cli.BuildURL(mautrix.SynapseAdminURLPath{"v1", "register"})
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if _, err = cli.MakeRequest(ctx, http.MethodGet, registerURL, nil, &nonce); err != nil {
		return nil, fmt.Errorf("failed to get registration nonce: %w", err)
	}
	req := map[string]any{
		"nonce":    nonce.Nonce,
		"username": localpart,
		"password": password,
		"admin":    admin,
		"mac":      registrationMAC(secret, nonce.Nonce, localpart, password, admin),
	}
	var resp mautrix.RespRegister
	if _, err = cli.MakeRequest(ctx, http.MethodPost, registerURL, req, &resp); err != nil {
		return nil, fmt.Errorf("failed to register user %s: %w", localpart, err)
	}
	cli.UserID, cli.AccessToken, cli.DeviceID = resp.UserID, resp.AccessToken, resp.DeviceID
	return cli, nil
}

// registrationMAC is the hex HMAC-SHA1 that shared-secret registration expects.
func registrationMAC(secret, nonce, user, password string, admin bool) string {
	kind := "notadmin"
	if admin {
		kind = "admin"
	}
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(strings.Join([]string{nonce, user, password, kind}, "\x00")))
	return hex.EncodeToString(mac.Sum(nil))
}

// Login logs localpart in with a password on the homeserver at baseURL and returns a client on a new device.
func Login(ctx context.Context, baseURL, localpart, password string) (*mautrix.Client, error) {
	cli, err := mautrix.NewClient(baseURL, "", "")
	if err != nil {
		return nil, err
	}
	_, err = cli.Login(ctx, &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
		Password:         password,
		StoreCredentials: true,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to log in as %s: %w", localpart, err)
	}
	return cli, nil
}

// Server is a running homeserver, whichever implementation: what tests that run on every homeserver use.
type Server interface {
	// Implementation names the homeserver software ("dendrite", "synapse").
	Implementation() string
	// HomeserverURL is the client-server API base URL.
	HomeserverURL() string
	// Domain is the Matrix server name (the part of user IDs after the colon).
	Domain() string
	UserID(localpart string) id.UserID
	RegisterUser(ctx context.Context, localpart, password string, admin bool) (*mautrix.Client, error)
	Login(ctx context.Context, localpart, password string) (*mautrix.Client, error)
	// Restart stops the server and starts it again with the same config, ports and data.
	Restart(ctx context.Context) error
	// Stop shuts the server down; Kill ends it at once, as a crash would. Both do nothing on a stopped server.
	Stop()
	Kill()
	// LogTail returns up to n last lines of the server's log, for diagnostics.
	LogTail(n int) string
	// LogFile is the file the server logs to ("" when its log goes to a writer the caller gave).
	LogFile() string
}

// WriteSelfSignedCert writes a self-signed TLS certificate for localhost and 127.0.0.1 (PEM, valid for a year) and
// its key to certPath and keyPath, for a homeserver's federation listener on loopback. Federating test servers skip
// certificate checks, so nothing needs to trust it.
func WriteSelfSignedCert(certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("failed to make a TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("failed to make a TLS certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err = os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}

// Base is what every running homeserver of the harnesses has, with the methods of Server that need nothing else.
// The harnesses embed it.
type Base struct {
	// URL is the client-server API base URL, such as http://127.0.0.1:41234.
	URL string
	// ServerName is the Matrix server name (the part of user IDs after the colon).
	ServerName string
	// SharedSecret is the secret for shared-secret registration (/_synapse/admin/v1/register).
	SharedSecret string
}

// HomeserverURL is b.URL.
func (b *Base) HomeserverURL() string { return b.URL }

// Domain is b.ServerName.
func (b *Base) Domain() string { return b.ServerName }

// UserID returns the Matrix user ID of localpart on this server.
func (b *Base) UserID(localpart string) id.UserID {
	return id.NewUserID(localpart, b.ServerName)
}

// Client returns a mautrix client for this server without credentials.
func (b *Base) Client() (*mautrix.Client, error) {
	return mautrix.NewClient(b.URL, "", "")
}

// RegisterUser creates an account through shared-secret registration (admin makes it a server admin) and returns a
// client logged in as it, on the device the registration made.
func (b *Base) RegisterUser(ctx context.Context, localpart, password string, admin bool) (*mautrix.Client, error) {
	return RegisterUser(ctx, b.URL, b.SharedSecret, localpart, password, admin)
}

// Login logs localpart in with a password and returns a client on a new device.
func (b *Base) Login(ctx context.Context, localpart, password string) (*mautrix.Client, error) {
	return Login(ctx, b.URL, localpart, password)
}
