package ehr_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/store"
)

func TestCommunicationFor(t *testing.T) {
	sent := time.Date(2026, 3, 14, 9, 26, 53, 0, time.FixedZone("CET", 3600))
	rec := ehr.CommunicationRecord{
		CommandEventID: "$cmd", PatientRef: "Patient/1", SenderRef: "Patient/1", CarePlanRef: "CarePlan/7",
		Messages: []ehr.FiledMessage{
			{Sender: "@pat:hs", Sent: sent, Text: "  the wound is red  "},
			{Sender: "@doc:hs", Sent: sent.Add(time.Minute), Text: ""},
		},
	}
	com, err := ehr.CommunicationFor(rec)
	if err != nil {
		t.Fatal(err)
	}
	if com.Status != "completed" || com.Subject.Reference != "Patient/1" || com.Sender.Reference != "Patient/1" ||
		len(com.About) != 1 || com.About[0].Reference != "CarePlan/7" || com.Sent != "2026-03-14T08:27:53Z" ||
		com.Identifier[0].System != "urn:caseroom:communication" || com.Identifier[0].Value != "$cmd" {
		t.Fatalf("Communication = %+v", com)
	}
	want := []string{"@pat:hs (2026-03-14 08:26:53 UTC): the wound is red", "@doc:hs (2026-03-14 08:27:53 UTC): (empty message)"}
	if len(com.Payload) != 2 || com.Payload[0].ContentString != want[0] || com.Payload[1].ContentString != want[1] {
		t.Fatalf("payload = %+v", com.Payload)
	}

	for name, bad := range map[string]func(r *ehr.CommunicationRecord){
		"no event":        func(r *ehr.CommunicationRecord) { r.CommandEventID = "" },
		"bad patient":     func(r *ehr.CommunicationRecord) { r.PatientRef = "Practitioner/1" },
		"bad sender":      func(r *ehr.CommunicationRecord) { r.SenderRef = "Device/1" },
		"bad care plan":   func(r *ehr.CommunicationRecord) { r.CarePlanRef = "Goal/1" },
		"no messages":     func(r *ehr.CommunicationRecord) { r.Messages = nil },
		"message no time": func(r *ehr.CommunicationRecord) { r.Messages = []ehr.FiledMessage{{Sender: "@a:b", Text: "x"}} },
	} {
		r := rec
		bad(&r)
		if _, err := ehr.CommunicationFor(r); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCommunicationFiledOnce(t *testing.T) {
	f := newOutboxFixture(t, nil)
	ctx := testContext(t)
	if _, err := f.st.Cases.AddPatient(ctx, f.c.ID, "@pat:hs", "@doc:hs"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Roles.AddClinician(ctx, "@doc:hs", "Practitioner/42", "@admin:hs"); err != nil {
		t.Fatal(err)
	}
	// A thread filed before the case has a CarePlan: no about.
	sent := time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)
	thread := &store.Filing{CaseID: f.c.ID, RoomID: f.c.PatientRoomID, CommandEvent: "$cmd+1/a=", FiledBy: "@doc:hs",
		ThreadRoot: "$root", Messages: []store.FiledMessage{
			{EventID: "$root", Sender: "@pat:hs", SentAt: sent.UnixMilli(), Text: "The dressing came off"},
			{EventID: "$r2", Sender: "@doc:hs", SentAt: sent.Add(2 * time.Minute).UnixMilli(), Text: "Put on a new one, I'll visit at 4"},
		}}
	if err := f.st.Filings.Add(ctx, thread); err != nil {
		t.Fatal(err)
	}
	f.queue(t, store.OutboxCommunication, thread.ID, 1, thread.RoomID, thread.CommandEvent)
	results := f.deliver(t)
	if len(results) != 1 || !strings.HasPrefix(results[0], "Communication/") {
		t.Fatalf("results = %q", results)
	}
	var com ehr.Communication
	typ, comID, _ := ehr.ParseReference(results[0])
	if err := f.fhir.Read(ctx, typ, comID, &com); err != nil {
		t.Fatal(err)
	}
	if com.Status != "completed" || com.Subject.Reference != f.patient || com.Sender == nil || com.Sender.Reference != f.patient ||
		len(com.About) != 0 || com.Sent != "2026-03-14T09:02:00Z" || len(com.Payload) != 2 ||
		com.Payload[1].ContentString != "@doc:hs (2026-03-14 09:02:00 UTC): Put on a new one, I'll visit at 4" ||
		com.Identifier[0].Value != "$cmd+1/a=" {
		t.Fatalf("Communication = %+v", com)
	}
	if notices := f.notices(t, f.c.PatientRoomID); len(notices) != 1 || notices[0] != "📋 The thread (2 messages) was filed to the chart as "+results[0]+"." {
		t.Fatalf("notices = %q", notices)
	}

	// Delivered again (a crash before the delivery was recorded, or an admin's retry): the same Communication.
	f.queue(t, store.OutboxCommunication, thread.ID, 2, thread.RoomID, thread.CommandEvent)
	if again := f.deliver(t); len(again) != 1 || again[0] != results[0] {
		t.Fatalf("second delivery = %q, want %s", again, results[0])
	}
	if n, err := f.srv.Count(ctx, "Communication", ehr.IdentifierQuery(ehr.CommunicationIdentifierSystem, "$cmd+1/a=")); err != nil || n != 1 {
		t.Fatalf("%d Communications (%v), want 1", n, err)
	}

	// Once the case has a CarePlan, a filing is about it; a clinician's message has their Practitioner as sender.
	addPlanItem(t, f, store.PlanGoal, "Heal the wound", "", "@doc:hs", "$goal")
	f.queuePlan(t, "$goal")
	one := &store.Filing{CaseID: f.c.ID, RoomID: f.c.CaseRoomID, CommandEvent: "$cmd2", FiledBy: "@doc:hs",
		Messages: []store.FiledMessage{{EventID: "$m", Sender: "@doc:hs", SentAt: sent.UnixMilli(), Text: "Looks infected"}}}
	if err := f.st.Filings.Add(ctx, one); err != nil {
		t.Fatal(err)
	}
	f.queue(t, store.OutboxCommunication, one.ID, 1, one.RoomID, one.CommandEvent)
	results = f.deliver(t)
	if len(results) != 2 {
		t.Fatalf("results = %q", results)
	}
	typ, comID, _ = ehr.ParseReference(results[1])
	if err := f.fhir.Read(ctx, typ, comID, &com); err != nil {
		t.Fatal(err)
	}
	if len(com.About) != 1 || com.About[0].Reference != results[0] || com.Sender.Reference != "Practitioner/42" {
		t.Fatalf("Communication = %+v, want about %s", com, results[0])
	}
	if notices := f.notices(t, f.c.CaseRoomID); !strings.Contains(strings.Join(notices, "\n"), "📋 The message was filed to the chart as "+results[1]) {
		t.Fatalf("notices = %q", notices)
	}
}

func TestFilingSameMessages(t *testing.T) {
	f := newOutboxFixture(t, nil)
	ctx := context.Background()
	a := &store.Filing{CaseID: f.c.ID, RoomID: "!r:hs", CommandEvent: "$a", FiledBy: "@doc:hs",
		Messages: []store.FiledMessage{{EventID: "$1", Sender: "@p:hs", SentAt: 1, Text: "x"}, {EventID: "$2", Sender: "@p:hs", SentAt: 2, Text: "y"}}}
	if err := f.st.Filings.Add(ctx, a); err != nil {
		t.Fatal(err)
	}
	b := &store.Filing{CaseID: f.c.ID, RoomID: "!r:hs", CommandEvent: "$b", FiledBy: "@doc:hs",
		Messages: []store.FiledMessage{{EventID: "$2", Sender: "@p:hs", SentAt: 2, Text: "y"}, {EventID: "$1", Sender: "@p:hs", SentAt: 1, Text: "x"}}}
	same, err := f.st.Filings.Same(ctx, b)
	if err != nil || same == nil || same.ID != a.ID || same.CommandEvent != "$a" || len(same.Messages) != 2 || same.Messages[1].Text != "y" {
		t.Fatalf("Same = %+v, %v", same, err)
	}
	b.Messages = b.Messages[:1]
	if same, err = f.st.Filings.Same(ctx, b); err != nil || same != nil {
		t.Fatalf("Same of other messages = %+v, %v", same, err)
	}
	if err := f.st.Filings.Add(ctx, &store.Filing{CaseID: f.c.ID, RoomID: "!r:hs", CommandEvent: "$a", FiledBy: "@doc:hs",
		Messages: a.Messages}); err == nil {
		t.Fatal("a second filing of the same command was stored")
	}
}
