package bot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// SendNow sends a message at once, outside the turn's transaction, for a handler that needs the new event's ID
// before it stores anything (e.g. to pin the message). Like queued messages it is encrypted for encrypted rooms.
// The transaction ID is derived from the cause event and the step, so that sending again after a crash is
// deduplicated by the homeserver; callers still record the result with Store.Effects so that they do not send
// again once the first send is known.
func (b *Bot) SendNow(ctx context.Context, roomID id.RoomID, content any, cause id.EventID, step string) (id.EventID, error) {
	sum := sha256.Sum256([]byte(string(cause) + "\x00" + step))
	req := mautrix.ReqSendEvent{TransactionID: fmt.Sprintf("caseroom.%s.now.%s", b.Store.InstanceID, hex.EncodeToString(sum[:16]))}
	if blocked, err := b.sendBlocked(ctx, roomID); err != nil {
		return "", err
	} else if blocked {
		return "", ErrRoomEncryptionChanged
	}
	var resp *mautrix.RespSendEvent
	var err error
	if b.e2ee != nil {
		resp, err = b.e2ee.client().SendMessageEvent(ctx, roomID, event.EventMessage, content, req)
	} else {
		resp, err = b.AS.BotIntent().SendMessageEvent(ctx, roomID, event.EventMessage, content, req)
	}
	if err != nil {
		return "", fmt.Errorf("failed to send message: %w", err)
	}
	return resp.EventID, nil
}
