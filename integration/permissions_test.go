//go:build goolm

package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestPermissionMatrix runs every command as each kind of user, in the room that user can reach, and checks the
// answer, the audit log and that a refused command changed nothing.
func TestPermissionMatrix(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		c := newClinicOn(t, on, nil)
		docOn, docOff, spare := newUser(t, on.hs, "docon"), newUser(t, on.hs, "docoff"), newUser(t, on.hs, "spare")
		pat, pat2, outsider := newUser(t, on.hs, "pat"), newUser(t, on.hs, "pattwo"), newUser(t, on.hs, "outsider")
		remote := newUser(t, getWorld(t).hsB, "remote")
		for _, u := range []*user{docOn, docOff, spare} {
			c.registerClinician(u)
		}
		docOnDM := docOn.EncryptedRoomWithBot(c.botID)
		caseRoom, patientRoom := c.openCase(docOn, docOnDM, "Matrix case")
		c.mustSucceed(docOn, caseRoom, "!patient invite "+pat.UserID.String())
		pat.JoinInvited(patientRoom)
		docOffDM := docOff.EncryptedRoomWithBot(c.botID)
		outsiderDM := outsider.EncryptedRoomWithBot(c.botID)

		// A room on the bot's server that a user of a server that is not allowed has joined over federation.
		mixed := docOn.EncryptedRoomWithBotIn(c.botID, "10") // a version Dendrite can join (it cannot join 12)
		if _, err := docOn.InviteUser(context.Background(), mixed, &mautrix.ReqInviteUser{UserID: remote.UserID}); err != nil {
			t.Fatal(err)
		}
		remote.JoinInvited(mixed)

		type actor struct {
			name string
			u    *user
			room id.RoomID
		}
		admin := actor{"admin", c.admin, c.adminDM}
		onTeam := actor{"clinician on the team", docOn, caseRoom}
		off := actor{"clinician not on the team", docOff, docOffDM}
		patient := actor{"patient", pat, patientRoom}
		out := actor{"outsider", outsider, outsiderDM}
		rem := actor{"user of a server that is not allowed", remote, mixed}
		actors := []actor{admin, onTeam, off, patient, out, rem}

		const ok = "ok"
		// Expected outcome per actor, in the order of actors above.
		matrix := []struct {
			cmd  string
			want [6]string
		}{
			{"!ping", [6]string{ok, ok, ok, ok, ok, "refused:server"}},
			{"!help", [6]string{ok, ok, ok, ok, ok, "refused:server"}},
			{"!case list", [6]string{"refused:role", "refused:room", ok, "refused:role", "refused:role", "refused:server"}},
			{"!case info", [6]string{"refused:room", ok, "refused:room", "refused:room", "refused:room", "refused:server"}},
			{"!team", [6]string{"refused:room", ok, "refused:room", "refused:room", "refused:room", "refused:server"}},
			{"!team add " + spare.UserID.String(), [6]string{"refused:room", ok, "refused:room", "refused:room", "refused:room", "refused:server"}},
			{"!team remove " + spare.UserID.String(), [6]string{"refused:room", ok, "refused:room", "refused:room", "refused:room", "refused:server"}},
			{"!patient invite " + pat2.UserID.String(), [6]string{"refused:room", ok, "refused:room", "refused:room", "refused:room", "refused:server"}},
			{"!admin status", [6]string{ok, "refused:role", "refused:role", "refused:role", "refused:role", "refused:server"}},
			{"!admin clinician list", [6]string{ok, "refused:role", "refused:role", "refused:role", "refused:role", "refused:server"}},
			{"!admin servers allow clinic-z.example", [6]string{ok, "refused:role", "refused:role", "refused:role", "refused:role", "refused:server"}},
			{"!case new Another case", [6]string{"refused:role", ok, ok, "refused:role", "refused:role", "refused:server"}},
		}
		remoteToldOnce := false
		for _, row := range matrix {
			for i, a := range actors {
				want := row.want[i]
				t.Run(fmt.Sprintf("%s by %s", row.cmd, a.name), func(t *testing.T) {
					resp, err := a.u.SendMessageEvent(context.Background(), a.room, event.EventMessage,
						&event.MessageEventContent{MsgType: event.MsgText, Body: row.cmd})
					if err != nil {
						t.Fatal(err)
					}
					if want == "refused:server" {
						// Told why once per room, then refused silently; always audited.
						outcome := c.waitAudit(resp.EventID)
						if outcome != want {
							t.Fatalf("outcome %q, want %q", outcome, want)
						}
						replies := a.u.Matching(replyTo(c.botID, resp.EventID))
						if !remoteToldOnce {
							a.u.WaitFor(20*time.Second, "the explanation", replyTo(c.botID, resp.EventID))
							remoteToldOnce = true
						} else if len(replies) != 0 {
							t.Fatalf("told again: %v", replies[0].Content.AsMessage().Body)
						}
						return
					}
					reply := a.u.WaitFor(30*time.Second, "the reply", replyTo(c.botID, resp.EventID)).Content.AsMessage().Body
					refused := strings.Contains(reply, "⛔")
					if (want == ok) == refused {
						t.Fatalf("reply %q, want outcome %s", reply, want)
					}
					if want != ok {
						if outcome := c.auditOutcome(resp.EventID); outcome != want {
							t.Fatalf("audited outcome %q, want %q (reply %q)", outcome, want, reply)
						}
					}
					if strings.HasPrefix(row.cmd, "!case new") {
						var n int
						_ = c.bot.db().QueryRow("SELECT COUNT(*) FROM cases WHERE created_event = $1", resp.EventID).Scan(&n)
						if n != map[bool]int{true: 1, false: 0}[want == ok] {
							t.Fatalf("%d cases created, want outcome %s", n, want)
						}
					}
				})
			}
		}
		// Refused team changes had no effect: spare was added and removed once, pat2 invited once.
		var adds, patients int
		db := c.bot.db()
		_ = db.QueryRow("SELECT COUNT(*) FROM audit WHERE action = 'command:team add' AND outcome = 'ok'").Scan(&adds)
		_ = db.QueryRow("SELECT COUNT(*) FROM case_patients WHERE user_id = $1", pat2.UserID).Scan(&patients)
		if adds != 1 || patients != 1 {
			t.Fatalf("team adds %d, patient invites %d; want exactly 1 each", adds, patients)
		}
		if invitedTo(pat2, caseRoom) {
			t.Fatal("the patient was invited to the case room")
		}
	})
}

// waitAudit waits for the audit outcome of an event.
func (c *clinic) waitAudit(eventID id.EventID) string {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if outcome := c.auditOutcome(eventID); outcome != "" {
			return outcome
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no audit entry for %s", eventID)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFederatedCareTeam: a clinician on a second homeserver joins a care team once an admin allows that server,
// joins the encrypted case room over federation and runs commands there.
func TestFederatedCareTeam(t *testing.T) {
	c := newClinic(t, nil)
	w := c.bot.w
	doc, remoteDoc := newUser(t, w.hsA, "doc"), newUser(t, w.hsB, "remotedoc")
	c.registerClinician(doc)
	docDM := doc.EncryptedRoomWithBot(c.botID)
	caseRoom, patientRoom := c.openCase(doc, docDM, "Shared care")

	if _, body := c.command(c.admin, c.adminDM, "!admin clinician add "+remoteDoc.UserID.String()); !strings.Contains(body, "not an allowed homeserver") {
		t.Fatalf("a clinician of a server that is not allowed was registered: %s", body)
	}
	c.mustSucceed(c.admin, c.adminDM, "!admin servers allow "+w.hsB.ServerName)
	c.registerClinician(remoteDoc)
	c.mustSucceed(doc, caseRoom, "!team add "+remoteDoc.UserID.String()+" cardiologist")
	remoteDoc.JoinInvited(caseRoom)
	remoteDoc.JoinInvited(patientRoom)
	if body := c.mustSucceed(remoteDoc, caseRoom, "!team"); !strings.Contains(body, "cardiologist") {
		t.Fatalf("team as seen by the remote clinician: %s", body)
	}
	// Denying the server again ends its users' care team memberships and removes them from the case's rooms.
	c.mustSucceed(c.admin, c.adminDM, "!admin servers deny "+w.hsB.ServerName)
	for _, room := range []id.RoomID{caseRoom, patientRoom} {
		roomsKicked(t, c, doc, remoteDoc, room, 60*time.Second)
	}
	if body := c.mustSucceed(doc, caseRoom, "!team"); strings.Contains(body, remoteDoc.UserID.String()) {
		t.Fatalf("the denied server's user is still on the team: %s", body)
	}
}
