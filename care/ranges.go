package care

import (
	"maps"
	"math"
	"slices"
	"strings"
)

// Range is a closed interval of plausible values in one UCUM unit.
type Range struct {
	Min, Max float64
	Unit     string // UCUM code; values are converted into it before checking
}

// Ranges holds the plausible range per kind. Blood pressure is checked per
// component, under the keys Systolic and Diastolic. Kinds missing from the map
// (or a nil map) fall back to DefaultRanges.
type Ranges map[Kind]Range

// DefaultRanges returns physiological limits wide enough for any real reading
// and narrow enough to catch typos (52 °C, hr=888, a weight typed as height).
func DefaultRanges() Ranges {
	return Ranges{
		Systolic:        {Min: 50, Max: 260, Unit: UnitMmHg},
		Diastolic:       {Min: 30, Max: 160, Unit: UnitMmHg},
		HeartRate:       {Min: 20, Max: 250, Unit: UnitPerMinute},
		Temperature:     {Min: 30, Max: 45, Unit: UnitCelsius},
		SpO2:            {Min: 50, Max: 100, Unit: UnitPercent},
		RespiratoryRate: {Min: 4, Max: 60, Unit: UnitPerMinute},
		Weight:          {Min: 0.5, Max: 400, Unit: UnitKilogram},
		Glucose:         {Min: 1, Max: 40, Unit: UnitMmolPerL},
		Pain:            {Min: 0, Max: 10, Unit: UnitScore},
	}
}

// For returns the range for k, falling back to DefaultRanges.
func (r Ranges) For(k Kind) Range {
	if rg, ok := r[k]; ok {
		return rg
	}
	return DefaultRanges()[k]
}

// Validate checks a configured set of ranges: known kinds (Systolic and
// Diastolic rather than BloodPressure), a unit the kind allows, Min <= Max.
func (r Ranges) Validate() error {
	var errs []error
	for _, k := range append(Kinds(), Systolic, Diastolic) {
		rg, ok := r[k]
		if !ok {
			continue
		}
		field := "ranges." + string(k)
		switch {
		case k == BloodPressure:
			errs = append(errs, &FieldError{Field: field, Value: rg.String(), Reason: ReasonInvalid,
				Allowed: "separate ranges for bp.sys and bp.dia"})
		case !k.allowsUnit(rg.Unit):
			errs = append(errs, &FieldError{Field: field, Value: rg.Unit, Reason: ReasonUnitNotAllowed,
				Allowed: strings.Join(k.Units(), ", ")})
		case math.IsNaN(rg.Min) || math.IsNaN(rg.Max) || rg.Min > rg.Max:
			errs = append(errs, &FieldError{Field: field, Value: rg.String(), Reason: ReasonInvalid,
				Allowed: "min <= max"})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r)) {
		if !k.Valid() && k != Systolic && k != Diastolic {
			errs = append(errs, &FieldError{Field: string(k), Reason: ReasonUnknownField,
				Allowed: keyList() + ", bp.sys, bp.dia"})
		}
	}
	return joinErrors(errs)
}

// Contains reports whether q, converted into the range's unit, lies in r.
func (r Range) Contains(q Quantity) (bool, error) {
	x, err := q.In(r.Unit)
	if err != nil {
		return false, err
	}
	return x >= r.Min-tolerance(r.Min) && x <= r.Max+tolerance(r.Max), nil
}

// String shows the range for people, e.g. "30–45 °C", "0–10" for pain.
func (r Range) String() string {
	suffix := unitSuffix(r.Unit)
	if r.Unit == UnitScore {
		suffix = ""
	}
	return formatNumber(r.Min) + "–" + formatNumber(r.Max) + suffix
}
