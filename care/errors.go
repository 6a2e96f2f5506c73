package care

import (
	"errors"
	"fmt"
)

// Reason classifies a FieldError so callers can react without parsing messages.
type Reason int

const (
	// ReasonInvalid: the value has the wrong form (e.g. pain 4.5, bp 80/120).
	ReasonInvalid Reason = iota
	// ReasonOutOfRange: a number outside the plausible range.
	ReasonOutOfRange
	// ReasonNotANumber: a value that should be a number is not one.
	ReasonNotANumber
	// ReasonUnitNotAllowed: a unit the field does not accept.
	ReasonUnitNotAllowed
	// ReasonUnknownField: a key that names no known vital.
	ReasonUnknownField
	// ReasonDuplicate: a vital given more than once.
	ReasonDuplicate
	// ReasonMissing: a key without a value.
	ReasonMissing
	// ReasonTooLong: input or note longer than allowed.
	ReasonTooLong
	// ReasonEmpty: nothing was given at all.
	ReasonEmpty
)

// FieldError says which field was wrong, what was given and what is allowed.
// Its message is meant for the person who typed the input.
type FieldError struct {
	Field      string // canonical key ("temp"), or the unknown key as typed
	Value      string // the offending value, as typed or restated with its unit
	Allowed    string // what would have been accepted
	Reason     Reason
	Suggestion string // ReasonUnknownField only: the closest known key, if any
}

func (e *FieldError) Error() string {
	switch e.Reason {
	case ReasonOutOfRange:
		return fmt.Sprintf("%s: %s is outside the plausible range %s", e.Field, e.Value, e.Allowed)
	case ReasonNotANumber:
		return fmt.Sprintf("%s: %q is not a number; expected %s", e.Field, e.Value, e.Allowed)
	case ReasonUnitNotAllowed:
		return fmt.Sprintf("%s: unit %q is not allowed (%s)", e.Field, e.Value, e.Allowed)
	case ReasonUnknownField:
		if e.Suggestion != "" {
			return fmt.Sprintf("unknown vital %q (did you mean %s?)", e.Field, e.Suggestion)
		}
		return fmt.Sprintf("unknown vital %q (known: %s)", e.Field, e.Allowed)
	case ReasonDuplicate:
		return fmt.Sprintf("%s: given more than once (again as %q); %s", e.Field, e.Value, e.Allowed)
	case ReasonMissing:
		return fmt.Sprintf("%s: no value given; expected %s", e.Field, e.Allowed)
	case ReasonTooLong:
		return fmt.Sprintf("%s: %s is too long; at most %s", e.Field, e.Value, e.Allowed)
	case ReasonEmpty:
		return fmt.Sprintf("%s: nothing given; expected %s", e.Field, e.Allowed)
	}
	return fmt.Sprintf("%s: %q is not valid; expected %s", e.Field, e.Value, e.Allowed)
}

// FieldErrors lists the FieldErrors in err, which may be a single *FieldError,
// an errors.Join of them, or a wrapped one. It returns nil for nil.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *FieldError:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				walk(inner)
			}
		default:
			walk(errors.Unwrap(err))
		}
	}
	walk(err)
	return out
}

// joinErrors returns nil, the single error, or errors.Join of all of them.
func joinErrors(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return errors.Join(errs...)
}
