package care

import (
	"fmt"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on what a patient may send in one check-in, in characters (runes).
const (
	MaxInputLength = 2000
	MaxNoteLength  = 1000
)

// CheckIn is what a patient reports at one time: readings and a free-text note.
type CheckIn struct {
	Values []Value // in input order, at most one per Kind
	Note   string  // symptoms in the patient's words; may be empty
}

// Value is one reading, kept in the unit the patient used.
type Value struct {
	Kind     Kind
	Quantity Quantity // the reading as entered; zero for BloodPressure

	// BloodPressure only, both in mm[Hg].
	Systolic, Diastolic Quantity
}

// ParseCheckIn reads the arguments of a check-in command, e.g.
//
//	bp=142/91 hr=88 temp=38.4 spo2=95 weight=71.2kg pain=4 dizzy since this morning
//
// Tokens are key=value or key:value (keys case-insensitive, see Kind.Aliases),
// in any order, with the unit attached to the number ("71.2kg", "101.2F",
// "110mg/dL", "4/10"); without a unit the kind's DefaultUnit applies. A
// decimal comma is accepted, and a trailing "," or ";" after a value is
// ignored. "temp: 38.4" (value in the next token) is read as temp=38.4. The
// first token that is not a vital starts the note, which is the rest of the
// input verbatim, trimmed; "key:" followed by words also starts the note, so
// "Pain: worse at night" is a note.
//
// A nil ranges means DefaultRanges. On error the CheckIn is nil and the error
// is a *FieldError or an errors.Join of them (see FieldErrors), one per problem.
func ParseCheckIn(input string, ranges Ranges) (*CheckIn, error) {
	if err := checkText("check-in", input, MaxInputLength); err != nil {
		return nil, err
	}
	c := &CheckIn{}
	var errs []error
	seen := make(map[Kind]bool)
	pos := 0
tokens:
	for {
		start, end := scanToken(input, pos)
		if start == end {
			break
		}
		pos = end
		key, sep, val, ok := splitVitalToken(input[start:end])
		if !ok {
			c.Note = strings.TrimSpace(input[start:])
			break
		}
		kind, known := LookupKind(key)
		if !known {
			if sep == ':' && !looksNumeric(val) {
				c.Note = strings.TrimSpace(input[start:])
				break
			}
			errs = append(errs, &FieldError{Field: key, Value: val, Reason: ReasonUnknownField,
				Allowed: keyList(), Suggestion: suggestKey(key, Kinds())})
			continue
		}
		if val == "" {
			nextStart, nextEnd := scanToken(input, pos)
			switch next := input[nextStart:nextEnd]; {
			case looksNumeric(next):
				val, pos = next, nextEnd
			case sep == ':':
				c.Note = strings.TrimSpace(input[start:])
				break tokens
			}
		}
		val = strings.TrimRight(val, ",;")
		if val == "" {
			errs = append(errs, &FieldError{Field: string(kind), Reason: ReasonMissing,
				Allowed: "a value like " + exampleOf(kind)})
			continue
		}
		if seen[kind] {
			errs = append(errs, duplicateError(kind, val))
			continue
		}
		seen[kind] = true
		v, err := parseValue(kind, val)
		if err != nil {
			errs = append(errs, err)
		} else {
			errs = append(errs, checkValue(v, ranges)...)
			c.Values = append(c.Values, v)
		}
		// "weight=71.2 kg": the unit must be attached, or it would become the note.
		if nextStart, nextEnd := scanToken(input, pos); nextStart < nextEnd {
			if next := input[nextStart:nextEnd]; isUnitOf(kind, next) {
				errs = append(errs, &FieldError{Field: string(kind), Value: val + " " + next, Reason: ReasonInvalid,
					Allowed: "the unit attached to the number, e.g. " + string(kind) + "=" + val + next})
				pos = nextEnd
			}
		}
	}
	if c.Note != "" {
		if err := checkText("note", c.Note, MaxNoteLength); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 && len(c.Values) == 0 && c.Note == "" {
		errs = append(errs, emptyError())
	}
	if len(errs) > 0 {
		return nil, joinErrors(errs)
	}
	return c, nil
}

// Validate checks a check-in however it was built: known kinds, allowed units,
// plausible values (nil ranges means DefaultRanges), each kind at most once,
// a note within limits, and something reported at all.
func (c *CheckIn) Validate(ranges Ranges) error {
	var errs []error
	seen := make(map[Kind]bool)
	for _, v := range c.Values {
		if seen[v.Kind] {
			errs = append(errs, duplicateError(v.Kind, v.quantityText()))
			continue
		}
		seen[v.Kind] = true
		errs = append(errs, checkValue(v, ranges)...)
	}
	if err := checkText("note", c.Note, MaxNoteLength); err != nil {
		errs = append(errs, err)
	}
	if len(c.Values) == 0 && strings.TrimSpace(c.Note) == "" {
		errs = append(errs, emptyError())
	}
	return joinErrors(errs)
}

// Summary restates the values, e.g. "BP 142/91 mmHg, HR 88/min"; "" if none.
func (c *CheckIn) Summary() string {
	parts := make([]string, 0, len(c.Values))
	for _, v := range c.Values {
		parts = append(parts, v.Format())
	}
	return strings.Join(parts, ", ")
}

// Format restates the reading in the patient's unit: "BP 142/91 mmHg",
// "HR 88/min", "Temp 38.4 °C", "SpO2 95%", "Weight 156 lb",
// "Glucose 6.1 mmol/L", "Pain 4/10". Label and number are exact, so the text
// reads back as the same value once written as key=value with the unit attached.
func (v Value) Format() string {
	return v.Kind.Label() + " " + v.quantityText()
}

// In returns the reading converted into unit (a UCUM code). BloodPressure has
// two numbers: use v.Systolic.In or v.Diastolic.In instead.
func (v Value) In(unit string) (float64, error) {
	if v.Kind == BloodPressure {
		return 0, fmt.Errorf("bp has two components, convert Systolic or Diastolic: %w", ErrIncompatibleUnits)
	}
	return v.Quantity.In(unit)
}

// LOINC lists the LOINC codes for this reading's Observation.code: glucose is
// 15074-8 in mmol/L and 41653-7 in mg/dL; other kinds as Kind.LOINC.
func (v Value) LOINC() []string {
	if v.Kind == Glucose && v.Quantity.Unit == UnitMgPerDL {
		return []string{"41653-7"}
	}
	if v.Kind == Glucose {
		return []string{"15074-8"}
	}
	return v.Kind.LOINC()
}

// component returns the quantity v holds for k: its own for k == v.Kind, a
// component of a blood pressure for Systolic and Diastolic.
func (v Value) component(k Kind) (Quantity, bool) {
	switch {
	case v.Kind == BloodPressure && k == Systolic:
		return v.Systolic, true
	case v.Kind == BloodPressure && k == Diastolic:
		return v.Diastolic, true
	case v.Kind == k && k != BloodPressure:
		return v.Quantity, true
	}
	return Quantity{}, false
}

func (v Value) quantityText() string {
	if v.Kind == BloodPressure {
		return formatNumber(v.Systolic.Value) + "/" + formatNumber(v.Diastolic.Value) + unitSuffix(v.Systolic.Unit)
	}
	return v.Quantity.String()
}

// parseValue reads the value part of a token for kind.
func parseValue(kind Kind, raw string) (Value, error) {
	if kind != BloodPressure {
		q, err := parseQuantity(kind, raw)
		if err != nil {
			return Value{}, err
		}
		return Value{Kind: kind, Quantity: q}, nil
	}
	bad := &FieldError{Field: string(kind), Value: raw, Reason: ReasonInvalid,
		Allowed: "systolic/diastolic like " + exampleOf(kind)}
	sysText, rest := splitNumber(raw)
	if sysText == "" || !strings.HasPrefix(rest, "/") {
		return Value{}, bad
	}
	diaText, unitText := splitNumber(rest[1:])
	if diaText == "" || startsLikeNumber(unitText) {
		return Value{}, bad
	}
	sys, ok1 := parseNumber(sysText)
	dia, ok2 := parseNumber(diaText)
	if !ok1 || !ok2 {
		return Value{}, bad
	}
	unit, ok := kind.parseUnit(unitText)
	if !ok {
		return Value{}, &FieldError{Field: string(kind), Value: unitText, Reason: ReasonUnitNotAllowed,
			Allowed: kind.unitList()}
	}
	return Value{Kind: kind, Systolic: Quantity{sys, unit}, Diastolic: Quantity{dia, unit}}, nil
}

// parseQuantity reads "38.4", "101.2F", "71,2kg" for kind.
func parseQuantity(kind Kind, raw string) (Quantity, error) {
	notNumber := &FieldError{Field: string(kind), Value: raw, Reason: ReasonNotANumber,
		Allowed: "a number like " + exampleOf(kind)}
	num, unitText := splitNumber(raw)
	if num == "" || startsLikeNumber(unitText) {
		return Quantity{}, notNumber
	}
	x, ok := parseNumber(num)
	if !ok {
		return Quantity{}, notNumber
	}
	unit, ok := kind.parseUnit(unitText)
	if !ok {
		return Quantity{}, &FieldError{Field: string(kind), Value: unitText, Reason: ReasonUnitNotAllowed,
			Allowed: kind.unitList()}
	}
	return Quantity{Value: x, Unit: unit}, nil
}

// checkValue checks a parsed or constructed value against its kind's rules
// and the plausible ranges.
func checkValue(v Value, ranges Ranges) []error {
	if !v.Kind.Valid() {
		return []error{&FieldError{Field: string(v.Kind), Reason: ReasonUnknownField, Allowed: keyList()}}
	}
	if v.Kind != BloodPressure {
		errs := checkQuantity(v.Kind, v.Kind, "", v.Quantity, ranges)
		if len(errs) == 0 && v.Kind == Pain && v.Quantity.Value != math.Trunc(v.Quantity.Value) {
			errs = append(errs, &FieldError{Field: string(v.Kind), Value: formatNumber(v.Quantity.Value),
				Reason: ReasonInvalid, Allowed: "a whole number from 0 to 10"})
		}
		return errs
	}
	errs := checkQuantity(BloodPressure, Systolic, "systolic ", v.Systolic, ranges)
	errs = append(errs, checkQuantity(BloodPressure, Diastolic, "diastolic ", v.Diastolic, ranges)...)
	if len(errs) == 0 && v.Systolic.Value <= v.Diastolic.Value {
		errs = append(errs, &FieldError{Field: string(BloodPressure), Value: v.quantityText(), Reason: ReasonInvalid,
			Allowed: "systolic above diastolic, like " + exampleOf(BloodPressure)})
	}
	return errs
}

// checkQuantity checks one number: allowed unit, finite, within rangeKind's range.
func checkQuantity(field, rangeKind Kind, prefix string, q Quantity, ranges Ranges) []error {
	if !rangeKind.allowsUnit(q.Unit) {
		return []error{&FieldError{Field: string(field), Value: q.Unit, Reason: ReasonUnitNotAllowed,
			Allowed: rangeKind.unitList()}}
	}
	if math.IsNaN(q.Value) || math.IsInf(q.Value, 0) {
		return []error{&FieldError{Field: string(field), Value: formatNumber(q.Value), Reason: ReasonNotANumber,
			Allowed: "a number like " + exampleOf(field)}}
	}
	rg := ranges.For(rangeKind)
	if ok, err := rg.Contains(q); ok && err == nil {
		return nil
	}
	shown := prefix + q.String()
	if converted, err := q.In(rg.Unit); err == nil && q.Unit != rg.Unit {
		shown += " (" + Quantity{converted, rg.Unit}.roundedString() + ")"
	}
	return []error{&FieldError{Field: string(field), Value: shown, Reason: ReasonOutOfRange, Allowed: rg.String()}}
}

func (q Quantity) roundedString() string {
	return formatRounded(q.Value) + unitSuffix(q.Unit)
}

// checkText rejects text that is not valid UTF-8, too long, or holds control
// characters other than tab and line breaks (they cannot be stored or shown safely).
func checkText(field, s string, maxRunes int) error {
	if !utf8.ValidString(s) {
		return &FieldError{Field: field, Value: "invalid UTF-8", Reason: ReasonInvalid, Allowed: "UTF-8 text"}
	}
	if n := utf8.RuneCountInString(s); n > maxRunes {
		return &FieldError{Field: field, Value: fmt.Sprintf("%d characters", n), Reason: ReasonTooLong,
			Allowed: fmt.Sprintf("%d characters", maxRunes)}
	}
	for _, r := range s {
		if unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' {
			return &FieldError{Field: field, Value: string(r), Reason: ReasonInvalid,
				Allowed: "text without control characters (tabs and line breaks are fine)"}
		}
	}
	return nil
}

func duplicateError(kind Kind, val string) *FieldError {
	return &FieldError{Field: string(kind), Value: val, Reason: ReasonDuplicate, Allowed: "give each vital once"}
}

func emptyError() *FieldError {
	return &FieldError{Field: "check-in", Reason: ReasonEmpty,
		Allowed: "vitals like bp=120/80 hr=72 temp=37.2 and/or a few words on how you feel"}
}

func exampleOf(k Kind) string { s, _ := specOf(k); return s.example }

// isUnitOf reports whether s, standing alone, spells one of kind's units.
func isUnitOf(kind Kind, s string) bool {
	s = strings.TrimRight(s, ",;")
	if s == "" {
		return false
	}
	_, ok := kind.parseUnit(s)
	return ok
}

// startsLikeNumber reports whether what follows a number would continue it
// ("38.4.5", "1,234.5", "5-6"): then the whole value is not a number.
func startsLikeNumber(s string) bool {
	return s != "" && (isDigit(s[0]) || s[0] == '.' || s[0] == ',' || s[0] == '-')
}

// scanToken finds the next whitespace-separated token in s at or after pos;
// start == end when there is none.
func scanToken(s string, pos int) (start, end int) {
	start = pos
	for start < len(s) {
		r, size := utf8.DecodeRuneInString(s[start:])
		if !unicode.IsSpace(r) {
			break
		}
		start += size
	}
	end = start
	for end < len(s) {
		r, size := utf8.DecodeRuneInString(s[end:])
		if unicode.IsSpace(r) {
			break
		}
		end += size
	}
	return start, end
}

// splitVitalToken splits "key=value" or "key:value"; ok is false when the
// token does not have that shape (it then starts the note).
func splitVitalToken(tok string) (key string, sep byte, val string, ok bool) {
	i := strings.IndexAny(tok, "=:")
	if i <= 0 || !isKey(tok[:i]) {
		return "", 0, "", false
	}
	return tok[:i], tok[i], tok[i+1:], true
}

// isKey reports whether s looks like a key: an ASCII letter, then ASCII
// letters, digits, '.', '_' or '-'.
func isKey(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := 'a' <= c|0x20 && c|0x20 <= 'z'
		if !letter && (i == 0 || !(isDigit(c) || c == '.' || c == '_' || c == '-')) {
			return false
		}
	}
	return s != ""
}
