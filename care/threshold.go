package care

import (
	"math"
	"strings"
	"unicode"
)

// Op is a comparison in a Threshold.
type Op string

// The comparisons a threshold can use.
const (
	Below   Op = "<"
	AtMost  Op = "<="
	Above   Op = ">"
	AtLeast Op = ">="
)

// Threshold is an alert rule such as spo2<92: a reading crosses it when the
// comparison holds. Kind is Systolic or Diastolic for blood pressure.
type Threshold struct {
	Kind  Kind
	Op    Op
	Value float64
	Unit  string // UCUM code
}

// Crossing is a reading that crossed a threshold.
type Crossing struct {
	Threshold Threshold
	Value     Value
}

// DefaultThresholds returns alert rules a care team starts with.
func DefaultThresholds() []Threshold {
	return []Threshold{
		{SpO2, Below, 92, UnitPercent},
		{HeartRate, Above, 120, UnitPerMinute},
		{HeartRate, Below, 45, UnitPerMinute},
		{Temperature, AtLeast, 38.5, UnitCelsius},
		{Systolic, AtLeast, 180, UnitMmHg},
		{Diastolic, AtLeast, 110, UnitMmHg},
		{Systolic, Below, 90, UnitMmHg},
		{RespiratoryRate, Above, 25, UnitPerMinute},
		{Glucose, Below, 4, UnitMmolPerL},
		{Pain, AtLeast, 8, UnitScore},
	}
}

// ParseThreshold reads "<key><op><number>[unit]", e.g. "spo2<92",
// "temp>=38.5", "glucose<4mmol/L", "bp>140" (systolic), "bp.dia>90".
// Keys are the check-in keys plus bp.sys/sys/systolic and bp.dia/dia/diastolic;
// ops are <, <=, >, >= (also ≤, ≥); spaces are ignored. The value must lie in
// the kind's default plausible range, or the rule could never (or always) fire.
// Errors are *FieldError.
func ParseThreshold(s string) (Threshold, error) {
	compact := strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
	compact = strings.NewReplacer("≤", "<=", "≥", ">=").Replace(compact)
	i := strings.IndexAny(compact, "<>")
	if i <= 0 {
		return Threshold{}, &FieldError{Field: "threshold", Value: s, Reason: ReasonInvalid,
			Allowed: "a vital, a comparison and a number, like spo2<92 or temp>=38.5"}
	}
	key, rest := compact[:i], compact[i:]
	op := Op(rest[:1])
	if strings.HasPrefix(rest[1:], "=") {
		op += "="
	}
	valueText := rest[len(op):]
	kind, ok := lookupThresholdKind(key)
	if !ok {
		return Threshold{}, &FieldError{Field: key, Value: valueText, Reason: ReasonUnknownField,
			Allowed:    keyList() + ", bp.sys, bp.dia",
			Suggestion: suggestKey(key, append(Kinds(), Systolic, Diastolic))}
	}
	if valueText == "" {
		return Threshold{}, &FieldError{Field: string(kind), Reason: ReasonMissing,
			Allowed: "a number after the comparison, like spo2<92"}
	}
	q, err := parseQuantity(kind, valueText)
	if err != nil {
		return Threshold{}, err
	}
	t := Threshold{Kind: kind, Op: op, Value: q.Value, Unit: q.Unit}
	if err := t.Validate(); err != nil {
		return Threshold{}, err
	}
	return t, nil
}

// Validate checks a threshold however it was built.
func (t Threshold) Validate() error {
	switch t.Op {
	case Below, AtMost, Above, AtLeast:
	default:
		return &FieldError{Field: string(t.Kind), Value: string(t.Op), Reason: ReasonInvalid,
			Allowed: "one of <, <=, >, >="}
	}
	if t.Kind == BloodPressure || !t.Kind.Valid() && t.Kind != Systolic && t.Kind != Diastolic {
		return &FieldError{Field: string(t.Kind), Reason: ReasonUnknownField, Allowed: keyList() + ", bp.sys, bp.dia"}
	}
	if errs := checkQuantity(t.Kind, t.Kind, "", Quantity{t.Value, t.Unit}, nil); len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// Crossed reports whether v crosses t, converting v into t's unit. A value of
// another kind never crosses; a blood pressure crosses Systolic and Diastolic
// thresholds by its components.
func (t Threshold) Crossed(v Value) bool {
	q, ok := v.component(t.Kind)
	if !ok {
		return false
	}
	x, err := q.In(t.Unit)
	if err != nil || math.IsNaN(x) {
		return false
	}
	eps := tolerance(t.Value)
	switch t.Op {
	case Below:
		return x < t.Value-eps
	case AtMost:
		return x <= t.Value+eps
	case Above:
		return x > t.Value+eps
	case AtLeast:
		return x >= t.Value-eps
	}
	return false
}

// String is the canonical text of t, which ParseThreshold reads back:
// "spo2<92", "bp.sys>=180", "temp>=38.5C", "glucose<4mmol/L". The unit is
// written for kinds that allow more than one.
func (t Threshold) String() string {
	s := string(t.Kind) + string(t.Op) + formatNumber(t.Value)
	if len(t.Kind.Units()) > 1 {
		s += unitSpellings(t.Unit)[0]
	}
	return s
}

// Crossings lists, in value order, every threshold a reading of c crosses.
func (c *CheckIn) Crossings(thresholds []Threshold) []Crossing {
	var out []Crossing
	for _, v := range c.Values {
		for _, t := range thresholds {
			if t.Crossed(v) {
				out = append(out, Crossing{Threshold: t, Value: v})
			}
		}
	}
	return out
}
