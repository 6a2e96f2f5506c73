package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

func TestCheckInVersions(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		cs := &store.Case{Title: "x", CaseRoomID: "!c:hs", PatientRoomID: "!p:hs", CreatedBy: "@doc:hs"}
		if err := st.Cases.Create(ctx, cs, "$case"); err != nil {
			t.Fatal(err)
		}
		first, err := care.ParseCheckIn("bp=142/91 hr=88 temp=101.2F dizzy", nil)
		if err != nil {
			t.Fatal(err)
		}
		effective := time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC)
		c := &store.CheckIn{CaseID: cs.ID, EventID: "$orig", RoomID: "!p:hs", PatientID: "@pat:hs", RecordedBy: "@pat:hs",
			Source: store.SourcePatient, EffectiveAt: effective, Values: first.Values, Note: first.Note}
		if err = st.CheckIns.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		if err = st.CheckIns.Create(ctx, &store.CheckIn{CaseID: cs.ID, EventID: "$orig", RoomID: "!p:hs", PatientID: "@pat:hs",
			RecordedBy: "@pat:hs", Source: store.SourcePatient, EffectiveAt: effective}); err == nil {
			t.Fatal("a second check-in from the same event was stored")
		}
		got, err := st.CheckIns.ByEvent(ctx, "$orig")
		if err != nil || got == nil || got.Version != 1 || got.Status != store.StatusFinal || len(got.Values) != 3 ||
			got.Values[2].Quantity.Unit != care.UnitFahrenheit || got.Note != "dizzy" || !got.EffectiveAt.Equal(effective) {
			t.Fatalf("stored = %+v, %v", got, err)
		}
		amended, _ := care.ParseCheckIn("bp=140/90 hr=80", nil)
		if err = st.CheckIns.Amend(ctx, got, amended.Values, amended.Note, "$edit", "@pat:hs"); err != nil {
			t.Fatal(err)
		}
		if dup, _ := st.CheckIns.HasVersionEvent(ctx, "$edit"); !dup {
			t.Fatal("edit event not remembered")
		}
		if err = st.CheckIns.MarkEnteredInError(ctx, got, "$redact", "@doc:hs"); err != nil {
			t.Fatal(err)
		}
		versions, err := st.CheckIns.Versions(ctx, got.ID)
		if err != nil || len(versions) != 3 {
			t.Fatalf("versions = %d, %v", len(versions), err)
		}
		if versions[0].Status != store.StatusFinal || len(versions[0].Values) != 3 || versions[1].Status != store.StatusAmended ||
			versions[1].Values[1].Quantity.Value != 80 || versions[2].Status != store.StatusEnteredInError || versions[2].VersionAuthor != "@doc:hs" {
			t.Fatalf("versions kept wrong: %+v", versions)
		}
		if list, _ := st.CheckIns.List(ctx, store.CheckInFilter{CaseID: cs.ID}); len(list) != 0 {
			t.Fatalf("entered-in-error check-in listed: %+v", list)
		}
		if list, _ := st.CheckIns.List(ctx, store.CheckInFilter{CaseID: cs.ID, WithErrors: true, PatientID: "@pat:hs", Limit: 5}); len(list) != 1 {
			t.Fatalf("with errors: %d", len(list))
		}
	})
}

func TestRecordsAreAppendOnly(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		if err := st.Audit.Add(ctx, &store.AuditEntry{Actor: "@a:hs", Action: "read:case", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
		cs := &store.Case{Title: "x", CaseRoomID: "!c:hs", PatientRoomID: "!p:hs", CreatedBy: "@doc:hs"}
		if err := st.Cases.Create(ctx, cs, "$case"); err != nil {
			t.Fatal(err)
		}
		c := &store.CheckIn{CaseID: cs.ID, EventID: "$e", RoomID: "!p:hs", PatientID: "@pat:hs", RecordedBy: "@pat:hs",
			Source: store.SourcePatient, EffectiveAt: time.Now()}
		if err := st.CheckIns.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		for _, stmt := range []string{
			"UPDATE audit SET outcome = 'changed'", "DELETE FROM audit",
			"UPDATE checkins SET patient_id = 'x'", "DELETE FROM checkin_versions", "UPDATE checkin_versions SET note = 'x'",
		} {
			if _, err := st.DB.Exec(ctx, stmt); err == nil {
				t.Errorf("%q succeeded on an append-only table", stmt)
			}
		}
	})
}
