package care

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// UCUM codes of the units this package accepts.
const (
	UnitMmHg       = "mm[Hg]"
	UnitPerMinute  = "/min"
	UnitCelsius    = "Cel"
	UnitFahrenheit = "[degF]"
	UnitPercent    = "%"
	UnitKilogram   = "kg"
	UnitPound      = "[lb_av]"
	UnitMmolPerL   = "mmol/L"
	UnitMgPerDL    = "mg/dL"
	UnitScore      = "{score}"
)

// Conversion factors.
const (
	kilogramsPerPound = 0.45359237
	// glucoseMgPerDLPerMmolPerL converts glucose only (molar mass 180.16 g/mol).
	glucoseMgPerDLPerMmolPerL = 18.016
)

// ErrIncompatibleUnits is returned when a value cannot be converted between two units.
var ErrIncompatibleUnits = errors.New("incompatible units")

// Quantity is a number with a UCUM unit.
type Quantity struct {
	Value float64
	Unit  string // UCUM code, e.g. "Cel"
}

// In returns q converted into unit (a UCUM code).
func (q Quantity) In(unit string) (float64, error) {
	return Convert(q.Value, q.Unit, unit)
}

// String restates q for people, e.g. "38.4 °C", "88/min", "95%".
func (q Quantity) String() string {
	return formatNumber(q.Value) + unitSuffix(q.Unit)
}

// Convert converts x from one UCUM unit into another. It knows °F↔°C, lb↔kg
// and mg/dL↔mmol/L; the latter uses glucose's molar mass (factor 18.016), the
// only substance this package measures in those units.
func Convert(x float64, from, to string) (float64, error) {
	switch {
	case from == to:
		return x, nil
	case from == UnitCelsius && to == UnitFahrenheit:
		return x*9/5 + 32, nil
	case from == UnitFahrenheit && to == UnitCelsius:
		return (x - 32) * 5 / 9, nil
	case from == UnitPound && to == UnitKilogram:
		return x * kilogramsPerPound, nil
	case from == UnitKilogram && to == UnitPound:
		return x / kilogramsPerPound, nil
	case from == UnitMgPerDL && to == UnitMmolPerL:
		return x / glucoseMgPerDLPerMmolPerL, nil
	case from == UnitMmolPerL && to == UnitMgPerDL:
		return x * glucoseMgPerDLPerMmolPerL, nil
	}
	return 0, fmt.Errorf("cannot convert %s to %s: %w", from, to, ErrIncompatibleUnits)
}

// UnitSymbol is the display symbol of a UCUM unit ("°C" for Cel, "lb" for
// [lb_av], "/10" for {score}); unknown codes are returned unchanged.
func UnitSymbol(ucum string) string {
	return unitSpellings(ucum)[1]
}

// unitSpellings lists how a UCUM unit may be typed, case-insensitively. The
// first spelling is the one shown in lists of allowed units, the second is the
// display symbol, and the UCUM code itself is always accepted.
func unitSpellings(ucum string) []string {
	switch ucum {
	case UnitMmHg:
		return []string{"mmHg", "mmHg", UnitMmHg}
	case UnitPerMinute:
		return []string{"/min", "/min", "bpm"}
	case UnitCelsius:
		return []string{"C", "°C", UnitCelsius, "degC", "℃"}
	case UnitFahrenheit:
		return []string{"F", "°F", UnitFahrenheit, "degF", "℉"}
	case UnitPercent:
		return []string{"%", "%"}
	case UnitKilogram:
		return []string{"kg", "kg", "kgs"}
	case UnitPound:
		return []string{"lb", "lb", "lbs", UnitPound}
	case UnitMmolPerL:
		return []string{"mmol/L", "mmol/L", "mmol"}
	case UnitMgPerDL:
		return []string{"mg/dL", "mg/dL", "mg"}
	case UnitScore:
		return []string{"/10", "/10", UnitScore}
	}
	return []string{ucum, ucum}
}

// unitSuffix is what follows a number when showing it: no space before
// "%", "/min" and "/10", one space before other symbols.
func unitSuffix(ucum string) string {
	sym := UnitSymbol(ucum)
	if sym == "" || strings.HasPrefix(sym, "/") || sym == "%" {
		return sym
	}
	return " " + sym
}

// formatNumber prints x exactly (shortest form that parses back to x).
func formatNumber(x float64) string {
	return strconv.FormatFloat(x, 'f', -1, 64)
}

// formatRounded prints a converted value for people: one decimal, two below 1.
func formatRounded(x float64) string {
	decimals := 1
	if math.Abs(x) < 1 {
		decimals = 2
	}
	s := strconv.FormatFloat(x, 'f', decimals, 64)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// splitNumber splits s into a leading decimal number (optional minus sign,
// "." or "," as decimal separator) and the rest. num is "" when s does not
// start with a number.
func splitNumber(s string) (num, rest string) {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := 0
	for i < len(s) && isDigit(s[i]) {
		i++
		digits++
	}
	if i < len(s) && (s[i] == '.' || s[i] == ',') {
		j := i + 1
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		if digits > 0 || j > i+1 {
			digits += j - i - 1
			i = j
		}
	}
	if digits == 0 {
		return "", s
	}
	return s[:i], s[i:]
}

// parseNumber parses a number found by splitNumber.
func parseNumber(num string) (float64, bool) {
	x, err := strconv.ParseFloat(strings.Replace(num, ",", ".", 1), 64)
	if err != nil || math.IsInf(x, 0) || math.IsNaN(x) {
		return 0, false
	}
	return x, true
}

// looksNumeric reports whether s starts like a number ("38", "-2", ".5").
func looksNumeric(s string) bool {
	num, _ := splitNumber(s)
	return num != ""
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// tolerance absorbs floating-point error from unit conversion at a boundary.
func tolerance(bound float64) float64 {
	return 1e-9 * math.Max(1, math.Abs(bound))
}
