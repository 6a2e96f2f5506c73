package store_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

// newTestCase stores a case with a case room and a patient room.
func newTestCase(t *testing.T, st *store.Store, name string) *store.Case {
	t.Helper()
	c := &store.Case{Title: name, CaseRoomID: id.RoomID("!c" + name + ":hs"), PatientRoomID: id.RoomID("!p" + name + ":hs"), CreatedBy: "@doc:hs"}
	if err := st.Cases.Create(context.Background(), c, id.EventID("$case"+name)); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestReminders(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		caseA, caseB := newTestCase(t, st, "A"), newTestCase(t, st, "B")
		at := time.Date(2026, 3, 28, 8, 0, 0, 0, time.UTC)
		add := func(c *store.Case, schedule, evt string, next time.Time) *store.Reminder {
			t.Helper()
			r := &store.Reminder{CaseID: c.ID, Schedule: schedule, NextAt: next, CreatedBy: "@doc:hs", CreatedEvent: id.EventID(evt), CreatedAt: at}
			if err := st.Reminders.Create(ctx, r); err != nil {
				t.Fatal(err)
			}
			return r
		}
		daily := add(caseA, "daily 09:00 Europe/Berlin", "$r1", at.Add(time.Hour))
		hourly := add(caseA, "every 6 hours", "$r2", at.Add(6*time.Hour))
		other := add(caseB, "daily 10:00 UTC", "$r3", at.Add(2*time.Hour))
		if daily.Number != 1 || hourly.Number != 2 || other.Number != 1 {
			t.Fatalf("numbers %d %d %d, want 1 2 1 (per case)", daily.Number, hourly.Number, other.Number)
		}
		if err := st.Reminders.Create(ctx, &store.Reminder{CaseID: caseA.ID, Schedule: "x", NextAt: at, CreatedBy: "@doc:hs",
			CreatedEvent: "$r1", CreatedAt: at}); err == nil {
			t.Fatal("a second reminder from the same event was stored")
		}
		if next, err := st.Reminders.NextWork(ctx); err != nil || !next.Equal(at.Add(time.Hour)) {
			t.Fatalf("NextWork = %s, %v", next, err)
		}
		due, err := st.Reminders.Due(ctx, at.Add(2*time.Hour), 10)
		if err != nil || len(due) != 2 || due[0].ID != daily.ID || due[1].ID != other.ID {
			t.Fatalf("due = %+v, %v", due, err)
		}
		if got, _ := st.Reminders.ByNumber(ctx, caseA.ID, 2); got == nil || got.Schedule != "every 6 hours" || !got.NextAt.Equal(hourly.NextAt) {
			t.Fatalf("ByNumber = %+v", got)
		}

		// Advancing is conditional on the time it was due: a second advance from the same time does nothing.
		next := at.Add(25 * time.Hour)
		if ok, err := st.Reminders.Advance(ctx, daily.ID, daily.NextAt, next); !ok || err != nil {
			t.Fatalf("Advance = %v, %v", ok, err)
		}
		if ok, _ := st.Reminders.Advance(ctx, daily.ID, daily.NextAt, next.Add(time.Hour)); ok {
			t.Fatal("a reminder advanced twice from the same due time")
		}

		// Prompts: answered by a newer check-in of the case, not by an older one or one entered in error.
		latest, err := st.Reminders.LatestCheckInID(ctx, caseA.ID)
		if err != nil || latest != 0 {
			t.Fatalf("LatestCheckInID = %d, %v", latest, err)
		}
		old := &store.CheckIn{CaseID: caseA.ID, EventID: "$old", RoomID: caseA.PatientRoomID, PatientID: "@pat:hs", RecordedBy: "@pat:hs",
			Source: store.SourcePatient, EffectiveAt: at}
		if err = st.CheckIns.Create(ctx, old); err != nil {
			t.Fatal(err)
		}
		latest, _ = st.Reminders.LatestCheckInID(ctx, caseA.ID)
		prompt := &store.ReminderPrompt{ReminderID: daily.ID, CaseID: caseA.ID, DueAt: daily.NextAt, SentAt: daily.NextAt,
			AfterCheckInID: latest, CheckAt: daily.NextAt.Add(2 * time.Hour)}
		if err = st.Reminders.AddPrompt(ctx, prompt); err != nil {
			t.Fatal(err)
		}
		if err = st.Reminders.AddPrompt(ctx, &store.ReminderPrompt{ReminderID: daily.ID, CaseID: caseA.ID, DueAt: daily.NextAt,
			SentAt: daily.NextAt, CheckAt: daily.NextAt}); err == nil {
			t.Fatal("two prompts for the same occurrence were stored")
		}
		if answered, err := st.Reminders.Answered(ctx, prompt); err != nil || answered {
			t.Fatalf("Answered before any new check-in = %v, %v", answered, err)
		}
		wrong := &store.CheckIn{CaseID: caseA.ID, EventID: "$wrong", RoomID: caseA.PatientRoomID, PatientID: "@pat:hs", RecordedBy: "@pat:hs",
			Source: store.SourcePatient, EffectiveAt: at}
		if err = st.CheckIns.Create(ctx, wrong); err != nil {
			t.Fatal(err)
		}
		if err = st.CheckIns.MarkEnteredInError(ctx, wrong, "$redaction", "@pat:hs"); err != nil {
			t.Fatal(err)
		}
		if answered, _ := st.Reminders.Answered(ctx, prompt); answered {
			t.Fatal("a check-in entered in error answered the prompt")
		}
		if err = st.CheckIns.Create(ctx, &store.CheckIn{CaseID: caseB.ID, EventID: "$b", RoomID: caseB.PatientRoomID, PatientID: "@pb:hs",
			RecordedBy: "@pb:hs", Source: store.SourcePatient, EffectiveAt: at}); err != nil {
			t.Fatal(err)
		}
		if answered, _ := st.Reminders.Answered(ctx, prompt); answered {
			t.Fatal("another case's check-in answered the prompt")
		}
		if err = st.CheckIns.Create(ctx, &store.CheckIn{CaseID: caseA.ID, EventID: "$new", RoomID: caseA.PatientRoomID, PatientID: "@pat:hs",
			RecordedBy: "@pat:hs", Source: store.SourcePatient, EffectiveAt: at}); err != nil {
			t.Fatal(err)
		}
		if answered, _ := st.Reminders.Answered(ctx, prompt); !answered {
			t.Fatal("a new check-in did not answer the prompt")
		}
		if list, _ := st.Reminders.PromptsToCheck(ctx, prompt.CheckAt.Add(-time.Second), 10); len(list) != 0 {
			t.Fatalf("prompt checked before its grace period ended: %+v", list)
		}
		if list, _ := st.Reminders.PromptsToCheck(ctx, prompt.CheckAt, 10); len(list) != 1 || list[0].ID != prompt.ID ||
			list[0].AfterCheckInID != latest || !list[0].DueAt.Equal(daily.NextAt) {
			t.Fatalf("PromptsToCheck = %+v", list)
		}
		if ok, _ := st.Reminders.FinishPrompt(ctx, prompt.ID, store.PromptAnswered, prompt.CheckAt); !ok {
			t.Fatal("FinishPrompt failed")
		}
		if ok, _ := st.Reminders.FinishPrompt(ctx, prompt.ID, store.PromptMissed, prompt.CheckAt); ok {
			t.Fatal("a prompt was checked twice")
		}

		// Stopping cancels the prompts still waiting and ends the prompts; stopping again does nothing.
		waiting := &store.ReminderPrompt{ReminderID: hourly.ID, CaseID: caseA.ID, DueAt: hourly.NextAt, SentAt: hourly.NextAt,
			CheckAt: hourly.NextAt.Add(time.Hour)}
		if err = st.Reminders.AddPrompt(ctx, waiting); err != nil {
			t.Fatal(err)
		}
		if ok, err := st.Reminders.Stop(ctx, hourly.ID, "@doc:hs", at); !ok || err != nil {
			t.Fatalf("Stop = %v, %v", ok, err)
		}
		if ok, _ := st.Reminders.Stop(ctx, hourly.ID, "@doc:hs", at); ok {
			t.Fatal("stopped twice")
		}
		if ok, _ := st.Reminders.Advance(ctx, hourly.ID, hourly.NextAt, hourly.NextAt.Add(time.Hour)); ok {
			t.Fatal("a stopped reminder advanced")
		}
		prompts, _ := st.Reminders.Prompts(ctx, hourly.ID)
		if len(prompts) != 1 || prompts[0].Outcome != store.PromptCancelled {
			t.Fatalf("prompts of the stopped reminder = %+v", prompts)
		}
		active, _ := st.Reminders.Active(ctx, caseA.ID)
		if len(active) != 1 || active[0].ID != daily.ID {
			t.Fatalf("active = %+v", active)
		}
		if stopped, _ := st.Reminders.ByID(ctx, hourly.ID); stopped.StoppedBy != "@doc:hs" || !stopped.StoppedAt.Equal(at) {
			t.Fatalf("stopped reminder = %+v", stopped)
		}
	})
}
