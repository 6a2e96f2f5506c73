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

// planRows counts rows in the bot's database.
func (c *clinic) planRows(query string, args ...any) int {
	c.t.Helper()
	var n int
	if err := c.bot.db().QueryRow(query, args...).Scan(&n); err != nil {
		c.t.Fatal(err)
	}
	return n
}

// pinnedEvents reads a room's m.room.pinned_events.
func pinnedEvents(t *testing.T, u *user, room id.RoomID) []id.EventID {
	t.Helper()
	var content event.PinnedEventsEventContent
	if err := u.StateEvent(context.Background(), room, event.StatePinnedEvents, "", &content); err != nil {
		t.Fatalf("failed to read pinned events: %v", err)
	}
	return content.Pinned
}

// summaryEdits lists the bot's edits of the summary message that u has seen, in order.
func summaryEdits(u *user, bot id.UserID, summary id.EventID) []*event.MessageEventContent {
	var out []*event.MessageEventContent
	for _, evt := range u.Matching(func(evt *event.Event) bool {
		return evt.Sender == bot && evt.Type == event.EventMessage && evt.Content.AsMessage().RelatesTo.GetReplaceID() == summary
	}) {
		out = append(out, evt.Content.AsMessage().NewContent)
	}
	return out
}

// TestPlanVersionsAndPinnedSummary: a clinician builds a treatment plan; every change is a new version; the patient
// room holds one pinned summary of goals and tasks that is edited on each change, and the patient never sees notes.
func TestPlanVersionsAndPinnedSummary(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		c := newClinicOn(t, on, nil)
		doc, pat := newUser(t, c.hs, "doc"), newUser(t, c.hs, "pat")
		c.registerClinician(doc)
		docDM := doc.EncryptedRoomWithBot(c.botID)
		caseRoom, patientRoom := c.openCase(doc, docDM, "Wound care")
		c.mustSucceed(doc, caseRoom, "!patient invite "+pat.UserID.String())
		pat.JoinInvited(patientRoom)

		if body := c.mustSucceed(doc, caseRoom, "!plan"); !strings.Contains(body, "is empty") {
			t.Fatalf("empty plan: %s", body)
		}
		due := time.Now().UTC().AddDate(0, 1, 0).Format("2006-01-02")
		if body := c.mustSucceed(doc, caseRoom, "!plan goal Walk 500 m <b>without</b> pain"); !strings.Contains(body, "Goal 1 added: Walk 500 m <b>without</b> pain.") ||
			!strings.Contains(body, "pinned it") {
			t.Fatalf("plan goal: %s", body)
		}
		pinned := pinnedEvents(t, doc, patientRoom)
		if len(pinned) != 1 {
			t.Fatalf("pinned events after the first goal = %v, want exactly the summary", pinned)
		}
		summaryID := pinned[0]
		summary := pat.WaitFor(30*time.Second, "the plan summary", func(evt *event.Event) bool {
			return evt.ID == summaryID && evt.Type == event.EventMessage
		})
		if summary.Sender != c.botID || !summary.Mautrix.WasEncrypted || !strings.Contains(summary.Content.AsMessage().Body, "Walk 500 m <b>without</b> pain") ||
			strings.Contains(summary.Content.AsMessage().FormattedBody, "<b>without") {
			t.Fatalf("summary = %+v (encrypted %v)", summary.Content.AsMessage(), summary.Mautrix.WasEncrypted)
		}

		taskEvt, body := c.command(doc, caseRoom, "!plan task Change the dressing due "+due)
		if !strings.Contains(body, "Task 2 added: Change the dressing, due "+due+".") || !strings.Contains(body, "updated the pinned plan summary") {
			t.Fatalf("plan task: %s", body)
		}
		if body := c.mustSucceed(doc, caseRoom, "!plan note SECRET-NOTE anxious about the wound"); !strings.Contains(body, "Note 3 added (care team only)") {
			t.Fatalf("plan note: %s", body)
		}
		caseView := c.mustSucceed(doc, caseRoom, "!plan")
		for _, want := range []string{"**1.** Walk 500 m", "**2.** Change the dressing — due " + due, "**3.** SECRET-NOTE", "care team only"} {
			if !strings.Contains(caseView, want) {
				t.Errorf("case room plan lacks %q: %s", want, caseView)
			}
		}

		// A patient reads goals and tasks, the same text as the pinned summary, and never the note.
		_, patView := c.command(pat, patientRoom, "!plan")
		if !strings.Contains(patView, "Walk 500 m") || !strings.Contains(patView, "Change the dressing — due "+due) || strings.Contains(patView, "SECRET") {
			t.Fatalf("patient's plan: %s", patView)
		}
		edits := summaryEdits(pat, c.botID, summaryID)
		if len(edits) != 1 || edits[0].Body != patView {
			t.Fatalf("after goal, task and note the summary has %d edits (want 1: the task), last %+v; patient's /plan:\n%s", len(edits), edits, patView)
		}

		// A patient can change nothing, and the attempt stores nothing.
		versionsBefore := c.planRows("SELECT COUNT(*) FROM plan_item_versions")
		for _, cmd := range []string{"!plan goal Eat cake", "!plan history", "!plan done 1"} {
			evtID, body := c.command(pat, patientRoom, cmd)
			if !strings.Contains(body, "⛔") {
				t.Fatalf("patient ran %q: %s", cmd, body)
			}
			if outcome := c.waitAudit(evtID); !strings.HasPrefix(outcome, "refused:") {
				t.Fatalf("audit of patient's %q = %q", cmd, outcome)
			}
		}
		// A bad date is named with its value and the format; nothing is stored.
		_, body = c.command(doc, caseRoom, "!plan task Book follow-up due 2026-02-30")
		if !strings.Contains(body, "Usage:") || !strings.Contains(body, "2026-02-30") || !strings.Contains(body, "YYYY-MM-DD") {
			t.Fatalf("bad due date: %s", body)
		}
		_, body = c.command(doc, caseRoom, "!plan task Book follow-up --due 2001-01-01")
		if !strings.Contains(body, "in the past") {
			t.Fatalf("due date in the past: %s", body)
		}
		if n := c.planRows("SELECT COUNT(*) FROM plan_item_versions"); n != versionsBefore {
			t.Fatalf("refused commands stored versions: %d, was %d", n, versionsBefore)
		}

		// Amend and done are new versions, and edit the summary rather than post another message.
		amendEvt, body := c.command(doc, caseRoom, "!plan amend 2 Change the dressing daily")
		if !strings.Contains(body, "Task 2 amended (version 2): Change the dressing daily, due "+due) {
			t.Fatalf("plan amend: %s", body)
		}
		if body := c.mustSucceed(doc, caseRoom, "!plan done 2"); !strings.Contains(body, "Task 2 is done (version 3)") {
			t.Fatalf("plan done: %s", body)
		}
		if _, body := c.command(doc, caseRoom, "!plan done 2"); !strings.Contains(body, "already done") {
			t.Fatalf("second plan done: %s", body)
		}
		if _, body := c.command(doc, caseRoom, "!plan done 9"); !strings.Contains(body, "no item 9") {
			t.Fatalf("plan done of a missing item: %s", body)
		}
		if body := c.mustSucceed(doc, caseRoom, "!plan amend 2 Change the dressing twice a day"); !strings.Contains(body, "It stays done") {
			t.Fatalf("amending a done task: %s", body)
		}
		_, patView = c.command(pat, patientRoom, "!plan")
		if !strings.Contains(patView, "✅ Change the dressing twice a day — due "+due+" (done)") || strings.Contains(patView, "SECRET") {
			t.Fatalf("patient's plan after the changes: %s", patView)
		}
		edits = summaryEdits(pat, c.botID, summaryID)
		if len(edits) != 4 || edits[3].Body != patView {
			t.Fatalf("summary edits = %d (want 4: task, amend, done, amend), last = %+v; patient's /plan:\n%s", len(edits), edits[len(edits)-1], patView)
		}
		if pinned := pinnedEvents(t, pat, patientRoom); len(pinned) != 1 || pinned[0] != summaryID {
			t.Fatalf("pinned events = %v, want only the summary %s", pinned, summaryID)
		}
		// The patient's room holds one message of the bot that is not a reply or an edit: the summary. Nothing the
		// patient can see mentions the note.
		var standalone []id.EventID
		for _, evt := range pat.Matching(func(evt *event.Event) bool {
			return evt.RoomID == patientRoom && evt.Type == event.EventMessage
		}) {
			content := evt.Content.AsMessage()
			text := content.Body + content.FormattedBody
			if content.NewContent != nil {
				text += content.NewContent.Body + content.NewContent.FormattedBody
			}
			if strings.Contains(text, "SECRET") {
				t.Fatalf("the patient saw the note in %s: %s", evt.ID, text)
			}
			if evt.Sender == c.botID && content.RelatesTo == nil {
				standalone = append(standalone, evt.ID)
			}
		}
		if len(standalone) != 1 || standalone[0] != summaryID {
			t.Fatalf("bot messages in the patient room that are neither replies nor edits: %v, want only the summary", standalone)
		}

		// The history lists every version with author and time.
		history := c.mustSucceed(doc, caseRoom, "!plan history")
		for _, want := range []string{"(6 versions", "`" + doc.UserID.String() + "`: Goal 1 added (v1)", "Task 2 amended (v2): Change the dressing daily",
			"Task 2 marked done (v3)", "Task 2 amended (still done) (v4)", "Note 3 added (v1): SECRET-NOTE"} {
			if !strings.Contains(history, want) {
				t.Errorf("history lacks %q:\n%s", want, history)
			}
		}
		if one := c.mustSucceed(doc, caseRoom, "!plan history 2"); !strings.Contains(one, "(4 versions") || strings.Contains(one, "Goal 1") {
			t.Errorf("history of item 2: %s", one)
		}

		// The database holds every version, each linked to the event that made it and to the case.
		db := c.bot.db()
		var text, status, author string
		var caseID int64
		err := db.QueryRow(`SELECT v.text, v.status, v.author, i.case_id FROM plan_item_versions v JOIN plan_items i ON i.id = v.item_id
		WHERE v.event_id = $1`, amendEvt).Scan(&text, &status, &author, &caseID)
		if err != nil || text != "Change the dressing daily" || status != "active" || author != doc.UserID.String() {
			t.Fatalf("amend version = %q %q %q, %v", text, status, author, err)
		}
		if n := c.planRows(`SELECT COUNT(*) FROM cases WHERE id = $1 AND case_room_id = $2`, caseID, caseRoom); n != 1 {
			t.Fatal("the plan item is not linked to the case")
		}
		if n := c.planRows(`SELECT COUNT(*) FROM plan_items WHERE created_event = $1 AND number = 2 AND kind = 'task'`, taskEvt); n != 1 {
			t.Fatal("the task is not linked to the event that created it")
		}
		if n := c.planRows(`SELECT COUNT(*) FROM plan_item_versions v JOIN plan_items i ON i.id = v.item_id WHERE i.number = 2`); n != 4 {
			t.Fatalf("task versions = %d, want 4", n)
		}
		if n := c.planRows(`SELECT COUNT(*) FROM plan_summaries WHERE event_id = $1 AND room_id = $2`, summaryID, patientRoom); n != 1 {
			t.Fatal("the summary message is not recorded")
		}
		if n := c.planRows(`SELECT COUNT(*) FROM audit WHERE action = 'read:plan' AND actor = $1`, pat.UserID); n != 2 {
			t.Fatalf("patient plan reads audited %d times, want 2", n)
		}
	})
}

// TestPlanSummaryForLateJoiningPatient: a patient who joins after the plan was written sees only what happens
// after their join, so the bot posts them a fresh summary and pins it in place of the old one.
func TestPlanSummaryForLateJoiningPatient(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		c := newClinicOn(t, on, nil)
		doc, pat := newUser(t, on.hs, "doc"), newUser(t, on.hs, "pat")
		c.registerClinician(doc)
		docDM := doc.EncryptedRoomWithBot(c.botID)
		caseRoom, patientRoom := c.openCase(doc, docDM, "Late joiner")
		c.mustSucceed(doc, caseRoom, "!plan goal Sleep through the night")
		c.mustSucceed(doc, caseRoom, "!patient invite "+pat.UserID.String())
		pat.JoinInvited(patientRoom)
		summary := pat.WaitFor(30*time.Second, "a plan summary after joining", func(evt *event.Event) bool {
			return evt.RoomID == patientRoom && evt.Sender == c.botID && evt.Type == event.EventMessage &&
				strings.Contains(evt.Content.AsMessage().Body, "Sleep through the night")
		})
		deadline := time.Now().Add(20 * time.Second)
		for {
			var pinned event.PinnedEventsEventContent
			if err := pat.StateEvent(context.Background(), patientRoom, event.StatePinnedEvents, "", &pinned); err == nil &&
				len(pinned.Pinned) == 1 && pinned.Pinned[0] == summary.ID {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the fresh summary is not the one pinned")
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Later changes edit the summary the patient can see.
		c.mustSucceed(doc, caseRoom, "!plan task Evening walk due "+time.Now().AddDate(0, 0, 3).Format("2006-01-02"))
		pat.WaitFor(30*time.Second, "an edit of the fresh summary", func(evt *event.Event) bool {
			return evt.RoomID == patientRoom && evt.Sender == c.botID && evt.Content.AsMessage().RelatesTo.GetReplaceID() == summary.ID
		})
	})
}
