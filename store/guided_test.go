package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

func TestGuidedSessions(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		c := &store.Case{Title: "A", CaseRoomID: "!case:hs", PatientRoomID: "!pat:hs", CreatedBy: "@doc:hs"}
		if err := st.Cases.Create(ctx, c, "$case"); err != nil {
			t.Fatal(err)
		}
		if s, err := st.Guided.Open(ctx, "!pat:hs"); err != nil || s != nil {
			t.Fatalf("open session in a fresh room = %+v, %v", s, err)
		}
		s := &store.GuidedSession{CaseID: c.ID, RoomID: "!pat:hs", PatientID: "@pat:hs", StartEvent: "$start",
			Questionnaire: []byte(`{"title":"Daily","questions":[{"id":"a"},{"id":"b"},{"id":"c"}]}`), PollCause: "$start"}
		if err := st.Guided.Start(ctx, s); err != nil {
			t.Fatal(err)
		}
		second := &store.GuidedSession{CaseID: c.ID, RoomID: "!pat:hs", PatientID: "@pat:hs", StartEvent: "$start2", Questionnaire: []byte(`{}`)}
		if err := st.Guided.Start(ctx, second); err == nil {
			t.Fatal("a second open session in the same room was stored")
		}

		got, err := st.Guided.Open(ctx, "!pat:hs")
		if err != nil || got == nil || got.ID != s.ID || got.Question != 0 || got.PollCause != "$start" || got.Status != store.GuidedOpen ||
			string(got.Questionnaire) != string(s.Questionnaire) || got.PatientID != "@pat:hs" || got.StartEvent != "$start" {
			t.Fatalf("open session = %+v, %v", got, err)
		}

		temp := care.Value{Kind: care.Temperature, Quantity: care.Quantity{Value: 38.4, Unit: care.UnitCelsius}}
		at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
		if err = st.Guided.Answer(ctx, got, &store.GuidedAnswer{Question: 0, QuestionID: "a", Answer: "Worse", EventID: "$a0", AnsweredAt: at}, 1, ""); err != nil {
			t.Fatal(err)
		}
		// An answer meant for a question the session has left (e.g. processed twice) is refused.
		stale := &store.GuidedSession{ID: s.ID, Question: 0}
		if err = st.Guided.Answer(ctx, stale, &store.GuidedAnswer{Question: 0, QuestionID: "a", Answer: "Better", EventID: "$a0b"}, 1, ""); !errors.Is(err, store.ErrGuidedChanged) {
			t.Fatalf("stale answer: %v, want ErrGuidedChanged", err)
		}
		if err = st.Guided.Answer(ctx, got, &store.GuidedAnswer{Question: 1, QuestionID: "b", Answer: "38.4 °C", Value: &temp, EventID: "$a1", AnsweredAt: at}, 2, "$a1"); err != nil {
			t.Fatal(err)
		}
		if got.Question != 2 || got.PollCause != "$a1" {
			t.Fatalf("session after two answers = %+v", got)
		}
		if err = st.Guided.Answer(ctx, got, &store.GuidedAnswer{Question: 2, QuestionID: "c", Skipped: true, EventID: "$a2"}, 3, ""); err != nil {
			t.Fatal(err)
		}
		answers, err := st.Guided.Answers(ctx, s.ID)
		if err != nil || len(answers) != 3 {
			t.Fatalf("answers = %v, %v", answers, err)
		}
		if a := answers[0]; a.Answer != "Worse" || a.Value != nil || a.Skipped || a.EventID != "$a0" || !a.AnsweredAt.Equal(at) || a.QuestionID != "a" {
			t.Errorf("answer 0 = %+v", a)
		}
		if a := answers[1]; a.Value == nil || a.Value.Kind != care.Temperature || a.Value.Quantity.Value != 38.4 || a.Value.Quantity.Unit != care.UnitCelsius {
			t.Errorf("answer 1 = %+v", a)
		}
		if a := answers[2]; !a.Skipped || a.Answer != "" {
			t.Errorf("answer 2 = %+v", a)
		}

		checkIn := &store.CheckIn{CaseID: c.ID, EventID: "$start", RoomID: "!pat:hs", PatientID: "@pat:hs", RecordedBy: "@pat:hs",
			Source: store.SourceGuided, EffectiveAt: at, Values: []care.Value{temp}, Note: "A: Worse"}
		if err = st.CheckIns.Create(ctx, checkIn); err != nil {
			t.Fatal(err)
		}
		if err = st.Guided.Close(ctx, got, store.GuidedCompleted, checkIn.ID, "$a2"); err != nil {
			t.Fatal(err)
		}
		if err = st.Guided.Close(ctx, got, store.GuidedCancelled, 0, "$again"); !errors.Is(err, store.ErrGuidedChanged) {
			t.Fatalf("closing a closed session: %v, want ErrGuidedChanged", err)
		}
		if open, err := st.Guided.Open(ctx, "!pat:hs"); err != nil || open != nil {
			t.Fatalf("open session after completion = %+v, %v", open, err)
		}
		done, err := st.Guided.ByID(ctx, s.ID)
		if err != nil || done.Status != store.GuidedCompleted || done.CheckInID != checkIn.ID || done.ClosedEvent != "$a2" || done.ClosedAt.IsZero() {
			t.Fatalf("closed session = %+v, %v", done, err)
		}

		// A new session may start once the first is closed; a cancelled one keeps no check-in.
		if err = st.Guided.Start(ctx, second); err != nil {
			t.Fatal(err)
		}
		if err = st.Guided.Close(ctx, second, store.GuidedCancelled, 0, "$cancel"); err != nil {
			t.Fatal(err)
		}
		if cancelled, _ := st.Guided.ByID(ctx, second.ID); cancelled.Status != store.GuidedCancelled || cancelled.CheckInID != 0 {
			t.Fatalf("cancelled session = %+v", cancelled)
		}
	})
}

func TestGuidedPolls(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		poll := map[string]any{"org.matrix.msc3381.poll.start": map[string]any{}}
		seq, err := st.Outgoing.Add(ctx, "!pat:hs", event.EventUnstablePollStart, poll, "$cause")
		if err != nil {
			t.Fatal(err)
		}
		// A notice queued by the same event is not the poll.
		notice, err := st.Outgoing.Add(ctx, "!pat:hs", event.EventMessage, map[string]any{"body": "hi"}, "$cause")
		if err != nil {
			t.Fatal(err)
		}
		if evt, err := st.Guided.PollEvent(ctx, "!pat:hs", "$cause"); err != nil || evt != "" {
			t.Fatalf("poll event before sending = %q, %v", evt, err)
		}
		if err = st.Outgoing.MarkSent(ctx, seq, "$poll"); err != nil {
			t.Fatal(err)
		}
		if err = st.Outgoing.MarkSent(ctx, notice, "$notice"); err != nil {
			t.Fatal(err)
		}
		if evt, err := st.Guided.PollEvent(ctx, "!pat:hs", "$cause"); err != nil || evt != "$poll" {
			t.Fatalf("poll event = %q, %v", evt, err)
		}
		if cause, err := st.Guided.PollCause(ctx, "!pat:hs", "$poll"); err != nil || cause != "$cause" {
			t.Fatalf("poll cause = %q, %v", cause, err)
		}
		for _, tc := range []struct{ room, evt string }{{"!pat:hs", "$notice"}, {"!other:hs", "$poll"}, {"!pat:hs", "$unknown"}} {
			if cause, err := st.Guided.PollCause(ctx, id.RoomID(tc.room), id.EventID(tc.evt)); err != nil || cause != "" {
				t.Errorf("poll cause of %s in %s = %q, %v; want none", tc.evt, tc.room, cause, err)
			}
		}
	})
}
