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

// LogFile is Dir/dendrite.log, unless Options.Stdout took the log.
func (s *Server) LogFile() string {
	if s.stdout != nil {
		return ""
	}
	return filepath.Join(s.Dir, logFile)
}
