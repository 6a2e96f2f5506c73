//go:build goolm

package integration

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/fhirtest"
	"github.com/caseroom/caseroom/internal/fhirtest/fhirtesting"
)

// ehrClient is a plain FHIR client of the test server, to seed data and look at what caseroom wrote.
func ehrClient(t *testing.T, srv *fhirtest.Server) *ehr.Client {
	t.Helper()
	cli, err := ehr.New(ehr.Config{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// seedPatient creates a Patient with an MRN and returns its reference.
func seedPatient(t *testing.T, cli *ehr.Client, family, mrn string) string {
	t.Helper()
	var created ehr.Patient
	p := &ehr.Patient{ResourceType: "Patient", Name: []ehr.HumanName{{Family: family, Given: []string{"Test"}}}, Gender: "female",
		BirthDate: "1961-04-02", Identifier: []ehr.Identifier{{System: "urn:oid:1.2.36.146.595.217.0.1", Value: mrn}}}
	if _, err := cli.Create(context.Background(), p, nil, &created); err != nil {
		t.Fatal(err)
	}
	return "Patient/" + created.ID
}

// observations returns the Observations of a patient, by identifier value.
func observations(t *testing.T, cli *ehr.Client, patientRef string) map[string]ehr.Observation {
	t.Helper()
	bundle, err := cli.Search(context.Background(), "Observation", url.Values{"subject": {patientRef}, "_count": {"100"}})
	if err != nil {
		t.Fatal(err)
	}
	found, err := bundle.Observations()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]ehr.Observation)
	for _, o := range found {
		key := o.IdentifierValue(ehr.ObservationIdentifierSystem)
		if _, dup := out[key]; dup {
			t.Fatalf("two Observations carry the identifier %s", key)
		}
		out[key] = o
	}
	return out
}

// ehrCase opens a case linked to a seeded patient on a bot that files to srv.
func ehrCase(t *testing.T, on *onHomeserver, srv *fhirtest.Server) (c *clinic, doc, pat *user, caseRoom, patientRoom id.RoomID, patientRef string) {
	t.Helper()
	patientRef = seedPatient(t, ehrClient(t, srv), "Okafor", "MRN-"+strings.ToUpper(t.Name()[4:8]))
	c = newClinicOn(t, on, map[string]any{"ehr": map[string]any{"url": srv.URL, "timeout": "5s"}})
	doc, pat = newUser(t, c.hs, "doc"), newUser(t, c.hs, "pat")
	c.registerClinician(doc)
	docDM := doc.EncryptedRoomWithBot(c.botID)
	caseRoom, patientRoom = c.openCase(doc, docDM, "Heart failure follow-up --patient "+patientRef)
	c.mustSucceed(doc, caseRoom, "!patient invite "+pat.UserID.String())
	pat.JoinInvited(patientRoom)
	return c, doc, pat, caseRoom, patientRoom, patientRef
}

func TestCheckInFiledInEHR(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		srv := fhirtesting.Start(t)
		fhir := ehrClient(t, srv)
		c, doc, pat, caseRoom, patientRoom, patientRef := ehrCase(t, on, srv)
		ctx := context.Background()

		checkin, _ := c.command(pat, patientRoom, "!checkin bp=142/91 hr=88 temp=38.4 spo2=95 rr=18 weight=71.2kg glucose=110mg/dL pain=4 dizzy since this morning")
		botNotice(doc, c, caseRoom, "filed in the EHR")
		pat.WaitFor(20*time.Second, "the filed reaction", func(evt *event.Event) bool {
			return evt.Type == event.EventReaction && evt.Sender == c.botID && evt.Content.AsReaction().RelatesTo.EventID == checkin
		})
		obs := observations(t, fhir, patientRef)
		if len(obs) != 8 {
			t.Fatalf("%d Observations in the EHR, want 8", len(obs))
		}
		evt := pat.WaitFor(time.Second, "its check-in", func(evt *event.Event) bool { return evt.ID == checkin && evt.Type == event.EventMessage })
		wantTime := time.UnixMilli(evt.Timestamp).UTC().Format(time.RFC3339Nano)
		wantTime = strings.TrimSuffix(wantTime, "Z")
		checks := []struct {
			kind, code, unit string
			value            float64
			category         string
		}{
			{"hr", "8867-4", "/min", 88, "vital-signs"},
			{"temp", "8310-5", "Cel", 38.4, "vital-signs"},
			{"spo2", "2708-6", "%", 95, "vital-signs"},
			{"rr", "9279-1", "/min", 18, "vital-signs"},
			{"weight", "29463-7", "kg", 71.2, "vital-signs"},
			{"glucose", "41653-7", "mg/dL", 110, "laboratory"},
			{"pain", "72514-3", "{score}", 4, "survey"},
		}
		for _, want := range checks {
			o, ok := obs[string(checkin)+"/"+want.kind]
			if !ok {
				t.Errorf("no Observation for %s", want.kind)
				continue
			}
			if o.Status != "final" || o.Code.Coding[0].Code != want.code || o.ValueQuantity == nil || o.ValueQuantity.Code != want.unit ||
				o.ValueQuantity.Value != want.value || o.Category[0].Coding[0].Code != want.category || o.Subject.Reference != patientRef ||
				o.Performer[0].Reference != patientRef || !strings.HasPrefix(o.EffectiveDateTime, wantTime[:19]) ||
				len(o.Note) == 0 || o.Note[0].Text != "dizzy since this morning" {
				t.Errorf("%s Observation = %+v", want.kind, o)
			}
		}
		bp := obs[string(checkin)+"/bp"]
		if bp.Code.Coding[0].Code != "85354-9" || len(bp.Component) != 2 || bp.Component[0].Code.Coding[0].Code != "8480-6" ||
			bp.Component[0].ValueQuantity.Value != 142 || bp.Component[1].Code.Coding[0].Code != "8462-4" ||
			bp.Component[1].ValueQuantity.Value != 91 || bp.Component[1].ValueQuantity.Code != "mm[Hg]" || bp.ValueQuantity != nil {
			t.Errorf("blood pressure Observation = %+v", bp)
		}

		// An edit amends the Observations; a dropped reading is marked entered in error.
		if _, err := pat.SendMessageEvent(ctx, patientRoom, event.EventMessage, &event.MessageEventContent{
			MsgType: event.MsgText, Body: "* !checkin bp=140/90 hr=84",
			NewContent: &event.MessageEventContent{MsgType: event.MsgText, Body: "!checkin bp=140/90 hr=84"},
			RelatesTo:  &event.RelatesTo{Type: event.RelReplace, EventID: checkin},
		}); err != nil {
			t.Fatal(err)
		}
		botNotice(doc, c, caseRoom, "Correction of a check-in", "filed in the EHR")
		obs = observations(t, fhir, patientRef)
		if hr := obs[string(checkin)+"/hr"]; hr.Status != "amended" || hr.ValueQuantity.Value != 84 {
			t.Errorf("amended heart rate = %+v", hr)
		}
		if temp := obs[string(checkin)+"/temp"]; temp.Status != "entered-in-error" {
			t.Errorf("temperature dropped by the amendment has status %q", temp.Status)
		}
		if len(obs) != 8 {
			t.Fatalf("%d Observations after the amendment, want still 8", len(obs))
		}

		// Deleting the message marks everything entered in error.
		if _, err := pat.RedactEvent(ctx, patientRoom, checkin); err != nil {
			t.Fatal(err)
		}
		botNotice(doc, c, caseRoom, "Removal (entered in error)", "filed in the EHR")
		for key, o := range observations(t, fhir, patientRef) {
			if o.Status != "entered-in-error" {
				t.Errorf("%s has status %q after the deletion", key, o.Status)
			}
		}
	})
}

// TestEHROutageLosesNothing: the FHIR server answers 503 and 429, and then is down altogether, while check-ins
// arrive; after it recovers every check-in is in the EHR exactly once.
func TestEHROutageLosesNothing(t *testing.T) {
	ctx := context.Background()
	srv := fhirtesting.Start(t)
	c, doc, pat, caseRoom, patientRoom, patientRef := ehrCase(t, onDendrite(t), srv)
	fhir := ehrClient(t, srv)

	if err := srv.Fail(ctx, 503, 3, 0); err != nil {
		t.Fatal(err)
	}
	first, _ := c.command(pat, patientRoom, "!checkin hr=71")
	if err := srv.Fail(ctx, 429, 2, time.Second); err != nil {
		t.Fatal(err)
	}
	second, _ := c.command(pat, patientRoom, "!checkin hr=72")
	// Watch the bot's outbox, not the server: the test's own requests would use up the injected failures.
	deadline := time.Now().Add(60 * time.Second)
	for c.countRows("SELECT COUNT(*) FROM ehr_outbox WHERE delivered_at IS NOT NULL") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("check-ins not filed after 503s and 429s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if obs := observations(t, fhir, patientRef); len(obs) != 2 || obs[string(first)+"/hr"].ValueQuantity.Value != 71 ||
		obs[string(second)+"/hr"].ValueQuantity.Value != 72 {
		t.Fatalf("after 503s and 429s the EHR has %d Observations: %+v", len(obs), obs)
	}
	if n := c.countRows("SELECT COUNT(*) FROM ehr_outbox WHERE attempts > 1"); n == 0 {
		t.Fatal("no delivery was retried: the injected failures were not seen")
	}

	// Now the server goes away entirely; an empty one comes back on the same address.
	port := strings.TrimPrefix(srv.Root, "http://127.0.0.1:")
	srv.Stop()
	var sent []id.EventID
	for i := range 3 {
		evtID, _ := c.command(pat, patientRoom, fmt.Sprintf("!checkin hr=%d", 80+i))
		sent = append(sent, evtID)
	}
	var portNum int
	fmt.Sscan(port, &portNum)
	again, err := fhirtest.StartOnPort(ctx, portNum)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(again.Stop)
	patientRef2 := seedPatientWithID(t, ehrClient(t, again), patientRef)
	deadline = time.Now().Add(90 * time.Second)
	for {
		obs := observations(t, ehrClient(t, again), patientRef2)
		if len(obs) == 3 {
			for _, evtID := range sent {
				if _, ok := obs[string(evtID)+"/hr"]; !ok {
					t.Fatalf("check-in %s missing after recovery", evtID)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after recovery %d of 3 check-ins filed", len(obs))
		}
		time.Sleep(250 * time.Millisecond)
	}
	botNotice(doc, c, caseRoom, "filed in the EHR")
	if n := c.countRows("SELECT COUNT(*) FROM ehr_outbox WHERE delivered_at IS NULL"); n != 0 {
		t.Fatalf("%d outbox items still undelivered", n)
	}
}

// seedPatientWithID recreates a Patient with the same id on an empty server (PUT creates it), so the references
// caseroom holds stay valid.
func seedPatientWithID(t *testing.T, cli *ehr.Client, ref string) string {
	t.Helper()
	p := &ehr.Patient{ResourceType: "Patient", ID: strings.TrimPrefix(ref, "Patient/"), Gender: "female"}
	if err := cli.Update(context.Background(), p, "", nil); err != nil {
		t.Fatal(err)
	}
	return ref
}

func TestEHRDeadLetterAndRetry(t *testing.T) {
	srv := fhirtesting.Start(t)
	c, doc, pat, caseRoom, patientRoom, patientRef := ehrCase(t, onDendrite(t), srv)
	// The EHR refuses a clinician's check-in (a 422, as for a resource that fails the server's own rules).
	if err := srv.FailWrites(context.Background(), "POST", 422, 1, "refused by a rule of this EHR"); err != nil {
		t.Fatal(err)
	}
	c.mustSucceed(doc, caseRoom, "!checkin for "+pat.UserID.String()+" hr=77 by phone")
	botNotice(doc, c, caseRoom, "could not be filed", "dead letter", "422")
	var seq int64
	if err := c.bot.db().QueryRow("SELECT seq FROM ehr_outbox WHERE dead_at IS NOT NULL").Scan(&seq); err != nil {
		t.Fatal(err)
	}
	if body := c.mustSucceed(c.admin, c.adminDM, "!admin outbox"); !strings.Contains(body, fmt.Sprint(seq)) || !strings.Contains(body, "422") {
		t.Fatalf("admin outbox: %s", body)
	}
	// Linked to a Practitioner meanwhile: the retry names it as the performer.
	provenanceSeedPractitioner(t, srv, "42") // a linked Practitioner must exist in the EHR
	c.mustSucceed(c.admin, c.adminDM, "!admin clinician add "+doc.UserID.String()+" --practitioner Practitioner/42")
	c.mustSucceed(c.admin, c.adminDM, fmt.Sprintf("!admin outbox retry %d", seq))
	botNotice(doc, c, caseRoom, "filed in the EHR")
	obs := observations(t, ehrClient(t, srv), patientRef)
	if len(obs) != 1 {
		t.Fatalf("%d Observations, want 1", len(obs))
	}
	for _, o := range obs {
		if o.Performer[0].Reference != "Practitioner/42" {
			t.Fatalf("performer = %+v, want the clinician", o.Performer)
		}
	}
	_ = patientRoom
}
