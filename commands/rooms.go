package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/store"
)

// controlledPower is what only the bot may do in a case or patient room, with the name shown to users.
type controlledPower struct {
	name  string
	level func(pl *event.PowerLevelsEventContent) int
}

var controlledPowers = []controlledPower{
	{"invite", (*event.PowerLevelsEventContent).Invite},
	{"kick", (*event.PowerLevelsEventContent).Kick},
	{"ban", (*event.PowerLevelsEventContent).Ban},
	{event.StatePowerLevels.Type, eventLevel(event.StatePowerLevels)},
	{event.StateEncryption.Type, eventLevel(event.StateEncryption)},
	{event.StateJoinRules.Type, eventLevel(event.StateJoinRules)},
	{event.StateHistoryVisibility.Type, eventLevel(event.StateHistoryVisibility)},
}

func eventLevel(t event.Type) func(pl *event.PowerLevelsEventContent) int {
	return func(pl *event.PowerLevelsEventContent) int { return pl.GetEventLevel(t) }
}

func parsedState(st map[event.Type]map[string]*event.Event, t event.Type) *event.Event {
	evt := st[t][""]
	if evt != nil {
		if err := evt.Content.ParseRaw(t); err != nil && !errors.Is(err, event.ErrContentAlreadyParsed) {
			return nil
		}
	}
	return evt
}

// roomControlProblems says what keeps the bot from owning a room that is to become a case room: each problem says
// what it is now and what it must be. It also returns the joined clinicians, who become the care team.
func roomControlProblems(ctx context.Context, b *bot.Bot, roomID id.RoomID) (problems []string, team []id.UserID, err error) {
	st, err := b.RoomState(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	if evt := parsedState(st, event.StateEncryption); evt != nil {
		if alg := evt.Content.AsEncryption().Algorithm; alg != id.AlgorithmMegolmV1 {
			problems = append(problems, fmt.Sprintf("The encryption algorithm is %s; it must be %s.",
				format.SafeMarkdownCode(string(alg)), format.SafeMarkdownCode(string(id.AlgorithmMegolmV1))))
		}
	}
	rule := event.JoinRule("(none)")
	if evt := parsedState(st, event.StateJoinRules); evt != nil {
		rule = evt.Content.AsJoinRules().JoinRule
	}
	if rule != event.JoinRuleInvite {
		problems = append(problems, fmt.Sprintf("The join rule is %s, so people can get in without my invite; it must be %s.",
			format.SafeMarkdownCode(string(rule)), format.SafeMarkdownCode(string(event.JoinRuleInvite))))
	}
	pl := &event.PowerLevelsEventContent{}
	if evt := parsedState(st, event.StatePowerLevels); evt != nil {
		pl = evt.Content.AsPowerLevels()
	}
	// In room versions with privileged creators (12 and later), whoever created the room keeps unlimited power,
	// whatever the power levels say: a room created by someone else can never be one that I alone control.
	if create := parsedState(st, event.StateCreate); create != nil {
		pl.CreateEvent = create
		if cc := create.Content.AsCreate(); cc.SupportsCreatorPower() {
			for _, creator := range append([]id.UserID{create.Sender}, cc.AdditionalCreators...) {
				if creator != b.BotID() {
					problems = append(problems, fmt.Sprintf("%s created this room, and in room version %s its creators always keep "+
						"full power, which no setting can take away; open the case with `/case new` instead, or use a room I created.",
						format.SafeMarkdownCode(creator.String()), format.SafeMarkdownCode(string(cc.RoomVersion))))
				}
			}
		}
	}
	botLevel := pl.GetUserLevel(b.BotID())
	needed := 100
	for _, p := range controlledPowers {
		needed = max(needed, p.level(pl))
	}
	if botLevel < needed {
		problems = append(problems, fmt.Sprintf("I have power level %d; I need power level %d to manage who is in the room.", botLevel, needed))
	}
	for _, p := range controlledPowers {
		if l := p.level(pl); l <= bot.MemberPower {
			problems = append(problems, fmt.Sprintf("The power level needed for %s is %d; it must be above %d (care team members get %d).",
				p.name, l, bot.MemberPower, bot.MemberPower))
		}
	}
	lowest := func(level int) (names []string, below int) {
		below = -1
		for _, p := range controlledPowers {
			if l := p.level(pl); level >= l {
				names = append(names, p.name)
				if below < 0 || l < below {
					below = l
				}
			}
		}
		return names, below
	}
	if names, below := lowest(pl.UsersDefault); len(names) > 0 {
		problems = append(problems, fmt.Sprintf("The default power level is %d, enough for anyone to %s; it must be below %d.",
			pl.UsersDefault, strings.Join(names, ", "), below))
	}
	for userID, level := range pl.Users {
		if userID == b.BotID() {
			continue
		}
		if names, below := lowest(level); len(names) > 0 {
			problems = append(problems, fmt.Sprintf("%s has power level %d, enough to %s; it must be below %d (only I may do that).",
				format.SafeMarkdownCode(userID.String()), level, strings.Join(names, ", "), below))
		}
	}
	for stateKey, evt := range st[event.StateMember] {
		if err := evt.Content.ParseRaw(event.StateMember); err != nil && !errors.Is(err, event.ErrContentAlreadyParsed) {
			continue
		}
		member, membership := id.UserID(stateKey), evt.Content.AsMember().Membership
		if member == b.BotID() || (membership != event.MembershipJoin && membership != event.MembershipInvite) {
			continue
		}
		if membership == event.MembershipInvite {
			problems = append(problems, fmt.Sprintf("%s is invited but has not joined; only the care team may be in the room or "+
				"invited, so revoke the invite (I invite team members myself with `/team add` once the case exists).",
				format.SafeMarkdownCode(member.String())))
			continue
		}
		allowed, err := b.ServerAllowed(ctx, member.Homeserver())
		if err != nil {
			return nil, nil, err
		}
		isClinician, err := b.Store.Roles.IsClinician(ctx, member)
		if err != nil {
			return nil, nil, err
		}
		isPatient, err := b.Store.Cases.IsAnyPatient(ctx, member)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case !allowed:
			problems = append(problems, fmt.Sprintf("%s is in the room and is on %s, which is not an allowed homeserver; remove them.",
				format.SafeMarkdownCode(member.String()), format.SafeMarkdownCode(member.Homeserver())))
		case !isClinician || isPatient:
			problems = append(problems, fmt.Sprintf("%s is in the room and is not a registered clinician; only registered clinicians "+
				"may be in a case room, so remove them.", format.SafeMarkdownCode(member.String())))
		default:
			team = append(team, member)
		}
	}
	return problems, team, nil
}

// mayBeIn reports whether a user may be in one of a case's rooms: the care team in both, the case's patient in the
// patient room, all of them on an allowed homeserver.
func mayBeIn(ctx context.Context, b *bot.Bot, c *store.Case, roomID id.RoomID, userID id.UserID) (bool, error) {
	if userID == b.BotID() {
		return true, nil
	}
	if allowed, err := b.ServerAllowed(ctx, userID.Homeserver()); err != nil || !allowed {
		return false, err
	}
	if onTeam, err := b.Store.Cases.IsOnTeam(ctx, c.ID, userID); err != nil || onTeam {
		return onTeam, err
	}
	if roomID != c.PatientRoomID {
		return false, nil
	}
	return b.Store.Cases.IsPatientOf(ctx, c.ID, userID)
}

// roomsNotice is an admin or team notice about a case's room (no PHI: case number, room and user IDs only).
func roomsNotice(markdown string, args ...any) *event.MessageEventContent {
	return notice(fmt.Sprintf(markdown, args...))
}

// removeIntruder kicks someone who got into a case's room without being on it, and tells the team and the admins.
func removeIntruder(ctx context.Context, turn *bot.Turn, c *store.Case, target id.UserID, membership event.Membership) error {
	b, evt := turn.Bot, turn.Event
	if err := b.Kick(ctx, evt.RoomID, target, "not on this case's care team: only the care team (and, in the patient room, "+
		"the patient) may be here, and only caseroom adds people"); err != nil {
		return err
	}
	how := "joined"
	if membership == event.MembershipInvite {
		how = "was invited by " + format.SafeMarkdownCode(evt.Sender.String())
	}
	text := fmt.Sprintf("⚠️ %s %s the %s of case #%d without being on the care team. I removed them at once. "+
		"Only I add people to case rooms (`/team add`, `/patient invite`).",
		format.SafeMarkdownCode(target.String()), how, roomKindName(c, evt.RoomID), c.ID)
	entry := &store.AuditEntry{Actor: evt.Sender, Action: "room:intruder-removed", Outcome: "ok", CaseID: c.ID,
		RoomID: evt.RoomID, EventID: evt.ID, Detail: target.String() + " " + string(membership)}
	zerolog.Ctx(ctx).Warn().Stringer("removed_user", target).Int64("case_id", c.ID).Msg("Removed a user who was not on the case")
	turn.Outcome = "intruder-removed"
	turn.Send(c.CaseRoomID, event.EventMessage, notice(text))
	if err := b.NotifyAdmins(ctx, turn, notice(text+fmt.Sprintf(" (room %s)", format.SafeMarkdownCode(evt.RoomID.String())))); err != nil {
		return err
	}
	turn.Write(func(ctx context.Context) error { return b.Store.Audit.Add(ctx, entry) })
	return nil
}

// HandleRoomState watches the encryption and join rules of case and patient rooms: a join rule other than invite
// is set back, and any encryption change the bot did not make alerts the admins and the team (sending into a room
// whose algorithm is no longer megolm stops in the bot's sender).
func (p *Processor) HandleRoomState(ctx context.Context, turn *bot.Turn) error {
	evt, b := turn.Event, turn.Bot
	c, err := b.Store.Cases.ByRoom(ctx, evt.RoomID)
	if err != nil || c == nil {
		return err
	}
	where := fmt.Sprintf("the %s of case #%d (%s)", roomKindName(c, evt.RoomID), c.ID, format.SafeMarkdownCode(evt.RoomID.String()))
	var text, action string
	switch evt.Type {
	case event.StateEncryption:
		alg := evt.Content.AsEncryption().Algorithm
		if evt.Sender == b.BotID() && alg == id.AlgorithmMegolmV1 {
			return nil
		}
		action = "room:encryption-changed"
		if alg != id.AlgorithmMegolmV1 {
			text = fmt.Sprintf("🚨 %s changed the encryption of %s to %s. Messages there would no longer be end-to-end "+
				"encrypted as before, so I send nothing more into that room. Close the case and open a new one.",
				format.SafeMarkdownCode(evt.Sender.String()), where, format.SafeMarkdownCode(string(alg)))
		} else {
			text = fmt.Sprintf("🚨 %s changed the encryption settings of %s (still %s). Only I should change them; check the room.",
				format.SafeMarkdownCode(evt.Sender.String()), where, format.SafeMarkdownCode(string(alg)))
		}
	case event.StateJoinRules:
		rule := evt.Content.AsJoinRules().JoinRule
		if evt.Sender == b.BotID() || rule == event.JoinRuleInvite {
			return nil
		}
		action = "room:join-rule-changed"
		if err := b.SetJoinRule(ctx, evt.RoomID, event.JoinRuleInvite); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Could not set the join rule back to invite")
			text = fmt.Sprintf("🚨 %s changed the join rule of %s to %s and I could not set it back to `invite`. "+
				"Anyone who joins without being on the case is removed.", format.SafeMarkdownCode(evt.Sender.String()), where,
				format.SafeMarkdownCode(string(rule)))
		} else {
			text = fmt.Sprintf("⚠️ %s changed the join rule of %s to %s; I set it back to `invite`. Anyone who joined "+
				"meanwhile without being on the case is removed.", format.SafeMarkdownCode(evt.Sender.String()), where,
				format.SafeMarkdownCode(string(rule)))
		}
	default:
		return nil
	}
	zerolog.Ctx(ctx).Warn().Str("action", action).Int64("case_id", c.ID).Msg("Room state changed by someone else")
	turn.Outcome = action
	if evt.RoomID != c.CaseRoomID {
		turn.Send(c.CaseRoomID, event.EventMessage, notice(text))
	}
	if err := b.NotifyAdmins(ctx, turn, notice(text)); err != nil {
		return err
	}
	entry := &store.AuditEntry{Actor: evt.Sender, Action: action, Outcome: "alert", CaseID: c.ID, RoomID: evt.RoomID, EventID: evt.ID,
		Detail: string(evt.Content.VeryRaw)}
	turn.Write(func(ctx context.Context) error { return b.Store.Audit.Add(ctx, entry) })
	return nil
}

// Reconcile removes from the rooms of open cases everyone who may not be there (see mayBeIn): a team member whose
// removal's kick failed, users of a server that was denied, anyone who got in while the bot was not looking.
func (p *Processor) Reconcile(ctx context.Context, b *bot.Bot) error {
	return reconcileRooms(ctx, b)
}

func reconcileRooms(ctx context.Context, b *bot.Bot) error {
	cases, err := b.Store.Cases.OpenCases(ctx)
	if err != nil {
		return err
	}
	var firstErr error
	for _, c := range cases {
		if !c.BotRemovedAt.IsZero() {
			continue
		}
		for _, roomID := range []id.RoomID{c.CaseRoomID, c.PatientRoomID} {
			members, err := b.Members(ctx, roomID)
			if err != nil {
				return err
			}
			for userID := range members {
				serverAllowed, err := b.ServerAllowed(ctx, userID.Homeserver())
				if err != nil {
					return err
				}
				if serverAllowed && b.RecentlyInvited(roomID, userID) {
					continue
				}
				ok, err := mayBeIn(ctx, b, c, roomID, userID)
				if err != nil {
					return err
				}
				if ok {
					continue
				}
				if err = b.Kick(ctx, roomID, userID, "no longer on this case"); err != nil {
					zerolog.Ctx(ctx).Warn().Err(err).Stringer("user_id", userID).Int64("case_id", c.ID).Msg("Could not remove a user from a case room, will retry")
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				entry := &store.AuditEntry{Actor: b.BotID(), Action: "room:member-removed", Outcome: "ok", CaseID: c.ID, RoomID: roomID,
					Detail: userID.String()}
				if err = b.Store.Audit.Add(ctx, entry); err != nil {
					return err
				}
			}
		}
	}
	return firstErr
}
