//go:build goolm

package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// testClock is the bot's clock in these tests: the caseroom binary (built with -tags caseroomtest) reads the time
// from the file named by CASEROOM_TEST_CLOCK_FILE, which the test rewrites.
type testClock struct {
	t    *testing.T
	path string
	now  time.Time
}

// newTestClock sets the clock of every bot the test starts afterwards.
func newTestClock(t *testing.T, start time.Time) *testClock {
	t.Helper()
	c := &testClock{t: t, path: filepath.Join(t.TempDir(), "clock")}
	t.Setenv("CASEROOM_TEST_CLOCK_FILE", c.path)
	c.set(start)
	return c
}

// set moves the clock (atomically: the bot never reads half a file).
func (c *testClock) set(at time.Time) {
	c.t.Helper()
	tmp := c.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(at.Format(time.RFC3339Nano)), 0o600); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(tmp, c.path); err != nil {
		c.t.Fatal(err)
	}
	c.now = at
}

func (c *testClock) advance(d time.Duration) { c.set(c.now.Add(d)) }

// botNotices lists the bot's messages in a room whose body contains text.
func botNotices(u *user, c *clinic, room id.RoomID, text string) []*event.Event {
	return u.Matching(func(evt *event.Event) bool {
		return evt.RoomID == room && evt.Sender == c.botID && evt.Type == event.EventMessage &&
			strings.Contains(evt.Content.AsMessage().Body, text)
	})
}

// botEvent waits for the bot's message in a room whose body contains text.
func botEvent(u *user, c *clinic, room id.RoomID, text string) *event.Event {
	u.T.Helper()
	return u.WaitFor(30*time.Second, "a message containing "+text, func(evt *event.Event) bool {
		return evt.RoomID == room && evt.Sender == c.botID && evt.Type == event.EventMessage &&
			strings.Contains(evt.Content.AsMessage().Body, text)
	})
}

// settle gives the bot's scheduler (which polls every 100 ms in test builds) and the clients' syncs time to show
// something that should not happen.
func settle() { time.Sleep(2 * time.Second) }

func TestAlertsEscalateUnlessAcknowledged(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		start := time.Date(2026, 6, 1, 6, 0, 0, 0, time.UTC)
		clk := newTestClock(t, start)
		c := newClinicOn(t, on, nil)
		doc, pat, caseRoom, patientRoom := patientCase(t, c)
		ctx := context.Background()

		// A check-in below the default spo2<92: an alert in the case room that mentions the care team.
		c.command(pat, patientRoom, "!checkin spo2=88 hr=72 short of breath")
		alert := botEvent(doc, c, caseRoom, "Alert #1")
		content := alert.Content.AsMessage()
		if content.MsgType != event.MsgText || content.Mentions == nil || !content.Mentions.Has(doc.UserID) || content.Mentions.Room ||
			!strings.Contains(content.Body, "SpO2 88%") || !strings.Contains(content.Body, "spo2<92") || strings.Contains(content.Body, "HR") ||
			!strings.Contains(content.Body, pat.UserID.String()) {
			t.Fatalf("alert: %s %+v", content.Body, content.Mentions)
		}
		if !alert.Mautrix.WasEncrypted {
			t.Fatal("the alert was not encrypted")
		}
		if n := c.countRows("SELECT COUNT(*) FROM alerts WHERE number = 1 AND outgoing_seq IS NOT NULL AND acked_at IS NULL"); n != 1 {
			t.Fatal("the alert is not stored with its message")
		}

		// Not acknowledged: one escalation after alerts.ack_timeout (15m), mentioning everyone and the team.
		clk.set(start.Add(14 * time.Minute))
		settle()
		if len(botNotices(doc, c, caseRoom, "not acknowledged")) != 0 {
			t.Fatal("escalated before the acknowledgement timeout")
		}
		clk.set(start.Add(16 * time.Minute))
		escEvt := botEvent(doc, c, caseRoom, "Alert #1 is not acknowledged")
		esc := escEvt.Content.AsMessage()
		if esc.Mentions == nil || !esc.Mentions.Room || !esc.Mentions.Has(doc.UserID) || !strings.Contains(esc.Body, "@room") ||
			!strings.Contains(esc.Body, "SpO2 88%") {
			t.Fatalf("escalation: %s %+v", esc.Body, esc.Mentions)
		}
		clk.set(start.Add(time.Hour))
		settle()
		if n := len(botNotices(doc, c, caseRoom, "not acknowledged")); n != 1 {
			t.Fatalf("%d escalations, want exactly 1", n)
		}

		// /ack acknowledges the latest open alert: it does not escalate.
		c.command(pat, patientRoom, "!checkin spo2=87")
		botEvent(doc, c, caseRoom, "Alert #2")
		if body := c.mustSucceed(doc, caseRoom, "!ack"); !strings.Contains(body, "Acknowledged alert #2") || !strings.Contains(body, "Still open: #1") {
			t.Fatalf("ack: %s", body)
		}
		if _, body := c.command(doc, caseRoom, "!ack 2"); !strings.Contains(body, "already acknowledged by") {
			t.Fatalf("second ack: %s", body)
		}
		if _, body := c.command(doc, caseRoom, "!ack 9"); !strings.Contains(body, "has no alert #9") {
			t.Fatalf("ack of an unknown alert: %s", body)
		}
		clk.advance(time.Hour)
		settle()
		if len(botNotices(doc, c, caseRoom, "Alert #2 is not acknowledged")) != 0 {
			t.Fatal("an acknowledged alert escalated")
		}

		// A reaction of a care-team member to an alert acknowledges it.
		c.command(pat, patientRoom, "!checkin temp=39.4")
		third := botEvent(doc, c, caseRoom, "Alert #3")
		if _, err := doc.SendReaction(ctx, caseRoom, third.ID, "👍"); err != nil {
			t.Fatal(err)
		}
		botEvent(doc, c, caseRoom, "Alert #3 acknowledged by `"+doc.UserID.String()+"`")
		clk.advance(time.Hour)
		settle()
		if len(botNotices(doc, c, caseRoom, "Alert #3 is not acknowledged")) != 0 {
			t.Fatal("an alert acknowledged by a reaction escalated")
		}
		if n := c.countRows("SELECT COUNT(*) FROM alerts WHERE number = 3 AND acked_by = $1", doc.UserID); n != 1 {
			t.Fatal("the reaction is not recorded as the acknowledgement")
		}

		// An encrypted reaction (as Element sends them) to the escalation acknowledges the escalated alert.
		encrypted, err := doc.Crypto.Encrypt(ctx, caseRoom, event.EventReaction, &event.ReactionEventContent{
			RelatesTo: event.RelatesTo{Type: event.RelAnnotation, EventID: escEvt.ID, Key: "✅"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err = doc.SendMessageEvent(ctx, caseRoom, event.EventEncrypted, encrypted); err != nil {
			t.Fatal(err)
		}
		if body := botEvent(doc, c, caseRoom, "Alert #1 acknowledged by").Content.AsMessage().Body; !strings.Contains(body, "already been escalated") {
			t.Fatalf("acknowledgement of the escalated alert: %s", body)
		}
		if _, body := c.command(doc, caseRoom, "!ack"); !strings.Contains(body, "no open alerts") {
			t.Fatalf("ack without open alerts: %s", body)
		}

		// Per-case thresholds replace the default of their vital and direction.
		if body := c.mustSucceed(doc, caseRoom, "!alert set spo2<85"); !strings.Contains(body, "replaces the default `spo2<92`") {
			t.Fatalf("alert set: %s", body)
		}
		if _, body := c.command(doc, caseRoom, "!alert set spo2<abc"); !strings.Contains(body, "Usage:") || !strings.Contains(body, "spo2") ||
			!strings.Contains(body, "abc") {
			t.Fatalf("bad threshold: %s", body)
		}
		list := c.mustSucceed(doc, caseRoom, "!alert list")
		for _, want := range []string{"spo2<85", "spo2<92` (replaced for this case)", "hr>120", "15m"} {
			if !strings.Contains(list, want) {
				t.Errorf("alert list lacks %q: %s", want, list)
			}
		}
		c.command(pat, patientRoom, "!checkin spo2=88 pain=8")
		fourth := botEvent(doc, c, caseRoom, "Alert #4").Content.AsMessage().Body
		if strings.Contains(fourth, "SpO2") || !strings.Contains(fourth, "pain>=8") {
			t.Fatalf("alert with the case's threshold: %s", fourth)
		}
		if body := c.mustSucceed(doc, caseRoom, "!alert clear spo2 < 85"); !strings.Contains(body, "Cleared the threshold `spo2<85`") {
			t.Fatalf("alert clear: %s", body)
		}
		if _, body := c.command(pat, patientRoom, "!alert list"); !strings.Contains(body, "⛔") {
			t.Fatalf("the patient listed alert thresholds: %s", body)
		}
	})
}

func TestCheckInReminders(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		berlin, err := time.LoadLocation("Europe/Berlin")
		if err != nil {
			t.Fatal(err)
		}
		day := func(d, hour, minute, second int) time.Time {
			return time.Date(2026, 6, d, hour, minute, second, 0, berlin)
		}
		clk := newTestClock(t, day(1, 8, 0, 0))
		c := newClinicOn(t, on, nil)
		doc, pat, caseRoom, patientRoom := patientCase(t, c)
		const promptText = "Time for your check-in"

		body := c.mustSucceed(doc, caseRoom, "!remind checkin daily 09:00 Europe/Berlin")
		if !strings.Contains(body, "Reminder #1") || !strings.Contains(body, "2026-06-01 09:00 CEST") || !strings.Contains(body, "within 2h") {
			t.Fatalf("remind checkin: %s", body)
		}
		if _, body = c.command(doc, caseRoom, "!remind checkin daily 25:00"); !strings.Contains(body, "Usage:") ||
			!strings.Contains(body, "25:00") || !strings.Contains(body, "00:00 to 23:59") {
			t.Fatalf("bad schedule: %s", body)
		}
		if _, body = c.command(pat, patientRoom, "!remind list"); !strings.Contains(body, "⛔") {
			t.Fatalf("the patient listed reminders: %s", body)
		}

		// Due at 09:00 Berlin: the patient is prompted once.
		clk.set(day(1, 8, 59, 0))
		settle()
		if n := len(botNotices(pat, c, patientRoom, promptText)); n != 0 {
			t.Fatalf("prompted %d times before 09:00", n)
		}
		clk.set(day(1, 9, 0, 30))
		prompt := botEvent(pat, c, patientRoom, promptText).Content.AsMessage()
		if !prompt.Mentions.Has(pat.UserID) || strings.Contains(prompt.Body, "was due") {
			t.Fatalf("prompt: %s %+v", prompt.Body, prompt.Mentions)
		}

		// A restart does not prompt again.
		c.bot.stop()
		c.bot.start(c.bot.env...)
		settle()
		if n := len(botNotices(pat, c, patientRoom, promptText)); n != 1 {
			t.Fatalf("%d prompts after a restart, want 1", n)
		}
		if n := c.countRows("SELECT COUNT(*) FROM reminder_prompts"); n != 1 {
			t.Fatalf("%d prompts stored, want 1", n)
		}
		if list := c.mustSucceed(doc, caseRoom, "!remind list"); !strings.Contains(list, "#1 `daily 09:00 Europe/Berlin`, next at 2026-06-02 09:00 CEST") {
			t.Fatalf("remind list: %s", list)
		}

		// No check-in within the 2 h grace: the care team is told once.
		clk.set(day(1, 11, 0, 31))
		missed := botEvent(doc, c, caseRoom, "Missed check-in").Content.AsMessage().Body
		if !strings.Contains(missed, pat.UserID.String()) || !strings.Contains(missed, "reminder #1") {
			t.Fatalf("missed check-in report: %s", missed)
		}

		// Down from Monday until Thursday afternoon: one late prompt, not one per missed day.
		c.bot.stop()
		clk.set(day(4, 15, 0, 0))
		c.bot.start(c.bot.env...)
		late := botEvent(pat, c, patientRoom, "was due at 2026-06-02 09:00 CEST").Content.AsMessage().Body
		if !strings.Contains(late, promptText) {
			t.Fatalf("late prompt: %s", late)
		}
		settle()
		if n := len(botNotices(pat, c, patientRoom, promptText)); n != 2 {
			t.Fatalf("%d prompts after downtime, want 2 (no burst)", n)
		}

		// A check-in answers the prompt: nothing is reported.
		c.mustSucceed(pat, patientRoom, "!checkin hr=70 fine")
		clk.set(day(4, 17, 0, 1))
		settle()
		if n := len(botNotices(doc, c, caseRoom, "Missed check-in")); n != 1 {
			t.Fatalf("%d missed check-in reports, want 1", n)
		}
		if n := c.countRows("SELECT COUNT(*) FROM reminder_prompts WHERE outcome = 'answered'"); n != 1 {
			t.Fatal("the answered prompt is not recorded as answered")
		}

		// Stopped: no more prompts.
		if body = c.mustSucceed(doc, caseRoom, "!remind stop 1"); !strings.Contains(body, "Stopped reminder #1") {
			t.Fatalf("remind stop: %s", body)
		}
		clk.set(day(5, 9, 0, 30))
		settle()
		if n := len(botNotices(pat, c, patientRoom, promptText)); n != 2 {
			t.Fatalf("%d prompts after the reminder was stopped, want 2", n)
		}
		if body = c.mustSucceed(doc, caseRoom, "!remind list"); !strings.Contains(body, "no check-in reminders") {
			t.Fatalf("remind list after stop: %s", body)
		}
	})
}
