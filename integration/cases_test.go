//go:build goolm

package integration

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/homeserver"
)

// clinic is a bot with an admin (named in its config) and helpers to run commands as a person would.
type clinic struct {
	t       *testing.T
	hs      homeserver.Server // the homeserver the bot and its users are on
	bot     *botProcess
	botID   id.UserID
	admin   *user
	adminDM id.RoomID
}

// newClinic starts a clinic on homeserver A (Dendrite) of the shared world.
func newClinic(t *testing.T, extra map[string]any) *clinic {
	t.Helper()
	return newClinicOn(t, onDendrite(t), extra)
}

// newClinicOn starts a clinic on the given homeserver; env adds environment variables (fault injection).
func newClinicOn(t *testing.T, on *onHomeserver, extra map[string]any, env ...string) *clinic {
	t.Helper()
	admin := newUser(t, on.hs, "admin")
	if extra == nil {
		extra = map[string]any{}
	}
	extra["admins"] = []string{admin.UserID.String()}
	c := &clinic{t: t, hs: on.hs, bot: startBotOn(t, on.target, extra, env...), botID: on.hs.UserID(on.target.reg.SenderLocalpart), admin: admin}
	c.adminDM = admin.EncryptedRoomWithBot(c.botID)
	return c
}

// command sends text and returns the bot's reply to it.
func (c *clinic) command(u *user, room id.RoomID, text string) (id.EventID, string) {
	c.t.Helper()
	return u.Command(c.botID, room, text)
}

// mustSucceed runs a command that must succeed (no ⛔) and returns the reply.
func (c *clinic) mustSucceed(u *user, room id.RoomID, text string) string {
	c.t.Helper()
	_, body := c.command(u, room, text)
	if strings.Contains(body, "⛔") || strings.Contains(body, "Usage:") {
		c.t.Fatalf("%q failed: %s", text, body)
	}
	return body
}

// auditOutcome is the outcome the bot recorded for a command event ("" if none).
func (c *clinic) auditOutcome(eventID id.EventID) string {
	c.t.Helper()
	var outcome string
	err := c.bot.db().QueryRow("SELECT outcome FROM audit WHERE event_id = $1 ORDER BY id DESC LIMIT 1", eventID).Scan(&outcome)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		c.t.Fatal(err)
	}
	return outcome
}

// registerClinician makes a user a registered clinician through the admin room.
func (c *clinic) registerClinician(u *user) {
	c.t.Helper()
	c.mustSucceed(c.admin, c.adminDM, "!admin clinician add "+u.UserID.String())
}

// invitedTo reports whether the user ever saw an invite to room.
func invitedTo(u *user, room id.RoomID) bool {
	return len(u.Matching(func(evt *event.Event) bool {
		return evt.RoomID == room && evt.Type == event.StateMember && evt.GetStateKey() == u.UserID.String()
	})) > 0
}

// openCase has a clinician open a case from their direct chat and join both rooms.
func (c *clinic) openCase(doc *user, docDM id.RoomID, args string) (caseRoom, patientRoom id.RoomID) {
	c.t.Helper()
	evtID, body := c.command(doc, docDM, "!case new "+args)
	if !strings.Contains(body, "is open") {
		c.t.Fatalf("case new: %s", body)
	}
	err := c.bot.db().QueryRow("SELECT case_room_id, patient_room_id FROM cases WHERE created_event = $1", evtID).Scan(&caseRoom, &patientRoom)
	if err != nil {
		c.t.Fatalf("case not stored: %v", err)
	}
	doc.JoinInvited(caseRoom)
	doc.JoinInvited(patientRoom)
	return caseRoom, patientRoom
}

func TestCaseFlow(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		c := newClinicOn(t, on, nil)
		doc, nurse, pat := newUser(t, c.hs, "doc"), newUser(t, c.hs, "nurse"), newUser(t, c.hs, "pat")
		c.registerClinician(doc)
		c.registerClinician(nurse)
		docDM := doc.EncryptedRoomWithBot(c.botID)

		caseRoom, patientRoom := c.openCase(doc, docDM, `"Wound care <b>hip</b>" --mrn 0012345`)
		// Rooms are encrypted, and the room state says nothing about the patient.
		for _, room := range []id.RoomID{caseRoom, patientRoom} {
			if encrypted, _ := doc.StateStore.IsEncrypted(context.Background(), room); !encrypted {
				t.Fatalf("room %s is not encrypted", room)
			}
			state, err := doc.State(context.Background(), room)
			if err != nil {
				t.Fatal(err)
			}
			for evtType, byKey := range state {
				for _, evt := range byKey {
					if raw := string(evt.Content.VeryRaw); strings.Contains(raw, "0012345") || strings.Contains(raw, "Wound") {
						t.Fatalf("room state %s reveals the case: %s", evtType.Type, raw)
					}
				}
			}
			if len(state[event.StateMSC4391BotCommand]) == 0 {
				t.Fatalf("room %s has no MSC4391 command descriptions", room)
			}
		}
		teamAdd := state(t, doc, caseRoom, event.StateMSC4391BotCommand)
		if !strings.Contains(teamAdd, `"command":"team add"`) || !strings.Contains(teamAdd, `"type":"user_id"`) {
			t.Fatalf("MSC4391 description of team add missing or untyped: %s", teamAdd)
		}

		welcome := doc.WaitFor(20*time.Second, "the case room welcome", func(evt *event.Event) bool {
			return evt.RoomID == caseRoom && evt.Sender == c.botID && evt.Type == event.EventMessage
		})
		if !welcome.Mautrix.WasEncrypted || !strings.Contains(welcome.Content.AsMessage().Body, "<b>hip</b>") ||
			strings.Contains(welcome.Content.AsMessage().FormattedBody, "<b>hip</b>") {
			t.Fatalf("welcome must be encrypted and show the title as text, not HTML: %+v", welcome.Content.AsMessage())
		}

		c.mustSucceed(doc, caseRoom, "!team add "+nurse.UserID.String()+" wound nurse")
		nurse.JoinInvited(caseRoom)
		nurse.JoinInvited(patientRoom)
		if body := c.mustSucceed(nurse, caseRoom, "!team"); !strings.Contains(body, "wound nurse") || !strings.Contains(body, doc.UserID.String()) {
			t.Fatalf("team list: %s", body)
		}

		c.mustSucceed(doc, caseRoom, "!patient invite "+pat.UserID.String())
		pat.JoinInvited(patientRoom)
		if invitedTo(pat, caseRoom) {
			t.Fatal("the patient was invited to the case room")
		}
		// The patient sees the patient room from their join only, and cannot manage anything.
		if _, body := c.command(pat, patientRoom, "!team add "+pat.UserID.String()); !strings.Contains(body, "⛔") {
			t.Fatalf("patient ran team add: %s", body)
		}
		if _, body := c.command(pat, patientRoom, "!case info"); !strings.Contains(body, "⛔") {
			t.Fatalf("patient ran case info: %s", body)
		}
		if _, err := pat.InviteUser(context.Background(), patientRoom, &mautrix.ReqInviteUser{UserID: nurse.UserID}); err == nil {
			t.Fatal("the patient could invite someone into the patient room")
		}
		// A patient can never be put on a care team.
		if _, body := c.command(c.admin, c.adminDM, "!admin clinician add "+pat.UserID.String()); !strings.Contains(body, "⛔") {
			t.Fatalf("a patient was registered as clinician: %s", body)
		}

		info := c.mustSucceed(doc, caseRoom, "!case info")
		for _, want := range []string{"Wound care", "0012345", nurse.UserID.String(), pat.UserID.String(), "joined"} {
			if !strings.Contains(info, want) {
				t.Errorf("case info lacks %q: %s", want, info)
			}
		}
		if list := c.mustSucceed(doc, docDM, "!case list"); !strings.Contains(list, "Wound care") {
			t.Errorf("case list: %s", list)
		}

		c.mustSucceed(doc, caseRoom, "!team remove "+nurse.UserID.String())
		nurse.WaitFor(20*time.Second, "being removed from the patient room", func(evt *event.Event) bool {
			return evt.RoomID == patientRoom && evt.Type == event.StateMember && evt.GetStateKey() == nurse.UserID.String() &&
				evt.Content.AsMember().Membership == event.MembershipLeave
		})
		if _, body := c.command(doc, caseRoom, "!team remove "+doc.UserID.String()); !strings.Contains(body, "last member") {
			t.Fatalf("the last team member could leave: %s", body)
		}

		c.mustSucceed(doc, caseRoom, "!case close")
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := pat.SendText(context.Background(), patientRoom, "hello?")
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the patient room of a closed case is not read-only")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := doc.SendText(context.Background(), caseRoom, "!team add "+nurse.UserID.String()); err == nil {
			t.Fatal("the case room of a closed case is not read-only")
		}
		var closed sql.NullInt64
		if err := c.bot.db().QueryRow("SELECT closed_at FROM cases WHERE case_room_id = $1", caseRoom).Scan(&closed); err != nil || !closed.Valid {
			t.Fatalf("case not closed in the database: %v", err)
		}
	})
}

// state returns the raw content of the first state event of a type in a room.
func state(t *testing.T, u *user, room id.RoomID, evtType event.Type) string {
	t.Helper()
	st, err := u.State(context.Background(), room)
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, evt := range st[evtType] {
		all = append(all, string(evt.Content.VeryRaw))
	}
	return strings.Join(all, "\n")
}

func TestLeavingCaseRoomLeavesTeam(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		c := newClinicOn(t, on, nil)
		doc, nurse := newUser(t, on.hs, "doc"), newUser(t, on.hs, "nurse")
		c.registerClinician(doc)
		c.registerClinician(nurse)
		docDM := doc.EncryptedRoomWithBot(c.botID)
		caseRoom, patientRoom := c.openCase(doc, docDM, "Follow-up")
		c.mustSucceed(doc, caseRoom, "!team add "+nurse.UserID.String())
		nurse.JoinInvited(caseRoom)
		nurse.JoinInvited(patientRoom)
		if _, err := nurse.LeaveRoom(context.Background(), caseRoom); err != nil {
			t.Fatal(err)
		}
		nurse.WaitFor(20*time.Second, "being taken out of the patient room", func(evt *event.Event) bool {
			return evt.RoomID == patientRoom && evt.Type == event.StateMember && evt.GetStateKey() == nurse.UserID.String() &&
				evt.Content.AsMember().Membership == event.MembershipLeave
		})
		if team := c.mustSucceed(doc, caseRoom, "!team"); strings.Contains(team, nurse.UserID.String()) {
			t.Fatalf("the nurse left but is still on the team: %s", team)
		}
	})
}
