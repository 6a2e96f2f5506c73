package ehr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Reading: what caseroom shows of a patient's record (the `patient` summary), finding a Patient by its medical
// record number, and the results that are posted into case rooms (see Poller).

// maxSearchPages bounds how many pages of one search are read.
const maxSearchPages = 10

// searchPageSize is the _count of the searches caseroom makes.
const searchPageSize = "100"

// Code systems of the statuses caseroom reads.
const (
	conditionClinicalSystem = "http://terminology.hl7.org/CodeSystem/condition-clinical"
	allergyClinicalSystem   = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
)

// TypedIdentifier is an Identifier with its type (such as MR, a medical record number).
type TypedIdentifier struct {
	Identifier
	Type *CodeableConcept `json:"type,omitempty"`
}

// PatientRecord is a FHIR R4 Patient as caseroom reads it (identifiers with their types).
type PatientRecord struct {
	ResourceType string            `json:"resourceType"`
	ID           string            `json:"id,omitempty"`
	Meta         *Meta             `json:"meta,omitempty"`
	Identifier   []TypedIdentifier `json:"identifier,omitempty"`
	Active       *bool             `json:"active,omitempty"`
	Name         []HumanName       `json:"name,omitempty"`
	Gender       string            `json:"gender,omitempty"`
	BirthDate    string            `json:"birthDate,omitempty"`
}

// Reference is "Patient/<id>".
func (p *PatientRecord) Reference() string { return "Patient/" + p.ID }

// DisplayName is the patient's official (else first) name: text, or "Family, Given Given"; "" when there is none.
func (p *PatientRecord) DisplayName() string {
	if len(p.Name) == 0 {
		return ""
	}
	name := p.Name[0]
	for _, n := range p.Name {
		if n.Use == "official" {
			name = n
			break
		}
	}
	if name.Text != "" {
		return name.Text
	}
	given := strings.Join(name.Given, " ")
	switch {
	case name.Family != "" && given != "":
		return name.Family + ", " + given
	case name.Family != "":
		return name.Family
	default:
		return given
	}
}

// Condition is a FHIR R4 Condition (the elements caseroom reads).
type Condition struct {
	ResourceType       string           `json:"resourceType"`
	ID                 string           `json:"id,omitempty"`
	Meta               *Meta            `json:"meta,omitempty"`
	ClinicalStatus     *CodeableConcept `json:"clinicalStatus,omitempty"`
	VerificationStatus *CodeableConcept `json:"verificationStatus,omitempty"`
	Code               CodeableConcept  `json:"code"`
	Subject            *Reference       `json:"subject,omitempty"`
	OnsetDateTime      string           `json:"onsetDateTime,omitempty"`
	RecordedDate       string           `json:"recordedDate,omitempty"`
}

// Dosage is a FHIR R4 Dosage (its text).
type Dosage struct {
	Text string `json:"text,omitempty"`
}

// MedicationRequest is a FHIR R4 MedicationRequest (the elements caseroom reads).
type MedicationRequest struct {
	ResourceType              string           `json:"resourceType"`
	ID                        string           `json:"id,omitempty"`
	Meta                      *Meta            `json:"meta,omitempty"`
	Status                    string           `json:"status,omitempty"`
	Intent                    string           `json:"intent,omitempty"`
	MedicationCodeableConcept *CodeableConcept `json:"medicationCodeableConcept,omitempty"`
	MedicationReference       *Reference       `json:"medicationReference,omitempty"`
	Subject                   *Reference       `json:"subject,omitempty"`
	AuthoredOn                string           `json:"authoredOn,omitempty"`
	DosageInstruction         []Dosage         `json:"dosageInstruction,omitempty"`

	// medication is the name read from the referenced Medication, when the request only references one.
	medication string
}

// MedicationName is the name of the medication: the coded medication's text, the reference's display, or the
// name of the referenced Medication (read by ReadSummary).
func (m *MedicationRequest) MedicationName() string {
	switch {
	case m.MedicationCodeableConcept != nil:
		return ConceptText(*m.MedicationCodeableConcept)
	case m.medication != "":
		return m.medication
	case m.MedicationReference != nil:
		return m.MedicationReference.Display
	}
	return ""
}

// Dosage is the text of the first dosage instruction, or "".
func (m *MedicationRequest) Dosage() string {
	for _, d := range m.DosageInstruction {
		if d.Text != "" {
			return d.Text
		}
	}
	return ""
}

// Medication is a FHIR R4 Medication (its code).
type Medication struct {
	ResourceType string          `json:"resourceType"`
	ID           string          `json:"id,omitempty"`
	Code         CodeableConcept `json:"code"`
}

// AllergyReaction is one reaction of an AllergyIntolerance.
type AllergyReaction struct {
	Manifestation []CodeableConcept `json:"manifestation,omitempty"`
	Severity      string            `json:"severity,omitempty"`
}

// AllergyIntolerance is a FHIR R4 AllergyIntolerance (the elements caseroom reads).
type AllergyIntolerance struct {
	ResourceType       string            `json:"resourceType"`
	ID                 string            `json:"id,omitempty"`
	Meta               *Meta             `json:"meta,omitempty"`
	ClinicalStatus     *CodeableConcept  `json:"clinicalStatus,omitempty"`
	VerificationStatus *CodeableConcept  `json:"verificationStatus,omitempty"`
	Type               string            `json:"type,omitempty"`
	Category           []string          `json:"category,omitempty"`
	Criticality        string            `json:"criticality,omitempty"`
	Code               CodeableConcept   `json:"code"`
	Patient            *Reference        `json:"patient,omitempty"`
	Reaction           []AllergyReaction `json:"reaction,omitempty"`
}

// Manifestations lists the texts of the reactions' manifestations, without repeats.
func (a *AllergyIntolerance) Manifestations() []string {
	var out []string
	for _, r := range a.Reaction {
		for _, m := range r.Manifestation {
			if text := ConceptText(m); text != "" && !slices.Contains(out, text) {
				out = append(out, text)
			}
		}
	}
	return out
}

// ConceptText is how a concept reads: its text, else the first coding's display, else its code; "" when empty.
func ConceptText(c CodeableConcept) string {
	if c.Text != "" {
		return c.Text
	}
	for _, cd := range c.Coding {
		if cd.Display != "" {
			return cd.Display
		}
	}
	for _, cd := range c.Coding {
		if cd.Code != "" {
			return cd.Code
		}
	}
	return ""
}

// conceptCode returns the code of c's coding in system, or "".
func conceptCode(c *CodeableConcept, system string) string {
	if c == nil {
		return ""
	}
	for _, cd := range c.Coding {
		if cd.System == system || system == "" {
			return cd.Code
		}
	}
	return ""
}

// FormatNumber writes a FHIR decimal without trailing zeros or exponent: 37.2, 120, 0.5.
func FormatNumber(v float64) string {
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// QuantityText is "<value> <unit>" (the unit as written, else its code); "" for nil.
func QuantityText(q *Quantity) string {
	if q == nil {
		return ""
	}
	unit := q.Unit
	if unit == "" {
		unit = q.Code
	}
	if unit == "" {
		return FormatNumber(q.Value)
	}
	return FormatNumber(q.Value) + " " + unit
}

// ParseTime reads a FHIR instant or dateTime with a time ("2024-05-01T10:00:00Z"). ok is false for dates without
// a time ("2024-05-01", "2024-05", "2024"), which have no instant to convert.
func ParseTime(s string) (t time.Time, ok bool) {
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

// FormatTime shows a FHIR dateTime in loc, to the minute ("2024-05-01 12:00 CEST"); partial dates are shown as
// written, "" stays "".
func FormatTime(s string, loc *time.Location) string {
	if t, ok := ParseTime(s); ok {
		return t.In(loc).Format("2006-01-02 15:04 MST")
	}
	return s
}

// ParseReference splits a literal reference ("Patient/1", "https://ehr/fhir/Patient/1/_history/2") into its type
// and id. ok is false when it is not one.
func ParseReference(ref string) (resourceType, id string, ok bool) {
	if i := strings.Index(ref, "/_history/"); i >= 0 {
		ref = ref[:i]
	}
	parts := strings.Split(strings.TrimRight(ref, "/"), "/")
	if len(parts) < 2 {
		return "", "", false
	}
	resourceType, id = parts[len(parts)-2], parts[len(parts)-1]
	if !validID(resourceType) || !validID(id) || resourceType[0] < 'A' || resourceType[0] > 'Z' {
		return "", "", false
	}
	return resourceType, id, true
}

// IsNotFound reports whether err is the EHR answering 404 Not Found or 410 Gone.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Status == http.StatusNotFound || e.Status == http.StatusGone)
}

// IsUnreachable reports whether err means the EHR could not answer now (a network error, a timeout, 408, 429,
// 5xx), as opposed to refusing the request.
func IsUnreachable(err error) bool {
	return IsRetryable(err) || errors.Is(err, context.DeadlineExceeded)
}

// SearchAll runs a search and follows its "next" links (on the same server only) for at most maxSearchPages
// pages, returning the entries of every page whose search mode is "match" (or not given).
func (c *Client) SearchAll(ctx context.Context, resourceType string, params url.Values) ([]BundleEntry, error) {
	bundle, err := c.Search(ctx, resourceType, params)
	if err != nil {
		return nil, err
	}
	var out []BundleEntry
	for page := 1; ; page++ {
		for _, e := range bundle.Entry {
			if e.Search == nil || e.Search.Mode == "" || e.Search.Mode == "match" {
				out = append(out, e)
			}
		}
		next := bundle.link("next")
		if next == "" || page >= maxSearchPages {
			return out, nil
		}
		path, query, ok := c.relative(next)
		if !ok {
			// A next page elsewhere would get this server's credentials: stop here.
			return out, nil
		}
		bundle = &Bundle{}
		if _, err = c.do(ctx, http.MethodGet, path, query, nil, nil, bundle); err != nil {
			return nil, err
		}
	}
}

// link returns the URL of the bundle's link with relation rel, or "".
func (b *Bundle) link(rel string) string {
	for _, l := range b.Link {
		if l.Relation == rel {
			return l.URL
		}
	}
	return ""
}

// relative splits an absolute URL on the client's server into the path below the base and the query.
func (c *Client) relative(raw string) (path string, query url.Values, ok bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != c.base.Scheme || u.Host != c.base.Host {
		return "", nil, false
	}
	rest, found := strings.CutPrefix(u.Path, c.base.Path)
	if !found || (rest != "" && !strings.HasPrefix(rest, "/")) {
		return "", nil, false
	}
	return strings.TrimPrefix(rest, "/"), u.Query(), true
}

// FindPatients searches Patients by identifier: system|value, or the value in any system when system is "". It
// returns every match (a medical record number should have one; several mean the caller must choose).
func (c *Client) FindPatients(ctx context.Context, system, value string) ([]PatientRecord, error) {
	query := url.Values{"identifier": {escapeSearch(value)}, "_count": {"20"}}
	if system != "" {
		query = IdentifierQuery(system, value)
		query.Set("_count", "20")
	}
	entries, err := c.SearchAll(ctx, "Patient", query)
	if err != nil {
		return nil, err
	}
	var out []PatientRecord
	for i, e := range entries {
		if e.ResourceType() != "Patient" {
			continue
		}
		var p PatientRecord
		if err := e.Decode(&p); err != nil {
			return nil, fmt.Errorf("failed to decode patient search entry %d: %w", i, err)
		}
		if !patientHasIdentifier(&p, system, value) {
			continue // a server that matched loosely (case, prefix) is not taken at its word
		}
		out = append(out, p)
	}
	return out, nil
}

func patientHasIdentifier(p *PatientRecord, system, value string) bool {
	for _, id := range p.Identifier {
		if id.Value == value && (system == "" || id.System == system) {
			return true
		}
	}
	return false
}

// Summary is what caseroom shows of a patient's record.
type Summary struct {
	Patient PatientRecord
	// Conditions are the active ones (clinical status active, recurrence or relapse), not refuted or entered in error.
	Conditions []Condition
	// Medications are the active MedicationRequests.
	Medications []MedicationRequest
	// Allergies are the AllergyIntolerances that are not inactive, resolved, refuted or entered in error.
	Allergies []AllergyIntolerance
	// Vitals are the newest vital-signs Observation of each code, newest first.
	Vitals []Result
}

// ReadSummary reads a patient's summary: the Patient, active conditions, active medications, allergies and the
// latest vital signs. patientRef is "Patient/<id>". The searches use subject=Patient/<id> (and
// AllergyIntolerance patient=Patient/<id>): some servers find nothing for a bare id.
func (c *Client) ReadSummary(ctx context.Context, patientRef string) (*Summary, error) {
	typ, id, ok := ParseReference(patientRef)
	if !ok || typ != "Patient" {
		return nil, fmt.Errorf("ehr: %q is not a Patient reference", patientRef)
	}
	ref := "Patient/" + id
	s := &Summary{}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	run := func(what string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("failed to read the %s of %s: %w", what, ref, err))
				mu.Unlock()
			}
		}()
	}
	run("patient", func() error { return c.Read(ctx, "Patient", id, &s.Patient) })
	run("conditions", func() error {
		var err error
		s.Conditions, err = searchDecode[Condition](ctx, c, "Condition", url.Values{
			"subject": {ref}, "clinical-status": {"active,recurrence,relapse"}, "_count": {searchPageSize}})
		s.Conditions = slices.DeleteFunc(s.Conditions, func(c Condition) bool {
			v := conceptCode(c.VerificationStatus, "")
			return v == "refuted" || v == "entered-in-error"
		})
		return err
	})
	run("medications", func() error {
		var err error
		s.Medications, err = searchDecode[MedicationRequest](ctx, c, "MedicationRequest", url.Values{
			"subject": {ref}, "status": {"active"}, "_count": {searchPageSize}})
		return err
	})
	run("allergies", func() error {
		var err error
		s.Allergies, err = searchDecode[AllergyIntolerance](ctx, c, "AllergyIntolerance", url.Values{
			"patient": {ref}, "_count": {searchPageSize}})
		s.Allergies = slices.DeleteFunc(s.Allergies, func(a AllergyIntolerance) bool {
			clinical, verification := conceptCode(a.ClinicalStatus, ""), conceptCode(a.VerificationStatus, "")
			return clinical == "inactive" || clinical == "resolved" || verification == "refuted" || verification == "entered-in-error"
		})
		return err
	})
	run("vital signs", func() error {
		vitals, err := searchDecode[Result](ctx, c, "Observation", url.Values{
			"subject": {ref}, "category": {ObservationCategorySystem + "|vital-signs"}, "_sort": {"-date"}, "_count": {searchPageSize}})
		s.Vitals = latestPerCode(vitals)
		return err
	})
	wg.Wait()
	if len(errs) > 0 {
		return nil, errs[0]
	}
	// _include is not supported everywhere: medications given only by reference are read one by one.
	names := make(map[string]string)
	for i := range s.Medications {
		m := &s.Medications[i]
		if m.MedicationCodeableConcept != nil || m.MedicationReference == nil || m.MedicationReference.Display != "" {
			continue
		}
		typ, id, ok := ParseReference(m.MedicationReference.Reference)
		if !ok || typ != "Medication" {
			continue
		}
		name, done := names[id]
		if !done {
			var med Medication
			if err := c.Read(ctx, "Medication", id, &med); err != nil && !IsNotFound(err) {
				return nil, fmt.Errorf("failed to read Medication/%s: %w", id, err)
			}
			name = ConceptText(med.Code)
			names[id] = name
		}
		m.medication = name
	}
	return s, nil
}

// searchDecode runs a search (all pages) and decodes the entries of resourceType into T.
func searchDecode[T any](ctx context.Context, c *Client, resourceType string, params url.Values) ([]T, error) {
	entries, err := c.SearchAll(ctx, resourceType, params)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(entries))
	for i, e := range entries {
		if e.ResourceType() != resourceType {
			continue
		}
		var v T
		if err := e.Decode(&v); err != nil {
			return nil, fmt.Errorf("failed to decode %s search entry %d: %w", resourceType, i, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// latestPerCode keeps the newest usable Observation of each code, newest first.
func latestPerCode(all []Result) []Result {
	usable := slices.DeleteFunc(slices.Clone(all), func(r Result) bool { return !r.Usable() })
	slices.SortStableFunc(usable, func(a, b Result) int { return b.EffectiveAt().Compare(a.EffectiveAt()) })
	seen := make(map[string]bool)
	var out []Result
	for _, r := range usable {
		key := r.codeKey()
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, r)
	}
	return out
}
