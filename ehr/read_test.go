package ehr_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/fhirtest/fhirtesting"
)

// rawResource is any resource given as JSON, for seeding the test server.
type rawResource map[string]any

func (r rawResource) ResourceKey() (string, string) {
	typ, _ := r["resourceType"].(string)
	id, _ := r["id"].(string)
	return typ, id
}

// seed creates a resource from JSON (with %PATIENT% replaced by patientRef) and returns "Type/id".
func seed(t *testing.T, ctx context.Context, c *ehr.Client, patientRef, body string) string {
	t.Helper()
	var res rawResource
	if err := json.Unmarshal([]byte(strings.ReplaceAll(body, "%PATIENT%", patientRef)), &res); err != nil {
		t.Fatalf("bad seed JSON: %v", err)
	}
	var out rawResource
	if _, err := c.Create(ctx, res, nil, &out); err != nil {
		t.Fatalf("seed %s: %v", res["resourceType"], err)
	}
	return out["resourceType"].(string) + "/" + out["id"].(string)
}

// vital is an Observation with category vital-signs, LOINC code, a quantity and a time.
func vital(code, text string, value float64, unit, effective string) string {
	b, _ := json.Marshal(map[string]any{
		"resourceType": "Observation", "status": "final",
		"category":          []any{map[string]any{"coding": []any{map[string]any{"system": ehr.ObservationCategorySystem, "code": "vital-signs"}}}},
		"code":              map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": code}}, "text": text},
		"subject":           map[string]any{"reference": "%PATIENT%"},
		"effectiveDateTime": effective,
		"valueQuantity":     map[string]any{"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
	})
	return string(b)
}

const mrnSystem = "urn:oid:1.2.36.146.595.217.0.1"

// seedPatient creates a Patient with an MRN (typed MR) and returns its reference.
func seedPatient(t *testing.T, ctx context.Context, c *ehr.Client, family, mrnSystem, mrn string) string {
	t.Helper()
	return seed(t, ctx, c, "", `{"resourceType":"Patient","name":[{"use":"official","family":"`+family+`","given":["Ada","M."]}],
		"gender":"female","birthDate":"1961-04-02","identifier":[{"system":"`+mrnSystem+`","value":"`+mrn+`",
		"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR"}],"text":"MRN"}}]}`)
}

func TestReadSummary(t *testing.T) {
	srv := fhirtesting.Shared(t)
	ctx := testContext(t)
	c := newClient(t, srv, nil)
	patient := seedPatient(t, ctx, c, "Okafor", mrnSystem, "0012345")
	other := seedPatient(t, ctx, c, "Other", mrnSystem, "999")

	condition := func(text, status, verification string) string {
		v := ""
		if verification != "" {
			v = `,"verificationStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-ver-status","code":"` + verification + `"}]}`
		}
		return `{"resourceType":"Condition","subject":{"reference":"%PATIENT%"},"code":{"text":"` + text + `"},"onsetDateTime":"2019-03-01",
			"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"` + status + `"}]}` + v + `}`
	}
	seed(t, ctx, c, patient, condition("Heart failure", "active", "confirmed"))
	seed(t, ctx, c, patient, condition("Hypertension", "recurrence", ""))
	seed(t, ctx, c, patient, condition("Pneumonia", "resolved", ""))
	seed(t, ctx, c, patient, condition("Gout", "active", "refuted"))
	seed(t, ctx, c, other, condition("Not this patient", "active", ""))

	medication := seed(t, ctx, c, "", `{"resourceType":"Medication","code":{"text":"Bisoprolol 5 mg tablet"}}`)
	seed(t, ctx, c, patient, `{"resourceType":"MedicationRequest","status":"active","intent":"order","subject":{"reference":"%PATIENT%"},
		"medicationCodeableConcept":{"text":"Furosemide 40 mg"},"dosageInstruction":[{"text":"one tablet every morning"}]}`)
	seed(t, ctx, c, patient, `{"resourceType":"MedicationRequest","status":"active","intent":"order","subject":{"reference":"%PATIENT%"},
		"medicationReference":{"reference":"`+medication+`"}}`)
	seed(t, ctx, c, patient, `{"resourceType":"MedicationRequest","status":"stopped","intent":"order","subject":{"reference":"%PATIENT%"},
		"medicationCodeableConcept":{"text":"Ramipril"}}`)

	allergy := func(text, clinical, verification, extra string) string {
		cs := ""
		if clinical != "" {
			cs = `"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical","code":"` + clinical + `"}]},`
		}
		return `{"resourceType":"AllergyIntolerance","patient":{"reference":"%PATIENT%"},"code":{"text":"` + text + `"},` + cs + extra +
			`"verificationStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/allergyintolerance-verification","code":"` + verification + `"}]}}`
	}
	seed(t, ctx, c, patient, allergy("Penicillin", "active", "confirmed", `"criticality":"high","reaction":[{"manifestation":[{"text":"Hives"}]}],`))
	seed(t, ctx, c, patient, allergy("Latex", "resolved", "confirmed", ""))
	seed(t, ctx, c, patient, allergy("Peanuts", "", "entered-in-error", ""))

	seed(t, ctx, c, patient, vital("8867-4", "Heart rate", 72, "/min", "2026-03-01T08:00:00Z"))
	newestHR := seed(t, ctx, c, patient, vital("8867-4", "Heart rate", 88, "/min", "2026-03-02T08:00:00Z"))
	seed(t, ctx, c, patient, strings.Replace(vital("8310-5", "Body temperature", 41.9, "Cel", "2026-03-03T08:00:00Z"), `"status":"final"`, `"status":"entered-in-error"`, 1))
	seed(t, ctx, c, patient, `{"resourceType":"Observation","status":"final","subject":{"reference":"%PATIENT%"},
		"category":[{"coding":[{"system":"`+ehr.ObservationCategorySystem+`","code":"vital-signs"}]}],
		"code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}],"text":"Blood pressure"},"effectiveDateTime":"2026-03-02T07:00:00+01:00",
		"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":142,"unit":"mm[Hg]"}},
		             {"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":91,"unit":"mm[Hg]"}}]}`)
	seed(t, ctx, c, patient, `{"resourceType":"Observation","status":"final","subject":{"reference":"%PATIENT%"},
		"category":[{"coding":[{"system":"`+ehr.ObservationCategorySystem+`","code":"laboratory"}]}],
		"code":{"text":"Potassium"},"valueQuantity":{"value":4.1,"unit":"mmol/L"}}`)
	seed(t, ctx, c, other, vital("9279-1", "Respiratory rate", 30, "/min", "2026-03-04T08:00:00Z"))

	s, err := c.ReadSummary(ctx, patient)
	if err != nil {
		t.Fatal(err)
	}
	if s.Patient.Reference() != patient || s.Patient.DisplayName() != "Okafor, Ada M." || s.Patient.BirthDate != "1961-04-02" ||
		len(s.Patient.Identifier) != 1 || s.Patient.Identifier[0].Value != "0012345" || ehr.ConceptText(*s.Patient.Identifier[0].Type) != "MRN" {
		t.Errorf("patient = %+v", s.Patient)
	}
	var conditions []string
	for _, c := range s.Conditions {
		conditions = append(conditions, ehr.ConceptText(c.Code))
	}
	if strings.Join(conditions, ",") != "Heart failure,Hypertension" && strings.Join(conditions, ",") != "Hypertension,Heart failure" {
		t.Errorf("conditions = %v, want the active, unrefuted ones of this patient", conditions)
	}
	meds := map[string]string{}
	for _, m := range s.Medications {
		meds[m.MedicationName()] = m.Dosage()
	}
	if len(meds) != 2 || meds["Furosemide 40 mg"] != "one tablet every morning" || meds["Bisoprolol 5 mg tablet"] != "" {
		if _, ok := meds["Bisoprolol 5 mg tablet"]; !ok || len(meds) != 2 {
			t.Errorf("medications = %v, want the two active ones (one named by its Medication)", meds)
		}
	}
	if len(s.Allergies) != 1 || ehr.ConceptText(s.Allergies[0].Code) != "Penicillin" || s.Allergies[0].Criticality != "high" ||
		strings.Join(s.Allergies[0].Manifestations(), ",") != "Hives" {
		t.Errorf("allergies = %+v, want only the active penicillin allergy", s.Allergies)
	}
	var vitals []string
	for _, v := range s.Vitals {
		vitals = append(vitals, v.Name()+" "+v.ValueText()+" @"+v.Effective())
	}
	want := []string{"Heart rate 88 /min @2026-03-02T08:00:00Z", "Blood pressure 142/91 mm[Hg] @2026-03-02T07:00:00+01:00"}
	if strings.Join(vitals, "|") != strings.Join(want, "|") {
		t.Errorf("vitals = %q, want %q (newest per code, newest first, no entered-in-error, no lab)", vitals, want)
	}
	if len(s.Vitals) > 0 && s.Vitals[0].Key() != newestHR {
		t.Errorf("newest heart rate is %s, want %s", s.Vitals[0].Key(), newestHR)
	}
}

func TestReadSummaryFailures(t *testing.T) {
	srv := fhirtesting.Shared(t)
	ctx := testContext(t)
	c := newClient(t, srv, nil)
	if _, err := c.ReadSummary(ctx, "Patient/does-not-exist"); !ehr.IsNotFound(err) {
		t.Errorf("unknown patient: %v, want not found", err)
	}
	if _, err := c.ReadSummary(ctx, "Practitioner/1"); err == nil {
		t.Error("a Practitioner reference was read as a patient")
	}
	patient := seedPatient(t, ctx, c, "Okafor", mrnSystem, "1")
	if err := srv.Fail(ctx, http.StatusServiceUnavailable, 5, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadSummary(ctx, patient); !ehr.IsUnreachable(err) || ehr.IsNotFound(err) {
		t.Errorf("EHR answering 503: %v, want unreachable", err)
	}
	_ = srv.Fail(ctx, 0, 0, 0)

	down := newClient(t, srv, nil)
	dead, err := ehr.New(ehr.Config{BaseURL: "http://127.0.0.1:1/fhir", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dead.ReadSummary(ctx, patient); !ehr.IsUnreachable(err) {
		t.Errorf("EHR down: %v, want unreachable", err)
	}
	if _, err := down.ReadSummary(ctx, patient); err != nil {
		t.Errorf("after the failures: %v", err)
	}
}

func TestFindPatients(t *testing.T) {
	srv := fhirtesting.Shared(t)
	ctx := testContext(t)
	c := newClient(t, srv, nil)
	one := seedPatient(t, ctx, c, "Okafor", mrnSystem, "0012345")
	twinA := seedPatient(t, ctx, c, "Twin", mrnSystem, "777")
	twinB := seedPatient(t, ctx, c, "Twin", mrnSystem, "777")
	elsewhere := seedPatient(t, ctx, c, "Elsewhere", "urn:other-hospital", "0012345")
	odd := seedPatient(t, ctx, c, "Odd", mrnSystem, "a,b$c+d/e")

	refs := func(ps []ehr.PatientRecord) string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Reference())
		}
		return strings.Join(out, ",")
	}
	tests := []struct {
		name, system, value string
		want                []string
	}{
		{"one in the system", mrnSystem, "0012345", []string{one}},
		{"any system", "", "0012345", []string{one, elsewhere}},
		{"two with one MRN", mrnSystem, "777", []string{twinA, twinB}},
		{"unknown", mrnSystem, "404", nil},
		{"other system only", "urn:other-hospital", "777", nil},
		{"search characters", mrnSystem, "a,b$c+d/e", []string{odd}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.FindPatients(ctx, tt.system, tt.value)
			if err != nil {
				t.Fatal(err)
			}
			gotRefs := strings.Split(refs(got), ",")
			if refs(got) == "" {
				gotRefs = nil
			}
			if len(gotRefs) != len(tt.want) {
				t.Fatalf("found %v, want %v", gotRefs, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(refs(got), w) {
					t.Fatalf("found %v, want %v", gotRefs, tt.want)
				}
			}
		})
	}
}

// TestSearchAllFollowsNext: next links on the same server are followed; one pointing elsewhere is not (it would
// receive the EHR credentials).
func TestSearchAllFollowsNext(t *testing.T) {
	var srv *httptest.Server
	var foreign int
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { foreign++ }))
	defer other.Close()
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer secret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		page := r.URL.Query().Get("page")
		next := map[string]string{
			"":  srv.URL + "/fhir/Observation?page=2&subject=" + url.QueryEscape("Patient/1"),
			"2": srv.URL + "/fhir?_getpages=x&page=3",
			"3": other.URL + "/fhir/Observation?page=4",
		}[page]
		w.Header().Set("Content-Type", ehr.FHIRContentType)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"resourceType": "Bundle", "type": "searchset",
			"link": []any{map[string]any{"relation": "next", "url": next}},
			"entry": []any{
				map[string]any{"search": map[string]any{"mode": "match"}, "resource": map[string]any{"resourceType": "Observation", "id": "p" + page}},
				map[string]any{"search": map[string]any{"mode": "include"}, "resource": map[string]any{"resourceType": "Patient", "id": "1"}},
			},
		})
	}))
	defer srv.Close()
	c, err := ehr.New(ehr.Config{BaseURL: srv.URL + "/fhir", Auth: ehr.BearerAuth{Token: "secret"}})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := c.SearchAll(context.Background(), "Observation", url.Values{"subject": {"Patient/1"}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		var o ehr.Observation
		_ = e.Decode(&o)
		ids = append(ids, o.ID)
	}
	if strings.Join(ids, ",") != "p,p2,p3" || foreign != 0 {
		t.Fatalf("entries %v, %d requests to another server", ids, foreign)
	}
}
