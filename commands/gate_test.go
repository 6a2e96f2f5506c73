package commands

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/config"
	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

// TestGateRefusesDeletionByNonAuthor covers the deletions a Dendrite client cannot send (Dendrite refuses a
// redaction without power, and one of another room's event), which another homeserver may still deliver: a real
// redaction by the patient of a reading a clinician recorded, and one from an outsider's own room. Both are refused
// before any homeserver call (no power-level lookup is needed for someone not on the care team).
func TestGateRefusesDeletionByNonAuthor(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, testdb.New(t, testdb.SQLite), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	cs := &store.Case{Title: "x", CaseRoomID: "!c:hs", PatientRoomID: "!p:hs", CreatedBy: "@doc:hs"}
	if err = st.Cases.Create(ctx, cs, "$case"); err != nil {
		t.Fatal(err)
	}
	if _, err = st.Roles.AddClinician(ctx, "@doc:hs", "", "@admin:hs"); err != nil {
		t.Fatal(err)
	}
	if _, err = st.Cases.AddTeamMember(ctx, cs.ID, "@doc:hs", "", "@admin:hs"); err != nil {
		t.Fatal(err)
	}
	if _, err = st.Cases.AddPatient(ctx, cs.ID, "@pat:hs", "@doc:hs"); err != nil {
		t.Fatal(err)
	}
	parsed, _ := care.ParseCheckIn("hr=70", nil)
	record := &store.CheckIn{CaseID: cs.ID, EventID: "$reading", RoomID: "!p:hs", PatientID: "@pat:hs", RecordedBy: "@doc:hs",
		Source: store.SourceClinician, EffectiveAt: time.Now().UTC(), Values: parsed.Values}
	if err = st.CheckIns.Create(ctx, record); err != nil {
		t.Fatal(err)
	}
	b := &bot.Bot{Config: &config.Config{Homeserver: config.HomeserverConfig{Domain: "hs"}}, Store: st}
	for _, tt := range []struct {
		name   string
		sender id.UserID
		room   id.RoomID
	}{
		{"patient deletes a clinician's reading", "@pat:hs", "!p:hs"},
		{"outsider deletes from their own room", "@outsider:hs", "!dm:hs"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			turn := &bot.Turn{Bot: b, Event: &event.Event{ID: "$redaction", Type: event.EventRedaction, Sender: tt.sender,
				RoomID: tt.room, Redacts: record.EventID}}
			refused, err := gateCheckInChange(ctx, turn, record, "write:checkin-entered-in-error", "delete")
			if err != nil || !refused || turn.Outcome != "refused:role" {
				t.Fatalf("gate = %v, %v, outcome %q; want refused:role", refused, err, turn.Outcome)
			}
		})
	}
	// The author, in their current role and in the check-in's room, passes the gate.
	turn := &bot.Turn{Bot: b, Event: &event.Event{ID: "$own", Type: event.EventRedaction, Sender: "@doc:hs", RoomID: "!p:hs", Redacts: record.EventID}}
	if refused, err := gateCheckInChange(ctx, turn, record, "write:checkin-entered-in-error", "delete"); err != nil || refused {
		t.Fatalf("the author's own deletion: refused %v, %v (%s)", refused, err, turn.Outcome)
	}
}
