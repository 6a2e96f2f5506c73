package ehr_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/store"
)

// provenanceMatrixSystem is the identifier system of a Reference that names a Matrix user.
const provenanceMatrixSystem = "urn:matrix:user"

// provenanceCheckIn stores a check-in of the fixture's case recorded by recorder and queues it.
func provenanceCheckIn(t *testing.T, f *outboxFixture, evt id.EventID, patient, recorder id.UserID, input string) {
	t.Helper()
	ctx := testContext(t)
	parsed, err := care.ParseCheckIn(input, nil)
	if err != nil {
		t.Fatal(err)
	}
	source := store.SourcePatient
	if recorder != patient {
		source = store.SourceClinician
	}
	ci := &store.CheckIn{CaseID: f.c.ID, EventID: evt, RoomID: f.c.PatientRoomID, PatientID: patient, RecordedBy: recorder,
		Source: source, EffectiveAt: time.Now().UTC().Add(-time.Minute), Values: parsed.Values, Note: parsed.Note}
	if err := f.st.CheckIns.Create(ctx, ci); err != nil {
		t.Fatal(err)
	}
	f.queue(t, store.OutboxCheckIn, ci.ID, 1, ci.RoomID, evt)
}

// provenanceByMatrixID reports whether ref names user by identifier (system urn:matrix:user) with the Matrix ID as
// display, and no literal reference.
func provenanceByMatrixID(ref *ehr.Reference, user id.UserID) bool {
	return ref != nil && ref.Reference == "" && ref.Identifier != nil && ref.Identifier.System == provenanceMatrixSystem &&
		ref.Identifier.Value == string(user) && ref.Display == string(user)
}

func provenanceObservation(t *testing.T, f *outboxFixture, idValue string) ehr.Observation {
	t.Helper()
	bundle, err := f.fhir.Search(testContext(t), "Observation", ehr.IdentifierQuery(ehr.ObservationIdentifierSystem, idValue))
	if err != nil {
		t.Fatal(err)
	}
	found, err := bundle.Observations()
	if err != nil || len(found) != 1 {
		t.Fatalf("%d Observations carry %s (%v), want 1", len(found), idValue, err)
	}
	return found[0]
}

// TestRecordsNameWhoMadeThem: a clinician without a FHIR Practitioner records a check-in for a patient, adds plan
// items and files a message. Every record is filed (no dead letter) and names the clinician by Matrix ID; once the
// clinician is linked to a Practitioner, the records reference it.
func TestRecordsNameWhoMadeThem(t *testing.T) {
	f := newOutboxFixture(t, nil)
	ctx := testContext(t)
	const doc, pat = id.UserID("@nurse.kim:clinic.example"), id.UserID("@pat:clinic.example")
	if _, err := f.st.Cases.AddPatient(ctx, f.c.ID, pat, doc); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Roles.AddClinician(ctx, doc, "", "@admin:hs"); err != nil {
		t.Fatal(err)
	}

	provenanceCheckIn(t, f, "$by-phone", pat, doc, "hr=77 by phone")
	provenanceCheckIn(t, f, "$own", pat, pat, "hr=80")
	addPlanItem(t, f, store.PlanGoal, "Walk every day", "", doc, "$goal")
	f.queuePlan(t, "$goal")
	filing := &store.Filing{CaseID: f.c.ID, RoomID: f.c.CaseRoomID, CommandEvent: "$file", FiledBy: doc,
		Messages: []store.FiledMessage{{EventID: "$m", Sender: doc, SentAt: time.Now().UnixMilli(), Text: "Called the patient"}}}
	if err := f.st.Filings.Add(ctx, filing); err != nil {
		t.Fatal(err)
	}
	f.queue(t, store.OutboxCommunication, filing.ID, 1, filing.RoomID, filing.CommandEvent)
	f.deliver(t) // fails the test on a dead letter

	obs := provenanceObservation(t, f, "$by-phone/hr")
	if len(obs.Performer) != 1 || !provenanceByMatrixID(&obs.Performer[0], doc) {
		t.Errorf("performer of the clinician's check-in = %+v, want the clinician by Matrix ID", obs.Performer)
	}
	if own := provenanceObservation(t, f, "$own/hr"); len(own.Performer) != 1 || own.Performer[0].Reference != f.patient {
		t.Errorf("performer of the patient's own check-in = %+v, want %s", own.Performer, f.patient)
	}
	plan := carePlan(t, f)
	if !provenanceByMatrixID(plan.Author, doc) {
		t.Errorf("CarePlan author = %+v, want the clinician by Matrix ID", plan.Author)
	}
	if len(plan.Contributor) != 1 || !provenanceByMatrixID(&plan.Contributor[0], doc) {
		t.Errorf("CarePlan contributors = %+v, want the clinician by Matrix ID", plan.Contributor)
	}
	if len(plan.Goal) != 1 {
		t.Fatalf("CarePlan goals = %+v", plan.Goal)
	}
	var goal ehr.Goal
	typ, goalID, _ := ehr.ParseReference(plan.Goal[0].Reference)
	if err := f.fhir.Read(ctx, typ, goalID, &goal); err != nil {
		t.Fatal(err)
	}
	if !provenanceByMatrixID(goal.ExpressedBy, doc) {
		t.Errorf("Goal expressedBy = %+v, want the clinician by Matrix ID", goal.ExpressedBy)
	}
	bundle, err := f.fhir.Search(ctx, "Communication", ehr.IdentifierQuery(ehr.CommunicationIdentifierSystem, "$file"))
	if err != nil || len(bundle.Entry) != 1 {
		t.Fatalf("Communication search: %v, %d entries", err, len(bundle.Entry))
	}
	var com ehr.Communication
	if err := bundle.Entry[0].Decode(&com); err != nil {
		t.Fatal(err)
	}
	if !provenanceByMatrixID(com.Sender, doc) {
		t.Errorf("Communication sender = %+v, want the clinician by Matrix ID", com.Sender)
	}

	// Linked to a Practitioner: the next records reference it.
	var practitioner struct {
		ID string `json:"id"`
	}
	if _, err := f.fhir.Create(ctx, rawJSON{"resourceType": "Practitioner", "active": true}, nil, &practitioner); err != nil {
		t.Fatal(err)
	}
	ref := "Practitioner/" + practitioner.ID
	if _, err := f.st.Roles.AddClinician(ctx, doc, ref, "@admin:hs"); err != nil {
		t.Fatal(err)
	}
	if got, err := f.st.Roles.PractitionerRef(ctx, doc); err != nil || got != ref {
		t.Fatalf("practitioner of the clinician = %q (%v), want %s", got, err, ref)
	}
	provenanceCheckIn(t, f, "$linked", pat, doc, "spo2=97")
	addPlanItem(t, f, store.PlanTask, "Book a follow-up", "", doc, "$task")
	f.queuePlan(t, "$task")
	f.deliver(t)
	if obs := provenanceObservation(t, f, "$linked/spo2"); len(obs.Performer) != 1 || obs.Performer[0].Reference != ref {
		t.Errorf("performer after linking = %+v, want %s", obs.Performer, ref)
	}
	if plan := carePlan(t, f); plan.Author == nil || plan.Author.Reference != ref {
		t.Errorf("CarePlan author after linking = %+v, want %s", plan.Author, ref)
	}
	if dead, err := f.st.EHR.Stats(ctx); err != nil || dead.Dead != 0 {
		t.Fatalf("dead letters: %+v (%v)", dead, err)
	}
}

// The PHI an EHR's OperationOutcome echoes in the scrubbing tests below.
const (
	provenanceName = "Ophelia Quintessa Marchbanks"
	provenanceNote = "Quetzalcoatl rash spreading"
)

// provenanceEchoingEHR answers every request with status and an OperationOutcome whose diagnostics and details
// echo a patient name and note text, as some servers do.
func provenanceEchoingEHR(t *testing.T, status int) *httptest.Server {
	t.Helper()
	body := fmt.Sprintf(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid",`+
		`"details":{"text":"Patient %s has an invalid note"},"diagnostics":"Observation.note[0].text: '%s' is not allowed",`+
		`"expression":["Observation.note[0].text"]}]}`, provenanceName, provenanceNote)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ehr.FHIRContentType)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// provenanceLog is a concurrency-safe buffer for a zerolog logger.
type provenanceLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *provenanceLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *provenanceLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// provenanceNoPHI fails the test if text holds the echoed name or note (or a part of them).
func provenanceNoPHI(t *testing.T, where, text string) {
	t.Helper()
	for _, phi := range []string{provenanceName, provenanceNote, "Marchbanks", "Quetzalcoatl"} {
		if strings.Contains(text, phi) {
			t.Errorf("%s holds %q: %s", where, phi, text)
		}
	}
}

// TestEHRErrorTextScrubbed: the EHR refuses a check-in (422, and then 503) with an OperationOutcome that echoes the
// patient's name and note. Neither reaches the log, the outbox's stored reason (shown by /admin outbox) or the
// dead-letter notice in the case room; the status and the issue's severity and code do.
func TestEHRErrorTextScrubbed(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status int
	}{{"refused", http.StatusUnprocessableEntity}, {"retried", http.StatusServiceUnavailable}} {
		t.Run(tt.name, func(t *testing.T) {
			f := newOutboxFixture(t, nil)
			ctx := testContext(t)
			echo := provenanceEchoingEHR(t, tt.status)
			client, err := ehr.New(ehr.Config{BaseURL: echo.URL + "/fhir", Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			var logged provenanceLog
			f.outbox.Client = client
			f.outbox.Log = zerolog.New(&logged).Level(zerolog.TraceLevel)
			provenanceCheckIn(t, f, "$echo", "@pat:hs", "@pat:hs", "hr=90 "+provenanceNote)
			if _, err := f.outbox.DeliverDue(ctx); err != nil {
				t.Fatal(err)
			}
			items, err := f.st.EHR.List(ctx, true, 10)
			if err != nil || len(items) != 1 {
				t.Fatalf("outbox: %d undelivered items (%v), want 1", len(items), err)
			}
			it := items[0]
			if dead := !it.DeadAt.IsZero(); dead != (tt.status == http.StatusUnprocessableEntity) {
				t.Fatalf("item dead = %v after HTTP %d", dead, tt.status)
			}
			for _, want := range []string{fmt.Sprint(tt.status), "error invalid"} {
				if !strings.Contains(it.LastError, want) {
					t.Errorf("stored reason %q lacks %q", it.LastError, want)
				}
				if !strings.Contains(logged.String(), want) {
					t.Errorf("log lacks %q: %s", want, logged.String())
				}
			}
			provenanceNoPHI(t, "the stored reason", it.LastError)
			provenanceNoPHI(t, "the log", logged.String())
			notices := strings.Join(f.notices(t, f.c.CaseRoomID), "\n")
			if tt.status == http.StatusUnprocessableEntity && !strings.Contains(notices, "dead letter") {
				t.Errorf("case room notices lack the dead letter: %q", notices)
			}
			provenanceNoPHI(t, "the case room notice", notices)
		})
	}
}

// TestErrorTextHoldsNoServerText: an *ehr.Error names the request, the status and the issues' severity, code and
// FHIRPath location; the server's words (details text, diagnostics) stay in Outcome, out of Error().
func TestErrorTextHoldsNoServerText(t *testing.T) {
	e := &ehr.Error{Op: "POST transaction entry 0", Status: 400, Outcome: &ehr.OperationOutcome{Issue: []ehr.OperationOutcomeIssue{
		{Severity: "error", Code: "invalid", Details: &ehr.CodeableConcept{Text: "Patient " + provenanceName,
			Coding: []ehr.Coding{{System: "http://example.org/msg", Code: "MSG_BAD_VALUE", Display: provenanceNote}}},
			Diagnostics: provenanceNote, Expression: []string{"Observation.note[0].text", "'" + provenanceName + "'"}},
		{Severity: "warning", Code: "code-invalid", Diagnostics: "Unknown code '" + provenanceNote + "'"},
	}}}
	want := "fhir POST transaction entry 0: HTTP 400 Bad Request: error invalid MSG_BAD_VALUE at Observation.note[0].text; warning code-invalid"
	if got := e.Error(); got != want {
		t.Errorf("Error() =\n%s\nwant\n%s", got, want)
	}
	provenanceNoPHI(t, "Error()", e.Error())
	provenanceNoPHI(t, "Error() of a wrapped error", fmt.Errorf("wrapped: %w", e).Error())
	if !strings.Contains(e.Outcome.String(), provenanceName) {
		t.Error("the full OperationOutcome is no longer available to callers")
	}
}

// TestGuidedMappingErrorsHoldNoAnswers: a guided check-in that cannot be mapped is refused with an error that
// names the question, not the patient's answer (the error becomes a dead letter's stored reason and a log line).
func TestGuidedMappingErrorsHoldNoAnswers(t *testing.T) {
	rec := ehr.GuidedRecord{EventID: "$e", PatientRef: "Patient/1", Authored: time.Now(),
		Questions: []ehr.GuidedQuestion{{ID: "feeling", Text: "How are you?", Type: "choice", Choices: []string{"Good", "Bad"}},
			{ID: "pain", Text: "Pain?", Type: "score"}, {ID: "words", Text: "Anything else?", Type: "text"}},
		Answers: []ehr.GuidedAnswer{{Question: 0, Text: provenanceNote}, {Question: 1, Text: provenanceName}}}
	_, err := ehr.GuidedQuestionnaireResponse(rec)
	if err == nil {
		t.Fatal("an answer that is not one of the choices was mapped")
	}
	provenanceNoPHI(t, "the mapping error", err.Error())
	if !strings.Contains(err.Error(), "feeling") || !strings.Contains(err.Error(), "pain") {
		t.Errorf("the mapping error does not name the questions: %v", err)
	}
	_ = context.Background
}

// TestMappingNamesWhoMadeIt: the mapping functions name the maker of each record: a Practitioner or Patient by
// reference, anyone else by Matrix user ID (identifier in urn:matrix:user, the ID as display, nothing more).
func TestMappingNamesWhoMadeIt(t *testing.T) {
	const doc = "@dr.lee:clinic.example"
	rec := checkInRecord(t, "hr=80 called in")
	rec.RecordedBy = doc
	obs, err := ehr.CheckInObservations(rec)
	if err != nil {
		t.Fatal(err)
	}
	if len(obs) != 1 || len(obs[0].Performer) != 1 || !provenanceByMatrixID(&obs[0].Performer[0], doc) {
		t.Errorf("performer = %+v, want %s by identifier", obs[0].Performer, doc)
	}
	if want := ehr.MatrixUserReference(doc); want.Identifier.System != provenanceMatrixSystem || ehr.MatrixUserSystem != provenanceMatrixSystem {
		t.Errorf("MatrixUserReference = %+v", want)
	}
	rec.PerformerRef = "Practitioner/7"
	if obs, err = ehr.CheckInObservations(rec); err != nil || obs[0].Performer[0].Reference != "Practitioner/7" || obs[0].Performer[0].Identifier != nil {
		t.Errorf("performer with a Practitioner = %+v (%v)", obs[0].Performer, err)
	}
	rec.PerformerRef, rec.RecordedBy = "", ""
	if obs, err = ehr.CheckInObservations(rec); err != nil || obs[0].Performer[0].Reference != rec.PatientRef {
		t.Errorf("performer of the patient's own check-in = %+v (%v)", obs[0].Performer, err)
	}
	for _, bad := range []string{"dr.lee", "@", "@dr lee:clinic.example", "Patient/1"} {
		rec.RecordedBy = bad
		if _, err := ehr.CheckInObservations(rec); err == nil || !strings.Contains(err.Error(), "not a Matrix user ID") {
			t.Errorf("recorded by %q: %v, want a refusal", bad, err)
		}
	}

	com, err := ehr.CommunicationFor(ehr.CommunicationRecord{CommandEventID: "$c", PatientRef: "Patient/1",
		Messages: []ehr.FiledMessage{{Sender: doc, Sent: time.Now(), Text: "x"}}})
	if err != nil || !provenanceByMatrixID(com.Sender, doc) {
		t.Errorf("Communication sender = %+v (%v), want %s by identifier", com.Sender, err, doc)
	}

	entry := ehr.PlanEntry{ItemID: 1, Number: 1, Text: "Walk", Created: time.Now(), Updated: time.Now(), Creator: ehr.Actor{User: doc}}
	plan := ehr.PlanRecord{CaseID: 1, PatientRef: "Patient/1", Author: ehr.Actor{User: doc},
		Contributors: []ehr.Actor{{User: doc}, {Ref: "Practitioner/7", User: "@b:clinic.example"}}, Goals: []ehr.PlanEntry{entry}}
	goals, err := ehr.PlanGoals(plan)
	if err != nil || !provenanceByMatrixID(goals[0].ExpressedBy, doc) {
		t.Fatalf("Goal expressedBy = %+v (%v)", goals, err)
	}
	cp, err := ehr.PlanCarePlan(plan, []ehr.Reference{{Reference: "Goal/1"}})
	if err != nil || !provenanceByMatrixID(cp.Author, doc) || len(cp.Contributor) != 2 || !provenanceByMatrixID(&cp.Contributor[0], doc) ||
		cp.Contributor[1].Reference != "Practitioner/7" {
		t.Fatalf("CarePlan = %+v (%v)", cp, err)
	}
	plan.Author = ehr.Actor{}
	if _, err := ehr.PlanCarePlan(plan, []ehr.Reference{{Reference: "Goal/1"}}); err == nil || !strings.Contains(err.Error(), "no author") {
		t.Errorf("a plan without an author: %v, want a refusal", err)
	}
}

// TestDecodeErrorHoldsNoValue: a resource that does not decode gives an error without the value it held.
func TestDecodeErrorHoldsNoValue(t *testing.T) {
	var o ehr.Observation
	err := ehr.BundleEntry{Resource: []byte(`{"resourceType":"Observation","valueQuantity":{"value":"` + provenanceNote + `"}}`)}.Decode(&o)
	if err == nil {
		t.Fatal("a string value decoded as a number")
	}
	provenanceNoPHI(t, "the decoding error", err.Error())
	// The decoder quotes a number that does not fit the field: a pain score of 7.25 in an integer.
	var qr ehr.QuestionnaireResponse
	err = ehr.BundleEntry{Resource: []byte(`{"resourceType":"QuestionnaireResponse","item":[{"linkId":"pain","answer":[{"valueInteger":7.25}]}]}`)}.Decode(&qr)
	if err == nil || strings.Contains(err.Error(), "7.25") {
		t.Errorf("decoding error %v holds the value", err)
	}
}
