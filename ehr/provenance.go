package ehr

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"

	"maunium.net/go/mautrix/id"
)

// MatrixUserSystem is the identifier system of a Reference that names a Matrix user by their user ID (such as
// "@dr.lee:clinic.example"). caseroom names who made a record this way when the person has no FHIR resource that
// it knows of (a clinician registered without --practitioner).
const MatrixUserSystem = "urn:matrix:user"

// MatrixUserReference is a logical Reference to a Matrix user: an identifier in MatrixUserSystem with the user ID
// as value, and the user ID as display (nothing else about them: no name).
func MatrixUserReference(user string) Reference {
	return Reference{Identifier: &Identifier{System: MatrixUserSystem, Value: user}, Display: user}
}

// validMatrixUser reports whether s is a Matrix user ID (@localpart:server) that may name someone in a record.
func validMatrixUser(s string) bool {
	if len(s) > 255 || strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return false
	}
	_, _, err := id.UserID(s).ParseAndValidateRelaxed()
	return err == nil
}

// Actor is who made (a part of) a record: their FHIR resource when caseroom knows one ("Practitioner/<id>",
// "Patient/<id>", ...), and their Matrix user ID, which names them when it does not.
type Actor struct {
	Ref  string
	User string
}

// Reference is the Reference that names the actor: the FHIR resource, or else the Matrix user by identifier.
func (a Actor) Reference() Reference {
	if a.Ref != "" {
		return Reference{Reference: a.Ref}
	}
	return MatrixUserReference(a.User)
}

// key identifies the actor for deduplication.
func (a Actor) key() string {
	if a.Ref != "" {
		return a.Ref
	}
	return MatrixUserSystem + "|" + a.User
}

// check reports what is wrong with the actor as the "what" of a record; types are the resource types allowed.
func (a Actor) check(what string, types ...string) error {
	switch {
	case a.Ref != "":
		if !isReference(a.Ref, types...) {
			return fmt.Errorf("%s reference %q is not %s/<id>", what, a.Ref, strings.Join(types, "/, "))
		}
	case a.User == "":
		return fmt.Errorf("no %s", what)
	case !validMatrixUser(a.User):
		return fmt.Errorf("%s %q is not a Matrix user ID", what, a.User)
	}
	return nil
}

// safeToken matches what an error message may repeat from a server's answer: a code (an issue type, a message
// code) or a FHIRPath location such as Observation.note[0].text. Anything with spaces, quotes or other words is
// the server's prose, which may echo the record (a patient's name, a note).
var safeToken = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.:\-\[\]]{0,99}$`)

// Summary is the OperationOutcome as it may be logged or shown: per issue its severity, code, the codes of its
// details and its FHIRPath locations; never details text or diagnostics, which servers fill with the offending
// values. Issues are joined with "; ", like "error invalid MSG_BAD_VALUE at Observation.note[0].text".
func (o *OperationOutcome) Summary() string {
	if o == nil {
		return ""
	}
	parts := make([]string, 0, len(o.Issue))
	for _, is := range o.Issue {
		var words []string
		for _, w := range []string{is.Severity, is.Code} {
			if safeToken.MatchString(w) {
				words = append(words, w)
			}
		}
		if is.Details != nil {
			for _, c := range is.Details.Coding {
				if safeToken.MatchString(c.Code) {
					words = append(words, c.Code)
				}
			}
		}
		var at []string
		for _, ex := range is.Expression {
			if safeToken.MatchString(ex) {
				at = append(at, ex)
			}
		}
		if len(at) > 0 {
			words = append(words, "at "+strings.Join(at, ", "))
		}
		if len(words) > 0 {
			parts = append(parts, strings.Join(words, " "))
		}
	}
	return strings.Join(parts, "; ")
}

// scrubJSONError is a decoding error without the decoder's quote of the value (json.UnmarshalTypeError says
// "cannot unmarshal number 38.4 into ..."): only where in the document and what was wanted.
func scrubJSONError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if !safeToken.MatchString(field) {
			field = "?"
		}
		return fmt.Errorf("invalid JSON: element %s is not of type %s", field, typeErr.Type)
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("invalid JSON at offset %d", syntaxErr.Offset)
	default:
		return errors.New("invalid JSON")
	}
}
