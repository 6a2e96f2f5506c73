package care

import (
	"strings"
	"unicode/utf8"
)

// Kind identifies a vital sign or other measure a patient reports in a check-in.
// Its value is the canonical input key (e.g. "hr").
type Kind string

// The kinds a patient can enter in a check-in.
const (
	BloodPressure   Kind = "bp"
	HeartRate       Kind = "hr"
	Temperature     Kind = "temp"
	SpO2            Kind = "spo2"
	RespiratoryRate Kind = "rr"
	Weight          Kind = "weight"
	Glucose         Kind = "glucose"
	Pain            Kind = "pain"
)

// Systolic and Diastolic are the two components of a BloodPressure reading.
// They key Ranges and Thresholds; a Value never has them as its Kind.
const (
	Systolic  Kind = "bp.sys"
	Diastolic Kind = "bp.dia"
)

// Code systems for FHIR codings of kinds and units.
const (
	LOINCSystem = "http://loinc.org"
	UCUMSystem  = "http://unitsofmeasure.org"
)

// kindSpec is everything the package knows about one Kind.
type kindSpec struct {
	label    string   // short display label, also accepted as input key
	title    string   // long display name
	keys     []string // accepted input keys, lower case; the first is the canonical key
	units    []string // allowed UCUM units; the first is the default
	loinc    []string // LOINC codes
	category string   // FHIR observation-category code
	example  string   // a valid input token (a threshold for components)
}

// specOf returns the description of k. It builds a fresh value on every call
// so that no package state can be changed by a caller.
func specOf(k Kind) (kindSpec, bool) {
	switch k {
	case BloodPressure:
		return kindSpec{"BP", "Blood pressure", []string{"bp"}, []string{UnitMmHg},
			[]string{"85354-9"}, "vital-signs", "bp=120/80"}, true
	case HeartRate:
		return kindSpec{"HR", "Heart rate", []string{"hr", "pulse"}, []string{UnitPerMinute},
			[]string{"8867-4"}, "vital-signs", "hr=72"}, true
	case Temperature:
		return kindSpec{"Temp", "Body temperature", []string{"temp", "t"}, []string{UnitCelsius, UnitFahrenheit},
			[]string{"8310-5"}, "vital-signs", "temp=37.2"}, true
	case SpO2:
		return kindSpec{"SpO2", "Oxygen saturation", []string{"spo2", "sat"}, []string{UnitPercent},
			[]string{"2708-6", "59408-5"}, "vital-signs", "spo2=97"}, true
	case RespiratoryRate:
		return kindSpec{"RR", "Respiratory rate", []string{"rr", "resp"}, []string{UnitPerMinute},
			[]string{"9279-1"}, "vital-signs", "rr=16"}, true
	case Weight:
		return kindSpec{"Weight", "Body weight", []string{"weight", "wt"}, []string{UnitKilogram, UnitPound},
			[]string{"29463-7"}, "vital-signs", "weight=70.5"}, true
	case Glucose:
		return kindSpec{"Glucose", "Blood glucose", []string{"glucose", "bg", "sugar"}, []string{UnitMmolPerL, UnitMgPerDL},
			[]string{"15074-8", "41653-7"}, "laboratory", "glucose=5.6"}, true
	case Pain:
		return kindSpec{"Pain", "Pain severity (0–10)", []string{"pain"}, []string{UnitScore},
			[]string{"72514-3"}, "survey", "pain=3"}, true
	case Systolic:
		return kindSpec{"Systolic", "Systolic blood pressure", []string{"bp.sys", "sys", "systolic"}, []string{UnitMmHg},
			[]string{"8480-6"}, "vital-signs", "bp.sys>=180"}, true
	case Diastolic:
		return kindSpec{"Diastolic", "Diastolic blood pressure", []string{"bp.dia", "dia", "diastolic"}, []string{UnitMmHg},
			[]string{"8462-4"}, "vital-signs", "bp.dia>=110"}, true
	}
	return kindSpec{}, false
}

// Kinds returns the kinds a patient can enter in a check-in, in display order.
func Kinds() []Kind {
	return []Kind{BloodPressure, HeartRate, Temperature, SpO2, RespiratoryRate, Weight, Glucose, Pain}
}

// Valid reports whether k is one of the kinds a patient can enter.
func (k Kind) Valid() bool {
	for _, e := range Kinds() {
		if k == e {
			return true
		}
	}
	return false
}

// Label is the short display label used by Value.Format ("BP", "HR", "Temp", ...).
func (k Kind) Label() string { s, _ := specOf(k); return s.label }

// Title is the long display name ("Heart rate"), e.g. for FHIR code.text.
func (k Kind) Title() string { s, _ := specOf(k); return s.title }

// Aliases lists the accepted input keys in lower case; the first is the canonical key.
// Keys are matched case-insensitively, and Label is always accepted too.
func (k Kind) Aliases() []string { s, _ := specOf(k); return s.keys }

// Units lists the allowed UCUM units; the first is DefaultUnit.
func (k Kind) Units() []string { s, _ := specOf(k); return s.units }

// DefaultUnit is the UCUM unit assumed when a value is entered without a unit:
// mm[Hg] for blood pressure, /min for heart and respiratory rate, Cel for
// temperature (never guessed from the value), % for SpO2, kg for weight,
// mmol/L for glucose and {score} for pain.
func (k Kind) DefaultUnit() string {
	s, _ := specOf(k)
	if len(s.units) == 0 {
		return ""
	}
	return s.units[0]
}

// LOINC lists the LOINC codes of k. SpO2 has two codes that both belong on its
// Observation; Glucose has one per unit (use Value.LOINC for a reading);
// BloodPressure has the panel code, its components are Systolic and Diastolic.
func (k Kind) LOINC() []string { s, _ := specOf(k); return s.loinc }

// Category is the FHIR observation-category code (system
// http://terminology.hl7.org/CodeSystem/observation-category) for k:
// "vital-signs", "laboratory" for glucose, "survey" for pain.
func (k Kind) Category() string { s, _ := specOf(k); return s.category }

// allowsUnit reports whether unit is one of k's UCUM units.
func (k Kind) allowsUnit(unit string) bool {
	for _, u := range k.Units() {
		if u == unit {
			return true
		}
	}
	return false
}

// parseUnit maps a unit as typed by a patient ("" for the default) to a UCUM code.
func (k Kind) parseUnit(text string) (string, bool) {
	if text == "" {
		return k.DefaultUnit(), true
	}
	for _, u := range k.Units() {
		for _, spelling := range unitSpellings(u) {
			if strings.EqualFold(text, spelling) {
				return u, true
			}
		}
	}
	return "", false
}

// unitList is the human list of k's units for error messages ("kg, lb").
func (k Kind) unitList() string {
	var names []string
	for _, u := range k.Units() {
		names = append(names, unitSpellings(u)[0])
	}
	return strings.Join(names, ", ")
}

// LookupKind finds the check-in kind for an input key such as "pulse" or "Temp"
// (case-insensitive). It never returns Systolic or Diastolic.
func LookupKind(key string) (Kind, bool) {
	for _, k := range Kinds() {
		if keyMatches(k, key) {
			return k, true
		}
	}
	return "", false
}

// lookupThresholdKind finds the kind a threshold refers to. "bp" means
// Systolic; "bp.sys", "sys", "bp.dia", "dia" etc. name the components.
func lookupThresholdKind(key string) (Kind, bool) {
	if strings.EqualFold(key, string(BloodPressure)) {
		return Systolic, true
	}
	for _, k := range append(Kinds(), Systolic, Diastolic) {
		if keyMatches(k, key) {
			return k, true
		}
	}
	return "", false
}

func keyMatches(k Kind, key string) bool {
	if strings.EqualFold(key, k.Label()) {
		return true
	}
	for _, a := range k.Aliases() {
		if strings.EqualFold(key, a) {
			return true
		}
	}
	return false
}

// keyList is the human list of canonical check-in keys ("bp, hr, temp, ...").
func keyList() string {
	var keys []string
	for _, k := range Kinds() {
		keys = append(keys, string(k))
	}
	return strings.Join(keys, ", ")
}

// suggestKey returns the accepted key closest to key by edit distance, or ""
// when nothing is close enough to be a plausible typo.
func suggestKey(key string, kinds []Kind) string {
	key = strings.ToLower(key)
	best, bestDist := "", 0
	for _, k := range kinds {
		for _, a := range k.Aliases() {
			d := EditDistance(key, a)
			if best == "" || d < bestDist {
				best, bestDist = a, d
			}
		}
	}
	n := utf8.RuneCountInString(key)
	limit := 2
	if n <= 3 {
		limit = 1
	}
	if bestDist == 0 || bestDist > limit || bestDist >= n {
		return ""
	}
	return best
}

// EditDistance is the Levenshtein distance between a and b, counted in runes (used to suggest what a user meant).
func EditDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
