package ehr_test

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/ehr"
)

func TestIdentifierQuery(t *testing.T) {
	tests := []struct {
		name, value, want string
	}{
		{"room v3 event ID with + and /", "$Hk2+Jx/9a=:example.org/hr",
			"identifier=urn%3Acaseroom%3Aobservation%7C%5C%24Hk2%2BJx%2F9a%3D%3Aexample.org%2Fhr"},
		{"search characters escaped", `a,b|c\d`, "identifier=urn%3Acaseroom%3Aobservation%7Ca%5C%2Cb%5C%7Cc%5C%5Cd"},
		{"space", "a b", "identifier=urn%3Acaseroom%3Aobservation%7Ca+b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := ehr.IdentifierQuery(ehr.ObservationIdentifierSystem, tt.value)
			if got := q.Encode(); got != tt.want {
				t.Errorf("Encode() = %s, want %s", got, tt.want)
			}
			// What the server decodes is the system|value with FHIR search escapes, never a "+" turned to a space.
			back, err := url.ParseQuery(q.Encode())
			if err != nil || back.Get("identifier") != q.Get("identifier") {
				t.Errorf("round trip: %q, %v", back.Get("identifier"), err)
			}
		})
	}
}

func checkInRecord(t *testing.T, input string) ehr.CheckInRecord {
	t.Helper()
	in, err := care.ParseCheckIn(input, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ehr.CheckInRecord{EventID: "$ev+1/a:example.org", CheckIn: in, PatientRef: "Patient/p1",
		Effective: time.Date(2026, 5, 6, 7, 8, 9, 0, time.FixedZone("X", -4*3600))}
}

func TestCheckInObservations(t *testing.T) {
	tests := []struct {
		name     string
		input    string
		category string
		codes    []string
		unit     string
		value    float64
		profile  string
	}{
		{"temperature in Celsius", "temp=38.4", "vital-signs", []string{"8310-5"}, "Cel", 38.4, "bodytemp"},
		{"temperature in Fahrenheit", "temp=101.2F", "vital-signs", []string{"8310-5"}, "[degF]", 101.2, "bodytemp"},
		{"weight in kg", "weight=71.2kg", "vital-signs", []string{"29463-7"}, "kg", 71.2, "bodyweight"},
		{"weight in pounds", "weight=156lb", "vital-signs", []string{"29463-7"}, "[lb_av]", 156, "bodyweight"},
		{"SpO2 has two codes", "spo2=95", "vital-signs", []string{"2708-6", "59408-5"}, "%", 95, "oxygensat"},
		{"heart rate", "hr=88", "vital-signs", []string{"8867-4"}, "/min", 88, "heartrate"},
		{"respiratory rate", "rr=18", "vital-signs", []string{"9279-1"}, "/min", 18, "resprate"},
		{"glucose mmol/L is laboratory", "glucose=6.1", "laboratory", []string{"15074-8"}, "mmol/L", 6.1, ""},
		{"glucose mg/dL is laboratory", "glucose=110mg/dL", "laboratory", []string{"41653-7"}, "mg/dL", 110, ""},
		{"pain zero is survey", "pain=0", "survey", []string{"72514-3"}, "{score}", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs, err := ehr.CheckInObservations(checkInRecord(t, tt.input))
			if err != nil {
				t.Fatal(err)
			}
			if len(obs) != 1 {
				t.Fatalf("%d observations, want 1", len(obs))
			}
			o := obs[0]
			if o.Status != "final" || o.EffectiveDateTime != "2026-05-06T11:08:09Z" || o.Subject.Reference != "Patient/p1" ||
				len(o.Performer) != 1 || o.Performer[0].Reference != "Patient/p1" || o.Note != nil {
				t.Errorf("observation %+v", o)
			}
			if !o.Category[0].HasCoding(ehr.ObservationCategorySystem, tt.category) {
				t.Errorf("category %+v, want %s", o.Category, tt.category)
			}
			var codes []string
			for _, c := range o.Code.Coding {
				if c.System != care.LOINCSystem || c.Display == "" {
					t.Errorf("coding %+v", c)
				}
				codes = append(codes, c.Code)
			}
			if strings.Join(codes, " ") != strings.Join(tt.codes, " ") {
				t.Errorf("codes %v, want %v", codes, tt.codes)
			}
			if q := o.ValueQuantity; q == nil || q.Value != tt.value || q.Code != tt.unit || q.System != care.UCUMSystem {
				t.Errorf("valueQuantity %+v", q)
			}
			var profiles []string
			if o.Meta != nil {
				profiles = o.Meta.Profile
			}
			if tt.profile == "" && len(profiles) != 0 || tt.profile != "" &&
				(len(profiles) != 2 || !strings.HasSuffix(profiles[1], "/"+tt.profile) || !strings.HasSuffix(profiles[0], "/vitalsigns")) {
				t.Errorf("profiles %v, want vitalsigns + %q", profiles, tt.profile)
			}
			// The value is always written, so pain=0 is not dropped.
			raw, _ := json.Marshal(o)
			if value, _ := json.Marshal(tt.value); !strings.Contains(string(raw), `"value":`+string(value)+`,`) {
				t.Errorf("JSON %s lacks the value", raw)
			}
		})
	}
}

func TestCheckInBundle(t *testing.T) {
	rec := checkInRecord(t, "bp=142/91 hr=88 temp=38.4 spo2=95 rr=18 weight=71.2kg glucose=6.1 pain=4 dizzy since this morning")
	rec.PerformerRef = "Practitioner/n1"
	b, err := ehr.CheckInBundle(rec)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(b)
	if !strings.Contains(string(raw), `"resourceType":"Bundle","type":"transaction"`) {
		t.Errorf("bundle JSON starts %s", raw[:60])
	}
	if len(b.Entry) != 8 {
		t.Fatalf("%d entries, want 8 (Medplum allows no more with conditional creates)", len(b.Entry))
	}
	kinds := []string{"bp", "hr", "temp", "spo2", "rr", "weight", "glucose", "pain"}
	fullURLs := make(map[string]bool)
	for i, e := range b.Entry {
		var o ehr.Observation
		if err := e.Decode(&o); err != nil {
			t.Fatal(err)
		}
		id := rec.EventID + "/" + kinds[i]
		if got := o.IdentifierValue(ehr.ObservationIdentifierSystem); got != id {
			t.Errorf("entry %d identifier %q, want %q", i, got, id)
		}
		want := ehr.IdentifierQuery(ehr.ObservationIdentifierSystem, id).Encode()
		if e.Request.Method != "POST" || e.Request.URL != "Observation" || e.Request.IfNoneExist != want {
			t.Errorf("entry %d request %+v, want ifNoneExist %s", i, e.Request, want)
		}
		if strings.Contains(e.Request.IfNoneExist, "+") {
			t.Errorf("entry %d ifNoneExist %q has a raw +", i, e.Request.IfNoneExist)
		}
		if len(o.Note) != 1 || o.Note[0].Text != "dizzy since this morning" {
			t.Errorf("entry %d note %+v", i, o.Note)
		}
		if o.Performer[0].Reference != "Practitioner/n1" {
			t.Errorf("entry %d performer %+v", i, o.Performer)
		}
		if !strings.HasPrefix(e.FullURL, "urn:uuid:") || fullURLs[e.FullURL] {
			t.Errorf("entry %d fullUrl %q not a unique urn:uuid", i, e.FullURL)
		}
		fullURLs[e.FullURL] = true
	}
	again, _ := ehr.CheckInBundle(rec)
	if again.Entry[0].FullURL != b.Entry[0].FullURL {
		t.Error("fullUrl is not stable across calls")
	}

	var bp ehr.Observation
	_ = b.Entry[0].Decode(&bp)
	if bp.ValueQuantity != nil || len(bp.Component) != 2 ||
		!bp.Component[0].Code.HasCoding(care.LOINCSystem, "8480-6") || bp.Component[0].ValueQuantity.Value != 142 ||
		!bp.Component[1].Code.HasCoding(care.LOINCSystem, "8462-4") || bp.Component[1].ValueQuantity.Value != 91 ||
		bp.Component[1].ValueQuantity.Code != "mm[Hg]" {
		t.Errorf("blood pressure %+v", bp)
	}
}

func TestCheckInBundleNoteOnly(t *testing.T) {
	rec := checkInRecord(t, "feeling tired, slept badly")
	b, err := ehr.CheckInBundle(rec)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Entry) != 1 {
		t.Fatalf("%d entries, want 1", len(b.Entry))
	}
	var o ehr.Observation
	_ = b.Entry[0].Decode(&o)
	if o.IdentifierValue(ehr.ObservationIdentifierSystem) != rec.EventID+"/symptoms" ||
		!o.Code.HasCoding(ehr.CodeSystem, ehr.SymptomsCode) || !o.Category[0].HasCoding(ehr.ObservationCategorySystem, "survey") ||
		o.ValueString != "feeling tired, slept badly" || len(o.Note) != 1 || o.ValueQuantity != nil || o.Meta != nil {
		t.Errorf("note-only observation %+v", o)
	}
}

func TestCheckInBundleRejectsBadRecords(t *testing.T) {
	good := func() ehr.CheckInRecord { return checkInRecord(t, "hr=80") }
	tests := []struct {
		name   string
		change func(*ehr.CheckInRecord)
		want   string
	}{
		{"no event ID", func(r *ehr.CheckInRecord) { r.EventID = "" }, "no event ID"},
		{"no check-in", func(r *ehr.CheckInRecord) { r.CheckIn = nil }, "no check-in"},
		{"empty check-in", func(r *ehr.CheckInRecord) { r.CheckIn = &care.CheckIn{Note: "  "} }, "neither readings nor a note"},
		{"patient reference", func(r *ehr.CheckInRecord) { r.PatientRef = "Practitioner/1" }, "not Patient/<id>"},
		{"patient id with a slash", func(r *ehr.CheckInRecord) { r.PatientRef = "Patient/1/_history/2" }, "not Patient/<id>"},
		{"performer type", func(r *ehr.CheckInRecord) { r.PerformerRef = "Device/1" }, "performer reference"},
		{"no effective time", func(r *ehr.CheckInRecord) { r.Effective = time.Time{} }, "no effective time"},
		{"kind twice", func(r *ehr.CheckInRecord) {
			r.CheckIn.Values = append(r.CheckIn.Values, r.CheckIn.Values[0])
		}, "hr twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := good()
			tt.change(&rec)
			_, err := ehr.CheckInBundle(rec)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestTolerantReading(t *testing.T) {
	raw := `{"resourceType":"Observation","id":"1","extension":[{"url":"x","valueString":"y"}],"status":"final",
		"code":{"coding":[{"system":"http://loinc.org","code":"8867-4","userSelected":true}]},"interpretation":[{"text":"H"}],
		"valueQuantity":{"value":88,"comparator":"<","code":"/min"}}`
	var o ehr.Observation
	if err := json.Unmarshal([]byte(raw), &o); err != nil {
		t.Fatal(err)
	}
	if o.ID != "1" || !o.Code.HasCoding(care.LOINCSystem, "8867-4") || o.ValueQuantity.Value != 88 {
		t.Errorf("read %+v", o)
	}
}
