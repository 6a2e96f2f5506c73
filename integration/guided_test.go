//go:build goolm

package integration

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// botPoll matches the bot's poll (MSC3381 poll start) in a room whose question contains want.
func botPoll(bot id.UserID, room id.RoomID, want string) func(*event.Event) bool {
	return func(evt *event.Event) bool {
		if evt.RoomID != room || evt.Sender != bot || evt.Type != event.EventUnstablePollStart {
			return false
		}
		poll, ok := evt.Content.Parsed.(*event.PollStartEventContent)
		return ok && strings.Contains(poll.PollStart.Question.GetText(), want)
	}
}

// pollEnded matches the bot's end of a poll.
func pollEnded(bot id.UserID, poll id.EventID) func(*event.Event) bool {
	return func(evt *event.Event) bool {
		if evt.Sender != bot || evt.Type != event.EventUnstablePollEnd {
			return false
		}
		var content struct {
			RelatesTo event.RelatesTo `json:"m.relates_to"`
		}
		return json.Unmarshal(evt.Content.VeryRaw, &content) == nil && content.RelatesTo.Type == event.RelReference &&
			content.RelatesTo.EventID == poll
	}
}

// vote sends a poll response, as Element does, and checks that it went out encrypted.
func vote(t *testing.T, u *user, room id.RoomID, poll id.EventID, answer string) id.EventID {
	t.Helper()
	resp, err := u.SendMessageEvent(context.Background(), room, event.EventUnstablePollResponse, &event.PollResponseEventContent{
		RelatesTo: event.RelatesTo{Type: event.RelReference, EventID: poll},
		Response:  event.PollResponse{Answers: []string{answer}},
	})
	if err != nil {
		t.Fatalf("failed to vote: %v", err)
	}
	u.WaitFor(10*time.Second, "its vote in encrypted form", func(evt *event.Event) bool {
		return evt.ID == resp.EventID && evt.Type == event.EventEncrypted
	})
	return resp.EventID
}

// TestGuidedCheckIn: the patient runs the default questionnaire of the example config. The first question comes as
// an encrypted poll the patient votes in; the session survives a restart of the bot; the next poll question is
// answered by typing (an invalid value first); the last answer records one check-in and the care team's summary.
func TestGuidedCheckIn(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		c := newClinicOn(t, on, nil)
		doc, pat, caseRoom, patientRoom := patientCase(t, c)

		_, intro := c.command(pat, patientRoom, "!checkin start")
		if !strings.Contains(intro, "Daily check-in") || !strings.Contains(intro, "4 questions") {
			t.Fatalf("start reply: %s", intro)
		}
		poll1 := pat.WaitFor(30*time.Second, "the first question as a poll", botPoll(c.botID, patientRoom, "Question 1 of 4"))
		pat.requireArrivedEncrypted(poll1)
		start := poll1.Content.Parsed.(*event.PollStartEventContent).PollStart
		if start.Kind != "org.matrix.msc3381.poll.disclosed" || start.MaxSelections != 1 || len(start.Answers) != 3 ||
			start.Answers[2].ID != "3" || start.Answers[2].GetText() != "Worse" {
			t.Fatalf("first poll = %+v", start)
		}
		var raw map[string]any
		if err := json.Unmarshal(poll1.Content.VeryRaw, &raw); err != nil {
			t.Fatal(err)
		}
		if fallback, _ := raw["org.matrix.msc1767.text"].(string); !strings.Contains(fallback, "1. Better") || !strings.Contains(fallback, "3. Worse") {
			t.Fatalf("poll without a text fallback listing the options: %v", raw)
		}

		if _, again := c.command(pat, patientRoom, "!checkin start"); !strings.Contains(again, "already open") || !strings.Contains(again, "Question 1 of 4") {
			t.Fatalf("second start: %s", again)
		}

		// The patient taps "Worse": the poll ends and question 2 (a 0-10 pain score) follows as a poll.
		vote(t, pat, patientRoom, poll1.ID, "3")
		pat.WaitFor(30*time.Second, "the end of the first poll", pollEnded(c.botID, poll1.ID))
		poll2 := pat.WaitFor(30*time.Second, "the pain score poll", botPoll(c.botID, patientRoom, "Question 2 of 4"))
		if answers := poll2.Content.Parsed.(*event.PollStartEventContent).PollStart.Answers; len(answers) != 11 || answers[0].ID != "0" || answers[10].ID != "10" {
			t.Fatalf("pain poll answers = %+v", answers)
		}
		if n := c.countRows("SELECT COUNT(*) FROM guided_answers WHERE answer = 'Worse'"); n != 1 {
			t.Fatalf("%d stored answers 'Worse', want 1", n)
		}

		// The open check-in survives a restart.
		c.bot.stop()
		c.bot.start()

		// Typed answers: out of range first (refused, nothing stored), then a valid one.
		_, refusal := c.command(pat, patientRoom, "12")
		for _, want := range []string{"not stored", "question 2 of 4", "`12`", "0 to 10", "How strong is your pain"} {
			if !strings.Contains(refusal, want) {
				t.Errorf("refusal lacks %q: %s", want, refusal)
			}
		}
		if n := c.countRows("SELECT COUNT(*) FROM guided_answers"); n != 1 {
			t.Fatalf("%d answers stored after an invalid one, want 1", n)
		}
		pat.Send(patientRoom, "4")
		pat.WaitFor(30*time.Second, "the end of the pain poll", pollEnded(c.botID, poll2.ID))
		botNotice(pat, c, patientRoom, "Question 3 of 4", "temperature")

		_, refusal = c.command(pat, patientRoom, "52")
		if !strings.Contains(refusal, "outside the plausible range") || !strings.Contains(refusal, "Question 3 of 4") {
			t.Fatalf("temperature refusal: %s", refusal)
		}
		pat.Send(patientRoom, "38.4")
		botNotice(pat, c, patientRoom, "Question 4 of 4", "skip")
		last := pat.Send(patientRoom, "Coughing at night")
		done := pat.WaitFor(30*time.Second, "the confirmation", replyTo(c.botID, last)).Content.AsMessage().Body
		for _, want := range []string{"Recorded your Daily check-in", "Feeling: Worse", "Pain: 4/10", "Temperature: 38.4 °C", "Anything else: Coughing at night"} {
			if !strings.Contains(done, want) {
				t.Errorf("confirmation lacks %q: %s", want, done)
			}
		}

		if n := c.countRows("SELECT COUNT(*) FROM checkins"); n != 1 {
			t.Fatalf("%d check-ins stored, want exactly 1", n)
		}
		if n := c.countRows(`SELECT COUNT(*) FROM checkins c JOIN checkin_versions v ON v.checkin_id = c.id
		JOIN guided_sessions s ON s.checkin_id = c.id AND s.status = 'completed' AND s.start_event = c.event_id
		WHERE c.source = 'guided' AND c.patient_id = $1 AND v.values_json LIKE '%"pain"%' AND v.values_json LIKE '%38.4%'
		AND v.note = 'Feeling: Worse; Anything else: Coughing at night'`, pat.UserID); n != 1 {
			t.Fatal("the check-in is not stored as one guided check-in with the pain and temperature values and the note")
		}
		botNotice(doc, c, caseRoom, "Guided check-in", pat.UserID.String(), "Pain 4/10", "Temp 38.4 °C", "Feeling: Worse")

		// After the last question, plain messages are chat again; a new guided check-in can be stopped.
		c.command(pat, patientRoom, "!checkin start")
		poll3 := pat.WaitFor(30*time.Second, "the first question again", func(evt *event.Event) bool {
			return botPoll(c.botID, patientRoom, "Question 1 of 4")(evt) && evt.ID != poll1.ID
		})
		if body := c.mustSucceed(pat, patientRoom, "!checkin cancel"); !strings.Contains(body, "Stopped the guided check-in after 0 of 4") {
			t.Fatalf("cancel: %s", body)
		}
		pat.WaitFor(30*time.Second, "the end of the stopped check-in's poll", pollEnded(c.botID, poll3.ID))
		if body := c.mustSucceed(pat, patientRoom, "!checkin stop"); !strings.Contains(body, "No guided check-in is open") {
			t.Fatalf("second cancel: %s", body)
		}
		if n := c.countRows("SELECT COUNT(*) FROM guided_sessions WHERE status = 'cancelled' AND checkin_id IS NULL"); n != 1 {
			t.Fatal("the stopped check-in is not marked cancelled")
		}
		if n := c.countRows("SELECT COUNT(*) FROM checkins"); n != 1 {
			t.Fatalf("%d check-ins after a stopped guided check-in, want still 1", n)
		}
	})
}
