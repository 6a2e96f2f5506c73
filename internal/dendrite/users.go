package dendrite

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/homeserver"
)

// UserID returns the Matrix user ID of localpart on this server.
func (s *Server) UserID(localpart string) id.UserID {
	return id.NewUserID(localpart, s.ServerName)
}

// Client returns a mautrix client for this server without credentials.
func (s *Server) Client() (*mautrix.Client, error) {
	return mautrix.NewClient(s.URL, "", "")
}

// RegisterUser creates an account through shared-secret registration (admin makes it a server admin, which the
// /_dendrite/admin API requires) and returns a client logged in as it, on the device Dendrite made for the
// registration (ID "shared_secret_registration").
func (s *Server) RegisterUser(ctx context.Context, localpart, password string, admin bool) (*mautrix.Client, error) {
	return homeserver.RegisterUser(ctx, s.URL, s.SharedSecret, localpart, password, admin)
}

// Login logs localpart in with a password and returns a client on a new device.
func (s *Server) Login(ctx context.Context, localpart, password string) (*mautrix.Client, error) {
	return homeserver.Login(ctx, s.URL, localpart, password)
}

// ResetPassword sets the password of userID through Dendrite's admin API, keeping its devices logged in. admin
// must be a client of a server admin (see RegisterUser). It works for appservice users too, which lets a bot
// answer the password prompt of cross-signing key upload.
func ResetPassword(ctx context.Context, admin *mautrix.Client, userID id.UserID, password string) error {
	url := admin.BuildURL(mautrix.BaseURLPath{"_dendrite", "admin", "resetPassword", string(userID)})
	req := map[string]any{"password": password, "logout_devices": false}
	if _, err := admin.MakeRequest(ctx, http.MethodPost, url, req, nil); err != nil {
		return fmt.Errorf("failed to reset password of %s: %w", userID, err)
	}
	return nil
}

var _ homeserver.Server = (*Server)(nil)

// Implementation is "dendrite".
func (s *Server) Implementation() string { return "dendrite" }

// HomeserverURL is s.URL.
func (s *Server) HomeserverURL() string { return s.URL }

// Domain is s.ServerName.
func (s *Server) Domain() string { return s.ServerName }

// LogFile is Dir/dendrite.log, unless Options.Stdout took the log.
func (s *Server) LogFile() string {
	if s.stdout != nil {
		return ""
	}
	return filepath.Join(s.Dir, logFile)
}
