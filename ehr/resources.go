package ehr

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Resource is a FHIR resource this package can write: ResourceKey returns its type and logical id ("" before it
// is created).
type Resource interface {
	ResourceKey() (resourceType, id string)
}

// Compile-time checks that the resource types are Resources.
var (
	_ Resource = (*Observation)(nil)
	_ Resource = (*Patient)(nil)
	_ Resource = (*Bundle)(nil)
	_ Resource = (*OperationOutcome)(nil)
)

// The types below hold the elements caseroom uses. Reading is tolerant: unknown elements are ignored (and so are
// dropped if a read resource is written back; use Read into a map or json.RawMessage to keep everything).

// Meta is Resource.meta.
type Meta struct {
	VersionID   string   `json:"versionId,omitempty"`
	LastUpdated string   `json:"lastUpdated,omitempty"`
	Profile     []string `json:"profile,omitempty"`
}

// Identifier is a business identifier such as urn:caseroom:observation|<event ID>/hr.
type Identifier struct {
	Use    string `json:"use,omitempty"`
	System string `json:"system,omitempty"`
	Value  string `json:"value,omitempty"`
}

// Coding is a code from a code system.
type Coding struct {
	System  string `json:"system,omitempty"`
	Version string `json:"version,omitempty"`
	Code    string `json:"code,omitempty"`
	Display string `json:"display,omitempty"`
}

// CodeableConcept is a concept given by codings and/or text.
type CodeableConcept struct {
	Coding []Coding `json:"coding,omitempty"`
	Text   string   `json:"text,omitempty"`
}

// HasCoding reports whether c holds the code system|code.
func (c CodeableConcept) HasCoding(system, code string) bool {
	for _, cd := range c.Coding {
		if cd.System == system && cd.Code == code {
			return true
		}
	}
	return false
}

// Quantity is a measured amount; Code is the UCUM code when System is http://unitsofmeasure.org. Value is always
// written, so 0 is a valid reading (pain=0).
type Quantity struct {
	Value  float64 `json:"value"`
	Unit   string  `json:"unit,omitempty"`
	System string  `json:"system,omitempty"`
	Code   string  `json:"code,omitempty"`
}

// Reference points at another resource, e.g. "Patient/123".
type Reference struct {
	Reference  string      `json:"reference,omitempty"`
	Type       string      `json:"type,omitempty"`
	Identifier *Identifier `json:"identifier,omitempty"`
	Display    string      `json:"display,omitempty"`
}

// Annotation is a note with optional author and time.
type Annotation struct {
	AuthorReference *Reference `json:"authorReference,omitempty"`
	AuthorString    string     `json:"authorString,omitempty"`
	Time            string     `json:"time,omitempty"`
	Text            string     `json:"text"`
}

// HumanName is a person's name.
type HumanName struct {
	Use    string   `json:"use,omitempty"`
	Text   string   `json:"text,omitempty"`
	Family string   `json:"family,omitempty"`
	Given  []string `json:"given,omitempty"`
}

// Observation is a FHIR R4 Observation.
type Observation struct {
	ResourceType      string                 `json:"resourceType"`
	ID                string                 `json:"id,omitempty"`
	Meta              *Meta                  `json:"meta,omitempty"`
	Identifier        []Identifier           `json:"identifier,omitempty"`
	Status            string                 `json:"status,omitempty"`
	Category          []CodeableConcept      `json:"category,omitempty"`
	Code              CodeableConcept        `json:"code"`
	Subject           *Reference             `json:"subject,omitempty"`
	Encounter         *Reference             `json:"encounter,omitempty"`
	EffectiveDateTime string                 `json:"effectiveDateTime,omitempty"`
	Issued            string                 `json:"issued,omitempty"`
	Performer         []Reference            `json:"performer,omitempty"`
	ValueQuantity     *Quantity              `json:"valueQuantity,omitempty"`
	ValueString       string                 `json:"valueString,omitempty"`
	DataAbsentReason  *CodeableConcept       `json:"dataAbsentReason,omitempty"`
	Note              []Annotation           `json:"note,omitempty"`
	Component         []ObservationComponent `json:"component,omitempty"`
}

// ObservationComponent is one part of an Observation, such as the systolic pressure of a blood pressure panel.
type ObservationComponent struct {
	Code             CodeableConcept  `json:"code"`
	ValueQuantity    *Quantity        `json:"valueQuantity,omitempty"`
	DataAbsentReason *CodeableConcept `json:"dataAbsentReason,omitempty"`
}

// ResourceKey implements Resource.
func (o *Observation) ResourceKey() (string, string) { return "Observation", o.ID }

// MarshalJSON always writes resourceType "Observation".
func (o Observation) MarshalJSON() ([]byte, error) {
	type plain Observation
	o.ResourceType = "Observation"
	return json.Marshal(plain(o))
}

// IdentifierValue returns the value of o's first identifier with system, or "".
func (o *Observation) IdentifierValue(system string) string {
	return identifierValue(o.Identifier, system)
}

// Patient is a FHIR R4 Patient.
type Patient struct {
	ResourceType string       `json:"resourceType"`
	ID           string       `json:"id,omitempty"`
	Meta         *Meta        `json:"meta,omitempty"`
	Identifier   []Identifier `json:"identifier,omitempty"`
	Active       *bool        `json:"active,omitempty"`
	Name         []HumanName  `json:"name,omitempty"`
	Gender       string       `json:"gender,omitempty"`
	BirthDate    string       `json:"birthDate,omitempty"`
}

// ResourceKey implements Resource.
func (p *Patient) ResourceKey() (string, string) { return "Patient", p.ID }

// MarshalJSON always writes resourceType "Patient".
func (p Patient) MarshalJSON() ([]byte, error) {
	type plain Patient
	p.ResourceType = "Patient"
	return json.Marshal(plain(p))
}

// OperationOutcome is the FHIR R4 OperationOutcome a server sends with an error.
type OperationOutcome struct {
	ResourceType string                  `json:"resourceType"`
	ID           string                  `json:"id,omitempty"`
	Issue        []OperationOutcomeIssue `json:"issue"`
}

// OperationOutcomeIssue is one issue of an OperationOutcome.
type OperationOutcomeIssue struct {
	Severity    string           `json:"severity"`
	Code        string           `json:"code"`
	Details     *CodeableConcept `json:"details,omitempty"`
	Diagnostics string           `json:"diagnostics,omitempty"`
	Expression  []string         `json:"expression,omitempty"`
}

// ResourceKey implements Resource.
func (o *OperationOutcome) ResourceKey() (string, string) { return "OperationOutcome", o.ID }

// MarshalJSON always writes resourceType "OperationOutcome".
func (o OperationOutcome) MarshalJSON() ([]byte, error) {
	type plain OperationOutcome
	o.ResourceType = "OperationOutcome"
	return json.Marshal(plain(o))
}

// String joins the issues as "severity code: details (diagnostics) at expression; ...". It holds the server's own
// words, which may echo the record (PHI): never log or show it; Summary is the form for logs and rooms.
func (o *OperationOutcome) String() string {
	if o == nil {
		return ""
	}
	parts := make([]string, 0, len(o.Issue))
	for _, is := range o.Issue {
		var b strings.Builder
		b.WriteString(is.Severity)
		if is.Code != "" {
			b.WriteString(" " + is.Code)
		}
		text := ""
		if is.Details != nil {
			text = is.Details.Text
			if text == "" && len(is.Details.Coding) > 0 {
				text = is.Details.Coding[0].Display
				if text == "" {
					text = is.Details.Coding[0].Code
				}
			}
		}
		switch {
		case text != "" && is.Diagnostics != "" && is.Diagnostics != text:
			b.WriteString(": " + text + " (" + is.Diagnostics + ")")
		case text != "":
			b.WriteString(": " + text)
		case is.Diagnostics != "":
			b.WriteString(": " + is.Diagnostics)
		}
		if len(is.Expression) > 0 {
			b.WriteString(" at " + strings.Join(is.Expression, ", "))
		}
		parts = append(parts, b.String())
	}
	return strings.Join(parts, "; ")
}

// Bundle is a FHIR R4 Bundle: a transaction, a transaction-response or a search result (searchset).
type Bundle struct {
	ResourceType string        `json:"resourceType"`
	ID           string        `json:"id,omitempty"`
	Meta         *Meta         `json:"meta,omitempty"`
	Type         string        `json:"type"`
	Total        *int          `json:"total,omitempty"`
	Link         []BundleLink  `json:"link,omitempty"`
	Entry        []BundleEntry `json:"entry,omitempty"`
}

// ResourceKey implements Resource.
func (b *Bundle) ResourceKey() (string, string) { return "Bundle", b.ID }

// MarshalJSON always writes resourceType "Bundle".
func (b Bundle) MarshalJSON() ([]byte, error) {
	type plain Bundle
	b.ResourceType = "Bundle"
	return json.Marshal(plain(b))
}

// BundleLink is a link of a Bundle, such as the "next" page of a search.
type BundleLink struct {
	Relation string `json:"relation"`
	URL      string `json:"url"`
}

// BundleEntry is one entry; Resource is kept raw so that any resource type can be carried (see Decode).
type BundleEntry struct {
	FullURL  string          `json:"fullUrl,omitempty"`
	Resource json.RawMessage `json:"resource,omitempty"`
	Search   *BundleSearch   `json:"search,omitempty"`
	Request  *BundleRequest  `json:"request,omitempty"`
	Response *BundleResponse `json:"response,omitempty"`
}

// Decode unmarshals the entry's resource into out (such as *Observation).
func (e BundleEntry) Decode(out any) error {
	if len(e.Resource) == 0 {
		return fmt.Errorf("bundle entry has no resource")
	}
	return scrubJSONError(json.Unmarshal(e.Resource, out)) // the error may be logged: no quoted values
}

// ResourceType returns the entry's resourceType, or "" if it has no resource.
func (e BundleEntry) ResourceType() string {
	var head struct {
		ResourceType string `json:"resourceType"`
	}
	if len(e.Resource) == 0 || json.Unmarshal(e.Resource, &head) != nil {
		return ""
	}
	return head.ResourceType
}

// BundleSearch says why an entry is in a search result ("match" or "include").
type BundleSearch struct {
	Mode string `json:"mode,omitempty"`
}

// BundleRequest is the request of a transaction entry. IfNoneExist is a query string: its values must be
// percent-encoded (see IdentifierQuery).
type BundleRequest struct {
	Method      string `json:"method"`
	URL         string `json:"url"`
	IfNoneMatch string `json:"ifNoneMatch,omitempty"`
	IfMatch     string `json:"ifMatch,omitempty"`
	IfNoneExist string `json:"ifNoneExist,omitempty"`
}

// BundleResponse is the outcome of one transaction entry: Status like "201 Created" or "200", Location like
// "Observation/123/_history/1".
type BundleResponse struct {
	Status       string          `json:"status"`
	Location     string          `json:"location,omitempty"`
	Etag         string          `json:"etag,omitempty"`
	LastModified string          `json:"lastModified,omitempty"`
	Outcome      json.RawMessage `json:"outcome,omitempty"`
}

// StatusCode returns the HTTP status at the start of Status, or 0 if there is none.
func (r *BundleResponse) StatusCode() int {
	if r == nil {
		return 0
	}
	code := 0
	for i := 0; i < len(r.Status) && i < 3; i++ {
		c := r.Status[i]
		if c < '0' || c > '9' {
			return 0
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return 0
	}
	return code
}

// Reference returns "Type/id" from Location (without its _history part), or "".
func (r *BundleResponse) Reference() string {
	if r == nil || r.Location == "" {
		return ""
	}
	loc := r.Location
	if i := strings.Index(loc, "/_history/"); i >= 0 {
		loc = loc[:i]
	}
	parts := strings.Split(strings.TrimRight(loc, "/"), "/")
	if len(parts) < 2 {
		return ""
	}
	return parts[len(parts)-2] + "/" + parts[len(parts)-1]
}

// Observations decodes the entries of b that are Observations.
func (b *Bundle) Observations() ([]Observation, error) {
	var out []Observation
	for i, e := range b.Entry {
		if e.ResourceType() != "Observation" {
			continue
		}
		var o Observation
		if err := e.Decode(&o); err != nil {
			return nil, fmt.Errorf("failed to decode bundle entry %d: %w", i, err)
		}
		out = append(out, o)
	}
	return out, nil
}

func identifierValue(ids []Identifier, system string) string {
	for _, id := range ids {
		if id.System == system {
			return id.Value
		}
	}
	return ""
}
