//go:build goolm

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/fhirtest"
	"github.com/caseroom/caseroom/internal/fhirtest/fhirtesting"
)

// gateEHR is what a test knows to check a check-in in the bot's database and in the FHIR server.
type gateEHR struct {
	t   *testing.T
	c   *clinic
	srv *fhirtest.Server
	cli *ehr.Client
}

// status is the status of the only Observation with the identifier, failing unless there is exactly one.
func (g *gateEHR) status(identifier string) string {
	g.t.Helper()
	if n := countByIdentifier(g.t, g.srv, identifier); n != 1 {
		g.t.Fatalf("%d Observations with identifier %s, want 1", n, identifier)
	}
	bundle, err := g.cli.Search(context.Background(), "Observation", ehr.IdentifierQuery(ehr.ObservationIdentifierSystem, identifier))
	if err != nil {
		g.t.Fatal(err)
	}
	found, err := bundle.Observations()
	if err != nil || len(found) != 1 {
		g.t.Fatalf("Observation %s: %d found, %v", identifier, len(found), err)
	}
	return found[0].Status
}

// waitStatus waits until the Observation with the identifier has the status.
func (g *gateEHR) waitStatus(identifier, want string) {
	g.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := g.status(identifier)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("Observation %s has status %q, want %q", identifier, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// record is the database state of the check-in of a message: its number of versions, its latest status and its
// EHR outbox items.
func (g *gateEHR) record(eventID id.EventID) (versions int, status string, outbox int) {
	g.t.Helper()
	db := g.c.bot.db()
	if err := db.QueryRow(`SELECT COUNT(*), COALESCE(MAX(v.status || ''), '') FROM checkin_versions v JOIN checkins c ON c.id = v.checkin_id
		WHERE c.event_id = $1`, eventID).Scan(&versions, &status); err != nil {
		g.t.Fatal(err)
	}
	if versions > 0 {
		if err := db.QueryRow(`SELECT v.status FROM checkin_versions v JOIN checkins c ON c.id = v.checkin_id
			WHERE c.event_id = $1 ORDER BY v.version DESC LIMIT 1`, eventID).Scan(&status); err != nil {
			g.t.Fatal(err)
		}
	}
	if err := db.QueryRow(`SELECT COUNT(*) FROM ehr_outbox o JOIN checkins c ON c.id = o.record_id
		WHERE o.kind = 'checkin' AND c.event_id = $1`, eventID).Scan(&outbox); err != nil {
		g.t.Fatal(err)
	}
	return
}

// registerClinician registers a clinician linked to a new Practitioner, so that their records can be filed.
func (g *gateEHR) registerClinician(u *user) {
	g.t.Helper()
	ref := seedResource(g.t, g.cli, "", `{"resourceType":"Practitioner","name":[{"family":"Lee","given":["Test"]}]}`)
	g.c.mustSucceed(g.c.admin, g.c.adminDM, "!admin clinician add "+u.UserID.String()+" --practitioner "+ref)
}

// requireUnchanged checks that a filed check-in still has one final version, one outbox item and a final
// Observation.
func (g *gateEHR) requireUnchanged(eventID id.EventID, kind string) {
	g.t.Helper()
	if versions, status, outbox := g.record(eventID); versions != 1 || status != "final" || outbox != 1 {
		g.t.Errorf("check-in %s: %d versions, status %q, %d outbox items; want it untouched (1, final, 1)", eventID, versions, status, outbox)
	}
	if status := g.status(string(eventID) + "/" + kind); status != "final" {
		g.t.Errorf("Observation %s/%s has status %q, want final", eventID, kind, status)
	}
}

// gateWait is user.waitFor failing t (a subtest) rather than the test that made the user.
func gateWait(t *testing.T, u *user, timeout time.Duration, what string, match func(*event.Event) bool) *event.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if evts := u.Matching(match); len(evts) > 0 {
			return evts[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not see %s within %s", u.UserID, what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gateAudit waits for the audit outcome of an event, failing t.
func gateAudit(t *testing.T, c *clinic, evtID id.EventID) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var outcome string
		err := c.bot.db().QueryRow("SELECT outcome FROM audit WHERE event_id = $1 ORDER BY id DESC LIMIT 1", evtID).Scan(&outcome)
		if err == nil {
			return outcome
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit entry for %s", evtID)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// gateFiled sends a check-in command and waits until the EHR has it.
func gateFiled(t *testing.T, c *clinic, u *user, room id.RoomID, text string) (checkin id.EventID, confirmation id.EventID) {
	t.Helper()
	resp, err := u.SendMessageEvent(context.Background(), room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: text})
	if err != nil {
		t.Fatal(err)
	}
	reply := gateWait(t, u, 30*time.Second, "the reply to "+text, replyTo(c.botID, resp.EventID))
	if body := reply.Content.AsMessage().Body; !strings.Contains(body, "Recorded") {
		t.Fatalf("%q: %s", text, body)
	}
	gateWait(t, u, 30*time.Second, "the filed reaction", filedReaction(c.botID, resp.EventID))
	return resp.EventID, reply.ID
}

// gateSendEncrypted megolm-encrypts content as an event of any type (what a client can do, not what Element does)
// and sends it; withoutOuterRelation drops the relation the encryption copies to the cleartext part, so that it
// exists only inside the ciphertext.
// gateSendEdit sends an edit from room the way a client would; where the homeserver refuses an edit whose relation
// points into another room (Synapse does, "Relations must be in the same room"), it sends it with the relation only
// inside the ciphertext, which no homeserver can check.
func gateSendEdit(t *testing.T, u *user, room id.RoomID, content *event.MessageEventContent) id.EventID {
	t.Helper()
	resp, err := u.SendMessageEvent(context.Background(), room, event.EventMessage, content)
	if err == nil {
		return resp.EventID
	}
	if !strings.Contains(err.Error(), "Relations must be in the same room") {
		t.Fatal(err)
	}
	t.Logf("the homeserver refused the edit's cross-room relation (%v); sending it inside the ciphertext only", err)
	return gateSendEncrypted(t, u, room, event.EventMessage, content, true)
}

func gateSendEncrypted(t *testing.T, u *user, room id.RoomID, evtType event.Type, content any, withoutOuterRelation bool) id.EventID {
	t.Helper()
	ctx := context.Background()
	// An ordinary encrypted message first makes sure the room's megolm session is shared with the bot.
	if _, err := u.SendText(ctx, room, "hello"); err != nil {
		t.Fatal(err)
	}
	encrypted, err := u.CryptoHelper.Encrypt(ctx, room, evtType, content)
	if err != nil {
		t.Fatal(err)
	}
	if withoutOuterRelation {
		encrypted.RelatesTo = nil
	}
	resp, err := u.SendMessageEvent(ctx, room, event.EventEncrypted, encrypted, mautrix.ReqSendEvent{DontEncrypt: true})
	if err != nil {
		t.Fatal(err)
	}
	return resp.EventID
}

// gateEdit is the content of an edit of a check-in message.
func gateEdit(original id.EventID, text string) *event.MessageEventContent {
	return &event.MessageEventContent{
		MsgType: event.MsgText, Body: "* " + text,
		NewContent: &event.MessageEventContent{MsgType: event.MsgText, Body: text},
		RelatesTo:  &event.RelatesTo{Type: event.RelReplace, EventID: original},
	}
}

// gateRefused waits for the bot's ⛔ answer to an event in its room and for its audit entry, and returns both.
func gateRefused(t *testing.T, c *clinic, u *user, room id.RoomID, evtID id.EventID) (body, outcome string) {
	t.Helper()
	reply := gateWait(t, u, 30*time.Second, "the refusal of "+evtID.String(), func(evt *event.Event) bool {
		return evt.RoomID == room && replyTo(c.botID, evtID)(evt)
	})
	body = reply.Content.AsMessage().Body
	if !strings.Contains(body, "⛔") {
		t.Errorf("answer to %s = %q, want a refusal", evtID, body)
	}
	outcome = gateAudit(t, c, evtID)
	if !strings.HasPrefix(outcome, "refused:") {
		t.Errorf("audit outcome of %s = %q, want refused:...", evtID, outcome)
	}
	return body, outcome
}

// TestGateAttacks attacks the one gate every record change passes, through real clients, and checks that each
// attack is refused in the room it came from, audited, and leaves the database and the EHR unchanged; and that
// the legitimate paths still work.
func TestGateAttacks(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		srv := fhirtesting.Start(t)
		fhir := ehrClient(t, srv)
		patientRef := seedPatient(t, fhir, "Okafor", "MRN-GATE")
		// The bot's kicks of the remote clinician fail, so that after `servers deny` they are still in the patient room
		// (as when their homeserver does not pass the kick on) and their edit reaches the bot.
		// Rooms of version 10, which the Dendrite of the remote clinician can join (Synapse's default is 12).
		c := newClinicOn(t, on, map[string]any{"ehr": map[string]any{"url": srv.URL, "timeout": "5s"},
			"homeserver": map[string]any{"room_version": "10"}},
			"CASEROOM_FAULT_KICK_FAIL=remotedoc_", "CASEROOM_FAULT_KICK_FAIL_FOR=1h")
		g := &gateEHR{t: t, c: c, srv: srv, cli: fhir}
		w := c.bot.w
		doc, pat := newUser(t, c.hs, "doc"), newUser(t, c.hs, "pat")
		g.registerClinician(doc)
		docDM := doc.EncryptedRoomWithBot(c.botID)
		caseRoom, patientRoom := c.openCase(doc, docDM, "Heart failure follow-up --patient "+patientRef)
		c.mustSucceed(doc, caseRoom, "!patient invite "+pat.UserID.String())
		pat.JoinInvited(patientRoom)
		ctx := context.Background()

		t.Run("ForgedDeletionByPatientOfClinicianReading", func(t *testing.T) {
			g.t = t
			reading, _ := gateFiled(t, c, doc, patientRoom, "!checkin for "+pat.UserID.String()+" hr=71 by phone")
			forged := gateSendEncrypted(t, pat, patientRoom, event.EventRedaction, &event.RedactionEventContent{Redacts: reading}, false)
			if _, outcome := gateRefused(t, c, pat, patientRoom, forged); outcome != "refused:encrypted-redaction" {
				t.Errorf("outcome %q, want refused:encrypted-redaction", outcome)
			}
			g.requireUnchanged(reading, "hr")
		})

		t.Run("ForgedDeletionByOutsiderFromOwnDM", func(t *testing.T) {
			g.t = t
			checkin, _ := gateFiled(t, c, pat, patientRoom, "!checkin hr=72")
			outsider := newUser(t, c.hs, "outsider")
			dm := outsider.EncryptedRoomWithBot(c.botID)
			forged := gateSendEncrypted(t, outsider, dm, event.EventRedaction, &event.RedactionEventContent{Redacts: checkin}, false)
			gateRefused(t, c, outsider, dm, forged)
			g.requireUnchanged(checkin, "hr")
			if n := len(doc.Matching(func(evt *event.Event) bool {
				return evt.RoomID == caseRoom && evt.Sender == c.botID && strings.Contains(evt.Content.AsMessage().Body, "deleted")
			})); n != 0 {
				t.Errorf("the case room was told of a deletion %d times", n)
			}
		})

		t.Run("RealRedactionByNonAuthorWithoutPower", func(t *testing.T) {
			g.t = t
			reading, _ := gateFiled(t, c, doc, patientRoom, "!checkin for "+pat.UserID.String()+" hr=73")
			resp, err := pat.RedactEvent(ctx, patientRoom, reading)
			if err == nil {
				gateRefused(t, c, pat, patientRoom, resp.EventID)
			} else {
				t.Logf("the homeserver refused the redaction itself: %v", err)
				time.Sleep(2 * time.Second)
			}
			g.requireUnchanged(reading, "hr")
		})

		t.Run("RealRedactionByOutsiderInOwnDM", func(t *testing.T) {
			g.t = t
			checkin, _ := gateFiled(t, c, pat, patientRoom, "!checkin hr=70")
			outsider := newUser(t, c.hs, "outsider")
			dm := outsider.EncryptedRoomWithBot(c.botID)
			// The outsider may redact anything in their own room; the event ID is of the patient room. Dendrite refuses
			// this at its client API (as it refuses a redaction without power above); a homeserver that sends such a
			// redaction anyway (e.g. over federation) meets the bot's own check.
			resp, err := outsider.RedactEvent(ctx, dm, checkin)
			if err == nil {
				if _, outcome := gateRefused(t, c, outsider, dm, resp.EventID); outcome != "refused:role" {
					t.Errorf("outcome %q, want refused:role", outcome)
				}
			} else {
				t.Logf("the homeserver refused the redaction itself: %v", err)
				time.Sleep(2 * time.Second)
			}
			g.requireUnchanged(checkin, "hr")
		})

		t.Run("EditFromAnotherRoom", func(t *testing.T) {
			g.t = t
			checkin, _ := gateFiled(t, c, pat, patientRoom, "!checkin hr=74")
			dm := pat.EncryptedRoomWithBot(c.botID)
			editID := gateSendEdit(t, pat, dm, gateEdit(checkin, "!checkin hr=140"))
			if _, outcome := gateRefused(t, c, pat, dm, editID); outcome != "refused:room" {
				t.Errorf("outcome %q, want refused:room", outcome)
			}
			g.requireUnchanged(checkin, "hr")
		})

		t.Run("EditRelationOnlyInCiphertextFromAnotherRoom", func(t *testing.T) {
			g.t = t
			checkin, _ := gateFiled(t, c, pat, patientRoom, "!checkin hr=75")
			dm := pat.EncryptedRoomWithBot(c.botID)
			edit := gateSendEncrypted(t, pat, dm, event.EventMessage, gateEdit(checkin, "!checkin hr=141"), true)
			if _, outcome := gateRefused(t, c, pat, dm, edit); outcome != "refused:room" {
				t.Errorf("outcome %q, want refused:room", outcome)
			}
			g.requireUnchanged(checkin, "hr")
		})

		t.Run("EditAfterTeamRemove", func(t *testing.T) {
			g.t = t
			nurse := newUser(t, c.hs, "nurse")
			g.registerClinician(nurse)
			c.mustSucceed(doc, caseRoom, "!team add "+nurse.UserID.String()+" nurse")
			nurse.JoinInvited(caseRoom)
			nurse.JoinInvited(patientRoom)
			reading, _ := gateFiled(t, c, nurse, patientRoom, "!checkin for "+pat.UserID.String()+" hr=76")
			nurseDM := nurse.EncryptedRoomWithBot(c.botID)
			c.mustSucceed(doc, caseRoom, "!team remove "+nurse.UserID.String())
			// Kicked from the rooms, the nurse still shares a direct chat with the bot.
			editID := gateSendEdit(t, nurse, nurseDM, gateEdit(reading, "!checkin for "+pat.UserID.String()+" hr=150"))
			if _, outcome := gateRefused(t, c, nurse, nurseDM, editID); outcome != "refused:role" {
				t.Errorf("outcome %q, want refused:role", outcome)
			}
			g.requireUnchanged(reading, "hr")
		})

		t.Run("EditByUserOfDeniedServer", func(t *testing.T) {
			g.t = t
			remote := newUser(t, w.hsB, "remotedoc")
			c.mustSucceed(c.admin, c.adminDM, "!admin servers allow "+w.hsB.ServerName)
			g.registerClinician(remote)
			c.mustSucceed(doc, caseRoom, "!team add "+remote.UserID.String()+" cardiologist")
			remote.JoinInvited(caseRoom)
			remote.JoinInvited(patientRoom)
			reading, _ := gateFiled(t, c, remote, patientRoom, "!checkin for "+pat.UserID.String()+" hr=77")
			c.mustSucceed(c.admin, c.adminDM, "!admin servers deny "+w.hsB.ServerName)
			// The deny ends the care team membership; the kick out of the patient room fails (see the clinic's faults),
			// so an edit sent from there reaches the bot and must be refused for the server.
			editID := gateSendEdit(t, remote, patientRoom, gateEdit(reading, "!checkin for "+pat.UserID.String()+" hr=151"))
			if outcome := gateAudit(t, c, editID); outcome != "refused:server" {
				t.Errorf("outcome %q, want refused:server", outcome)
			}
			g.requireUnchanged(reading, "hr")
		})

		t.Run("ClearTextCheckInInEncryptedRoom", func(t *testing.T) {
			g.t = t
			resp, err := pat.SendMessageEvent(ctx, patientRoom, event.EventMessage,
				&event.MessageEventContent{MsgType: event.MsgText, Body: "!checkin hr=78 clear text"}, mautrix.ReqSendEvent{DontEncrypt: true})
			if err != nil {
				t.Fatal(err)
			}
			gateWait(t, pat, 5*time.Second, "its clear-text message", func(evt *event.Event) bool {
				return evt.ID == resp.EventID && evt.Type == event.EventMessage && !evt.Mautrix.WasEncrypted
			})
			body, outcome := gateRefused(t, c, pat, patientRoom, resp.EventID)
			if outcome != "refused:cleartext" || !strings.Contains(body, "encrypt") {
				t.Errorf("refusal %q (%s), want refused:cleartext explaining encryption", body, outcome)
			}
			gateWait(t, pat, 30*time.Second, "the bot's redaction of the clear text", func(evt *event.Event) bool {
				return evt.Type == event.EventRedaction && evt.Sender == c.botID && evt.Redacts == resp.EventID
			})
			if versions, _, outbox := g.record(resp.EventID); versions != 0 || outbox != 0 {
				t.Errorf("clear-text check-in stored: %d versions, %d outbox items", versions, outbox)
			}
			if n := countByIdentifier(t, srv, string(resp.EventID)+"/hr"); n != 0 {
				t.Errorf("%d Observations of the clear-text check-in", n)
			}
		})

		t.Run("DeviceBelowMinTrust", func(t *testing.T) {
			g.t = t
			unsigned := newUserDevice(t, c.hs, "unsigned", false)
			case2, room := c.openCase(doc, docDM, "Unverified session")
			c.mustSucceed(doc, case2, "!patient invite "+unsigned.UserID.String())
			unsigned.JoinInvited(room)
			resp, err := unsigned.SendMessageEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "!checkin hr=79"})
			if err != nil {
				t.Fatal(err)
			}
			body, outcome := gateRefused(t, c, unsigned, room, resp.EventID)
			if outcome != "refused:trust" || !strings.Contains(body, "verify") {
				t.Errorf("refusal %q (%s), want refused:trust saying how to verify", body, outcome)
			}
			if versions, _, _ := g.record(resp.EventID); versions != 0 {
				t.Errorf("check-in from an unverified device stored")
			}
		})

		// The legitimate paths.
		t.Run("OwnEditInSameRoom", func(t *testing.T) {
			g.t = t
			checkin, _ := gateFiled(t, c, pat, patientRoom, "!checkin hr=80")
			editID := gateSendEdit(t, pat, patientRoom, gateEdit(checkin, "!checkin hr=82"))
			if body := gateWait(t, pat, 30*time.Second, "the correction", replyTo(c.botID, editID)).Content.AsMessage().Body; !strings.Contains(body, "Corrected") {
				t.Fatalf("answer to the edit: %s", body)
			}
			if versions, status, _ := g.record(checkin); versions != 2 || status != "amended" {
				t.Errorf("after the edit: %d versions, status %q", versions, status)
			}
			g.waitStatus(string(checkin)+"/hr", "amended")
		})

		t.Run("OwnDeletionByRealRedaction", func(t *testing.T) {
			g.t = t
			checkin, confirmation := gateFiled(t, c, pat, patientRoom, "!checkin hr=83")
			if _, err := pat.RedactEvent(ctx, patientRoom, checkin); err != nil {
				t.Fatal(err)
			}
			g.waitStatus(string(checkin)+"/hr", "entered-in-error")
			if versions, status, _ := g.record(checkin); versions != 2 || status != "entered-in-error" {
				t.Errorf("after the deletion: %d versions, status %q", versions, status)
			}
			gateWait(t, pat, 30*time.Second, "the confirmation marked as deleted", func(evt *event.Event) bool {
				if evt.Sender != c.botID || evt.Type != event.EventMessage {
					return false
				}
				content := evt.Content.AsMessage()
				return content.RelatesTo.GetReplaceID() == confirmation && content.NewContent != nil &&
					strings.Contains(content.NewContent.Body, "entered in error")
			})
		})

		t.Run("TeamMemberAcksAlert", func(t *testing.T) {
			g.t = t
			gateFiled(t, c, pat, patientRoom, "!checkin spo2=85")
			alert := gateWait(t, doc, 30*time.Second, "the alert", func(evt *event.Event) bool {
				if evt.RoomID != caseRoom || evt.Sender != c.botID || evt.Type != event.EventMessage {
					return false
				}
				body := evt.Content.AsMessage().Body
				return strings.Contains(body, "Alert #") && strings.Contains(body, "SpO2 85%")
			})
			encrypted, err := doc.Crypto.Encrypt(ctx, caseRoom, event.EventReaction, &event.ReactionEventContent{
				RelatesTo: event.RelatesTo{Type: event.RelAnnotation, EventID: alert.ID, Key: "✅"},
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err = doc.SendMessageEvent(ctx, caseRoom, event.EventEncrypted, encrypted); err != nil {
				t.Fatal(err)
			}
			botEvent(doc, c, caseRoom, "acknowledged by `"+doc.UserID.String()+"`")
		})

		t.Run("EditAfterCaseClose", func(t *testing.T) {
			g.t = t
			checkin, _ := gateFiled(t, c, pat, patientRoom, "!checkin hr=84")
			dm := pat.EncryptedRoomWithBot(c.botID)
			c.mustSucceed(doc, caseRoom, "!case close")
			// The closed case's rooms are read-only; the patient's direct chat is not.
			editID := gateSendEdit(t, pat, dm, gateEdit(checkin, "!checkin hr=142"))
			if _, outcome := gateRefused(t, c, pat, dm, editID); outcome != "refused:closed" {
				t.Errorf("outcome %q, want refused:closed", outcome)
			}
			g.requireUnchanged(checkin, "hr")
		})
	})
}
