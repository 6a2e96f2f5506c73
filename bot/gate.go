package bot

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/store"
)

// Refuse answers the turn's event in its room with a ⛔ message and reaction, and audits the refusal: what the
// gate does for every event it does not let change a record.
func (t *Turn) Refuse(action, outcome string, caseID int64, markdown string) {
	t.Outcome = outcome
	t.Reply(markdown)
	t.React("⛔")
	entry := &store.AuditEntry{Actor: t.Event.Sender, Action: action, Outcome: outcome, CaseID: caseID,
		RoomID: t.Event.RoomID, EventID: t.Event.ID}
	t.Write(func(ctx context.Context) error { return t.Bot.Store.Audit.Add(ctx, entry) })
}

// CanRedact reports whether the room's power levels let the user redact other people's events.
func (b *Bot) CanRedact(ctx context.Context, roomID id.RoomID, userID id.UserID) (bool, error) {
	pl, err := b.AS.BotIntent().PowerLevels(ctx, roomID)
	if err != nil {
		return false, fmt.Errorf("failed to get power levels: %w", err)
	}
	return pl.GetUserLevel(userID) >= pl.Redact(), nil
}

// RedactEvent redacts an event as the bot (e.g. a clear-text message with patient data in an encrypted room), and
// reports whether it was redacted. Redacting an event twice changes nothing, so the call may be repeated when the
// event is processed again.
func (b *Bot) RedactEvent(ctx context.Context, roomID id.RoomID, eventID id.EventID, reason string) bool {
	_, err := b.AS.BotIntent().RedactEvent(ctx, roomID, eventID, mautrix.ReqRedact{Reason: reason})
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Stringer("redacted_event_id", eventID).Msg("Failed to redact event")
		return false
	}
	return true
}

// DeviceTrusted reports whether the event was sent by a device that meets encryption.min_trust. Events that did not
// arrive encrypted carry no device and are left to the encryption check.
func (b *Bot) DeviceTrusted(evt *event.Event) bool {
	return !evt.Mautrix.WasEncrypted || evt.Mautrix.TrustState >= b.Config.Encryption.MinTrustState()
}

// refuseEncryptedRedaction answers a decrypted event whose inner type is m.room.redaction: a client can encrypt any
// event type, and the homeserver applies none of its redaction rules to what it sees as m.room.encrypted, so such
// an event deletes nothing.
func (b *Bot) refuseEncryptedRedaction(turn *Turn) {
	turn.Refuse("redaction", "refused:encrypted-redaction", 0, "⛔ That was an encrypted event posing as a deletion; "+
		"I delete records only for a real deletion (redaction) of the message by its author or by someone allowed to "+
		"delete messages in the room. Nothing was changed.")
}
