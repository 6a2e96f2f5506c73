//go:build goolm

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// patientCase opens a case and brings a patient into its patient room.
func patientCase(t *testing.T, c *clinic) (doc, pat *user, caseRoom, patientRoom id.RoomID) {
	t.Helper()
	doc, pat = newUser(t, c.hs, "doc"), newUser(t, c.hs, "pat")
	c.registerClinician(doc)
	docDM := doc.EncryptedRoomWithBot(c.botID)
	caseRoom, patientRoom = c.openCase(doc, docDM, "Home monitoring")
	c.mustSucceed(doc, caseRoom, "!patient invite "+pat.UserID.String())
	pat.JoinInvited(patientRoom)
	return doc, pat, caseRoom, patientRoom
}

// botNotice waits for a notice of the bot in a room whose body contains all of want.
func botNotice(u *user, c *clinic, room id.RoomID, want ...string) string {
	u.T.Helper()
	evt := u.WaitFor(30*time.Second, "a notice containing "+strings.Join(want, ", "), func(evt *event.Event) bool {
		if evt.RoomID != room || evt.Sender != c.botID || evt.Type != event.EventMessage {
			return false
		}
		body := evt.Content.AsMessage().Body
		for _, w := range want {
			if !strings.Contains(body, w) {
				return false
			}
		}
		return true
	})
	return evt.Content.AsMessage().Body
}

func (c *clinic) countRows(query string, args ...any) int {
	c.t.Helper()
	var n int
	if err := c.bot.db().QueryRow(query, args...).Scan(&n); err != nil {
		c.t.Fatal(err)
	}
	return n
}

func TestCheckInFlow(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		c := newClinicOn(t, on, nil)
		doc, pat, caseRoom, patientRoom := patientCase(t, c)
		ctx := context.Background()

		first, reply := c.command(pat, patientRoom, "!checkin bp=142/91 hr=88 temp=101.2F spo2=95 rr=18 weight=156lb glucose=6.1mmol/L pain=4 dizzy since this morning")
		for _, want := range []string{"BP 142/91 mmHg", "HR 88/min", "Temp 101.2 °F", "Weight 156 lb", "Glucose 6.1 mmol/L", "Pain 4/10", "dizzy since this morning"} {
			if !strings.Contains(reply, want) {
				t.Errorf("confirmation lacks %q: %s", want, reply)
			}
		}
		botNotice(doc, c, caseRoom, "Check-in", pat.UserID.String(), "BP 142/91 mmHg", "dizzy since this morning")

		// Invalid values: every problem named, nothing stored.
		_, reply = c.command(pat, patientRoom, "!checkin temp=52 hr=abc spo2=95")
		for _, want := range []string{"Nothing was stored", "temp", "52", "30–45", "hr", "abc"} {
			if !strings.Contains(reply, want) {
				t.Errorf("error reply lacks %q: %s", want, reply)
			}
		}
		if n := c.countRows("SELECT COUNT(*) FROM checkins"); n != 1 {
			t.Fatalf("%d check-ins stored, want 1 (the invalid one must not be)", n)
		}

		second, _ := c.command(pat, patientRoom, "!checkin hr=96 pain=5")
		botNotice(doc, c, caseRoom, "HR 96/min (↑ 8)", "Pain 5/10 (↑ 1)")

		// Editing the first check-in records an amendment; the original is kept.
		edit, err := pat.SendMessageEvent(ctx, patientRoom, event.EventMessage, &event.MessageEventContent{
			MsgType: event.MsgText, Body: "* !checkin bp=140/90 hr=88 feeling better",
			NewContent: &event.MessageEventContent{MsgType: event.MsgText, Body: "!checkin bp=140/90 hr=88 feeling better"},
			RelatesTo:  &event.RelatesTo{Type: event.RelReplace, EventID: first},
		})
		if err != nil {
			t.Fatal(err)
		}
		if body := pat.WaitFor(30*time.Second, "the amendment confirmation", replyTo(c.botID, edit.EventID)).Content.AsMessage().Body; !strings.Contains(body, "version 2") || !strings.Contains(body, "BP 140/90 mmHg") {
			t.Fatalf("amendment reply: %s", body)
		}
		if n := c.countRows("SELECT COUNT(*) FROM checkin_versions v JOIN checkins c ON c.id = v.checkin_id WHERE c.event_id = $1", first); n != 2 {
			t.Fatalf("%d versions of the edited check-in, want 2", n)
		}
		if n := c.countRows("SELECT COUNT(*) FROM checkin_versions v JOIN checkins c ON c.id = v.checkin_id WHERE c.event_id = $1 AND v.version = 1 AND v.values_json LIKE '%142%'", first); n != 1 {
			t.Fatal("the original version was not kept")
		}

		// Deleting the second check-in marks it entered in error; it stays in the record.
		if _, err = pat.RedactEvent(ctx, patientRoom, second); err != nil {
			t.Fatal(err)
		}
		botNotice(doc, c, caseRoom, "deleted", "entered in error")
		if n := c.countRows("SELECT COUNT(*) FROM checkin_versions v JOIN checkins c ON c.id = v.checkin_id WHERE c.event_id = $1 AND v.status = 'entered-in-error'", second); n != 1 {
			t.Fatal("the deleted check-in is not marked entered-in-error")
		}

		// A clinician records one on the patient's behalf; the patient cannot do the reverse.
		c.mustSucceed(doc, caseRoom, "!checkin for "+pat.UserID.String()+" bp=128/82 reported by phone")
		if n := c.countRows("SELECT COUNT(*) FROM checkins WHERE recorded_by = $1 AND patient_id = $2 AND source = 'clinician'", doc.UserID, pat.UserID); n != 1 {
			t.Fatal("check-in on behalf not recorded with its recorder")
		}
		if _, body := c.command(pat, patientRoom, "!checkin for "+pat.UserID.String()+" hr=70"); !strings.Contains(body, "⛔") {
			t.Fatalf("the patient recorded a check-in 'for' someone: %s", body)
		}
		if _, body := c.command(doc, caseRoom, "!checkin hr=70"); !strings.Contains(body, "⛔") {
			t.Fatalf("a clinician used the patient's checkin in the case room: %s", body)
		}

		// History: amended shown, the deleted one not, newest first, with an HTML table.
		histID, body := c.command(doc, caseRoom, "!checkins")
		hist := doc.WaitFor(time.Second, "the history", replyTo(c.botID, histID)).Content.AsMessage()
		if !strings.Contains(hist.FormattedBody, "<table>") || !strings.Contains(body, "(amended)") || strings.Contains(body, "HR 96/min") ||
			!strings.Contains(body, "recorded by") || strings.Index(body, "128/82") > strings.Index(body, "140/90") {
			t.Fatalf("history:\n%s\n%s", body, hist.FormattedBody)
		}
		if _, body := c.command(pat, patientRoom, "!checkins 2"); !strings.Contains(body, "140/90") {
			t.Fatalf("the patient's own history: %s", body)
		}
		if _, body := c.command(doc, caseRoom, "!checkins yesterday"); !strings.Contains(body, "Usage:") {
			t.Fatalf("bad range accepted: %s", body)
		}
	})
}

func TestCheckInsEmpty(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		c := newClinicOn(t, on, nil)
		doc, _, caseRoom, _ := patientCase(t, c)
		if body := c.mustSucceed(doc, caseRoom, "!checkins"); !strings.Contains(body, "No check-ins in the last 7 days.") {
			t.Fatalf("empty history: %s", body)
		}
	})
}
