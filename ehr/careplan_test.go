package ehr_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/fhirtest"
	"github.com/caseroom/caseroom/internal/fhirtest/fhirtesting"
	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

// outboxFixture is a store with one case linked to a patient of the test server, and an Outbox that delivers to it.
type outboxFixture struct {
	srv     *fhirtest.Server
	fhir    *ehr.Client // the test's own client, to look at what the outbox wrote
	st      *store.Store
	outbox  *ehr.Outbox
	c       *store.Case
	patient string
}

func newOutboxFixture(t *testing.T, transport http.RoundTripper) *outboxFixture {
	t.Helper()
	ctx := testContext(t)
	f := &outboxFixture{srv: fhirtesting.Shared(t)}
	f.fhir = newClient(t, f.srv, nil)
	st, err := store.Open(ctx, testdb.New(t, testdb.SQLite), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	f.st = st
	f.patient = createPatient(t, ctx, f.fhir, "outbox-"+t.Name())
	f.c = &store.Case{Title: "Wound care", PatientRef: f.patient, CaseRoomID: "!case:hs", PatientRoomID: "!patient:hs", CreatedBy: "@doc:hs"}
	if err = st.Cases.Create(ctx, f.c, "$open"); err != nil {
		t.Fatal(err)
	}
	client, err := ehr.New(ehr.Config{BaseURL: f.srv.URL, Timeout: 10 * time.Second, HTTPClient: &http.Client{Transport: transport}})
	if err != nil {
		t.Fatal(err)
	}
	f.outbox = &ehr.Outbox{Store: st, Client: client, Log: zerolog.Nop()}
	return f
}

// queue adds an outbox item of the fixture's case.
func (f *outboxFixture) queue(t *testing.T, kind string, record int64, version int, room id.RoomID, source id.EventID) {
	t.Helper()
	err := f.st.EHR.Add(context.Background(), &store.OutboxItem{Kind: kind, RecordID: record, Version: version, CaseID: f.c.ID,
		OrderKey: fmt.Sprintf("case:%d", f.c.ID), RoomID: room, SourceEvent: source})
	if err != nil {
		t.Fatal(err)
	}
}

// deliver runs the outbox once and fails the test unless every item was delivered; it returns the results of the
// items delivered now, in order.
func (f *outboxFixture) deliver(t *testing.T) []string {
	t.Helper()
	ctx := testContext(t)
	before, err := f.st.EHR.List(ctx, false, 1000)
	if err != nil {
		t.Fatal(err)
	}
	done := make(map[int64]bool)
	for _, it := range before {
		done[it.Seq] = !it.DeliveredAt.IsZero()
	}
	// One pass delivers the first pending item of each case; the next pass the one after it.
	for pass := 0; pass < 20; pass++ {
		n, err := f.outbox.DeliverDue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	after, err := f.st.EHR.List(ctx, false, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var results []string
	for i := len(after) - 1; i >= 0; i-- {
		it := after[i]
		if it.DeliveredAt.IsZero() {
			t.Fatalf("outbox item %d (%s) not delivered: dead=%v, error %s", it.Seq, it.Kind, !it.DeadAt.IsZero(), it.LastError)
		}
		if !done[it.Seq] {
			results = append(results, it.Result)
		}
	}
	return results
}

// notices returns the bodies of the notices queued for a room (reactions are left out).
func (f *outboxFixture) notices(t *testing.T, room id.RoomID) []string {
	t.Helper()
	pending, err := f.st.Outgoing.Pending(context.Background(), room, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range pending {
		if o.Type != event.EventMessage {
			continue
		}
		var content event.MessageEventContent
		if err := json.Unmarshal(o.Content, &content); err != nil {
			t.Fatal(err)
		}
		out = append(out, content.Body)
	}
	return out
}

// history returns the versions of a resource, newest first, as the server's _history holds them.
func history(t *testing.T, srv *fhirtest.Server, ref string) []json.RawMessage {
	t.Helper()
	resp, err := http.Get(srv.URL + "/" + ref + "/_history")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("history of %s: HTTP %d: %s", ref, resp.StatusCode, raw)
	}
	var bundle struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(raw, &bundle); err != nil {
		t.Fatal(err)
	}
	out := make([]json.RawMessage, len(bundle.Entry))
	for i, e := range bundle.Entry {
		out[i] = e.Resource
	}
	return out
}

// carePlan reads the CarePlan of a case by its identifier; there must be exactly one.
func carePlan(t *testing.T, f *outboxFixture) *ehr.CarePlan {
	t.Helper()
	bundle, err := f.fhir.Search(testContext(t), "CarePlan", ehr.IdentifierQuery(ehr.CarePlanIdentifierSystem, ehr.CarePlanIdentifier(f.c.ID)))
	if err != nil {
		t.Fatal(err)
	}
	if len(bundle.Entry) != 1 {
		t.Fatalf("%d CarePlans carry the case's identifier, want 1", len(bundle.Entry))
	}
	var plan ehr.CarePlan
	if err := bundle.Entry[0].Decode(&plan); err != nil {
		t.Fatal(err)
	}
	return &plan
}

func addPlanItem(t *testing.T, f *outboxFixture, kind store.PlanKind, text, due string, author id.UserID, evt id.EventID) *store.PlanItem {
	t.Helper()
	item, err := f.st.Plans.AddItem(context.Background(), &store.NewPlanItem{CaseID: f.c.ID, Kind: kind, Text: text, Due: due,
		Author: author, EventID: evt, At: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	return item
}

// queuePlan queues the case's CarePlan as the plan commands do.
func (f *outboxFixture) queuePlan(t *testing.T, source id.EventID) {
	t.Helper()
	n, err := f.st.Plans.VersionCount(context.Background(), f.c.ID)
	if err != nil {
		t.Fatal(err)
	}
	f.queue(t, store.OutboxCarePlan, f.c.ID, n, f.c.CaseRoomID, source)
}

func TestCarePlanVersions(t *testing.T) {
	f := newOutboxFixture(t, nil)
	ctx := testContext(t)
	if _, err := f.st.Roles.AddClinician(ctx, "@doc:hs", "Practitioner/42", "@admin:hs"); err != nil {
		t.Fatal(err)
	}
	due := time.Now().UTC().AddDate(0, 1, 0).Format(time.DateOnly)
	task := addPlanItem(t, f, store.PlanTask, "Change the dressing", due, "@nurse:hs", "$task")
	f.queuePlan(t, "$task")
	goal := addPlanItem(t, f, store.PlanGoal, "Walk 500 m without pain", "", "@doc:hs", "$goal")
	f.queuePlan(t, "$goal")
	addPlanItem(t, f, store.PlanNote, "SECRET-NOTE anxious about the wound", "", "@doc:hs", "$note")

	results := f.deliver(t)
	if len(results) != 2 || !strings.HasPrefix(results[0], "CarePlan/") || results[1] != results[0]+" (unchanged)" {
		t.Fatalf("results = %q, want the CarePlan written once, then found current", results)
	}
	plan := carePlan(t, f)
	if "CarePlan/"+plan.ID != results[0] {
		t.Fatalf("found %s, delivered %s", plan.ID, results[0])
	}
	if plan.Status != "active" || plan.Intent != "plan" || plan.Subject.Reference != f.patient || plan.Title != "Treatment plan: Wound care" ||
		plan.Author == nil || plan.Author.Reference != "Practitioner/42" || len(plan.Contributor) != 2 || plan.Created == "" ||
		plan.Contributor[0].Identifier == nil || plan.Contributor[0].Identifier.Value != "@nurse:hs" ||
		plan.Contributor[1].Reference != "Practitioner/42" {
		t.Fatalf("CarePlan = %+v", plan)
	}
	if len(plan.Activity) != 1 || plan.Activity[0].Detail.Kind != "Task" || plan.Activity[0].Detail.Status != "not-started" ||
		plan.Activity[0].Detail.Description != "Change the dressing" || plan.Activity[0].Detail.ScheduledPeriod == nil ||
		plan.Activity[0].Detail.ScheduledPeriod.End != due {
		t.Fatalf("activities = %+v", plan.Activity)
	}
	raw, _ := json.Marshal(plan)
	if strings.Contains(string(raw), "SECRET") {
		t.Fatalf("the care team's note reached the CarePlan: %s", raw)
	}
	if len(plan.Goal) != 1 {
		t.Fatalf("goals = %+v", plan.Goal)
	}
	var g ehr.Goal
	goalType, goalID, _ := ehr.ParseReference(plan.Goal[0].Reference)
	if err := f.fhir.Read(ctx, goalType, goalID, &g); err != nil {
		t.Fatal(err)
	}
	if g.LifecycleStatus != "active" || g.Description.Text != "Walk 500 m without pain" || g.Subject.Reference != f.patient ||
		g.ExpressedBy == nil || g.ExpressedBy.Reference != "Practitioner/42" || g.Identifier[0].Value != fmt.Sprint(goal.ID) {
		t.Fatalf("Goal = %+v", g)
	}
	// The second item found the plan already current: one version, one notice.
	if n := len(history(t, f.srv, results[0])); n != 1 {
		t.Fatalf("%d versions after the first two changes, want 1", n)
	}
	if notices := f.notices(t, f.c.CaseRoomID); len(notices) != 1 || !strings.Contains(notices[0], "filed in the EHR as "+results[0]) ||
		!strings.Contains(notices[0], "1 goal, 1 task") {
		t.Fatalf("notices = %q", notices)
	}

	// The task is done: a new version of the same CarePlan; the Goal keeps its version.
	if _, err := f.st.Plans.AddVersion(ctx, task.ID, &store.PlanVersion{Change: store.PlanMarked, Text: "Change the dressing", Due: due,
		Status: store.PlanDone, EventID: "$done", Author: "@doc:hs", At: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	f.queuePlan(t, "$done")
	if results := f.deliver(t); len(results) != 1 || results[0] != "CarePlan/"+plan.ID {
		t.Fatalf("results = %q", results)
	}
	versions := history(t, f.srv, "CarePlan/"+plan.ID)
	if len(versions) != 2 {
		t.Fatalf("%d versions after marking the task done, want 2", len(versions))
	}
	if plan = carePlan(t, f); plan.Activity[0].Detail.Status != "completed" {
		t.Fatalf("activity after done = %+v", plan.Activity[0].Detail)
	}
	if n := len(history(t, f.srv, plan.Goal[0].Reference)); n != 1 {
		t.Fatalf("the unchanged Goal has %d versions, want 1", n)
	}

	// The goal is reached: the Goal is completed, and the plan gets a new version.
	if _, err := f.st.Plans.AddVersion(ctx, goal.ID, &store.PlanVersion{Change: store.PlanMarked, Text: "Walk 500 m without pain",
		Status: store.PlanDone, EventID: "$goaldone", Author: "@doc:hs", At: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	f.queuePlan(t, "$goaldone")
	f.deliver(t)
	if err := f.fhir.Read(ctx, goalType, goalID, &g); err != nil {
		t.Fatal(err)
	}
	if g.LifecycleStatus != "completed" || g.AchievementStatus == nil || !g.AchievementStatus.HasCoding(ehr.GoalAchievementSystem, "achieved") {
		t.Fatalf("Goal after done = %+v", g)
	}

	// A delivery with nothing new (a retried or late item) writes nothing and says nothing.
	noticesBefore := len(f.notices(t, f.c.CaseRoomID))
	versionsBefore := len(history(t, f.srv, "CarePlan/"+plan.ID))
	f.queue(t, store.OutboxCarePlan, f.c.ID, 1000, f.c.CaseRoomID, "$again")
	if results := f.deliver(t); len(results) != 1 || results[0] != "CarePlan/"+plan.ID+" (unchanged)" {
		t.Fatalf("results of a repeated delivery = %q", results)
	}
	if n := len(history(t, f.srv, "CarePlan/"+plan.ID)); n != versionsBefore {
		t.Fatalf("a repeated delivery made a version: %d, was %d", n, versionsBefore)
	}
	if n := len(f.notices(t, f.c.CaseRoomID)); n != noticesBefore {
		t.Fatalf("a repeated delivery posted a notice")
	}
	if n, err := f.srv.Count(ctx, "CarePlan", nil); err != nil || n != 1 {
		t.Fatalf("%d CarePlans on the server (%v), want 1", n, err)
	}
}

// updateDuringFirstPUT changes a resource behind the outbox's back just before the outbox's first PUT of that type
// reaches the server, so that the PUT's If-Match is stale.
type updateDuringFirstPUT struct {
	typ    string
	change func()
	done   atomic.Bool
	puts   atomic.Int32
}

func (u *updateDuringFirstPUT) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/"+u.typ+"/") {
		u.puts.Add(1)
		if !u.done.Swap(true) {
			u.change()
		}
	}
	return http.DefaultTransport.RoundTrip(req)
}

// TestCarePlanConflictReappliedAndForeignElementsKept: someone in the EHR changes the CarePlan between the outbox's
// read and its write: the PUT gets 412, the outbox reads again and re-applies the plan, and what the other writer
// added (a note) stays.
func TestCarePlanConflictReappliedAndForeignElementsKept(t *testing.T) {
	var f *outboxFixture
	conflict := &updateDuringFirstPUT{typ: "CarePlan"}
	f = newOutboxFixture(t, conflict)
	ctx := testContext(t)
	addPlanItem(t, f, store.PlanTask, "Book a follow-up", "", "@doc:hs", "$task")
	f.queuePlan(t, "$task")
	conflict.done.Store(true) // the create is a POST; arm the conflict for the first PUT
	f.deliver(t)
	plan := carePlan(t, f)

	conflict.done.Store(false)
	conflict.change = func() {
		var current map[string]any
		if err := f.fhir.Read(ctx, "CarePlan", plan.ID, &current); err != nil {
			t.Error(err)
			return
		}
		current["note"] = []any{map[string]any{"text": "Reviewed by the ward pharmacist"}}
		meta := current["meta"].(map[string]any)
		if err := f.fhir.Update(ctx, rawJSON(current), meta["versionId"].(string), nil); err != nil {
			t.Error(err)
		}
	}
	addPlanItem(t, f, store.PlanGoal, "Sleep through the night", "", "@doc:hs", "$goal")
	f.queuePlan(t, "$goal")
	f.deliver(t)
	if n := conflict.puts.Load(); n != 2 {
		t.Fatalf("%d PUTs of the CarePlan, want 2 (412, then the re-applied plan)", n)
	}
	plan = carePlan(t, f)
	if len(plan.Goal) != 1 || len(plan.Activity) != 1 || len(plan.Note) != 1 || plan.Note[0].Text != "Reviewed by the ward pharmacist" {
		t.Fatalf("CarePlan after the conflict = %+v", plan)
	}
	if n := len(history(t, f.srv, "CarePlan/"+plan.ID)); n != 3 {
		t.Fatalf("%d versions, want 3 (created, the other writer's, the re-applied plan)", n)
	}
}

// rawJSON is a resource as a plain JSON object.
type rawJSON map[string]any

func (r rawJSON) ResourceKey() (string, string) {
	typ, _ := r["resourceType"].(string)
	id, _ := r["id"].(string)
	return typ, id
}

func TestCarePlanWithoutPatientIsDeadLetter(t *testing.T) {
	f := newOutboxFixture(t, nil)
	ctx := testContext(t)
	unlinked := &store.Case{Title: "No patient", CaseRoomID: "!unlinked:hs", PatientRoomID: "!unlinkedp:hs", CreatedBy: "@doc:hs"}
	if err := f.st.Cases.Create(ctx, unlinked, "$open2"); err != nil {
		t.Fatal(err)
	}
	if err := f.st.EHR.Add(ctx, &store.OutboxItem{Kind: store.OutboxCarePlan, RecordID: unlinked.ID, Version: 1, CaseID: unlinked.ID,
		OrderKey: "case:x", RoomID: unlinked.CaseRoomID, SourceEvent: "$x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.outbox.DeliverDue(ctx); err != nil {
		t.Fatal(err)
	}
	items, err := f.st.EHR.List(ctx, true, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].DeadAt.IsZero() || !strings.Contains(items[0].LastError, "not linked to a FHIR Patient") {
		t.Fatalf("items = %+v", items)
	}
}
