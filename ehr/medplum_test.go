package ehr_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/fhirtest"
	"github.com/caseroom/caseroom/internal/fhirtest/fhirtesting"
)

// These tests run against the real FHIR test server (Medplum's engine, see internal/fhirtest), one per test
// binary, reset for each test; they must not run in parallel.

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newClient(t *testing.T, srv *fhirtest.Server, auth ehr.Auth) *ehr.Client {
	t.Helper()
	c, err := ehr.New(ehr.Config{BaseURL: srv.URL, Timeout: 10 * time.Second, Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// createPatient stores a Patient and returns "Patient/<id>".
func createPatient(t *testing.T, ctx context.Context, c *ehr.Client, recordID string) string {
	t.Helper()
	p := &ehr.Patient{
		Identifier: []ehr.Identifier{{System: ehr.IdentifierSystem("patient"), Value: recordID}},
		Name:       []ehr.HumanName{{Family: "Test", Given: []string{"Pat"}}},
	}
	var stored ehr.Patient
	created, err := c.Create(ctx, p, ehr.IdentifierQuery(ehr.IdentifierSystem("patient"), recordID), &stored)
	if err != nil {
		t.Fatalf("create patient: %v", err)
	}
	if !created || stored.ID == "" {
		t.Fatalf("create patient: created=%v id=%q", created, stored.ID)
	}
	return "Patient/" + stored.ID
}

func fullCheckIn(t *testing.T) *care.CheckIn {
	t.Helper()
	in, err := care.ParseCheckIn("bp=142/91 hr=88 temp=101.2F spo2=95 rr=18 weight=156lb glucose=110mg/dL pain=0 dizzy since this morning", nil)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// count returns how many Observations carry the identifier.
func count(t *testing.T, ctx context.Context, srv *fhirtest.Server, value string) int {
	t.Helper()
	n, err := srv.Count(ctx, "Observation", ehr.IdentifierQuery(ehr.ObservationIdentifierSystem, value))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCheckInTransactionFiledAndFound(t *testing.T) {
	srv := fhirtesting.Shared(t)
	ctx := testContext(t)
	c := newClient(t, srv, nil)
	patient := createPatient(t, ctx, c, "case-1")

	effective := time.Date(2026, 3, 14, 9, 26, 53, 589_000_000, time.FixedZone("CET", 3600))
	rec := ehr.CheckInRecord{
		EventID:      "$Hk2+Jx/9aQ=:example.org",
		CheckIn:      fullCheckIn(t),
		PatientRef:   patient,
		PerformerRef: "Practitioner/nurse-1",
		Effective:    effective,
	}
	bundle, err := ehr.CheckInBundle(rec)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Transaction(ctx, bundle)
	if err != nil {
		t.Fatalf("transaction: %v", err)
	}
	if len(resp.Entry) != 8 {
		t.Fatalf("got %d response entries, want 8", len(resp.Entry))
	}
	for i, e := range resp.Entry {
		if e.Response.StatusCode() != http.StatusCreated || !strings.HasPrefix(e.Response.Reference(), "Observation/") {
			t.Errorf("entry %d: status %q location %q, want 201 Observation/…", i, e.Response.Status, e.Response.Location)
		}
	}

	found, err := c.Search(ctx, "Observation", url.Values{"subject": {patient}, "_count": {"50"}})
	if err != nil {
		t.Fatalf("search: %v", err)
	}
	observations, err := found.Observations()
	if err != nil {
		t.Fatal(err)
	}
	byKind := make(map[string]ehr.Observation)
	for _, o := range observations {
		id := o.IdentifierValue(ehr.ObservationIdentifierSystem)
		kind, ok := strings.CutPrefix(id, rec.EventID+"/")
		if !ok {
			t.Fatalf("observation %s has identifier %q", o.ID, id)
		}
		byKind[kind] = o
	}
	if len(byKind) != 8 {
		t.Fatalf("found %d observations for the patient, want 8: %v", len(byKind), keys(byKind))
	}

	tests := []struct {
		kind     care.Kind
		category string
		codes    []string
		value    float64
		unit     string
	}{
		{care.HeartRate, "vital-signs", []string{"8867-4"}, 88, "/min"},
		{care.Temperature, "vital-signs", []string{"8310-5"}, 101.2, "[degF]"},
		{care.SpO2, "vital-signs", []string{"2708-6", "59408-5"}, 95, "%"},
		{care.RespiratoryRate, "vital-signs", []string{"9279-1"}, 18, "/min"},
		{care.Weight, "vital-signs", []string{"29463-7"}, 156, "[lb_av]"},
		{care.Glucose, "laboratory", []string{"41653-7"}, 110, "mg/dL"},
		{care.Pain, "survey", []string{"72514-3"}, 0, "{score}"},
		{care.BloodPressure, "vital-signs", []string{"85354-9"}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			o, ok := byKind[string(tt.kind)]
			if !ok {
				t.Fatalf("no observation for %s", tt.kind)
			}
			if o.Status != "final" {
				t.Errorf("status %q", o.Status)
			}
			if len(o.Category) != 1 || !o.Category[0].HasCoding(ehr.ObservationCategorySystem, tt.category) {
				t.Errorf("category %+v, want %s", o.Category, tt.category)
			}
			for _, code := range tt.codes {
				if !o.Code.HasCoding(care.LOINCSystem, code) {
					t.Errorf("code %+v lacks LOINC %s", o.Code, code)
				}
			}
			if o.Subject == nil || o.Subject.Reference != patient {
				t.Errorf("subject %+v, want %s", o.Subject, patient)
			}
			if len(o.Performer) != 1 || o.Performer[0].Reference != "Practitioner/nurse-1" {
				t.Errorf("performer %+v", o.Performer)
			}
			if o.EffectiveDateTime != "2026-03-14T08:26:53.589Z" {
				t.Errorf("effectiveDateTime %q, want UTC 2026-03-14T08:26:53.589Z", o.EffectiveDateTime)
			}
			if len(o.Note) != 1 || o.Note[0].Text != "dizzy since this morning" {
				t.Errorf("note %+v", o.Note)
			}
			if tt.kind == care.BloodPressure {
				if o.ValueQuantity != nil {
					t.Errorf("panel has a value %+v", o.ValueQuantity)
				}
				checkComponents(t, o)
				return
			}
			q := o.ValueQuantity
			if q == nil || q.Value != tt.value || q.Code != tt.unit || q.System != care.UCUMSystem {
				t.Errorf("valueQuantity %+v, want %v %s (UCUM)", q, tt.value, tt.unit)
			}
		})
	}

	// The server indexes what was written: search by LOINC code, category and date finds the readings.
	searches := []struct {
		name   string
		params url.Values
		want   int
	}{
		{"heart rate by code", url.Values{"code": {"http://loinc.org|8867-4"}, "subject": {patient}}, 1},
		{"vital signs by category", url.Values{"category": {"vital-signs"}, "subject": {patient}}, 6},
		{"by UTC date", url.Values{"date": {"2026-03-14"}, "subject": {patient}}, 8},
		{"by identifier", ehr.IdentifierQuery(ehr.ObservationIdentifierSystem, rec.EventID+"/bp"), 1},
	}
	for _, s := range searches {
		b, err := c.Search(ctx, "Observation", s.params)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := len(b.Entry); got != s.want {
			t.Errorf("%s: %d results, want %d", s.name, got, s.want)
		}
	}
}

func checkComponents(t *testing.T, o ehr.Observation) {
	t.Helper()
	want := map[string]float64{"8480-6": 142, "8462-4": 91}
	if len(o.Component) != 2 {
		t.Fatalf("components %+v", o.Component)
	}
	for _, comp := range o.Component {
		found := false
		for code, value := range want {
			if comp.Code.HasCoding(care.LOINCSystem, code) {
				found = true
				q := comp.ValueQuantity
				if q == nil || q.Value != value || q.Code != care.UnitMmHg || q.System != care.UCUMSystem {
					t.Errorf("component %s: %+v, want %v mm[Hg]", code, q, value)
				}
			}
		}
		if !found {
			t.Errorf("unexpected component %+v", comp.Code)
		}
	}
}

func keys(m map[string]ehr.Observation) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestCheckInRetryCreatesNoDuplicates(t *testing.T) {
	srv := fhirtesting.Shared(t)
	ctx := testContext(t)
	c := newClient(t, srv, nil)
	patient := createPatient(t, ctx, c, "case-2")

	tests := []struct {
		name    string
		eventID string
		checkIn *care.CheckIn
		kinds   []string
	}{
		{"all vitals, event ID with + and /", "$a+b/c+/d==:example.org", fullCheckIn(t),
			[]string{"bp", "hr", "temp", "spo2", "rr", "weight", "glucose", "pain"}},
		{"room v4 event ID", "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg", &care.CheckIn{Values: []care.Value{
			{Kind: care.HeartRate, Quantity: care.Quantity{Value: 70, Unit: care.UnitPerMinute}}}}, []string{"hr"}},
		{"note only", "$n+o/te:example.org", &care.CheckIn{Note: "headache, worse at night"}, []string{"symptoms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := ehr.CheckInRecord{EventID: tt.eventID, CheckIn: tt.checkIn, PatientRef: patient,
				Effective: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
			bundle, err := ehr.CheckInBundle(rec)
			if err != nil {
				t.Fatal(err)
			}
			var first []string
			for attempt := 0; attempt < 3; attempt++ {
				resp, err := c.Transaction(ctx, bundle)
				if err != nil {
					t.Fatalf("attempt %d: %v", attempt, err)
				}
				wantStatus := http.StatusCreated
				if attempt > 0 {
					wantStatus = http.StatusOK
				}
				for i, e := range resp.Entry {
					if got := e.Response.StatusCode(); got != wantStatus {
						t.Errorf("attempt %d entry %d: status %d, want %d", attempt, i, got, wantStatus)
					}
					if attempt == 0 {
						first = append(first, e.Response.Reference())
					} else if e.Response.Reference() != first[i] {
						t.Errorf("attempt %d entry %d: %s, want the first attempt's %s", attempt, i, e.Response.Reference(), first[i])
					}
				}
			}
			for _, kind := range tt.kinds {
				if n := count(t, ctx, srv, tt.eventID+"/"+kind); n != 1 {
					t.Errorf("%s: %d observations with its identifier, want 1", kind, n)
				}
			}
		})
	}
	// The symptoms-only check-in is a survey Observation holding the words.
	b, err := c.Search(ctx, "Observation", ehr.IdentifierQuery(ehr.ObservationIdentifierSystem, "$n+o/te:example.org/symptoms"))
	if err != nil {
		t.Fatal(err)
	}
	obs, err := b.Observations()
	if err != nil || len(obs) != 1 {
		t.Fatalf("symptoms observation: %v, %d found", err, len(obs))
	}
	if o := obs[0]; o.ValueString != "headache, worse at night" || !o.Code.HasCoding(ehr.CodeSystem, ehr.SymptomsCode) ||
		!o.Category[0].HasCoding(ehr.ObservationCategorySystem, "survey") || o.Performer[0].Reference != patient {
		t.Errorf("symptoms observation %+v", o)
	}
}

func TestTransientFailuresRetried(t *testing.T) {
	srv := fhirtesting.Shared(t)
	ctx := testContext(t)
	c := newClient(t, srv, nil)
	patient := createPatient(t, ctx, c, "case-3")
	bundle, err := ehr.CheckInBundle(ehr.CheckInRecord{EventID: "$retry+1/x:example.org", CheckIn: fullCheckIn(t),
		PatientRef: patient, Effective: time.Now()})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("503 twice", func(t *testing.T) {
		if err := srv.Fail(ctx, http.StatusServiceUnavailable, 2, 0); err != nil {
			t.Fatal(err)
		}
		var errs []error
		policy := ehr.RetryPolicy{Attempts: 5, MinDelay: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond}
		err := ehr.Retry(ctx, policy, func(ctx context.Context) error {
			_, err := c.Transaction(ctx, bundle)
			if err != nil {
				errs = append(errs, err)
			}
			return err
		})
		if err != nil {
			t.Fatalf("retry: %v", err)
		}
		if len(errs) != 2 {
			t.Fatalf("%d failed attempts, want 2: %v", len(errs), errs)
		}
		for _, err := range errs {
			var e *ehr.Error
			if !errors.As(err, &e) || e.Status != http.StatusServiceUnavailable || !e.Retryable() {
				t.Errorf("error %v: want a retryable *ehr.Error with status 503", err)
			}
			if e.Outcome == nil || !strings.Contains(e.Outcome.String(), "Injected failure") || !strings.Contains(err.Error(), "error transient") {
				t.Errorf("error %q lacks the OperationOutcome (or its issue code in the message)", err)
			}
		}
		if n := count(t, ctx, srv, "$retry+1/x:example.org/hr"); n != 1 {
			t.Errorf("%d heart-rate observations, want 1", n)
		}
	})

	t.Run("429 with Retry-After", func(t *testing.T) {
		if err := srv.Fail(ctx, http.StatusTooManyRequests, 1, time.Second); err != nil {
			t.Fatal(err)
		}
		attempts := 0
		start := time.Now()
		policy := ehr.RetryPolicy{Attempts: 3, MinDelay: 10 * time.Millisecond, MaxDelay: 2 * time.Second}
		err := ehr.Retry(ctx, policy, func(ctx context.Context) error {
			attempts++
			_, err := c.Transaction(ctx, bundle)
			var e *ehr.Error
			if attempts == 1 && (!errors.As(err, &e) || e.Status != http.StatusTooManyRequests || e.RetryAfter != time.Second) {
				t.Errorf("first attempt: %v, want 429 with RetryAfter 1s", err)
			}
			return err
		})
		if err != nil || attempts != 2 {
			t.Fatalf("retry: %v after %d attempts", err, attempts)
		}
		if waited := time.Since(start); waited < time.Second {
			t.Errorf("retried after %v, before the server's Retry-After of 1s", waited)
		}
	})

	t.Run("Retry-After beyond MaxDelay is left to the caller", func(t *testing.T) {
		if err := srv.Fail(ctx, http.StatusServiceUnavailable, 1, 120*time.Second); err != nil {
			t.Fatal(err)
		}
		attempts := 0
		err := ehr.Retry(ctx, ehr.RetryPolicy{Attempts: 3, MinDelay: time.Millisecond, MaxDelay: time.Second},
			func(ctx context.Context) error {
				attempts++
				_, err := c.Transaction(ctx, bundle)
				return err
			})
		var e *ehr.Error
		if !errors.As(err, &e) || e.RetryAfter != 120*time.Second || attempts != 1 {
			t.Fatalf("got %v after %d attempts, want the 503 with RetryAfter 2m after 1", err, attempts)
		}
	})
}

func TestValidationErrorIsPermanent(t *testing.T) {
	srv := fhirtesting.Shared(t)
	ctx := testContext(t)
	c := newClient(t, srv, nil)

	t.Run("create without code", func(t *testing.T) {
		_, err := c.Create(ctx, &ehr.Observation{Status: "final"}, nil, nil)
		var e *ehr.Error
		if !errors.As(err, &e) || e.Status != http.StatusBadRequest {
			t.Fatalf("got %v, want an *ehr.Error with status 400", err)
		}
		if e.Retryable() || ehr.IsRetryable(err) {
			t.Error("a validation error is retryable")
		}
		if e.Outcome == nil || !strings.Contains(e.Outcome.String(), "Missing required property") || !strings.Contains(err.Error(), "Observation.code") {
			t.Errorf("message %q lacks the issue's location, or the OperationOutcome is missing", err)
		}
		if strings.Contains(err.Error(), "Missing required property") {
			t.Errorf("message %q holds the server's words", err)
		}
		attempts := 0
		_ = ehr.Retry(ctx, ehr.RetryPolicy{Attempts: 3, MinDelay: time.Millisecond, MaxDelay: time.Millisecond},
			func(ctx context.Context) error {
				attempts++
				_, err := c.Create(ctx, &ehr.Observation{}, nil, nil)
				return err
			})
		if attempts != 1 {
			t.Errorf("Retry tried a permanent error %d times", attempts)
		}
	})

	t.Run("transaction with an entry breaking its profile writes nothing", func(t *testing.T) {
		bundle, err := ehr.CheckInBundle(ehr.CheckInRecord{EventID: "$bad:example.org", CheckIn: fullCheckIn(t),
			PatientRef: "Patient/p1", Effective: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		// Break the blood pressure panel: the bp profile requires its components.
		var bp ehr.Observation
		if err := bundle.Entry[0].Decode(&bp); err != nil || !bp.Code.HasCoding(care.LOINCSystem, "85354-9") {
			t.Fatalf("first entry is not the BP panel: %v", err)
		}
		bp.Component = nil
		if bundle.Entry[0].Resource, err = bp.MarshalJSON(); err != nil {
			t.Fatal(err)
		}
		_, err = c.Transaction(ctx, bundle)
		var e *ehr.Error
		if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Retryable() {
			t.Fatalf("got %v, want a permanent 400", err)
		}
		if !strings.Contains(err.Error(), "Bundle.entry[0]") {
			t.Errorf("message %q does not point at the entry", err)
		}
		n, err := srv.Count(ctx, "Observation", nil)
		if err != nil || n != 0 {
			t.Errorf("%d observations stored (%v), want none", n, err)
		}
	})
}

func TestReadAndUpdateWithIfMatch(t *testing.T) {
	srv := fhirtesting.Shared(t)
	ctx := testContext(t)
	c := newClient(t, srv, nil)
	ref := createPatient(t, ctx, c, "case-4")
	id := strings.TrimPrefix(ref, "Patient/")

	var p ehr.Patient
	if err := c.Read(ctx, "Patient", id, &p); err != nil {
		t.Fatal(err)
	}
	if p.ID != id || p.Meta == nil || p.Meta.VersionID == "" || p.Name[0].Family != "Test" {
		t.Fatalf("read %+v", p)
	}
	first := p.Meta.VersionID
	p.Gender = "unknown"
	var updated ehr.Patient
	if err := c.Update(ctx, &p, first, &updated); err != nil {
		t.Fatalf("update with the current version: %v", err)
	}
	if updated.Gender != "unknown" || updated.Meta.VersionID == first {
		t.Fatalf("updated %+v", updated)
	}
	err := c.Update(ctx, &p, first, nil)
	var e *ehr.Error
	if !errors.As(err, &e) || e.Status != http.StatusPreconditionFailed || e.Retryable() {
		t.Fatalf("update with a stale version: %v, want a permanent 412", err)
	}
	err = c.Read(ctx, "Patient", "does-not-exist", &p)
	if !errors.As(err, &e) || e.Status != http.StatusNotFound {
		t.Fatalf("read of a missing patient: %v, want 404", err)
	}
}

func TestBearerAuth(t *testing.T) {
	srv := fhirtesting.Shared(t)
	ctx := testContext(t)
	if err := srv.RequireBearer(ctx, "s3cret-test-token"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		auth   ehr.Auth
		status int
	}{
		{"no auth", nil, http.StatusUnauthorized},
		{"wrong token", ehr.BearerAuth{Token: "wrong"}, http.StatusUnauthorized},
		{"right token", ehr.BearerAuth{Token: "s3cret-test-token"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newClient(t, srv, tt.auth).Search(ctx, "Patient", nil)
			var e *ehr.Error
			switch {
			case tt.status == 0 && err != nil:
				t.Fatalf("search: %v", err)
			case tt.status != 0 && (!errors.As(err, &e) || e.Status != tt.status || e.Retryable()):
				t.Fatalf("search: %v, want a permanent %d", err, tt.status)
			}
		})
	}
}
