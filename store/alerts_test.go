package store_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

func TestAlertThresholds(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		caseA, caseB := newTestCase(t, st, "A"), newTestCase(t, st, "B")
		at := time.Date(2026, 10, 25, 1, 30, 0, 0, time.UTC)
		set := func(c *store.Case, kind, dir, text string) string {
			t.Helper()
			replaced, err := st.Alerts.SetThreshold(ctx, &store.CaseThreshold{CaseID: c.ID, Kind: kind, Direction: dir, Threshold: text,
				SetBy: "@doc:hs", SetEvent: "$set", SetAt: at})
			if err != nil {
				t.Fatal(err)
			}
			return replaced
		}
		if r := set(caseA, "spo2", store.DirectionLow, "spo2<90"); r != "" {
			t.Fatalf("first set replaced %q", r)
		}
		if r := set(caseA, "spo2", store.DirectionLow, "spo2<88"); r != "spo2<90" {
			t.Fatalf("second set replaced %q, want spo2<90", r)
		}
		set(caseA, "hr", store.DirectionHigh, "hr>130")
		set(caseB, "hr", store.DirectionHigh, "hr>100")
		own, err := st.Alerts.Thresholds(ctx, caseA.ID)
		if err != nil || len(own) != 2 || own[0].Threshold != "hr>130" || own[1].Threshold != "spo2<88" || !own[1].SetAt.Equal(at) {
			t.Fatalf("thresholds = %+v, %v", own, err)
		}
		if ok, _ := st.Alerts.ClearThreshold(ctx, caseA.ID, "hr>100"); ok {
			t.Fatal("cleared another case's threshold")
		}
		if ok, _ := st.Alerts.ClearThreshold(ctx, caseA.ID, "hr>130"); !ok {
			t.Fatal("ClearThreshold failed")
		}
		if n, _ := st.Alerts.ClearThresholds(ctx, caseA.ID); n != 1 {
			t.Fatalf("ClearThresholds cleared %d, want 1", n)
		}
		if own, _ := st.Alerts.Thresholds(ctx, caseB.ID); len(own) != 1 {
			t.Fatalf("case B lost its threshold: %+v", own)
		}
	})
}

func TestAlerts(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		c := newTestCase(t, st, "A")
		at := time.Date(2026, 3, 29, 0, 50, 0, 0, time.UTC)
		newAlert := func(evt string) *store.Alert {
			t.Helper()
			ci := &store.CheckIn{CaseID: c.ID, EventID: id.EventID("$" + evt), RoomID: c.PatientRoomID, PatientID: "@pat:hs", RecordedBy: "@pat:hs",
				Source: store.SourcePatient, EffectiveAt: at}
			if err := st.CheckIns.Create(ctx, ci); err != nil {
				t.Fatal(err)
			}
			a := &store.Alert{CaseID: c.ID, CheckInID: ci.ID, PatientID: "@pat:hs", Crossings: "SpO2 88 % (threshold spo2<92)",
				RaisedAt: at, EscalateAt: at.Add(15 * time.Minute)}
			if err := st.Alerts.Create(ctx, a); err != nil {
				t.Fatal(err)
			}
			return a
		}
		first, second := newAlert("one"), newAlert("two")
		if first.Number != 1 || second.Number != 2 {
			t.Fatalf("numbers %d, %d", first.Number, second.Number)
		}
		if err := st.Alerts.Create(ctx, &store.Alert{CaseID: c.ID, CheckInID: first.CheckInID, PatientID: "@pat:hs", RaisedAt: at,
			EscalateAt: at}); err == nil {
			t.Fatal("a second alert for the same check-in was stored")
		}

		// The alert message: found again by the event ID it got when it was sent.
		seq, err := st.Outgoing.Add(ctx, c.CaseRoomID, event.EventMessage, json.RawMessage(`{"body":"alert"}`), "$two")
		if err != nil {
			t.Fatal(err)
		}
		if err = st.Alerts.SetMessage(ctx, second.ID, seq); err != nil {
			t.Fatal(err)
		}
		if got, _ := st.Outgoing.BySentEvent(ctx, "$sent"); got != 0 {
			t.Fatalf("unsent message found by event: %d", got)
		}
		if err = st.Outgoing.MarkSent(ctx, seq, "$sent"); err != nil {
			t.Fatal(err)
		}
		if got, _ := st.Outgoing.BySentEvent(ctx, "$sent"); got != seq {
			t.Fatalf("BySentEvent = %d, want %d", got, seq)
		}
		if got, _ := st.Alerts.ByMessage(ctx, seq); got == nil || got.ID != second.ID {
			t.Fatalf("ByMessage = %+v", got)
		}

		if next, _ := st.Alerts.NextEscalation(ctx); !next.Equal(at.Add(15 * time.Minute)) {
			t.Fatalf("NextEscalation = %s", next)
		}
		if due, _ := st.Alerts.DueEscalations(ctx, at.Add(14*time.Minute), 10); len(due) != 0 {
			t.Fatalf("escalations due early: %+v", due)
		}
		if ok, err := st.Alerts.Ack(ctx, second.ID, "@doc:hs", "$ack", at.Add(time.Minute)); !ok || err != nil {
			t.Fatalf("Ack = %v, %v", ok, err)
		}
		if ok, _ := st.Alerts.Ack(ctx, second.ID, "@nurse:hs", "$ack2", at.Add(2*time.Minute)); ok {
			t.Fatal("acknowledged twice")
		}
		open, _ := st.Alerts.Open(ctx, c.ID)
		if len(open) != 1 || open[0].ID != first.ID {
			t.Fatalf("open = %+v", open)
		}
		due, err := st.Alerts.DueEscalations(ctx, at.Add(15*time.Minute), 10)
		if err != nil || len(due) != 1 || due[0].ID != first.ID {
			t.Fatalf("due escalations = %+v, %v (the acknowledged alert must not escalate)", due, err)
		}
		if ok, _ := st.Alerts.MarkEscalated(ctx, first.ID, at.Add(16*time.Minute)); !ok {
			t.Fatal("MarkEscalated failed")
		}
		if ok, _ := st.Alerts.MarkEscalated(ctx, first.ID, at.Add(17*time.Minute)); ok {
			t.Fatal("escalated twice")
		}
		if ok, _ := st.Alerts.MarkEscalated(ctx, second.ID, at.Add(17*time.Minute)); ok {
			t.Fatal("an acknowledged alert escalated")
		}
		if next, _ := st.Alerts.NextEscalation(ctx); !next.IsZero() {
			t.Fatalf("NextEscalation after all = %s", next)
		}
		got, _ := st.Alerts.ByNumber(ctx, c.ID, 2)
		if got.AckedBy != "@doc:hs" || got.AckEvent != "$ack" || !got.Acked() || !got.EscalateAt.IsZero() || got.OutgoingSeq != seq {
			t.Fatalf("acknowledged alert = %+v", got)
		}
		if got, _ := st.Alerts.ByNumber(ctx, c.ID, 1); !got.EscalatedAt.Equal(at.Add(16*time.Minute)) || got.Acked() {
			t.Fatalf("escalated alert = %+v", got)
		}
	})
}
