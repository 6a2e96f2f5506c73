package ehr

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caseroom/caseroom/care"
)

// Code systems and identifier systems caseroom writes.
const (
	// ObservationCategorySystem is the code system of Observation.category.
	ObservationCategorySystem = "http://terminology.hl7.org/CodeSystem/observation-category"
	// ObservationIdentifierSystem identifies Observations written by caseroom; the value is
	// "<Matrix event ID>/<kind>" (see ObservationIdentifier).
	ObservationIdentifierSystem = "urn:caseroom:observation"
	// CodeSystem holds caseroom's own codes, such as SymptomsCode.
	CodeSystem = "urn:caseroom:code"
	// SymptomsCode is the Observation.code (in CodeSystem) of a check-in that reports only symptoms in words.
	SymptomsCode = "symptoms"
	// symptomsKind is the identifier suffix of that Observation.
	symptomsKind = "symptoms"
)

// vitalSignsProfile is the base FHIR R4 vital-signs profile; the kinds' own profiles derive from it.
const vitalSignsProfile = "http://hl7.org/fhir/StructureDefinition/vitalsigns"

// IdentifierSystem returns the identifier system of a kind of record: urn:caseroom:<kind>.
func IdentifierSystem(kind string) string { return "urn:caseroom:" + kind }

// ObservationIdentifier is the identifier value of the Observation of kind in the check-in of eventID.
func ObservationIdentifier(eventID string, kind care.Kind) string {
	return eventID + "/" + string(kind)
}

// IdentifierQuery returns the search `identifier=system|value` for a conditional create or a search. Characters
// that FHIR search gives a meaning (\ , | $) are escaped with a backslash; Encode percent-encodes the rest, so a
// "+" or "/" in a Matrix event ID reaches the server as itself (an unescaped "+" would decode as a space, match
// nothing, and the retry would create a duplicate).
func IdentifierQuery(system, value string) url.Values {
	return url.Values{"identifier": {escapeSearch(system) + "|" + escapeSearch(value)}}
}

var searchEscaper = strings.NewReplacer(`\`, `\\`, `|`, `\|`, `,`, `\,`, `$`, `\$`)

func escapeSearch(s string) string { return searchEscaper.Replace(s) }

// CheckInRecord is a stored check-in with the context FHIR needs.
type CheckInRecord struct {
	// EventID is the Matrix event ID of the check-in message (or the record ID): it makes the identifiers.
	EventID string
	CheckIn *care.CheckIn
	// PatientRef is the subject, "Patient/<id>".
	PatientRef string
	// PerformerRef is who recorded it: "Patient/<id>" when patients report themselves (the default when empty and
	// RecordedBy is empty), "Practitioner/<id>" (or PractitionerRole, RelatedPerson) when a clinician entered it for
	// them.
	PerformerRef string
	// RecordedBy is the Matrix user ID of the clinician who entered it for the patient when they have no FHIR
	// resource (PerformerRef empty): the performer is then a Reference by identifier (MatrixUserSystem).
	RecordedBy string
	// Effective is when the readings were taken; it is written in UTC.
	Effective time.Time
}

// CheckInBundle maps a check-in to a transaction Bundle with one conditional create (ifNoneExist on the
// identifier) per Observation, so that posting it again creates nothing new. See CheckInObservations for the
// mapping. It has at most 8 entries: Medplum refuses a transaction with conditional creates and more than 8.
func CheckInBundle(in CheckInRecord) (*Bundle, error) {
	observations, err := CheckInObservations(in)
	if err != nil {
		return nil, err
	}
	b := &Bundle{ResourceType: "Bundle", Type: "transaction"}
	for _, o := range observations {
		raw, err := json.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("failed to encode observation: %w", err)
		}
		id := o.IdentifierValue(ObservationIdentifierSystem)
		b.Entry = append(b.Entry, BundleEntry{
			FullURL:  "urn:uuid:" + nameUUID(ObservationIdentifierSystem+"|"+id),
			Resource: raw,
			Request: &BundleRequest{
				Method:      "POST",
				URL:         "Observation",
				IfNoneExist: IdentifierQuery(ObservationIdentifierSystem, id).Encode(),
			},
		})
	}
	return b, nil
}

// CheckInObservations maps a check-in to Observations, one per reading, in the check-in's order:
//   - status final; subject the patient; performer the patient or the recording clinician (their Practitioner, or
//     their Matrix user ID as an identifier in MatrixUserSystem when they have none); effectiveDateTime in UTC;
//     identifier urn:caseroom:observation|<event ID>/<kind> (kind as care.Kind, such as "bp" or "hr");
//   - category vital-signs and the R4 vital-signs profiles (meta.profile) for blood pressure, heart rate,
//     temperature, SpO2, respiratory rate and weight; glucose is laboratory; pain is survey;
//   - code: the LOINC codes of care.Value.LOINC (SpO2 2708-6 and 59408-5; glucose 41653-7 in mg/dL, 15074-8 in
//     mmol/L; pain 72514-3), with Kind.Title as text;
//   - valueQuantity in the unit the patient used (UCUM: Cel or [degF], kg or [lb_av], {score} for pain); blood
//     pressure is the panel 85354-9 with no value and components 8480-6 (systolic) and 8462-4 (diastolic) in mm[Hg].
//
// The symptom note: every Observation of the check-in carries it as Observation.note, so that each reading keeps
// the patient's words beside it (and the transaction stays within 8 entries). A check-in with a note and no
// readings becomes one Observation with category survey, code urn:caseroom:code|symptoms, the note as
// valueString and as note, identifier <event ID>/symptoms.
func CheckInObservations(in CheckInRecord) ([]Observation, error) {
	if err := checkRecord(in); err != nil {
		return nil, err
	}
	effective := in.Effective.UTC().Truncate(time.Millisecond).Format(time.RFC3339Nano)
	performer := Reference{Reference: in.PerformerRef}
	switch {
	case in.PerformerRef != "":
	case in.RecordedBy != "":
		performer = MatrixUserReference(in.RecordedBy)
	default:
		performer = Reference{Reference: in.PatientRef}
	}
	var notes []Annotation
	if text := strings.TrimSpace(in.CheckIn.Note); text != "" {
		notes = []Annotation{{Text: text, Time: effective}}
	}
	base := func(kindID string) Observation {
		return Observation{
			ResourceType:      "Observation",
			Identifier:        []Identifier{{System: ObservationIdentifierSystem, Value: in.EventID + "/" + kindID}},
			Status:            "final",
			Subject:           &Reference{Reference: in.PatientRef},
			EffectiveDateTime: effective,
			Performer:         []Reference{performer},
			Note:              notes,
		}
	}

	var out []Observation
	seen := make(map[care.Kind]bool)
	for _, v := range in.CheckIn.Values {
		if !v.Kind.Valid() {
			return nil, fmt.Errorf("ehr: check-in has an unknown kind %q", v.Kind)
		}
		if seen[v.Kind] {
			return nil, fmt.Errorf("ehr: check-in has %s twice", v.Kind)
		}
		seen[v.Kind] = true
		o := base(string(v.Kind))
		o.Category = []CodeableConcept{category(v.Kind.Category())}
		o.Code = CodeableConcept{Text: v.Kind.Title()}
		for _, code := range v.LOINC() {
			o.Code.Coding = append(o.Code.Coding, Coding{System: care.LOINCSystem, Code: code, Display: loincDisplay[code]})
		}
		if p := vitalProfile[v.Kind]; p != "" {
			o.Meta = &Meta{Profile: []string{vitalSignsProfile, p}}
		}
		if v.Kind == care.BloodPressure {
			o.Component = []ObservationComponent{
				component(care.Systolic, v.Systolic),
				component(care.Diastolic, v.Diastolic),
			}
		} else {
			o.ValueQuantity = quantity(v.Quantity)
		}
		out = append(out, o)
	}
	if len(out) == 0 {
		o := base(symptomsKind)
		o.Category = []CodeableConcept{category("survey")}
		o.Code = CodeableConcept{
			Coding: []Coding{{System: CodeSystem, Code: SymptomsCode, Display: "Patient-reported symptoms"}},
			Text:   "Patient-reported symptoms",
		}
		o.ValueString = notes[0].Text
		out = append(out, o)
	}
	return out, nil
}

func checkRecord(in CheckInRecord) error {
	var errs []error
	if in.EventID == "" {
		errs = append(errs, errors.New("no event ID"))
	}
	if in.CheckIn == nil {
		errs = append(errs, errors.New("no check-in"))
	} else if len(in.CheckIn.Values) == 0 && strings.TrimSpace(in.CheckIn.Note) == "" {
		errs = append(errs, errors.New("the check-in has neither readings nor a note"))
	}
	if !isReference(in.PatientRef, "Patient") {
		errs = append(errs, fmt.Errorf("patient reference %q is not Patient/<id>", in.PatientRef))
	}
	if in.PerformerRef != "" && !isReference(in.PerformerRef, "Patient", "Practitioner", "PractitionerRole", "RelatedPerson") {
		errs = append(errs, fmt.Errorf("performer reference %q is not Patient/, Practitioner/, PractitionerRole/ or RelatedPerson/<id>", in.PerformerRef))
	}
	if in.RecordedBy != "" && !validMatrixUser(in.RecordedBy) {
		errs = append(errs, fmt.Errorf("recorded by %q, which is not a Matrix user ID", in.RecordedBy))
	}
	if in.Effective.IsZero() {
		errs = append(errs, errors.New("no effective time"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("ehr: invalid check-in record: %w", errors.Join(errs...))
	}
	return nil
}

// isReference reports whether ref is "<one of types>/<valid id>".
func isReference(ref string, types ...string) bool {
	typ, id, ok := strings.Cut(ref, "/")
	if !ok || checkID(typ, id) != nil {
		return false
	}
	for _, t := range types {
		if typ == t {
			return true
		}
	}
	return false
}

func category(code string) CodeableConcept {
	return CodeableConcept{Coding: []Coding{{System: ObservationCategorySystem, Code: code, Display: categoryDisplay[code]}}}
}

func component(kind care.Kind, q care.Quantity) ObservationComponent {
	c := ObservationComponent{Code: CodeableConcept{Text: kind.Title()}, ValueQuantity: quantity(q)}
	for _, code := range kind.LOINC() {
		c.Code.Coding = append(c.Code.Coding, Coding{System: care.LOINCSystem, Code: code, Display: loincDisplay[code]})
	}
	return c
}

func quantity(q care.Quantity) *Quantity {
	unit := care.UnitSymbol(q.Unit)
	if q.Unit == care.UnitScore {
		unit = "score"
	}
	return &Quantity{Value: q.Value, Unit: unit, System: care.UCUMSystem, Code: q.Unit}
}

// nameUUID derives a stable UUID (version 8, from SHA-256) from name, for Bundle.entry.fullUrl.
func nameUUID(name string) string {
	sum := sha256.Sum256([]byte(name))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x80
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// vitalProfile is the R4 vital-signs profile of each kind that has one.
var vitalProfile = map[care.Kind]string{
	care.BloodPressure:   "http://hl7.org/fhir/StructureDefinition/bp",
	care.HeartRate:       "http://hl7.org/fhir/StructureDefinition/heartrate",
	care.Temperature:     "http://hl7.org/fhir/StructureDefinition/bodytemp",
	care.SpO2:            "http://hl7.org/fhir/StructureDefinition/oxygensat",
	care.RespiratoryRate: "http://hl7.org/fhir/StructureDefinition/resprate",
	care.Weight:          "http://hl7.org/fhir/StructureDefinition/bodyweight",
}

var categoryDisplay = map[string]string{
	"vital-signs": "Vital Signs",
	"laboratory":  "Laboratory",
	"survey":      "Survey",
}

// loincDisplay holds the LOINC display names of the codes caseroom writes.
var loincDisplay = map[string]string{
	"85354-9": "Blood pressure panel with all children optional",
	"8480-6":  "Systolic blood pressure",
	"8462-4":  "Diastolic blood pressure",
	"8867-4":  "Heart rate",
	"8310-5":  "Body temperature",
	"9279-1":  "Respiratory rate",
	"2708-6":  "Oxygen saturation in Arterial blood",
	"59408-5": "Oxygen saturation in Arterial blood by Pulse oximetry",
	"29463-7": "Body weight",
	"41653-7": "Glucose [Mass/volume] in Capillary blood by Glucometer",
	"15074-8": "Glucose [Moles/volume] in Blood",
	"72514-3": "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
}
