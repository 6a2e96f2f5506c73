package commands

import (
	"context"
	"fmt"

	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/store"
)

// The gate: every event that runs a command or changes a record (commands, edits, redactions, reactions, poll
// votes) passes the same checks, in this order, and each refusal is answered in the room the event came from,
// audited, and changes nothing:
//
//  1. an event with patient data arrived encrypted (refuseClearText; clear text in an encrypted room is also
//     redacted, so that the patient data does not stay readable on the homeserver);
//  2. the sender's device meets encryption.min_trust (refuseUntrusted);
//  3. the sender's server is allowed and their role is current, checked now against the database;
//  4. the target record belongs to this room's case, and the case is open;
//  5. a deletion is a real redaction (never a decrypted inner m.room.redaction, see the bot's handleEncrypted) by
//     the record's author or by a care-team member the room's power levels allow to redact.
//
// Steps 3 to 5 depend on what is changed: the command route (HandleMessage with checkAccess), gateCheckInChange
// (edits and deletions of check-ins), HandleReaction and gateGuidedAnswer (guided answers and poll votes) do them.

// trustHelp tells a user whose device is not trusted enough how to fix it.
const trustHelp = "Verify this session: in Element, open Settings → Security & Privacy (or Sessions), set up " +
	"cross-signing (\"Set up Secure Backup\") if you have not, then verify this session from another of your sessions " +
	"or with your recovery key. Then send it again."

// gateTransport does steps 1 and 2 for the turn's event: phi says the event carries or reveals patient data. It
// reports whether the event was refused (answered and audited as action).
func gateTransport(ctx context.Context, turn *bot.Turn, action string, caseID int64, phi bool) (bool, error) {
	if phi {
		if refused, err := refuseClearText(ctx, turn, action, caseID, true); err != nil || refused {
			return refused, err
		}
	}
	return refuseUntrusted(turn, action, caseID), nil
}

// refuseClearText refuses an event with patient data that did not arrive encrypted: in an encrypted room always
// (and the bot redacts it), in an unencrypted room when require is set and encryption.require is on.
func refuseClearText(ctx context.Context, turn *bot.Turn, action string, caseID int64, require bool) (bool, error) {
	b, evt := turn.Bot, turn.Event
	if evt.Mautrix.WasEncrypted {
		return false, nil
	}
	encrypted, err := b.IsEncrypted(ctx, evt.RoomID)
	if err != nil {
		return false, err
	}
	if encrypted {
		redacted := b.RedactEvent(ctx, evt.RoomID, evt.ID, "patient data sent without encryption")
		what := "I removed your message from the room so that it does not stay readable on the server."
		if !redacted {
			what = "Please delete your message: it stays readable on the server."
		}
		turn.Refuse(action, "refused:cleartext", caseID, "⛔ This room is end-to-end encrypted, but your message "+
			"arrived unencrypted, so I did nothing with it. "+what+" Send it again from a client with encryption "+
			"(e.g. Element), which encrypts it.")
		return true, nil
	}
	if require && b.Config.Encryption.Require {
		turn.Refuse(action, "refused:unencrypted", caseID, "⛔ That works with patient data, so I accept it only "+
			"in end-to-end encrypted rooms, and this room is not encrypted. Nothing was done.")
		return true, nil
	}
	return false, nil
}

// refuseUntrusted refuses an encrypted event from a device below encryption.min_trust, saying how to verify it.
func refuseUntrusted(turn *bot.Turn, action string, caseID int64) bool {
	b, evt := turn.Bot, turn.Event
	if b.DeviceTrusted(evt) {
		return false
	}
	device := "unknown"
	if evt.Mautrix.TrustSource != nil {
		device = evt.Mautrix.TrustSource.DeviceID.String()
	}
	turn.Refuse(action, "refused:trust", caseID, fmt.Sprintf("⛔ You sent this from a session (device %s) that is "+
		"not verified enough for me (it is %s; this server requires %s), so I did nothing with it. %s",
		format.SafeMarkdownCode(device), format.SafeMarkdownCode(evt.Mautrix.TrustState.String()),
		format.SafeMarkdownCode(b.Config.Encryption.MinTrustName()), trustHelp))
	return true
}

// currentRole reports whether the author of a check-in still holds the role they recorded it in: the case's patient
// for their own check-ins, a clinician on the care team for readings recorded by the team.
func currentRole(ctx context.Context, b *bot.Bot, record *store.CheckIn) (bool, error) {
	if record.Source == store.SourcePatient {
		return b.Store.Cases.IsPatientOf(ctx, record.CaseID, record.RecordedBy)
	}
	return onCareTeam(ctx, b, record.CaseID, record.RecordedBy)
}

// onCareTeam reports whether the user is now a registered clinician on the case's care team.
func onCareTeam(ctx context.Context, b *bot.Bot, caseID int64, userID id.UserID) (bool, error) {
	clinician, err := b.Store.Roles.IsClinician(ctx, userID)
	if err != nil || !clinician {
		return false, err
	}
	return b.Store.Cases.IsOnTeam(ctx, caseID, userID)
}

// gateServer does the server half of step 3: it refuses (answered and audited) a sender whose homeserver is not
// allowed now.
func gateServer(ctx context.Context, turn *bot.Turn, action string, caseID int64) (bool, error) {
	sender := turn.Event.Sender
	allowed, err := turn.Bot.ServerAllowed(ctx, sender.Homeserver())
	if err != nil || allowed {
		return false, err
	}
	turn.Refuse(action, "refused:server", caseID, fmt.Sprintf("⛔ I only work with users of allowed homeservers, and %s "+
		"is not one of them (any more). Nothing was changed.", format.SafeMarkdownCode(sender.Homeserver())))
	return true, nil
}
