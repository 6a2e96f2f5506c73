package care

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestParseCheckInVitals(t *testing.T) {
	tests := []struct {
		name   string
		input  string
		want   []Value
		note   string
		format []string
	}{
		{
			name:  "full example",
			input: "bp=142/91 hr=88 temp=38.4 spo2=95 rr=18 weight=71.2kg glucose=6.1mmol/L pain=4 dizzy since this morning",
			want: []Value{
				{Kind: BloodPressure, Systolic: Quantity{142, UnitMmHg}, Diastolic: Quantity{91, UnitMmHg}},
				{Kind: HeartRate, Quantity: Quantity{88, UnitPerMinute}},
				{Kind: Temperature, Quantity: Quantity{38.4, UnitCelsius}},
				{Kind: SpO2, Quantity: Quantity{95, UnitPercent}},
				{Kind: RespiratoryRate, Quantity: Quantity{18, UnitPerMinute}},
				{Kind: Weight, Quantity: Quantity{71.2, UnitKilogram}},
				{Kind: Glucose, Quantity: Quantity{6.1, UnitMmolPerL}},
				{Kind: Pain, Quantity: Quantity{4, UnitScore}},
			},
			note: "dizzy since this morning",
			format: []string{"BP 142/91 mmHg", "HR 88/min", "Temp 38.4 °C", "SpO2 95%", "RR 18/min",
				"Weight 71.2 kg", "Glucose 6.1 mmol/L", "Pain 4/10"},
		},
		{
			name:  "aliases, any order, upper case keys",
			input: "PULSE=70 Sat=97 T=37 Resp=14 WT=80 BG=5 Sugar",
			want: []Value{
				{Kind: HeartRate, Quantity: Quantity{70, UnitPerMinute}},
				{Kind: SpO2, Quantity: Quantity{97, UnitPercent}},
				{Kind: Temperature, Quantity: Quantity{37, UnitCelsius}},
				{Kind: RespiratoryRate, Quantity: Quantity{14, UnitPerMinute}},
				{Kind: Weight, Quantity: Quantity{80, UnitKilogram}},
				{Kind: Glucose, Quantity: Quantity{5, UnitMmolPerL}},
			},
			note: "Sugar",
		},
		{
			name:   "sugar alias",
			input:  "sugar=7.2",
			want:   []Value{{Kind: Glucose, Quantity: Quantity{7.2, UnitMmolPerL}}},
			format: []string{"Glucose 7.2 mmol/L"},
		},
		{
			name:  "colon separator",
			input: "bp:120/80 hr:60",
			want: []Value{
				{Kind: BloodPressure, Systolic: Quantity{120, UnitMmHg}, Diastolic: Quantity{80, UnitMmHg}},
				{Kind: HeartRate, Quantity: Quantity{60, UnitPerMinute}},
			},
		},
		{
			name:   "temperature units",
			input:  "temp=101.2F",
			want:   []Value{{Kind: Temperature, Quantity: Quantity{101.2, UnitFahrenheit}}},
			format: []string{"Temp 101.2 °F"},
		},
		{
			name:   "temperature with degree sign and decimal comma",
			input:  "temp=38,4°C",
			want:   []Value{{Kind: Temperature, Quantity: Quantity{38.4, UnitCelsius}}},
			format: []string{"Temp 38.4 °C"},
		},
		{
			name:  "temperature lower-case c and UCUM code",
			input: "temp=38.4c",
			want:  []Value{{Kind: Temperature, Quantity: Quantity{38.4, UnitCelsius}}},
		},
		{
			name:  "fahrenheit UCUM code",
			input: "t=99.5[degF]",
			want:  []Value{{Kind: Temperature, Quantity: Quantity{99.5, UnitFahrenheit}}},
		},
		{
			name:   "weight in pounds",
			input:  "weight=156lb",
			want:   []Value{{Kind: Weight, Quantity: Quantity{156, UnitPound}}},
			format: []string{"Weight 156 lb"},
		},
		{
			name:  "weight in lbs upper case",
			input: "wt=156LBS",
			want:  []Value{{Kind: Weight, Quantity: Quantity{156, UnitPound}}},
		},
		{
			name:   "glucose in mg/dL",
			input:  "glucose=110mg/dL",
			want:   []Value{{Kind: Glucose, Quantity: Quantity{110, UnitMgPerDL}}},
			format: []string{"Glucose 110 mg/dL"},
		},
		{
			name:  "glucose short units",
			input: "glucose=110mg",
			want:  []Value{{Kind: Glucose, Quantity: Quantity{110, UnitMgPerDL}}},
		},
		{
			name:  "glucose mmol",
			input: "bg=6.1mmol",
			want:  []Value{{Kind: Glucose, Quantity: Quantity{6.1, UnitMmolPerL}}},
		},
		{
			name:  "explicit units everywhere",
			input: "bp=120/80mmHg hr=72bpm spo2=98% rr=16/min pain=3/10",
			want: []Value{
				{Kind: BloodPressure, Systolic: Quantity{120, UnitMmHg}, Diastolic: Quantity{80, UnitMmHg}},
				{Kind: HeartRate, Quantity: Quantity{72, UnitPerMinute}},
				{Kind: SpO2, Quantity: Quantity{98, UnitPercent}},
				{Kind: RespiratoryRate, Quantity: Quantity{16, UnitPerMinute}},
				{Kind: Pain, Quantity: Quantity{3, UnitScore}},
			},
		},
		{
			name:  "value in the next token after key colon",
			input: "Pain: 8 out of 10 today",
			want:  []Value{{Kind: Pain, Quantity: Quantity{8, UnitScore}}},
			note:  "out of 10 today",
		},
		{
			name:  "value in the next token after key equals",
			input: "temp= 38.4",
			want:  []Value{{Kind: Temperature, Quantity: Quantity{38.4, UnitCelsius}}},
		},
		{
			name:  "key colon then words is a note",
			input: "Pain: worse at night",
			note:  "Pain: worse at night",
		},
		{
			name:  "comma separated vitals",
			input: "bp=142/91, hr=88; temp=38,4, fine",
			want: []Value{
				{Kind: BloodPressure, Systolic: Quantity{142, UnitMmHg}, Diastolic: Quantity{91, UnitMmHg}},
				{Kind: HeartRate, Quantity: Quantity{88, UnitPerMinute}},
				{Kind: Temperature, Quantity: Quantity{38.4, UnitCelsius}},
			},
			note: "fine",
		},
		{
			name:  "note only",
			input: "  feeling much better today  ",
			note:  "feeling much better today",
		},
		{
			name:  "vitals after the note belong to the note",
			input: "hr=90 tired, hr=100 after stairs",
			want:  []Value{{Kind: HeartRate, Quantity: Quantity{90, UnitPerMinute}}},
			note:  "tired, hr=100 after stairs",
		},
		{
			name:  "odd whitespace: tabs, newlines, no-break spaces",
			input: "\thr=88\u00a0\u00a0temp=37.1\n\nshort of breath\n  on stairs\t",
			want: []Value{
				{Kind: HeartRate, Quantity: Quantity{88, UnitPerMinute}},
				{Kind: Temperature, Quantity: Quantity{37.1, UnitCelsius}},
			},
			note: "short of breath\n  on stairs",
		},
		{
			name:  "quotes in the note are kept verbatim",
			input: `hr=88 "dizzy" when I stand up, it's 'bad'`,
			want:  []Value{{Kind: HeartRate, Quantity: Quantity{88, UnitPerMinute}}},
			note:  `"dizzy" when I stand up, it's 'bad'`,
		},
		{
			name:  "unicode note",
			input: "pain=6 Kopfschmerzen seit gestern 😵‍💫 — 头痛",
			want:  []Value{{Kind: Pain, Quantity: Quantity{6, UnitScore}}},
			note:  "Kopfschmerzen seit gestern 😵‍💫 — 头痛",
		},
		{
			name:  "note that looks like a time or URL",
			input: "9:30 took meds, see https://example.org",
			note:  "9:30 took meds, see https://example.org",
		},
		{
			name:  "boundaries are inclusive",
			input: "temp=30 spo2=100 pain=0 weight=0.5",
			want: []Value{
				{Kind: Temperature, Quantity: Quantity{30, UnitCelsius}},
				{Kind: SpO2, Quantity: Quantity{100, UnitPercent}},
				{Kind: Pain, Quantity: Quantity{0, UnitScore}},
				{Kind: Weight, Quantity: Quantity{0.5, UnitKilogram}},
			},
		},
		{
			name:  "boundary reached only after conversion",
			input: "temp=113F",
			want:  []Value{{Kind: Temperature, Quantity: Quantity{113, UnitFahrenheit}}},
		},
		{
			name:  "pain written as a whole decimal",
			input: "pain=4.0",
			want:  []Value{{Kind: Pain, Quantity: Quantity{4, UnitScore}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCheckIn(tt.input, DefaultRanges())
			if err != nil {
				t.Fatalf("ParseCheckIn(%q): %v", tt.input, err)
			}
			if !reflect.DeepEqual(c.Values, tt.want) {
				t.Errorf("values\n got %+v\nwant %+v", c.Values, tt.want)
			}
			if c.Note != tt.note {
				t.Errorf("note = %q, want %q", c.Note, tt.note)
			}
			for i, want := range tt.format {
				if got := c.Values[i].Format(); got != want {
					t.Errorf("Values[%d].Format() = %q, want %q", i, got, want)
				}
			}
			if err := c.Validate(DefaultRanges()); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestParseCheckInErrors(t *testing.T) {
	type wantErr struct {
		field  string
		reason Reason
		// parts the message must contain: field, value and what is allowed
		contains []string
	}
	tests := []struct {
		name  string
		input string
		want  []wantErr
	}{
		{"out of range", "temp=52",
			[]wantErr{{"temp", ReasonOutOfRange, []string{"temp: 52 °C is outside the plausible range 30–45 °C"}}}},
		{"out of range after conversion", "temp=130F",
			[]wantErr{{"temp", ReasonOutOfRange, []string{"130 °F (54.4 °C)", "30–45 °C"}}}},
		{"weight out of range in pounds", "weight=1000lb",
			[]wantErr{{"weight", ReasonOutOfRange, []string{"weight:", "1000 lb (453.6 kg)", "0.5–400 kg"}}}},
		{"glucose out of range in mg/dL", "glucose=900mg/dL",
			[]wantErr{{"glucose", ReasonOutOfRange, []string{"glucose:", "900 mg/dL (50 mmol/L)", "1–40 mmol/L"}}}},
		{"negative value", "hr=-5",
			[]wantErr{{"hr", ReasonOutOfRange, []string{"hr: -5/min", "20–250/min"}}}},
		{"spo2 above 100", "spo2=101%",
			[]wantErr{{"spo2", ReasonOutOfRange, []string{"spo2: 101%", "50–100%"}}}},
		{"rr too low", "rr=2",
			[]wantErr{{"rr", ReasonOutOfRange, []string{"rr: 2/min", "4–60/min"}}}},
		{"pain above 10", "pain=11",
			[]wantErr{{"pain", ReasonOutOfRange, []string{"pain: 11/10", "0–10"}}}},
		{"pain not whole", "pain=4.5",
			[]wantErr{{"pain", ReasonInvalid, []string{`pain: "4.5"`, "whole number from 0 to 10"}}}},
		{"bp components out of range", "bp=300/20",
			[]wantErr{
				{"bp", ReasonOutOfRange, []string{"bp: systolic 300 mmHg", "50–260 mmHg"}},
				{"bp", ReasonOutOfRange, []string{"bp: diastolic 20 mmHg", "30–160 mmHg"}},
			}},
		{"bp systolic not above diastolic", "bp=80/120",
			[]wantErr{{"bp", ReasonInvalid, []string{`bp: "80/120 mmHg"`, "systolic above diastolic"}}}},
		{"bp without slash", "bp=142",
			[]wantErr{{"bp", ReasonInvalid, []string{`bp: "142"`, "systolic/diastolic like bp=120/80"}}}},
		{"bp with wrong unit", "bp=120/80kPa",
			[]wantErr{{"bp", ReasonUnitNotAllowed, []string{`bp: unit "kPa" is not allowed (mmHg)`}}}},
		{"not a number", "hr=abc",
			[]wantErr{{"hr", ReasonNotANumber, []string{`hr: "abc" is not a number`, "hr=72"}}}},
		{"two decimal points", "temp=38.4.5",
			[]wantErr{{"temp", ReasonNotANumber, []string{`temp: "38.4.5" is not a number`}}}},
		{"quoted value", `temp="38.4"`,
			[]wantErr{{"temp", ReasonNotANumber, []string{`temp: "\"38.4\"" is not a number`}}}},
		{"huge number", "hr=" + strings.Repeat("9", 400),
			[]wantErr{{"hr", ReasonNotANumber, []string{"hr: \"999"}}}},
		{"unit not allowed", "weight=11st",
			[]wantErr{{"weight", ReasonUnitNotAllowed, []string{`weight: unit "st" is not allowed (kg, lb)`}}}},
		{"temperature unit not allowed", "temp=300K",
			[]wantErr{{"temp", ReasonUnitNotAllowed, []string{`temp: unit "K" is not allowed (C, F)`}}}},
		{"glucose unit not allowed", "glucose=5g/L",
			[]wantErr{{"glucose", ReasonUnitNotAllowed, []string{`glucose: unit "g/L" is not allowed (mmol/L, mg/dL)`}}}},
		{"unit of another kind", "hr=88%",
			[]wantErr{{"hr", ReasonUnitNotAllowed, []string{`hr: unit "%" is not allowed (/min)`}}}},
		{"detached unit", "weight=71.2 kg tired",
			[]wantErr{{"weight", ReasonInvalid, []string{`weight: "71.2 kg"`, "weight=71.2kg"}}}},
		{"unknown vital with suggestion", "hrr=88",
			[]wantErr{{"hrr", ReasonUnknownField, []string{`unknown vital "hrr" (did you mean hr?)`}}}},
		{"unknown vital with suggestion for alias", "tmp=38",
			[]wantErr{{"tmp", ReasonUnknownField, []string{`unknown vital "tmp" (did you mean temp?)`}}}},
		{"unknown vital typo with digit", "sp02=95",
			[]wantErr{{"sp02", ReasonUnknownField, []string{`(did you mean spo2?)`}}}},
		{"unknown vital without suggestion", "mood=5",
			[]wantErr{{"mood", ReasonUnknownField, []string{`unknown vital "mood" (known: bp, hr, temp, spo2, rr, weight, glucose, pain)`}}}},
		{"unknown vital with colon and number", "hrr:88",
			[]wantErr{{"hrr", ReasonUnknownField, []string{`unknown vital "hrr"`}}}},
		{"duplicate", "hr=88 pulse=90",
			[]wantErr{{"hr", ReasonDuplicate, []string{`hr: given more than once (again as "90")`, "give each vital once"}}}},
		{"missing value", "hr=",
			[]wantErr{{"hr", ReasonMissing, []string{"hr: no value given", "hr=72"}}}},
		{"missing value before words", "temp= high",
			[]wantErr{{"temp", ReasonMissing, []string{"temp: no value given", "temp=37.2"}}}},
		{"empty", "",
			[]wantErr{{"check-in", ReasonEmpty, []string{"check-in: nothing given", "bp=120/80"}}}},
		{"only whitespace", " \t\n\u00a0",
			[]wantErr{{"check-in", ReasonEmpty, []string{"nothing given"}}}},
		{"input too long", strings.Repeat("a", MaxInputLength+1),
			[]wantErr{{"check-in", ReasonTooLong, []string{"check-in: 2001 characters is too long; at most 2000 characters"}}}},
		{"input too long counts characters, not bytes", strings.Repeat("ü", MaxInputLength+1),
			[]wantErr{{"check-in", ReasonTooLong, []string{"2001 characters"}}}},
		{"note too long", "hr=80 " + strings.Repeat("x", MaxNoteLength+1),
			[]wantErr{{"note", ReasonTooLong, []string{"note: 1001 characters is too long; at most 1000 characters"}}}},
		{"control character", "hr=80 bad\x00note",
			[]wantErr{{"check-in", ReasonInvalid, []string{`check-in: "\x00" is not valid`, "without control characters"}}}},
		{"invalid UTF-8", "hr=80 \xff",
			[]wantErr{{"check-in", ReasonInvalid, []string{"UTF-8"}}}},
		{"all errors at once, in input order", "hrr=88 temp=52 weight=70st hr=abc hr=90 pain=4.5 dizzy",
			[]wantErr{
				{"hrr", ReasonUnknownField, []string{"hrr"}},
				{"temp", ReasonOutOfRange, []string{"52 °C"}},
				{"weight", ReasonUnitNotAllowed, []string{`"st"`}},
				{"hr", ReasonNotANumber, []string{`"abc"`}},
				{"hr", ReasonDuplicate, []string{`"90"`}},
				{"pain", ReasonInvalid, []string{`"4.5"`}},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCheckIn(tt.input, DefaultRanges())
			if err == nil {
				t.Fatalf("ParseCheckIn(%q) = %+v, want an error", tt.input, c)
			}
			if c != nil {
				t.Errorf("ParseCheckIn returned a CheckIn with its error: %+v", c)
			}
			got := FieldErrors(err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(got), len(tt.want), err)
			}
			for i, w := range tt.want {
				if got[i].Field != w.field || got[i].Reason != w.reason {
					t.Errorf("error %d: field %q reason %d, want field %q reason %d (%v)",
						i, got[i].Field, got[i].Reason, w.field, w.reason, got[i])
				}
				for _, part := range w.contains {
					if !strings.Contains(got[i].Error(), part) {
						t.Errorf("error %d: %q does not contain %q", i, got[i].Error(), part)
					}
				}
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("errors.As(*FieldError) failed for %v", err)
			}
		})
	}
}

func TestParseCheckInCustomRanges(t *testing.T) {
	// A team that cares for very small children narrows weight, keeps the rest.
	ranges := Ranges{Weight: {Min: 1, Max: 50, Unit: UnitPound}}
	if err := ranges.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseCheckIn("weight=30kg", ranges); err == nil || !strings.Contains(err.Error(), "30 kg (66.1 lb) is outside the plausible range 1–50 lb") {
		t.Errorf("weight=30kg with a 1–50 lb range: %v", err)
	}
	if _, err := ParseCheckIn("weight=20kg temp=37", ranges); err != nil {
		t.Errorf("weight=20kg with a 1–50 lb range: %v", err)
	}
	if _, err := ParseCheckIn("temp=52", ranges); err == nil {
		t.Error("temp=52 passed: kinds missing from Ranges must fall back to DefaultRanges")
	}
}

func TestRangesValidate(t *testing.T) {
	tests := []struct {
		name   string
		ranges Ranges
		fields []string
	}{
		{"defaults", DefaultRanges(), nil},
		{"nil", nil, nil},
		{"fahrenheit", Ranges{Temperature: {86, 113, UnitFahrenheit}}, nil},
		{"blood pressure as a whole", Ranges{BloodPressure: {50, 260, UnitMmHg}}, []string{"ranges.bp"}},
		{"wrong unit", Ranges{Weight: {1, 100, UnitCelsius}}, []string{"ranges.weight"}},
		{"min above max", Ranges{HeartRate: {100, 20, UnitPerMinute}}, []string{"ranges.hr"}},
		{"unknown kinds sorted", Ranges{"zz": {}, "aa": {}}, []string{"aa", "zz"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fields []string
			for _, fe := range FieldErrors(tt.ranges.Validate()) {
				fields = append(fields, fe.Field)
			}
			if !reflect.DeepEqual(fields, tt.fields) {
				t.Errorf("fields with errors = %v, want %v", fields, tt.fields)
			}
		})
	}
}

func TestCheckInValidate(t *testing.T) {
	tests := []struct {
		name    string
		checkIn CheckIn
		reasons []Reason
	}{
		{"valid", CheckIn{Values: []Value{{Kind: HeartRate, Quantity: Quantity{70, UnitPerMinute}}}}, nil},
		{"note only", CheckIn{Note: "ok"}, nil},
		{"empty", CheckIn{}, []Reason{ReasonEmpty}},
		{"unknown kind", CheckIn{Values: []Value{{Kind: "mood", Quantity: Quantity{1, ""}}}}, []Reason{ReasonUnknownField}},
		{"component kind", CheckIn{Values: []Value{{Kind: Systolic, Quantity: Quantity{120, UnitMmHg}}}}, []Reason{ReasonUnknownField}},
		{"wrong unit", CheckIn{Values: []Value{{Kind: HeartRate, Quantity: Quantity{70, UnitCelsius}}}}, []Reason{ReasonUnitNotAllowed}},
		{"empty unit", CheckIn{Values: []Value{{Kind: HeartRate, Quantity: Quantity{70, ""}}}}, []Reason{ReasonUnitNotAllowed}},
		{"NaN", CheckIn{Values: []Value{{Kind: HeartRate, Quantity: Quantity{math.NaN(), UnitPerMinute}}}}, []Reason{ReasonNotANumber}},
		{"bp without components", CheckIn{Values: []Value{{Kind: BloodPressure}}}, []Reason{ReasonUnitNotAllowed, ReasonUnitNotAllowed}},
		{"duplicate", CheckIn{Values: []Value{
			{Kind: HeartRate, Quantity: Quantity{70, UnitPerMinute}},
			{Kind: HeartRate, Quantity: Quantity{72, UnitPerMinute}},
		}}, []Reason{ReasonDuplicate}},
		{"note too long", CheckIn{Note: strings.Repeat("x", MaxNoteLength+1)}, []Reason{ReasonTooLong}},
		{"note with control character", CheckIn{Note: "a\x1bb"}, []Reason{ReasonInvalid}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var reasons []Reason
			for _, fe := range FieldErrors(tt.checkIn.Validate(nil)) {
				reasons = append(reasons, fe.Reason)
			}
			if !reflect.DeepEqual(reasons, tt.reasons) {
				t.Errorf("reasons = %v, want %v", reasons, tt.reasons)
			}
		})
	}
}

func TestCheckInSummary(t *testing.T) {
	c, err := ParseCheckIn("bp=120/80 glucose=99mg/dL weight=156lbs tired", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Summary(), "BP 120/80 mmHg, Glucose 99 mg/dL, Weight 156 lb"; got != want {
		t.Errorf("Summary() = %q, want %q", got, want)
	}
	if got := (&CheckIn{Note: "x"}).Summary(); got != "" {
		t.Errorf("Summary() of a note-only check-in = %q, want empty", got)
	}
}

func TestFieldErrors(t *testing.T) {
	a := &FieldError{Field: "a"}
	b := &FieldError{Field: "b"}
	tests := []struct {
		name string
		err  error
		want []*FieldError
	}{
		{"nil", nil, nil},
		{"single", a, []*FieldError{a}},
		{"joined", errors.Join(a, b), []*FieldError{a, b}},
		{"wrapped join", wrap(errors.Join(a, errors.New("other"), b)), []*FieldError{a, b}},
		{"other error", errors.New("other"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FieldErrors(tt.err); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("FieldErrors = %v, want %v", got, tt.want)
			}
		})
	}
}

type wrapped struct{ err error }

func (w wrapped) Error() string { return "context: " + w.err.Error() }
func (w wrapped) Unwrap() error { return w.err }

func wrap(err error) error { return wrapped{err} }
