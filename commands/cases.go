package commands

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/internal/safetext"
	"github.com/caseroom/caseroom/store"
)

// MaxTitleLength limits a case title.
const MaxTitleLength = 200

var caseIdentityParams = []Param{
	{Name: "title", Type: Rest, Placeholder: "title", Description: "a short title for the case"},
	{Name: "patient", Type: Word, Flag: true, Optional: true, Placeholder: "Patient/id", Description: "the patient's FHIR Patient reference"},
	{Name: "mrn", Type: Word, Flag: true, Optional: true, Placeholder: "value", Description: "the patient's medical record number"},
}

var caseCommands = []*Command{
	{
		Name:        "case",
		Category:    "Cases",
		Description: "Open, inspect, list, close or adopt cases.",
		Access:      AnyClinician,
		Subcommands: []*Command{
			{
				Name:        "new",
				Description: "Open a case: an encrypted case room for the care team and a patient room.",
				Params:      caseIdentityParams,
				Example:     `"Wound care after hip surgery" --mrn 0012345`,
				Access:      AnyClinician,
				PHI:         true,
				Run:         runCaseNew,
			},
			{Name: "info", Description: "Show this case: patient, care team, rooms and status.", Access: CareTeam, PHI: true, Run: runCaseInfo},
			{Name: "list", Description: "List the cases whose care team you are on.", Access: ClinicianDirect, PHI: true, Run: runCaseList},
			{Name: "close", Description: "Close this case: both rooms become read-only, all records are kept.", Access: CareTeam, Run: runCaseClose},
			{
				Name:        "link",
				Description: "Adopt this room as the case room of a new case (it must be encrypted and hold only clinicians).",
				Params:      caseIdentityParams,
				Example:     `"Diabetes follow-up" --patient Patient/42`,
				Access:      AnyClinician,
				PHI:         true,
				Run:         runCaseLink,
			},
		},
	},
	{
		Name:        "team",
		Category:    "Cases",
		Description: "Show the care team of this case.",
		Access:      CareTeam,
		PHI:         true,
		Run:         runTeamList,
		Subcommands: []*Command{
			{
				Name: "add", Description: "Add a registered clinician to the care team: I invite them to both rooms.",
				Params: []Param{
					{Name: "user", Type: User, Placeholder: "@user:server"},
					{Name: "role", Type: Rest, Optional: true, Placeholder: "role-label", Description: "e.g. wound nurse"},
				},
				Example: "@nurse.kim:clinic.example wound nurse",
				Access:  CareTeam, Run: runTeamAdd,
			},
			{
				Name: "remove", Description: "Remove a clinician from the care team and from both rooms.",
				Params: []Param{{Name: "user", Type: User, Placeholder: "@user:server"}},
				Access: CareTeam, Run: runTeamRemove,
			},
			{Name: "list", Description: "Show the care team of this case.", Access: CareTeam, PHI: true, Run: runTeamList},
		},
	},
	{
		Name:        "patient",
		Category:    "Cases",
		Description: "Show the patient's summary from the EHR: conditions, medications, allergies, last vitals.",
		Access:      CareTeam,
		PHI:         true,
		Run:         runPatientSummary,
		Subcommands: []*Command{
			{
				Name: "invite", Description: "Invite the patient into the patient room (only that room).",
				Params:  []Param{{Name: "user", Type: User, Placeholder: "@user:server"}},
				Example: "@jo.patient:clinic.example",
				Access:  CareTeam, PHI: true, Run: runPatientInvite,
			},
		},
	},
}

// caseIdentity validates the title and patient identity of case new and case link.
func caseIdentity(call *Call) (title, patientRef, mrn string, ok bool) {
	title = strings.TrimSpace(call.Str("title"))
	patientRef, mrn = call.Str("patient"), call.Str("mrn")
	switch {
	case utf8.RuneCountInString(title) > MaxTitleLength:
		call.Usage("The title is %d characters long; at most %d are allowed.", utf8.RuneCountInString(title), MaxTitleLength)
	case patientRef != "" && mrn != "":
		call.Usage("Give either `--patient` or `--mrn`, not both.")
	case patientRef != "" && !validReference(patientRef, "Patient"):
		call.Usage("`--patient` must be a FHIR reference like `Patient/42`, got %s.", format.SafeMarkdownCode(patientRef))
	case mrn != "" && (len(mrn) > 64 || strings.ContainsAny(mrn, " \t")):
		call.Usage("`--mrn` must be one word of at most 64 characters, got %s.", format.SafeMarkdownCode(mrn))
	default:
		return title, patientRef, mrn, true
	}
	return "", "", "", false
}

func runCaseNew(ctx context.Context, call *Call) error {
	title, patientRef, mrn, ok := caseIdentity(call)
	if !ok {
		return nil
	}
	if patientRef, ok = resolveMRN(ctx, call, patientRef, mrn); !ok {
		return nil
	}
	b := call.Bot
	cause := call.Event.ID
	caseRoom, err := b.CreateRoom(ctx, cause, "case-room", bot.RoomSpec{Name: "Case room", Members: []id.UserID{call.Sender}})
	if err != nil {
		return err
	}
	patientRoom, err := b.CreateRoom(ctx, cause, "patient-room", bot.RoomSpec{Name: "Patient room", HistoryJoined: true, Members: []id.UserID{call.Sender}})
	if err != nil {
		return err
	}
	return storeNewCase(call, &store.Case{
		Title: title, PatientRef: patientRef, MRN: mrn, CaseRoomID: caseRoom, PatientRoomID: patientRoom, CreatedBy: call.Sender,
	}, []id.UserID{call.Sender})
}

// storeNewCase stores a case with its first care team and announces it in its rooms and to the sender.
func storeNewCase(call *Call, c *store.Case, team []id.UserID) error {
	b := call.Bot
	call.Write(func(ctx context.Context) error {
		if err := b.Store.Cases.Create(ctx, c, call.Event.ID); err != nil {
			return err
		}
		for _, member := range team {
			if _, err := b.Store.Cases.AddTeamMember(ctx, c.ID, member, "", call.Sender); err != nil {
				return err
			}
		}
		identity := "no patient linked yet"
		if c.PatientRef != "" {
			identity = "patient " + format.SafeMarkdownCode(c.PatientRef)
			if c.MRN != "" {
				identity += ", found in the EHR by MRN " + format.SafeMarkdownCode(c.MRN)
			}
		} else if c.MRN != "" {
			identity = "MRN " + format.SafeMarkdownCode(c.MRN) + " (recorded as given: no EHR is connected to look it up)"
		}
		call.Done(c.ID, "Case #%d **%s** is open (%s).\n\n* Case room (care team only): %s\n* Patient room: %s\n\n"+
			"You are on the care team. Add colleagues with `/team add` and the patient with `/patient invite`, in the case room.",
			c.ID, safetext.Markdown(c.Title), identity, roomLink(c.CaseRoomID), roomLink(c.PatientRoomID))
		call.Send(c.CaseRoomID, event.EventMessage, notice(fmt.Sprintf("**Case #%d: %s**\n\nThis is the case room: only the care team "+
			"is here. Type `/help` to see what you can do.", c.ID, safetext.Markdown(c.Title))))
		call.Send(c.PatientRoomID, event.EventMessage, notice("Welcome to your patient room. Your care team is here to answer "+
			"questions and check in with you. Type `/help` to see what you can do."))
		return nil
	})
	return nil
}

func runCaseLink(ctx context.Context, call *Call) error {
	title, patientRef, mrn, ok := caseIdentity(call)
	if !ok {
		return nil
	}
	b := call.Bot
	roomID := call.Event.RoomID
	if call.Room.Case != nil {
		call.Fail("refused:linked", "⛔ This room already belongs to case #%d.", call.Room.Case.ID)
		return nil
	}
	if encrypted, err := b.IsEncrypted(ctx, roomID); err != nil {
		return err
	} else if !encrypted {
		call.Fail("refused:unencrypted", "⛔ A case room must be end-to-end encrypted. Turn on encryption in the room settings, then try again.")
		return nil
	}
	problems, team, err := roomControlProblems(ctx, b, roomID)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		call.Fail("refused:room-control", "⛔ I can adopt this room as a case room only when I alone decide who is in it "+
			"and how it is protected. What to change:\n\n* %s\n\nOr let me make fresh rooms that are set up this way: "+
			"`/case new <title>` in a direct chat with me.", strings.Join(problems, "\n* "))
		return nil
	}
	if patientRef, ok = resolveMRN(ctx, call, patientRef, mrn); !ok {
		return nil
	}
	patientRoom, err := b.CreateRoom(ctx, call.Event.ID, "patient-room", bot.RoomSpec{Name: "Patient room", HistoryJoined: true, Members: team})
	if err != nil {
		return err
	}
	for _, member := range team {
		if err = b.RaisePower(ctx, roomID, member, bot.MemberPower); err != nil {
			return err
		}
	}
	return storeNewCase(call, &store.Case{
		Title: title, PatientRef: patientRef, MRN: mrn, CaseRoomID: roomID, PatientRoomID: patientRoom, CreatedBy: call.Sender,
	}, team)
}

func runCaseInfo(ctx context.Context, call *Call) error {
	c := call.Room.Case
	team, err := call.Bot.Store.Cases.Team(ctx, c.ID)
	if err != nil {
		return err
	}
	patients, err := call.Bot.Store.Cases.Patients(ctx, c.ID)
	if err != nil {
		return err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "**Case #%d: %s**\n\n", c.ID, safetext.Markdown(c.Title))
	status := "open"
	if !c.Open() {
		status = fmt.Sprintf("closed by %s on %s", format.SafeMarkdownCode(c.ClosedBy.String()), call.When(c.ClosedAt))
	}
	fmt.Fprintf(&sb, "* Status: %s\n* Opened by %s on %s\n", status, format.SafeMarkdownCode(c.CreatedBy.String()), call.When(c.CreatedAt))
	switch {
	case c.PatientRef != "":
		fmt.Fprintf(&sb, "* Patient: %s\n", format.SafeMarkdownCode(c.PatientRef))
	case c.MRN != "":
		fmt.Fprintf(&sb, "* MRN: %s\n", format.SafeMarkdownCode(c.MRN))
	default:
		sb.WriteString("* Patient: not linked\n")
	}
	fmt.Fprintf(&sb, "* Patient room: %s\n", roomLink(c.PatientRoomID))
	if !c.BotRemovedAt.IsZero() {
		fmt.Fprintf(&sb, "* ⚠️ I was removed from one of the case's rooms on %s\n", call.When(c.BotRemovedAt))
	}
	fmt.Fprintf(&sb, "\n**Care team** (%d)\n\n", len(team))
	sb.WriteString(formatTeam(team))
	sb.WriteString("\n**Patient**\n\n")
	if len(patients) == 0 {
		sb.WriteString("No patient invited yet.\n")
	}
	for _, p := range patients {
		state := "invited " + call.When(p.InvitedAt)
		switch {
		case !p.LeftAt.IsZero():
			state = "left " + call.When(p.LeftAt)
		case !p.JoinedAt.IsZero():
			state = "joined " + call.When(p.JoinedAt)
		}
		fmt.Fprintf(&sb, "* %s — %s\n", format.SafeMarkdownCode(p.UserID.String()), state)
	}
	call.Audit("read:case", "ok", c.ID, "")
	call.Reply(sb.String())
	return nil
}

func runCaseList(ctx context.Context, call *Call) error {
	cases, err := call.Bot.Store.Cases.ForMember(ctx, call.Sender)
	if err != nil {
		return err
	}
	if len(cases) == 0 {
		call.Reply("You are not on any care team yet. Open a case with `/case new <title>`.")
		return nil
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "**Your cases** (%d)\n\n", len(cases))
	for _, c := range cases {
		status := "open"
		if !c.Open() {
			status = "closed"
		}
		fmt.Fprintf(&sb, "* #%d **%s** — %s, opened %s — %s\n", c.ID, safetext.Markdown(c.Title), status, call.When(c.CreatedAt), roomLink(c.CaseRoomID))
	}
	call.Audit("read:cases", "ok", 0, fmt.Sprintf("%d cases", len(cases)))
	call.Reply(sb.String())
	return nil
}

func runCaseClose(ctx context.Context, call *Call) error {
	c := call.Room.Case
	if !c.Open() {
		call.Fail("unchanged", "Case #%d was already closed on %s.", c.ID, call.When(c.ClosedAt))
		return nil
	}
	for _, roomID := range []id.RoomID{c.CaseRoomID, c.PatientRoomID} {
		if err := call.Bot.MakeReadOnly(ctx, roomID); err != nil {
			return err
		}
	}
	call.Write(func(ctx context.Context) error {
		if err := call.Bot.Store.Cases.Close(ctx, c.ID, call.Sender); err != nil {
			return err
		}
		call.Done(c.ID, "Case #%d is closed. Both rooms are now read-only; all records are kept.", c.ID)
		call.Send(c.PatientRoomID, event.EventMessage, notice("Your care team has closed this conversation. It stays here for you "+
			"to read, and everything is kept in your record."))
		return nil
	})
	return nil
}

func runTeamList(ctx context.Context, call *Call) error {
	team, err := call.Bot.Store.Cases.Team(ctx, call.Room.Case.ID)
	if err != nil {
		return err
	}
	call.Audit("read:team", "ok", call.Room.Case.ID, fmt.Sprintf("%d members", len(team)))
	call.Reply(fmt.Sprintf("**Care team of case #%d** (%d)\n\n%s", call.Room.Case.ID, len(team), formatTeam(team)))
	return nil
}

func formatTeam(team []*store.TeamMember) string {
	var sb strings.Builder
	for _, m := range team {
		fmt.Fprintf(&sb, "* %s", format.SafeMarkdownCode(m.UserID.String()))
		if m.Label != "" {
			fmt.Fprintf(&sb, " — %s", safetext.Markdown(m.Label))
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

// requireOpen refuses changes to a closed case.
func requireOpen(call *Call) bool {
	if call.Room.Case.Open() {
		return true
	}
	call.Fail("refused:closed", "⛔ Case #%d is closed; nothing can be changed.", call.Room.Case.ID)
	return false
}

func runTeamAdd(ctx context.Context, call *Call) error {
	if !requireOpen(call) {
		return nil
	}
	b, c := call.Bot, call.Room.Case
	user, label := call.UserArg("user"), strings.TrimSpace(call.Str("role"))
	if utf8.RuneCountInString(label) > 100 {
		call.Usage("The role label is %d characters long; at most 100 are allowed.", utf8.RuneCountInString(label))
		return nil
	}
	if allowed, err := b.ServerAllowed(ctx, user.Homeserver()); err != nil {
		return err
	} else if !allowed {
		call.Fail("refused:server", "⛔ %s is on %s, which is not an allowed homeserver, so I will not invite them.",
			format.SafeMarkdownCode(user.String()), format.SafeMarkdownCode(user.Homeserver()))
		return nil
	}
	if isPatient, err := b.Store.Cases.IsAnyPatient(ctx, user); err != nil {
		return err
	} else if isPatient {
		call.Fail("refused:patient", "⛔ %s is a patient; patients are never added to a care team or a case room.", format.SafeMarkdownCode(user.String()))
		return nil
	}
	if isClinician, err := b.Store.Roles.IsClinician(ctx, user); err != nil {
		return err
	} else if !isClinician {
		call.Fail("refused:not-clinician", "⛔ Only registered clinicians can join a care team, and %s is not one. An admin can register them with `/admin clinician add`.",
			format.SafeMarkdownCode(user.String()))
		return nil
	}
	if onTeam, err := b.Store.Cases.IsOnTeam(ctx, c.ID, user); err != nil {
		return err
	} else if onTeam {
		call.Fail("unchanged", "%s is already on the care team.", format.SafeMarkdownCode(user.String()))
		return nil
	}
	for _, roomID := range []id.RoomID{c.CaseRoomID, c.PatientRoomID} {
		if err := b.Invite(ctx, roomID, user, bot.MemberPower, "added to the care team"); err != nil {
			return err
		}
	}
	call.Write(func(ctx context.Context) error {
		if _, err := b.Store.Cases.AddTeamMember(ctx, c.ID, user, label, call.Sender); err != nil {
			return err
		}
		call.Done(c.ID, "%s is on the care team now%s; I invited them to the case room and the patient room.",
			format.SafeMarkdownCode(user.String()), labelSuffix(label))
		return nil
	})
	return nil
}

func labelSuffix(label string) string {
	if label == "" {
		return ""
	}
	return " as " + safetext.Markdown(label)
}

func runTeamRemove(ctx context.Context, call *Call) error {
	if !requireOpen(call) {
		return nil
	}
	b, c := call.Bot, call.Room.Case
	user := call.UserArg("user")
	team, err := b.Store.Cases.Team(ctx, c.ID)
	if err != nil {
		return err
	}
	onTeam := false
	for _, m := range team {
		onTeam = onTeam || m.UserID == user
	}
	if !onTeam {
		call.Fail("not-found", "%s is not on the care team; nothing changed.", format.SafeMarkdownCode(user.String()))
		return nil
	}
	if len(team) == 1 {
		call.Fail("refused:last-member", "⛔ %s is the last member of the care team. Add someone else first, or close the case with `/case close`.",
			format.SafeMarkdownCode(user.String()))
		return nil
	}
	// The team row goes first, in the turn's transaction; the kicks follow once it is stored. A kick the homeserver
	// refuses is retried by the reconciler (bot.Reconciler), which removes from a case's rooms everyone not on it.
	call.Write(func(ctx context.Context) error {
		if _, err := b.Store.Cases.RemoveTeamMember(ctx, c.ID, user); err != nil {
			return err
		}
		call.Done(c.ID, "%s is no longer on the care team; I am removing them from both rooms.", format.SafeMarkdownCode(user.String()))
		return nil
	})
	call.AfterCommit(func() {
		for _, roomID := range []id.RoomID{c.CaseRoomID, c.PatientRoomID} {
			if err := b.Kick(ctx, roomID, user, "removed from the care team"); err != nil {
				zerolog.Ctx(ctx).Warn().Err(err).Int64("case_id", c.ID).Msg("Could not remove a former team member from a room, will retry")
			}
		}
	})
	return nil
}

func runPatientInvite(ctx context.Context, call *Call) error {
	if !requireOpen(call) {
		return nil
	}
	b, c := call.Bot, call.Room.Case
	user := call.UserArg("user")
	if allowed, err := b.ServerAllowed(ctx, user.Homeserver()); err != nil {
		return err
	} else if !allowed {
		call.Fail("refused:server", "⛔ %s is on %s, which is not an allowed homeserver, so I will not invite them.",
			format.SafeMarkdownCode(user.String()), format.SafeMarkdownCode(user.Homeserver()))
		return nil
	}
	if onTeam, err := b.Store.Cases.IsOnTeam(ctx, c.ID, user); err != nil {
		return err
	} else if onTeam || user == b.BotID() {
		call.Fail("refused:team-member", "⛔ %s is on the care team and cannot be this case's patient.", format.SafeMarkdownCode(user.String()))
		return nil
	}
	if isClinician, err := b.Store.Roles.IsClinician(ctx, user); err != nil {
		return err
	} else if isClinician {
		call.Fail("refused:clinician", "⛔ %s is a registered clinician. Invite the patient's own Matrix account.", format.SafeMarkdownCode(user.String()))
		return nil
	}
	// Power level 0: a patient can talk and check in, but not invite anyone or change the room.
	if err := b.Invite(ctx, c.PatientRoomID, user, 0, "invited by your care team"); err != nil {
		return err
	}
	call.Write(func(ctx context.Context) error {
		added, err := b.Store.Cases.AddPatient(ctx, c.ID, user, call.Sender)
		if err != nil {
			return err
		}
		if !added {
			call.Fail("unchanged", "%s was already invited to the patient room.", format.SafeMarkdownCode(user.String()))
			return nil
		}
		call.Done(c.ID, "I invited %s to the patient room (%s). They will see messages from the moment they join, and never this room.",
			format.SafeMarkdownCode(user.String()), roomLink(c.PatientRoomID))
		return nil
	})
	return nil
}

// HandleMembership keeps cases in step with their rooms: patients joining or leaving, clinicians leaving the case
// room (they leave the care team), and the bot being removed.
func (p *Processor) HandleMembership(ctx context.Context, turn *bot.Turn) error {
	evt := turn.Event
	b := turn.Bot
	c, err := b.Store.Cases.ByRoom(ctx, evt.RoomID)
	if err != nil || c == nil {
		return err
	}
	target := id.UserID(evt.GetStateKey())
	membership := evt.Content.AsMember().Membership
	left := membership == event.MembershipLeave || membership == event.MembershipBan
	entry := &store.AuditEntry{Actor: evt.Sender, CaseID: c.ID, RoomID: evt.RoomID, EventID: evt.ID, Outcome: "ok", Detail: target.String()}
	// The bot owns membership: anyone else who is invited or joins without being on the case is removed at once
	// (an invite by someone else, a join after a join rule change, a join over federation). The bot's own invites
	// are left alone while the command that sent them is still storing its result.
	if target != b.BotID() && (membership == event.MembershipInvite || membership == event.MembershipJoin) &&
		!(evt.Sender == b.BotID() && membership == event.MembershipInvite) && !b.RecentlyInvited(evt.RoomID, target) {
		allowed, err := mayBeIn(ctx, b, c, evt.RoomID, target)
		if err != nil {
			return err
		}
		if !allowed {
			return removeIntruder(ctx, turn, c, target, membership)
		}
	}
	switch {
	case target == b.BotID():
		// The bot never leaves a case's rooms by itself: any leave is a removal (a kick, a ban, an operator
		// evacuating the room).
		if !left {
			return nil
		}
		other := c.CaseRoomID
		if other == evt.RoomID {
			other = c.PatientRoomID
		}
		entry.Action = "room:bot-removed"
		turn.Write(func(ctx context.Context) error {
			turn.Send(other, event.EventMessage, notice(fmt.Sprintf("⚠️ I was removed from the %s of case #%d, so I can no longer "+
				"act there. Invite me back to restore it.", roomKindName(c, evt.RoomID), c.ID)))
			if err := b.Store.Cases.MarkBotRemoved(ctx, c.ID); err != nil {
				return err
			}
			return b.Store.Audit.Add(ctx, entry)
		})
	case evt.RoomID == c.PatientRoomID && (membership == event.MembershipJoin || left):
		isPatient, err := b.Store.Cases.IsPatientOf(ctx, c.ID, target)
		if err != nil || !isPatient {
			return err
		}
		if membership == event.MembershipJoin {
			if err := repostPlanSummary(ctx, turn, c); err != nil {
				return err
			}
		}
		entry.Action = "room:patient-" + string(membership)
		turn.Write(func(ctx context.Context) error {
			if err := b.Store.Cases.SetPatientMembership(ctx, c.ID, target, membership == event.MembershipJoin); err != nil {
				return err
			}
			return b.Store.Audit.Add(ctx, entry)
		})
	case evt.RoomID == c.CaseRoomID && left:
		onTeam, err := b.Store.Cases.IsOnTeam(ctx, c.ID, target)
		if err != nil || !onTeam {
			return err
		}
		// Leaving the case room is leaving the care team: out of the patient room too.
		if err = b.Kick(ctx, c.PatientRoomID, target, "left the care team"); err != nil {
			return err
		}
		entry.Action = "room:team-left"
		turn.Write(func(ctx context.Context) error {
			if _, err := b.Store.Cases.RemoveTeamMember(ctx, c.ID, target); err != nil {
				return err
			}
			return b.Store.Audit.Add(ctx, entry)
		})
	}
	turn.Outcome = "membership"
	return nil
}

func roomKindName(c *store.Case, roomID id.RoomID) string {
	if roomID == c.CaseRoomID {
		return "case room"
	}
	return "patient room"
}

func roomLink(roomID id.RoomID) string {
	return fmt.Sprintf("[%s](%s)", safetext.Markdown(roomID.String()), roomID.URI().MatrixToURL())
}

func notice(markdown string) *event.MessageEventContent {
	content := safetext.Render(markdown)
	content.MsgType = event.MsgNotice
	content.Mentions = &event.Mentions{}
	return &content
}
