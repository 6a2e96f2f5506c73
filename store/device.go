package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// BotDevice is the bot's own Matrix device for end-to-end encryption. It is made once by logging in with the
// appservice token and reused after restarts, so that the bot keeps one device and its keys. The secrets are stored
// as the caller gives them: the bot seals them with the pickle key first.
type BotDevice struct {
	UserID   id.UserID
	DeviceID id.DeviceID
	// SealedAccessToken is the device's access token, sealed.
	SealedAccessToken string
	// SealedRecoveryKey is the recovery key of the cross-signing keys the bot made, sealed; "" until it made them.
	SealedRecoveryKey string
}

// BotDeviceQuery reads and writes the bot_device table.
type BotDeviceQuery struct {
	db *dbutil.Database
}

const (
	getBotDeviceQuery = `
		SELECT user_id, device_id, access_token, COALESCE(recovery_key, '') FROM bot_device WHERE user_id = $1`
	putBotDeviceQuery = `
		INSERT INTO bot_device (user_id, device_id, access_token, created_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id, access_token = excluded.access_token`
	setRecoveryKeyQuery = `UPDATE bot_device SET recovery_key = $2 WHERE user_id = $1`
)

// Get returns the device of the bot user, or nil when the bot has none yet.
func (q *BotDeviceQuery) Get(ctx context.Context, userID id.UserID) (*BotDevice, error) {
	var dev BotDevice
	err := q.db.QueryRow(ctx, getBotDeviceQuery, userID).
		Scan(&dev.UserID, &dev.DeviceID, &dev.SealedAccessToken, &dev.SealedRecoveryKey)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to load bot device: %w", err)
	}
	return &dev, nil
}

// Put stores the device ID and access token of the bot user's device, replacing an earlier device but keeping the
// recovery key (it belongs to the user, not to the device).
func (q *BotDeviceQuery) Put(ctx context.Context, dev *BotDevice) error {
	_, err := q.db.Exec(ctx, putBotDeviceQuery, dev.UserID, dev.DeviceID, dev.SealedAccessToken, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to store bot device: %w", err)
	}
	return nil
}

// SetRecoveryKey stores the sealed recovery key of the bot user's cross-signing keys.
func (q *BotDeviceQuery) SetRecoveryKey(ctx context.Context, userID id.UserID, sealed string) error {
	res, err := q.db.Exec(ctx, setRecoveryKeyQuery, userID, sealed)
	if err != nil {
		return fmt.Errorf("failed to store recovery key: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("failed to store recovery key: no device stored for %s", userID)
	}
	return nil
}
