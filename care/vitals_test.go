package care

import (
	"errors"
	"math"
	"reflect"
	"testing"
)

func TestConvert(t *testing.T) {
	tests := []struct {
		name     string
		value    float64
		from, to string
		want     float64
	}{
		{"same unit", 38.4, UnitCelsius, UnitCelsius, 38.4},
		{"fever in fahrenheit", 101.3, UnitFahrenheit, UnitCelsius, 38.5},
		{"freezing point", 0, UnitCelsius, UnitFahrenheit, 32},
		{"body temperature", 37, UnitCelsius, UnitFahrenheit, 98.6},
		{"pound", 1, UnitPound, UnitKilogram, 0.45359237},
		{"kilogram", 100, UnitKilogram, UnitPound, 220.46226218},
		{"glucose mg/dL to mmol/L", 180.16, UnitMgPerDL, UnitMmolPerL, 10},
		{"glucose mmol/L to mg/dL", 4, UnitMmolPerL, UnitMgPerDL, 72.064},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Convert(tt.value, tt.from, tt.to)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got-tt.want) > 1e-6 {
				t.Errorf("Convert(%v, %s, %s) = %v, want %v", tt.value, tt.from, tt.to, got, tt.want)
			}
			back, err := Convert(got, tt.to, tt.from)
			if err != nil || math.Abs(back-tt.value) > 1e-9 {
				t.Errorf("round trip = %v, %v; want %v", back, err, tt.value)
			}
		})
	}
	for _, pair := range [][2]string{{UnitCelsius, UnitKilogram}, {UnitMmHg, UnitPercent}, {UnitScore, ""}} {
		if _, err := Convert(1, pair[0], pair[1]); !errors.Is(err, ErrIncompatibleUnits) {
			t.Errorf("Convert(1, %q, %q) error = %v, want ErrIncompatibleUnits", pair[0], pair[1], err)
		}
	}
}

func TestValueIn(t *testing.T) {
	tests := []struct {
		name  string
		input string
		unit  string
		want  float64
	}{
		{"celsius stays", "temp=38.4", UnitCelsius, 38.4},
		{"fahrenheit to celsius", "temp=101.2F", UnitCelsius, 38.444444},
		{"pounds to kilograms", "weight=156lb", UnitKilogram, 70.760410},
		{"mg/dL to mmol/L", "glucose=110mg/dL", UnitMmolPerL, 6.105684},
		{"mmol/L to mg/dL", "glucose=6.1", UnitMgPerDL, 109.8976},
		{"pain", "pain=7", UnitScore, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCheckIn(tt.input, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Values[0].In(tt.unit)
			if err != nil || math.Abs(got-tt.want) > 1e-5 {
				t.Errorf("In(%s) = %v, %v; want %v", tt.unit, got, err, tt.want)
			}
		})
	}

	bp := Value{Kind: BloodPressure, Systolic: Quantity{140, UnitMmHg}, Diastolic: Quantity{90, UnitMmHg}}
	if _, err := bp.In(UnitMmHg); err == nil {
		t.Error("bp.In succeeded; blood pressure must be converted per component")
	}
	if got, err := bp.Diastolic.In(UnitMmHg); err != nil || got != 90 {
		t.Errorf("bp.Diastolic.In = %v, %v", got, err)
	}
	hr := Value{Kind: HeartRate, Quantity: Quantity{80, UnitPerMinute}}
	if _, err := hr.In(UnitCelsius); !errors.Is(err, ErrIncompatibleUnits) {
		t.Errorf("hr.In(Cel) error = %v, want ErrIncompatibleUnits", err)
	}
}

func TestKinds(t *testing.T) {
	tests := []struct {
		kind        Kind
		label       string
		aliases     []string
		units       []string
		loinc       []string
		category    string
		defaultUnit string
	}{
		{BloodPressure, "BP", []string{"bp"}, []string{"mm[Hg]"}, []string{"85354-9"}, "vital-signs", "mm[Hg]"},
		{HeartRate, "HR", []string{"hr", "pulse"}, []string{"/min"}, []string{"8867-4"}, "vital-signs", "/min"},
		{Temperature, "Temp", []string{"temp", "t"}, []string{"Cel", "[degF]"}, []string{"8310-5"}, "vital-signs", "Cel"},
		{SpO2, "SpO2", []string{"spo2", "sat"}, []string{"%"}, []string{"2708-6", "59408-5"}, "vital-signs", "%"},
		{RespiratoryRate, "RR", []string{"rr", "resp"}, []string{"/min"}, []string{"9279-1"}, "vital-signs", "/min"},
		{Weight, "Weight", []string{"weight", "wt"}, []string{"kg", "[lb_av]"}, []string{"29463-7"}, "vital-signs", "kg"},
		{Glucose, "Glucose", []string{"glucose", "bg", "sugar"}, []string{"mmol/L", "mg/dL"}, []string{"15074-8", "41653-7"}, "laboratory", "mmol/L"},
		{Pain, "Pain", []string{"pain"}, []string{"{score}"}, []string{"72514-3"}, "survey", "{score}"},
		{Systolic, "Systolic", []string{"bp.sys", "sys", "systolic"}, []string{"mm[Hg]"}, []string{"8480-6"}, "vital-signs", "mm[Hg]"},
		{Diastolic, "Diastolic", []string{"bp.dia", "dia", "diastolic"}, []string{"mm[Hg]"}, []string{"8462-4"}, "vital-signs", "mm[Hg]"},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			k := tt.kind
			got := []any{k.Label(), k.Aliases(), k.Units(), k.LOINC(), k.Category(), k.DefaultUnit()}
			want := []any{tt.label, tt.aliases, tt.units, tt.loinc, tt.category, tt.defaultUnit}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
			if k.Title() == "" {
				t.Error("no title")
			}
			for _, alias := range append(tt.aliases, tt.label) {
				found, ok := LookupKind(alias)
				if k.Valid() && (!ok || found != k) {
					t.Errorf("LookupKind(%q) = %q, %v", alias, found, ok)
				}
				if !k.Valid() && ok {
					t.Errorf("LookupKind(%q) = %q; components are not check-in keys", alias, found)
				}
			}
		})
	}
	if len(Kinds()) != 8 {
		t.Errorf("Kinds() = %v", Kinds())
	}
	if _, ok := LookupKind("mood"); ok {
		t.Error("LookupKind(mood) succeeded")
	}
}

func TestValueLOINC(t *testing.T) {
	tests := []struct {
		name  string
		value Value
		want  []string
	}{
		{"glucose molar", Value{Kind: Glucose, Quantity: Quantity{6, UnitMmolPerL}}, []string{"15074-8"}},
		{"glucose mass", Value{Kind: Glucose, Quantity: Quantity{110, UnitMgPerDL}}, []string{"41653-7"}},
		{"spo2 has two codes", Value{Kind: SpO2, Quantity: Quantity{97, UnitPercent}}, []string{"2708-6", "59408-5"}},
		{"bp panel", Value{Kind: BloodPressure}, []string{"85354-9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.value.LOINC(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("LOINC() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestQuantityString(t *testing.T) {
	tests := []struct {
		name string
		q    Quantity
		want string
	}{
		{"celsius", Quantity{38.4, UnitCelsius}, "38.4 °C"},
		{"fahrenheit", Quantity{101.2, UnitFahrenheit}, "101.2 °F"},
		{"pounds", Quantity{156, UnitPound}, "156 lb"},
		{"percent", Quantity{95, UnitPercent}, "95%"},
		{"per minute", Quantity{88, UnitPerMinute}, "88/min"},
		{"score", Quantity{4, UnitScore}, "4/10"},
		{"mmHg", Quantity{120, UnitMmHg}, "120 mmHg"},
		{"unknown unit passes through", Quantity{1, "m"}, "1 m"},
		{"no trailing zeros, no exponent", Quantity{0.0000001, UnitKilogram}, "0.0000001 kg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.q.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSuggestKey(t *testing.T) {
	tests := []struct {
		name, key, want string
	}{
		{"extra letter", "hrr", "hr"},
		{"missing letter", "tmp", "temp"},
		{"digit for letter", "sp02", "spo2"},
		{"case-insensitive", "GLUCOES", "glucose"},
		{"alias", "puls", "pulse"},
		{"single letter is too short to guess", "x", ""},
		{"nothing close", "mood", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := suggestKey(tt.key, Kinds()); got != tt.want {
				t.Errorf("suggestKey(%q) = %q, want %q", tt.key, got, tt.want)
			}
		})
	}
}
