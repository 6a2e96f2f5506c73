package dendrite

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
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
	cli, err := s.Client()
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
		"mac":      registrationMAC(s.SharedSecret, nonce.Nonce, localpart, password, admin),
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

// Login logs localpart in with a password and returns a client on a new device.
func (s *Server) Login(ctx context.Context, localpart, password string) (*mautrix.Client, error) {
	cli, err := s.Client()
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
