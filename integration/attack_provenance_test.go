//go:build goolm

package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/fhirtest"
	"github.com/caseroom/caseroom/internal/fhirtest/fhirtesting"
)

// provenanceCase is ehrCase that also returns the clinician's encrypted direct chat with the bot.
func provenanceCase(t *testing.T, on *onHomeserver, srv *fhirtest.Server) (c *clinic, doc, pat *user, docDM, caseRoom, patientRoom id.RoomID, patientRef string) {
	t.Helper()
	patientRef = seedPatient(t, ehrClient(t, srv), "Okafor", "MRN-PROV")
	c = newClinicOn(t, on, map[string]any{"ehr": map[string]any{"url": srv.URL, "timeout": "5s"}})
	doc, pat = newUser(t, c.hs, "doc"), newUser(t, c.hs, "pat")
	c.registerClinician(doc) // no --practitioner
	docDM = doc.EncryptedRoomWithBot(c.botID)
	caseRoom, patientRoom = c.openCase(doc, docDM, "Heart failure follow-up --patient "+patientRef)
	c.mustSucceed(doc, caseRoom, "!patient invite "+pat.UserID.String())
	pat.JoinInvited(patientRoom)
	return c, doc, pat, docDM, caseRoom, patientRoom, patientRef
}

// provenanceOutcome waits for the bot's notice in the case room that says whether a record was filed ("filed in
// the EHR" / "filed to the chart") or became a dead letter ("could not be filed"), and returns its body.
func provenanceOutcome(u *user, c *clinic, room id.RoomID, filed string, since time.Time) string {
	u.T.Helper()
	evt := u.WaitFor(40*time.Second, "a notice that says whether the record was filed", func(evt *event.Event) bool {
		if evt.RoomID != room || evt.Sender != c.botID || evt.Type != event.EventMessage || time.UnixMilli(evt.Timestamp).Before(since) {
			return false
		}
		body := evt.Content.AsMessage().Body
		return strings.Contains(body, filed) || strings.Contains(body, "could not be filed")
	})
	return evt.Content.AsMessage().Body
}

// provenanceNamesUser reports whether ref names user by identifier (urn:matrix:user) with the Matrix ID as display.
func provenanceNamesUser(ref *ehr.Reference, user id.UserID) bool {
	return ref != nil && ref.Reference == "" && ref.Identifier != nil && ref.Identifier.System == "urn:matrix:user" &&
		ref.Identifier.Value == user.String() && ref.Display == user.String()
}

func provenanceNoDeadLetters(t *testing.T, c *clinic) {
	t.Helper()
	if n := c.countRows("SELECT COUNT(*) FROM ehr_outbox WHERE dead_at IS NOT NULL"); n != 0 {
		var reason string
		_ = c.bot.db().QueryRow("SELECT COALESCE(last_error, '') FROM ehr_outbox WHERE dead_at IS NOT NULL").Scan(&reason)
		t.Fatalf("%d dead letters in the EHR outbox: %s", n, reason)
	}
}

// TestAttackProvenanceNoPractitioner: "Told 'Recorded', never filed". A clinician registered without a FHIR
// Practitioner records a check-in for a patient, a plan goal and a filed message: each is in the FHIR server naming
// the clinician by Matrix ID (performer, CarePlan author, Communication sender), nothing is dead-lettered. Once the
// clinician is linked to a Practitioner, new records reference it.
func TestAttackProvenanceNoPractitioner(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		srv := fhirtesting.Start(t)
		fhir := ehrClient(t, srv)
		c, doc, pat, _, caseRoom, _, patientRef := provenanceCase(t, on, srv)
		var caseID int64
		if err := c.bot.db().QueryRow("SELECT id FROM cases WHERE case_room_id = $1", caseRoom).Scan(&caseID); err != nil {
			t.Fatal(err)
		}

		// checkin for, by a clinician without a Practitioner.
		since := time.Now().Add(-time.Second)
		checkin, reply := c.command(doc, caseRoom, "!checkin for "+pat.UserID.String()+" hr=77 by phone")
		if !strings.Contains(reply, "Recorded") {
			t.Fatalf("checkin for: %s", reply)
		}
		if body := provenanceOutcome(doc, c, caseRoom, "filed in the EHR", since); !strings.Contains(body, "filed in the EHR") {
			t.Fatalf("the clinician's check-in was not filed: %s", body)
		}
		provenanceNoDeadLetters(t, c)
		obs := observations(t, fhir, patientRef)
		hr, ok := obs[string(checkin)+"/hr"]
		if !ok || len(obs) != 1 {
			t.Fatalf("Observations in the EHR: %+v", obs)
		}
		if len(hr.Performer) != 1 || !provenanceNamesUser(&hr.Performer[0], doc.UserID) {
			t.Fatalf("performer = %+v, want %s by identifier", hr.Performer, doc.UserID)
		}

		// A plan goal: the CarePlan names its author.
		since = time.Now().Add(-time.Second)
		c.mustSucceed(doc, caseRoom, "!plan goal Walk to the shop every day")
		if body := provenanceOutcome(doc, c, caseRoom, "Treatment plan of case", since); !strings.Contains(body, "filed in the EHR") {
			t.Fatalf("the plan was not filed: %s", body)
		}
		var plan ehr.CarePlan
		findOne(t, fhir, "CarePlan", ehr.CarePlanIdentifierSystem, ehr.CarePlanIdentifier(caseID), &plan)
		if !provenanceNamesUser(plan.Author, doc.UserID) || len(plan.Contributor) != 1 || !provenanceNamesUser(&plan.Contributor[0], doc.UserID) {
			t.Fatalf("CarePlan author %+v, contributors %+v; want %s by identifier", plan.Author, plan.Contributor, doc.UserID)
		}

		// A filed message of the clinician: the Communication names its sender.
		said := doc.Send(caseRoom, "Called the patient, breathing is better today")
		fileCmd := sendRelated(t, doc, caseRoom, "!file", replyRel(said))
		botNotice(doc, c, caseRoom, "filed to the chart as Communication/")
		var com ehr.Communication
		findOne(t, fhir, "Communication", ehr.CommunicationIdentifierSystem, string(fileCmd), &com)
		if !provenanceNamesUser(com.Sender, doc.UserID) {
			t.Fatalf("Communication sender = %+v, want %s by identifier", com.Sender, doc.UserID)
		}
		provenanceNoDeadLetters(t, c)

		// A Practitioner the EHR does not have is refused when it is linked: every record would become a dead letter in
		// an EHR that checks references.
		evtID, body := c.command(c.admin, c.adminDM, "!admin clinician add "+doc.UserID.String()+" --practitioner Practitioner/nobody-here")
		if !strings.Contains(body, "⛔") || !strings.Contains(body, "Practitioner/nobody-here") || c.auditOutcome(evtID) != "refused:no-practitioner" {
			t.Fatalf("linking a Practitioner the EHR does not have: %s (audited %q)", body, c.auditOutcome(evtID))
		}
		if n := c.countRows("SELECT COUNT(*) FROM clinicians WHERE user_id = $1 AND practitioner_ref IS NOT NULL", doc.UserID); n != 0 {
			t.Fatal("the refused Practitioner reference was stored")
		}

		// Linked to a Practitioner: new records reference it.
		var practitioner struct {
			ID string `json:"id"`
		}
		if _, err := fhir.Create(context.Background(), provenanceResource{"resourceType": "Practitioner", "active": true}, nil, &practitioner); err != nil {
			t.Fatal(err)
		}
		practitionerRef := "Practitioner/" + practitioner.ID
		c.mustSucceed(c.admin, c.adminDM, "!admin clinician add "+doc.UserID.String()+" --practitioner "+practitionerRef)
		since = time.Now().Add(-time.Second)
		linked, _ := c.command(doc, caseRoom, "!checkin for "+pat.UserID.String()+" spo2=97")
		provenanceOutcome(doc, c, caseRoom, "filed in the EHR", since)
		if spo2 := observations(t, fhir, patientRef)[string(linked)+"/spo2"]; len(spo2.Performer) != 1 || spo2.Performer[0].Reference != practitionerRef {
			t.Fatalf("performer after linking = %+v, want %s", spo2.Performer, practitionerRef)
		}
		since = time.Now().Add(-time.Second)
		c.mustSucceed(doc, caseRoom, "!plan task Book a follow-up visit")
		provenanceOutcome(doc, c, caseRoom, "Treatment plan of case", since)
		findOne(t, fhir, "CarePlan", ehr.CarePlanIdentifierSystem, ehr.CarePlanIdentifier(caseID), &plan)
		if plan.Author == nil || plan.Author.Reference != practitionerRef {
			t.Fatalf("CarePlan author after linking = %+v, want %s", plan.Author, practitionerRef)
		}
		provenanceNoDeadLetters(t, c)

	})
}

// TestAttackProvenanceUnlinkedCase: records of a case without a FHIR Patient can never be filed. They are recorded
// in caseroom, the clinician is told they are not filed, and nothing is queued that could only become a dead letter.
// A case for a Patient the EHR does not have is not opened.
func TestAttackProvenanceUnlinkedCase(t *testing.T) {
	srv := fhirtesting.Start(t)
	c, doc, pat, docDM, _, _, _ := provenanceCase(t, onDendrite(t), srv)
	// A case without a FHIR Patient: recorded in caseroom, said so, nothing queued to become a dead letter.
	unlinkedRoom, unlinkedPatientRoom := c.openCase(doc, docDM, "Phone follow-up")
	c.mustSucceed(doc, unlinkedRoom, "!patient invite "+pat.UserID.String())
	pat.JoinInvited(unlinkedPatientRoom)
	var unlinkedID int64
	if err := c.bot.db().QueryRow("SELECT id FROM cases WHERE case_room_id = $1", unlinkedRoom).Scan(&unlinkedID); err != nil {
		t.Fatal(err)
	}
	reply := c.mustSucceed(doc, unlinkedRoom, "!checkin for "+pat.UserID.String()+" hr=81")
	if !strings.Contains(reply, "Recorded") || !strings.Contains(reply, "not filed in the EHR") || !strings.Contains(reply, "not linked to a FHIR Patient") {
		t.Fatalf("checkin for in a case without a FHIR Patient: %s", reply)
	}
	reply = c.mustSucceed(doc, unlinkedRoom, "!plan goal Rest")
	if !strings.Contains(reply, "not filed in the EHR") {
		t.Fatalf("plan goal in a case without a FHIR Patient: %s", reply)
	}
	// A case linked to a Patient the EHR does not have is refused: its records could never be filed either.
	evtID, body := c.command(doc, docDM, "!case new Ghost follow-up --patient Patient/nobody-here")
	if !strings.Contains(body, "⛔") || !strings.Contains(body, "Patient/nobody-here") || !strings.Contains(body, "Nothing was created") {
		t.Fatalf("case new with a Patient the EHR does not have: %s", body)
	}
	if outcome := c.auditOutcome(evtID); outcome != "refused:no-patient" {
		t.Errorf("audited %q, want refused:no-patient", outcome)
	}
	if n := c.countRows("SELECT COUNT(*) FROM cases WHERE patient_ref = 'Patient/nobody-here'"); n != 0 {
		t.Fatal("a case was opened for a Patient the EHR does not have")
	}
	time.Sleep(2 * time.Second) // the outbox would have tried it by now
	if n := c.countRows("SELECT COUNT(*) FROM ehr_outbox WHERE case_id = $1", unlinkedID); n != 0 {
		t.Fatalf("%d outbox items for a case that can never be filed", n)
	}
	provenanceNoDeadLetters(t, c)
}

// provenanceSeedPractitioner stores Practitioner/<id> on the test server (PUT creates it with that id).
func provenanceSeedPractitioner(t *testing.T, srv *fhirtest.Server, practitionerID string) {
	t.Helper()
	p := provenanceResource{"resourceType": "Practitioner", "id": practitionerID, "active": true}
	if err := ehrClient(t, srv).Update(context.Background(), p, "", nil); err != nil {
		t.Fatal(err)
	}
}

// provenanceResource is a resource as a plain JSON object.
type provenanceResource map[string]any

func (r provenanceResource) ResourceKey() (string, string) {
	typ, _ := r["resourceType"].(string)
	id, _ := r["id"].(string)
	return typ, id
}

// TestAttackProvenanceEHRErrorScrubbed: the EHR refuses a check-in with an OperationOutcome that echoes a patient's
// name and words. They reach neither the bot's log, the outbox row, the dead-letter notice in the case room nor
// `/admin outbox`, which say the status and the issue code instead. `/admin outbox` runs only in an encrypted room.
func TestAttackProvenanceEHRErrorScrubbed(t *testing.T) {
	srv := fhirtesting.Start(t)
	c, doc, pat, _, caseRoom, patientRoom, _ := provenanceCase(t, onDendrite(t), srv)
	const name, words = "Ophelia Quintessa Marchbanks", "Zygomorphic wheeze at night"
	phi := []string{name, words, "Marchbanks", "Zygomorphic"}
	noPHI := func(where, text string) {
		t.Helper()
		for _, p := range phi {
			if strings.Contains(text, p) {
				t.Errorf("%s holds %q: %s", where, p, text)
			}
		}
	}
	diagnostics := fmt.Sprintf("Patient %s: Observation.note[0].text '%s' is not allowed", name, words)
	if err := srv.FailWrites(context.Background(), http.MethodPost, http.StatusUnprocessableEntity, 1, diagnostics); err != nil {
		t.Fatal(err)
	}
	since := time.Now().Add(-time.Second)
	c.mustSucceed(pat, patientRoom, "!checkin hr=90 cough")
	notice := provenanceOutcome(doc, c, caseRoom, "filed in the EHR", since)
	if !strings.Contains(notice, "could not be filed") || !strings.Contains(notice, "422") {
		t.Fatalf("dead-letter notice: %s", notice)
	}
	noPHI("the dead-letter notice", notice)
	var seq int64
	var reason string
	if err := c.bot.db().QueryRow("SELECT seq, COALESCE(last_error, '') FROM ehr_outbox WHERE dead_at IS NOT NULL").Scan(&seq, &reason); err != nil {
		t.Fatal(err)
	}
	noPHI("the stored reason", reason)

	// /admin outbox: refused in clear text, and in the encrypted admin room a safe summary.
	adminPlain := roomWithBot(t, c.admin, c.botID)
	if evtID, body := c.command(c.admin, adminPlain, "!admin outbox"); !strings.Contains(body, "⛔") || c.auditOutcome(evtID) != "refused:unencrypted" {
		t.Errorf("admin outbox in an unencrypted room: %s", body)
	}
	if evtID, body := c.command(c.admin, adminPlain, fmt.Sprintf("!admin outbox retry %d", seq)); !strings.Contains(body, "⛔") || c.auditOutcome(evtID) != "refused:unencrypted" {
		t.Errorf("admin outbox retry in an unencrypted room: %s", body)
	}
	body := c.mustSucceed(c.admin, c.adminDM, "!admin outbox")
	if !strings.Contains(body, fmt.Sprint(seq)) || !strings.Contains(body, "422") || !strings.Contains(body, "invalid") {
		t.Errorf("admin outbox lacks the dead letter's number, status or issue code: %s", body)
	}
	noPHI("/admin outbox", body)

	// Filed once the EHR takes it.
	c.mustSucceed(c.admin, c.adminDM, fmt.Sprintf("!admin outbox retry %d", seq))
	botNotice(doc, c, caseRoom, "Check-in of", "filed in the EHR")
	c.bot.stop()
	for _, line := range strings.Split(c.bot.Log(), "\n") {
		noPHI("the bot's log", line)
	}
}
