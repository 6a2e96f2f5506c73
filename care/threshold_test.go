package care

import (
	"strings"
	"testing"
)

func TestParseThreshold(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  Threshold
		text  string // String()
	}{
		{"below", "spo2<92", Threshold{SpO2, Below, 92, UnitPercent}, "spo2<92"},
		{"at least with default unit", "temp>=38.5", Threshold{Temperature, AtLeast, 38.5, UnitCelsius}, "temp>=38.5C"},
		{"fahrenheit", "temp>=101.3F", Threshold{Temperature, AtLeast, 101.3, UnitFahrenheit}, "temp>=101.3F"},
		{"bp means systolic", "bp>140", Threshold{Systolic, Above, 140, UnitMmHg}, "bp.sys>140"},
		{"diastolic", "bp.dia>90", Threshold{Diastolic, Above, 90, UnitMmHg}, "bp.dia>90"},
		{"short component keys", "sys<90", Threshold{Systolic, Below, 90, UnitMmHg}, "bp.sys<90"},
		{"glucose with unit", "glucose<4mmol/L", Threshold{Glucose, Below, 4, UnitMmolPerL}, "glucose<4mmol/L"},
		{"glucose in mg/dL", "glucose<72mg/dL", Threshold{Glucose, Below, 72, UnitMgPerDL}, "glucose<72mg/dL"},
		{"at most, alias, spaces", " pulse <= 50 ", Threshold{HeartRate, AtMost, 50, UnitPerMinute}, "hr<=50"},
		{"unicode operator", "rr≥30", Threshold{RespiratoryRate, AtLeast, 30, UnitPerMinute}, "rr>=30"},
		{"weight in pounds", "weight>300lb", Threshold{Weight, Above, 300, UnitPound}, "weight>300lb"},
		{"pain", "PAIN>=8", Threshold{Pain, AtLeast, 8, UnitScore}, "pain>=8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseThreshold(tt.input)
			if err != nil {
				t.Fatalf("ParseThreshold(%q): %v", tt.input, err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if got.String() != tt.text {
				t.Errorf("String() = %q, want %q", got.String(), tt.text)
			}
			back, err := ParseThreshold(got.String())
			if err != nil || back != got {
				t.Errorf("ParseThreshold(String()) = %+v, %v; want %+v", back, err, got)
			}
		})
	}
}

func TestParseThresholdErrors(t *testing.T) {
	tests := []struct {
		name     string
		input    string
		reason   Reason
		contains []string
	}{
		{"no operator", "spo2 92", ReasonInvalid, []string{`threshold: "spo2 92" is not valid`, "spo2<92"}},
		{"no key", "<92", ReasonInvalid, []string{`"<92"`}},
		{"unknown key", "hrr>120", ReasonUnknownField, []string{`unknown vital "hrr" (did you mean hr?)`}},
		{"unknown key without suggestion", "mood>3", ReasonUnknownField, []string{`unknown vital "mood"`, "bp.sys, bp.dia"}},
		{"no value", "pain>=", ReasonMissing, []string{"pain: no value given", "spo2<92"}},
		{"not a number", "hr>fast", ReasonNotANumber, []string{`hr: "fast" is not a number`}},
		{"double operator", "hr<<45", ReasonNotANumber, []string{`hr: "<45" is not a number`}},
		{"unit not allowed", "weight>90st", ReasonUnitNotAllowed, []string{`weight: unit "st" is not allowed (kg, lb)`}},
		{"outside plausible range", "spo2<101", ReasonOutOfRange, []string{"spo2: 101% is outside the plausible range 50–100%"}},
		{"bp threshold is one number", "bp>140/90", ReasonUnitNotAllowed, []string{`bp.sys: unit "/90" is not allowed (mmHg)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseThreshold(tt.input)
			fes := FieldErrors(err)
			if len(fes) != 1 {
				t.Fatalf("ParseThreshold(%q) error = %v, want one FieldError", tt.input, err)
			}
			if fes[0].Reason != tt.reason {
				t.Errorf("reason = %d, want %d (%v)", fes[0].Reason, tt.reason, err)
			}
			for _, part := range tt.contains {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("%q does not contain %q", err.Error(), part)
				}
			}
		})
	}
}

func TestDefaultThresholds(t *testing.T) {
	want := []string{"spo2<92", "hr>120", "hr<45", "temp>=38.5C", "bp.sys>=180", "bp.dia>=110",
		"bp.sys<90", "rr>25", "glucose<4mmol/L", "pain>=8"}
	got := DefaultThresholds()
	if len(got) != len(want) {
		t.Fatalf("got %d thresholds, want %d", len(got), len(want))
	}
	for i, th := range got {
		if th.String() != want[i] {
			t.Errorf("threshold %d = %q, want %q", i, th.String(), want[i])
		}
		if err := th.Validate(); err != nil {
			t.Errorf("%s: %v", th, err)
		}
		if back, err := ParseThreshold(th.String()); err != nil || back != th {
			t.Errorf("ParseThreshold(%q) = %+v, %v", th.String(), back, err)
		}
	}
}

func TestThresholdCrossed(t *testing.T) {
	tests := []struct {
		name      string
		threshold string
		input     string
		want      bool
	}{
		{"below crossed", "spo2<92", "spo2=91", true},
		{"below at the limit", "spo2<92", "spo2=92", false},
		{"at most at the limit", "spo2<=92", "spo2=92", true},
		{"above crossed", "hr>120", "hr=121", true},
		{"above at the limit", "hr>120", "hr=120", false},
		{"at least at the limit", "temp>=38.5", "temp=38.5", true},
		{"at least in fahrenheit exactly at the limit", "temp>=38.5", "temp=101.3F", true},
		{"at least in fahrenheit below", "temp>=38.5", "temp=101.2F", false},
		{"fahrenheit threshold, celsius reading", "temp>=101F", "temp=38.4", true},
		{"systolic", "bp>=180", "bp=182/95", true},
		{"systolic not crossed by a high diastolic", "bp>=180", "bp=170/115", false},
		{"diastolic", "bp.dia>=110", "bp=170/115", true},
		{"low systolic", "sys<90", "bp=85/50", true},
		{"glucose mg/dL reading, mmol/L threshold", "glucose<4mmol/L", "glucose=65mg/dL", true},
		{"glucose mg/dL reading above", "glucose<4mmol/L", "glucose=80mg/dL", false},
		{"weight in pounds", "weight>100kg", "weight=230lb", true},
		{"other kind never crosses", "hr>120", "rr=40", false},
		{"pain", "pain>=8", "pain=9", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th, err := ParseThreshold(tt.threshold)
			if err != nil {
				t.Fatal(err)
			}
			c, err := ParseCheckIn(tt.input, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := th.Crossed(c.Values[0]); got != tt.want {
				t.Errorf("%s crossed by %s = %v, want %v", th, c.Values[0].Format(), got, tt.want)
			}
		})
	}
}

func TestCrossings(t *testing.T) {
	c, err := ParseCheckIn("bp=185/112 hr=88 temp=38.6 spo2=90 pain=3 awful", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range c.Crossings(DefaultThresholds()) {
		got = append(got, x.Threshold.String()+" by "+x.Value.Format())
	}
	want := []string{
		"bp.sys>=180 by BP 185/112 mmHg",
		"bp.dia>=110 by BP 185/112 mmHg",
		"temp>=38.5C by Temp 38.6 °C",
		"spo2<92 by SpO2 90%",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Crossings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
