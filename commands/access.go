package commands

import (
	"context"
	"fmt"

	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/store"
)

// RoomKind is what a room is to caseroom.
type RoomKind int

const (
	RoomOther   RoomKind = iota
	RoomDirect           // only the bot and the sender are in it
	RoomCase             // a case room (clinicians only)
	RoomPatient          // a patient room
)

// RoomContext is what the bot knows about the room of a command and the sender's roles.
type RoomContext struct {
	Kind        RoomKind
	Case        *store.Case
	IsAdmin     bool
	IsClinician bool
	OnTeam      bool // on the care team of the room's case
	IsPatient   bool // a patient of the room's case
}

func resolveRoom(ctx context.Context, b *bot.Bot, roomID id.RoomID, sender id.UserID) (*RoomContext, error) {
	rc := &RoomContext{}
	var err error
	if rc.IsAdmin, err = b.IsAdmin(ctx, sender); err != nil {
		return nil, err
	}
	if rc.IsClinician, err = b.Store.Roles.IsClinician(ctx, sender); err != nil {
		return nil, err
	}
	if rc.Case, err = b.Store.Cases.ByRoom(ctx, roomID); err != nil {
		return nil, err
	}
	if rc.Case != nil {
		rc.Kind = RoomPatient
		if rc.Case.CaseRoomID == roomID {
			rc.Kind = RoomCase
		}
		if rc.OnTeam, err = b.Store.Cases.IsOnTeam(ctx, rc.Case.ID, sender); err != nil {
			return nil, err
		}
		if rc.IsPatient, err = b.Store.Cases.IsPatientOf(ctx, rc.Case.ID, sender); err != nil {
			return nil, err
		}
		return rc, nil
	}
	members, err := b.JoinedMembers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if len(members) == 2 && (members[0] == sender || members[1] == sender) &&
		(members[0] == b.BotID() || members[1] == b.BotID()) {
		rc.Kind = RoomDirect
	}
	return rc, nil
}

// checkAccess returns a refusal outcome and a message saying why, or "" when the sender may run cmd here.
func checkAccess(cmd *Command, rc *RoomContext, botID id.UserID) (outcome, why string) {
	name := format.SafeMarkdownCode("/" + cmd.FullName())
	switch cmd.Access {
	case AnyClinician, ClinicianDirect:
		if !rc.IsClinician {
			return "refused:role", fmt.Sprintf("⛔ Only registered clinicians can run %s. An admin can register you with `/admin clinician add`.", name)
		}
		if rc.Kind == RoomPatient {
			return "refused:room", fmt.Sprintf("⛔ %s cannot be used in a patient room.", name)
		}
		if cmd.Access == ClinicianDirect && rc.Kind != RoomDirect {
			return "refused:room", fmt.Sprintf("⛔ %s works only in a direct chat with me, so that nothing is shown to others. "+
				"Start a direct chat with %s and try there.", name, format.SafeMarkdownCode(botID.String()))
		}
	case CareTeam:
		if rc.Kind != RoomCase {
			return "refused:room", fmt.Sprintf("⛔ %s works only in a case room.", name)
		}
		if !rc.IsClinician || !rc.OnTeam {
			return "refused:role", fmt.Sprintf("⛔ Only clinicians on this case's care team can run %s.", name)
		}
	case OwnPatientRoom:
		if rc.Kind != RoomPatient {
			return "refused:room", fmt.Sprintf("⛔ %s works only in your patient room.", name)
		}
		if !rc.IsPatient {
			return "refused:role", fmt.Sprintf("⛔ Only this room's patient can run %s. Clinicians record check-ins with `/checkin for @patient ...`.", name)
		}
	case CareTeamAnyRoom:
		if rc.Kind != RoomCase && rc.Kind != RoomPatient {
			return "refused:room", fmt.Sprintf("⛔ %s works only in a case room or a patient room.", name)
		}
		if !rc.IsClinician || !rc.OnTeam {
			return "refused:role", fmt.Sprintf("⛔ Only clinicians on this case's care team can run %s.", name)
		}
	case CaseMember:
		switch {
		case rc.Kind != RoomCase && rc.Kind != RoomPatient:
			return "refused:room", fmt.Sprintf("⛔ %s works only in a case room or a patient room.", name)
		case rc.Kind == RoomCase && !(rc.IsClinician && rc.OnTeam):
			return "refused:role", fmt.Sprintf("⛔ Only clinicians on this case's care team can run %s.", name)
		case rc.Kind == RoomPatient && !rc.IsPatient && !(rc.IsClinician && rc.OnTeam):
			return "refused:role", fmt.Sprintf("⛔ Only this room's patient and the care team can run %s.", name)
		}
	case AdminDirect:
		if !rc.IsAdmin {
			return "refused:role", fmt.Sprintf("⛔ Only admins can run %s.", name)
		}
		if rc.Kind != RoomDirect {
			return "refused:room", fmt.Sprintf("⛔ %s works only in a direct chat with me (the admin room), so that nothing is shown to others. "+
				"Start a direct chat with %s and try there.", name, format.SafeMarkdownCode(botID.String()))
		}
	}
	return "", ""
}

// mayRun reports whether the sender could run cmd in this room (used by help to list what applies).
func mayRun(cmd *Command, rc *RoomContext, botID id.UserID) bool {
	outcome, _ := checkAccess(cmd, rc, botID)
	return outcome == ""
}
