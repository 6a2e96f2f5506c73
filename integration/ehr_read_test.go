//go:build goolm

package integration

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/fhirtest"
	"github.com/caseroom/caseroom/internal/fhirtest/fhirtesting"
)

// testMRNSystem is the identifier system seedPatient gives MRNs.
const testMRNSystem = "urn:oid:1.2.36.146.595.217.0.1"

// testSubscriptionSecret is the bearer token of the bot's subscription endpoint in these tests.
const testSubscriptionSecret = "integration-subscription-secret-0123456789"

// fhirJSON is any FHIR resource as JSON, for seeding the FHIR test server.
type fhirJSON map[string]any

func (r fhirJSON) ResourceKey() (string, string) {
	typ, _ := r["resourceType"].(string)
	id, _ := r["id"].(string)
	return typ, id
}

// seedResource creates a resource from JSON, with %PATIENT% replaced by patientRef, and returns "Type/id".
func seedResource(t *testing.T, cli *ehr.Client, patientRef, body string) string {
	t.Helper()
	var res, out fhirJSON
	if err := json.Unmarshal([]byte(strings.ReplaceAll(body, "%PATIENT%", patientRef)), &res); err != nil {
		t.Fatalf("bad seed JSON: %v", err)
	}
	if _, err := cli.Create(context.Background(), res, nil, &out); err != nil {
		t.Fatalf("seed %s: %v", res["resourceType"], err)
	}
	return out["resourceType"].(string) + "/" + out["id"].(string)
}

// vitalJSON is a vital-signs Observation of %PATIENT%.
func vitalJSON(code, text, value, unit, effective string) string {
	return `{"resourceType":"Observation","status":"final","subject":{"reference":"%PATIENT%"},
		"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
		"code":{"coding":[{"system":"http://loinc.org","code":"` + code + `"}],"text":"` + text + `"},
		"effectiveDateTime":"` + effective + `","valueQuantity":{"value":` + value + `,"unit":"` + unit + `","system":"http://unitsofmeasure.org","code":"` + unit + `"}}`
}

// seedRecord gives a patient conditions, medications, allergies and vital signs (and things the summary leaves out).
func seedRecord(t *testing.T, cli *ehr.Client, patientRef string) {
	t.Helper()
	for _, body := range []string{
		`{"resourceType":"Condition","subject":{"reference":"%PATIENT%"},"code":{"text":"Heart failure with reduced EF"},"onsetDateTime":"2024-02-10",
			"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]}}`,
		`{"resourceType":"Condition","subject":{"reference":"%PATIENT%"},"code":{"text":"Type 2 diabetes"},
			"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]}}`,
		`{"resourceType":"Condition","subject":{"reference":"%PATIENT%"},"code":{"text":"Community-acquired pneumonia"},
			"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"resolved"}]}}`,
		`{"resourceType":"MedicationRequest","status":"active","intent":"order","subject":{"reference":"%PATIENT%"},
			"medicationCodeableConcept":{"text":"Furosemide 40 mg tablet"},"dosageInstruction":[{"text":"1 tablet every morning"}]}`,
		`{"resourceType":"MedicationRequest","status":"stopped","intent":"order","subject":{"reference":"%PATIENT%"},
			"medicationCodeableConcept":{"text":"Ibuprofen 400 mg"}}`,
		`{"resourceType":"AllergyIntolerance","patient":{"reference":"%PATIENT%"},"code":{"text":"Penicillin"},"criticality":"high",
			"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical","code":"active"}]},
			"verificationStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/allergyintolerance-verification","code":"confirmed"}]},
			"reaction":[{"manifestation":[{"text":"Hives"}]}]}`,
		vitalJSON("8867-4", "Heart rate", "72", "/min", "2026-03-01T08:00:00Z"),
		vitalJSON("8867-4", "Heart rate", "88", "/min", "2026-03-02T08:00:00Z"),
		vitalJSON("29463-7", "Body weight", "71.2", "kg", "2026-03-02T08:05:00Z"),
	} {
		seedResource(t, cli, patientRef, body)
	}
}

// ehrReadClinic is a bot that reads from srv: MRNs in testMRNSystem, polling every second, subscription endpoint on.
func ehrReadClinic(t *testing.T, srv *fhirtest.Server) *clinic {
	t.Helper()
	return newClinic(t, map[string]any{"ehr": map[string]any{
		"url": srv.URL, "timeout": "5s", "mrn_system": testMRNSystem, "poll_interval": "1s",
		"subscription_secret": testSubscriptionSecret,
	}})
}

func TestPatientSummaryAndMRNLookup(t *testing.T) {
	srv := fhirtesting.Start(t)
	fhir := ehrClient(t, srv)
	patientRef := seedPatient(t, fhir, "Okafor", "MRN-4711")
	seedRecord(t, fhir, patientRef)
	twinA := seedPatient(t, fhir, "Twin", "MRN-0002")
	twinB := seedPatient(t, fhir, "Twin", "MRN-0002")

	c := ehrReadClinic(t, srv)
	w := c.bot.w
	doc, pat := newUser(t, w.hsA, "doc"), newUser(t, w.hsA, "pat")
	c.registerClinician(doc)
	docDM := doc.EncryptedRoomWithBot(c.botID)

	// --mrn finds the Patient in the EHR and links the case to it.
	caseRoom, patientRoom := c.openCase(doc, docDM, "Heart failure follow-up --mrn MRN-4711")
	var linked, mrn string
	if err := c.bot.db().QueryRow("SELECT patient_ref, mrn FROM cases WHERE case_room_id = $1", caseRoom).Scan(&linked, &mrn); err != nil {
		t.Fatal(err)
	}
	if linked != patientRef || mrn != "MRN-4711" {
		t.Fatalf("case linked to %q (MRN %q), want %s", linked, mrn, patientRef)
	}

	// The summary in the case room.
	evtID, summary := c.command(doc, caseRoom, "!patient")
	for _, want := range []string{"Okafor, Test", "1961-04-02", "female", patientRef, "MRN-4711", "Heart failure with reduced EF",
		"Type 2 diabetes", "Furosemide 40 mg tablet", "1 tablet every morning", "Penicillin", "high criticality", "Hives",
		"Heart rate 88 /min", "Body weight 71.2 kg"} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, summary)
		}
	}
	for _, unwanted := range []string{"pneumonia", "Ibuprofen", "72 /min", "⛔"} {
		if strings.Contains(summary, unwanted) {
			t.Errorf("summary shows %q:\n%s", unwanted, summary)
		}
	}
	reply := doc.WaitFor(5*time.Second, "the summary event", replyTo(c.botID, evtID))
	if !reply.Mautrix.WasEncrypted {
		t.Error("the summary was sent unencrypted")
	}
	if n := c.countRows("SELECT COUNT(*) FROM audit WHERE action = 'read:patient' AND outcome = 'ok' AND event_id = $1", evtID); n != 1 {
		t.Errorf("%d audit entries for the summary read, want 1", n)
	}

	// The patient cannot read it in the patient room.
	c.mustSucceed(doc, caseRoom, "!patient invite "+pat.UserID.String())
	pat.JoinInvited(patientRoom)
	if _, body := c.command(pat, patientRoom, "!patient"); !strings.Contains(body, "⛔") || strings.Contains(body, "Penicillin") {
		t.Fatalf("patient ran /patient: %s", body)
	}

	cases := c.countRows("SELECT COUNT(*) FROM cases")
	// An unknown MRN: a clear answer and no rooms.
	unknown, body := c.command(doc, docDM, "!case new Someone else --mrn MRN-9999")
	if !strings.Contains(body, "No patient in the EHR has MRN") || !strings.Contains(body, "--patient") || !strings.Contains(body, "Nothing was created") {
		t.Fatalf("unknown MRN: %s", body)
	}
	if n := c.countRows("SELECT COUNT(*) FROM matrix_effects WHERE cause_event_id = $1", unknown); n != 0 {
		t.Fatalf("an unknown MRN created %d rooms", n)
	}
	// Two Patients with one MRN: both listed, and the way out named.
	twins, body := c.command(doc, docDM, "!case new Twin --mrn MRN-0002")
	if !strings.Contains(body, twinA) || !strings.Contains(body, twinB) || !strings.Contains(body, "--patient") {
		t.Fatalf("ambiguous MRN: %s", body)
	}
	if n := c.countRows("SELECT COUNT(*) FROM matrix_effects WHERE cause_event_id = $1", twins); n != 0 {
		t.Fatalf("an ambiguous MRN created %d rooms", n)
	}
	if n := c.countRows("SELECT COUNT(*) FROM cases"); n != cases {
		t.Fatalf("%d cases after refused lookups, want %d", n, cases)
	}
	if n := c.countRows("SELECT COUNT(*) FROM audit WHERE action = 'read:patient-search'"); n != 3 {
		t.Errorf("%d audited MRN lookups, want 3", n)
	}

	// A case without a patient says why there is nothing to show.
	plainRoom, _ := c.openCase(doc, docDM, "Plain case")
	if _, body := c.command(doc, plainRoom, "!patient"); !strings.Contains(body, "not linked to a patient") {
		t.Fatalf("summary of a case without patient: %s", body)
	}

	// The EHR goes away: a clear answer, and the bot carries on.
	srv.Stop()
	if _, body := c.command(doc, caseRoom, "!patient"); !strings.Contains(body, "not reachable") {
		t.Fatalf("summary while the EHR is down: %s", body)
	}
	if _, body := c.command(doc, docDM, "!case new Later --mrn MRN-4711"); !strings.Contains(body, "not reachable") || !strings.Contains(body, "Nothing was created") {
		t.Fatalf("MRN lookup while the EHR is down: %s", body)
	}
}

// TestEHRResultPostedOnce: an Observation created in the EHR for a case's patient reaches the case room once,
// although polling sees it again and again and the EHR also pushes it to the subscription endpoint.
func TestEHRResultPostedOnce(t *testing.T) {
	srv := fhirtesting.Start(t)
	fhir := ehrClient(t, srv)
	patientRef := seedPatient(t, fhir, "Okafor", "MRN-5150")
	seedRecord(t, fhir, patientRef) // results from before the case are not news
	c := ehrReadClinic(t, srv)
	w := c.bot.w
	doc, pat := newUser(t, w.hsA, "doc"), newUser(t, w.hsA, "pat")
	c.registerClinician(doc)
	docDM := doc.EncryptedRoomWithBot(c.botID)
	caseRoom, patientRoom := c.openCase(doc, docDM, "Heart failure follow-up --patient "+patientRef)
	c.mustSucceed(doc, caseRoom, "!patient invite "+pat.UserID.String())
	pat.JoinInvited(patientRoom)

	isResult := func(ref string) func(*event.Event) bool {
		return func(evt *event.Event) bool {
			return evt.RoomID == caseRoom && evt.Sender == c.botID && evt.Type == event.EventMessage &&
				strings.Contains(evt.Content.AsMessage().Body, "New result from the EHR") &&
				(ref == "" || strings.Contains(evt.Content.AsMessage().Body, ref))
		}
	}

	obs := seedResource(t, fhir, patientRef, vitalJSON("2708-6", "Oxygen saturation", "89", "%", time.Now().UTC().Format(time.RFC3339)))
	notice := doc.WaitFor(30*time.Second, "the new result", isResult(obs))
	body := notice.Content.AsMessage().Body
	if !strings.HasPrefix(body, "🧪 New result from the EHR: Oxygen saturation 89 %") || !strings.HasSuffix(body, "— "+obs) ||
		!notice.Mautrix.WasEncrypted {
		t.Fatalf("notice = %q (encrypted %v)", body, notice.Mautrix.WasEncrypted)
	}

	// A couple of poll intervals later, and with the EHR pushing the same resource, still one notice.
	time.Sleep(2500 * time.Millisecond)
	raw := readFHIR(t, fhir, obs)
	if status := postSubscription(t, c, testSubscriptionSecret, raw); status != http.StatusOK {
		t.Fatalf("subscription POST: %d", status)
	}
	if status := postSubscription(t, c, "", raw); status != http.StatusUnauthorized {
		t.Fatalf("subscription POST without the secret: %d, want 401", status)
	}
	if status := postSubscription(t, c, "wrong-secret", raw); status != http.StatusForbidden {
		t.Fatalf("subscription POST with a wrong secret: %d, want 403", status)
	}
	if status := postSubscription(t, c, testSubscriptionSecret, "{broken"); status != http.StatusBadRequest {
		t.Fatalf("malformed subscription POST: %d, want 400", status)
	}
	time.Sleep(2500 * time.Millisecond)
	if n := len(doc.Matching(isResult(obs))); n != 1 {
		t.Fatalf("the case room got %d notices of %s, want 1", n, obs)
	}

	// Pushed first: the subscription posts it, polling does not post it again.
	report := seedResource(t, fhir, patientRef, `{"resourceType":"DiagnosticReport","status":"final","subject":{"reference":"%PATIENT%"},
		"code":{"text":"Echocardiogram"},"conclusion":"EF 30%, no effusion"}`)
	if status := postSubscription(t, c, testSubscriptionSecret, readFHIR(t, fhir, report)); status != http.StatusOK {
		t.Fatalf("subscription POST: %d", status)
	}
	doc.WaitFor(30*time.Second, "the pushed report", isResult(report))
	time.Sleep(2500 * time.Millisecond)
	if n := len(doc.Matching(isResult(report))); n != 1 {
		t.Fatalf("the case room got %d notices of %s, want 1", n, report)
	}

	// What caseroom filed itself (a check-in) is not announced as a new result.
	c.command(pat, patientRoom, "!checkin hr=77")
	botNotice(doc, c, caseRoom, "filed in the EHR")
	time.Sleep(2500 * time.Millisecond)
	if n := len(doc.Matching(isResult(""))); n != 2 {
		t.Fatalf("%d result notices in the case room, want 2 (the check-in filed by caseroom is not one)", n)
	}
	if n := len(pat.Matching(func(evt *event.Event) bool {
		return evt.Type == event.EventMessage && strings.Contains(evt.Content.AsMessage().Body, "New result from the EHR")
	})); n != 0 {
		t.Fatalf("the patient saw %d result notices", n)
	}
	if n := c.countRows("SELECT COUNT(*) FROM ehr_seen"); n != 2 {
		t.Fatalf("%d results recorded as posted, want 2", n)
	}
	if n := c.countRows("SELECT COUNT(*) FROM audit WHERE action = 'read:ehr-result'"); n != 2 {
		t.Fatalf("%d audited result posts, want 2", n)
	}
}

// readFHIR reads a resource from the FHIR test server as raw JSON.
func readFHIR(t *testing.T, cli *ehr.Client, ref string) string {
	t.Helper()
	typ, resID, ok := ehr.ParseReference(ref)
	if !ok {
		t.Fatalf("bad reference %q", ref)
	}
	var raw json.RawMessage
	if err := cli.Read(context.Background(), typ, resID, &raw); err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// postSubscription posts a notification to the bot's subscription endpoint and returns the status.
func postSubscription(t *testing.T, c *clinic, secret, body string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.bot.URL()+ehr.SubscriptionPath, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ehr.FHIRContentType)
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}
