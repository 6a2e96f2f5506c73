package commands

import (
	"context"

	"maunium.net/go/mautrix/format"
)

// refuseUnencrypted refuses a command that reads or writes patient data (Command.PHI) in a room that is not
// end-to-end encrypted, when encryption.require is set: the answer explains why and how to fix it, the refusal is
// audited as refused:unencrypted, and the command does not run. It reports whether it refused.
//
// The room's encryption is what the bot's state store knows, which is also what decides whether the bot's replies
// are encrypted, so a command that passes this check gets an encrypted answer.
func refuseUnencrypted(ctx context.Context, call *Call) (bool, error) {
	if !call.Command.PHI || !call.Bot.Config.Encryption.Require {
		return false, nil
	}
	encrypted, err := call.Bot.IsEncrypted(ctx, call.Event.RoomID)
	if err != nil || encrypted {
		return false, err
	}
	call.Fail("refused:unencrypted", "⛔ %s works with patient data, so I run it only in end-to-end encrypted rooms, and this "+
		"room is not encrypted. Nothing was done.\n\nStart a new direct chat with me with encryption on (the default in "+
		"Element), or turn on encryption in this room's settings (Security & Privacy → Encrypted; it cannot be turned off "+
		"again), then send the command there.", format.SafeMarkdownCode("/"+call.Command.FullName()))
	return true, nil
}
