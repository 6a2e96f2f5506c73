package bot

import (
	"context"
	"errors"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// ErrEncryption marks start-up failures of end-to-end encryption (the bot's device, its stored crypto state).
var ErrEncryption = errors.New("end-to-end encryption not usable")

// encryption is the bot's end-to-end encryption device. Bot.e2ee is nil when caseroom was built without encryption
// support (see crypto_goolm.go and crypto_nogoolm.go).
type encryption interface {
	// decrypt decrypts an m.room.encrypted event, waiting a few seconds for its room key when it has not arrived.
	// The decrypted event keeps the event ID, room and sender.
	decrypt(ctx context.Context, evt *event.Event) (*event.Event, error)
	// decryptOrPark is decrypt for inbox events: instead of waiting for a room key that has not arrived, it returns
	// an *awaitRoomKey error, whose wait the room's worker runs without holding a processing slot before it handles
	// the event again. The second time (the key still missing after the wait) it fails like decrypt.
	decryptOrPark(ctx context.Context, evt *event.Event) (*event.Event, error)
	// client sends as the bot's device: SendMessageEvent encrypts events for rooms the state store knows are
	// encrypted (reactions stay plaintext).
	client() *mautrix.Client
	// trackRoomEvent tells the crypto machine about membership and history visibility changes, which end the
	// current outgoing megolm session of the room.
	trackRoomEvent(ctx context.Context, evt *event.Event)
	// wait waits until the device's background work has stopped after the bot's context was cancelled.
	wait()
}

const (
	undecryptableNotice = "🔒 I couldn't decrypt your message, so I did nothing with it. Please make sure your client " +
		"shares room keys with unverified devices (or verify my device), then send the message again."
	noEncryptionNotice = "🔒 I can't read encrypted messages: this caseroom server was set up without end-to-end " +
		"encryption, so I did nothing with your message. Please tell an administrator."
)

// awaitRoomKey is the error of an encrypted inbox event whose room key has not arrived yet. The room's worker lets
// go of its processing slot, runs wait (which returns once the key is there, or the wait is over), and then handles
// the event again; the room's later events wait behind it, so they stay in order, while other rooms go on.
type awaitRoomKey struct {
	wait func(ctx context.Context)
}

func (e *awaitRoomKey) Error() string { return "waiting for the room key" }

func isAwaitRoomKey(err error) bool {
	var await *awaitRoomKey
	return errors.As(err, &await)
}

// handleEncrypted decrypts an encrypted room event and handles the result exactly like a plaintext event. When the
// event cannot be decrypted, the sender is told so and what to do: an encrypted command is never dropped silently.
func (b *Bot) handleEncrypted(ctx context.Context, turn *Turn) error {
	log := zerolog.Ctx(ctx)
	if b.e2ee == nil {
		turn.Outcome = "undecryptable"
		turn.Reply(noEncryptionNotice)
		return nil
	}
	b.learnRoomEncryption(ctx, turn.Event.RoomID)
	decrypted, err := b.e2ee.decryptOrPark(ctx, turn.Event)
	if err == nil && decrypted.Type == event.EventEncrypted {
		err = errors.New("decrypted event is itself encrypted")
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err() // shutting down: try again after the restart
		}
		if isAwaitRoomKey(err) {
			return err // the worker waits for the key without a processing slot, then handles the event again
		}
		log.Warn().Err(err).Str("session_id", turn.Event.Content.AsEncrypted().SessionID.String()).
			Msg("Failed to decrypt event")
		turn.Outcome = "undecryptable"
		turn.Reply(undecryptableNotice)
		return nil
	}
	log.Debug().Str("decrypted_type", decrypted.Type.Type).Msg("Decrypted event")
	turn.Event = decrypted
	if decrypted.Type == event.EventRedaction {
		b.refuseEncryptedRedaction(turn)
		return nil
	}
	return b.handle(ctx, turn)
}

// learnRoomEncryption fetches the room's state when an encrypted event arrives in a room the state store does not
// know to be encrypted (e.g. the bot joined before it supported encryption), so that replies are encrypted too.
func (b *Bot) learnRoomEncryption(ctx context.Context, roomID id.RoomID) {
	if encrypted, err := b.stateStore.IsEncrypted(ctx, roomID); err != nil || encrypted {
		return
	}
	if _, err := b.AS.BotIntent().Client.State(ctx, roomID); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to fetch room state to learn its encryption")
	}
}

// trackEncryptionState passes room events that change who may read the room's encrypted messages to the crypto
// machine.
func (b *Bot) trackEncryptionState(ctx context.Context, evt *event.Event) {
	if b.e2ee != nil && (evt.Type == event.StateMember || evt.Type == event.StateHistoryVisibility) {
		b.e2ee.trackRoomEvent(ctx, evt)
	}
}
