package ehr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caseroom/caseroom/store"
)

// CommunicationIdentifierSystem identifies the Communication of a /file command; the value is the command's Matrix
// event ID.
const CommunicationIdentifierSystem = "urn:caseroom:communication"

// Communication is a FHIR R4 Communication.
type Communication struct {
	ResourceType string                 `json:"resourceType"`
	ID           string                 `json:"id,omitempty"`
	Meta         *Meta                  `json:"meta,omitempty"`
	Identifier   []Identifier           `json:"identifier,omitempty"`
	Status       string                 `json:"status"`
	Category     []CodeableConcept      `json:"category,omitempty"`
	Subject      *Reference             `json:"subject,omitempty"`
	About        []Reference            `json:"about,omitempty"`
	Sent         string                 `json:"sent,omitempty"`
	Sender       *Reference             `json:"sender,omitempty"`
	Payload      []CommunicationPayload `json:"payload,omitempty"`
	Note         []Annotation           `json:"note,omitempty"`
}

// CommunicationPayload is one part of a Communication's content.
type CommunicationPayload struct {
	ContentString string `json:"contentString,omitempty"`
}

// ResourceKey implements Resource.
func (c *Communication) ResourceKey() (string, string) { return "Communication", c.ID }

// MarshalJSON always writes resourceType "Communication".
func (c Communication) MarshalJSON() ([]byte, error) {
	type plain Communication
	c.ResourceType = "Communication"
	return json.Marshal(plain(c))
}

// FiledMessage is one chat message filed to the chart.
type FiledMessage struct {
	// Sender is the Matrix user ID of the message's author.
	Sender string
	Sent   time.Time
	Text   string
}

// CommunicationRecord is what a /file command filed, with the context FHIR needs.
type CommunicationRecord struct {
	// CommandEventID is the Matrix event ID of the /file command: it makes the identifier.
	CommandEventID string
	// PatientRef is the subject, "Patient/<id>".
	PatientRef string
	// SenderRef is the author of the (first) message: the Patient, or the Practitioner of a clinician; "" when the
	// author has no FHIR resource: the sender is then the first message's Sender by Matrix user ID (an identifier in
	// MatrixUserSystem). The payload names every author by Matrix ID.
	SenderRef string
	// CarePlanRef is the case's CarePlan, "" when it has none (yet).
	CarePlanRef string
	// Messages are the filed messages, oldest first.
	Messages []FiledMessage
}

// CommunicationFor maps a filing to a Communication: status completed; subject the patient; sender the author of
// the first message (their FHIR resource, or else their Matrix user ID as an identifier); sent the time of the last message (UTC); one payload
// contentString per message, "<Matrix ID> (<time UTC>): <text>"; about the case's CarePlan when it has one;
// identifier urn:caseroom:communication|<command event ID>.
func CommunicationFor(rec CommunicationRecord) (*Communication, error) {
	var errs []error
	if rec.CommandEventID == "" {
		errs = append(errs, errors.New("no command event ID"))
	}
	if !isReference(rec.PatientRef, "Patient") {
		errs = append(errs, fmt.Errorf("patient reference %q is not Patient/<id>", rec.PatientRef))
	}
	if rec.SenderRef != "" && !isReference(rec.SenderRef, "Patient", "Practitioner", "PractitionerRole", "RelatedPerson") {
		errs = append(errs, fmt.Errorf("sender reference %q is not Patient/, Practitioner/, PractitionerRole/ or RelatedPerson/<id>", rec.SenderRef))
	}
	if rec.CarePlanRef != "" && !isReference(rec.CarePlanRef, "CarePlan") {
		errs = append(errs, fmt.Errorf("care plan reference %q is not CarePlan/<id>", rec.CarePlanRef))
	}
	if len(rec.Messages) == 0 {
		errs = append(errs, errors.New("no messages"))
	}
	for i, m := range rec.Messages {
		if m.Sent.IsZero() {
			errs = append(errs, fmt.Errorf("message %d has no time", i+1))
		}
	}
	if rec.SenderRef == "" && len(rec.Messages) > 0 && !validMatrixUser(rec.Messages[0].Sender) {
		errs = append(errs, fmt.Errorf("the first message's sender %q is not a Matrix user ID", rec.Messages[0].Sender))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("ehr: invalid filing: %w", errors.Join(errs...))
	}
	com := &Communication{
		ResourceType: "Communication",
		Identifier:   []Identifier{{System: CommunicationIdentifierSystem, Value: rec.CommandEventID}},
		Status:       "completed",
		Subject:      &Reference{Reference: rec.PatientRef},
		Sent:         rec.Messages[len(rec.Messages)-1].Sent.UTC().Truncate(time.Millisecond).Format(time.RFC3339Nano),
	}
	sender := Actor{Ref: rec.SenderRef, User: rec.Messages[0].Sender}.Reference()
	com.Sender = &sender
	if rec.CarePlanRef != "" {
		com.About = []Reference{{Reference: rec.CarePlanRef}}
	}
	for _, m := range rec.Messages {
		com.Payload = append(com.Payload, CommunicationPayload{ContentString: PayloadText(m)})
	}
	return com, nil
}

// PayloadText is how a filed message reads in the chart: "<Matrix ID> (2006-01-02 15:04:05 UTC): <text>".
func PayloadText(m FiledMessage) string {
	text := strings.TrimSpace(m.Text)
	if text == "" {
		text = "(empty message)"
	}
	return fmt.Sprintf("%s (%s): %s", m.Sender, m.Sent.UTC().Format("2006-01-02 15:04:05 UTC"), text)
}

// deliverCommunication files what a /file command stored as one Communication (a conditional create on the
// command's identifier, so a repeated delivery creates nothing new).
func (o *Outbox) deliverCommunication(ctx context.Context, it *store.OutboxItem) (string, []notice, error) {
	filing, err := o.Store.Filings.Get(ctx, it.RecordID)
	if err != nil {
		return "", nil, err
	}
	if filing == nil {
		return "", nil, permanentError{fmt.Sprintf("filing %d does not exist", it.RecordID)}
	}
	c, err := o.Store.Cases.ByID(ctx, it.CaseID)
	if err != nil {
		return "", nil, err
	}
	if c == nil || c.PatientRef == "" {
		return "", nil, permanentError{fmt.Sprintf("case #%d is not linked to a FHIR Patient (open cases with --patient or --mrn)", it.CaseID)}
	}
	rec := CommunicationRecord{CommandEventID: string(filing.CommandEvent), PatientRef: c.PatientRef}
	for _, m := range filing.Messages {
		rec.Messages = append(rec.Messages, FiledMessage{Sender: string(m.Sender), Sent: m.Sent(), Text: m.Text})
	}
	if len(filing.Messages) > 0 {
		author := filing.Messages[0].Sender
		isPatient, err := o.Store.Cases.IsPatientOf(ctx, c.ID, author)
		if err != nil {
			return "", nil, err
		}
		if isPatient {
			rec.SenderRef = c.PatientRef
		} else if rec.SenderRef, err = o.Store.Roles.PractitionerRef(ctx, author); err != nil {
			return "", nil, err
		}
	}
	plan, err := o.findByIdentifier(ctx, "CarePlan", CarePlanIdentifierSystem, CarePlanIdentifier(c.ID))
	if err != nil {
		return "", nil, err
	}
	if plan != nil {
		_, planID := plan.ResourceKey()
		rec.CarePlanRef = "CarePlan/" + planID
	}
	com, err := CommunicationFor(rec)
	if err != nil {
		return "", nil, permanentError{err.Error()}
	}
	var stored Communication
	if _, err = o.Client.Create(ctx, com, IdentifierQuery(CommunicationIdentifierSystem, rec.CommandEventID), &stored); err != nil {
		return "", nil, err
	}
	if stored.ID == "" {
		return "", nil, &Error{Op: "POST Communication", Status: 200, detail: "answer has no id"}
	}
	ref := "Communication/" + stored.ID
	what := "The message was"
	if len(filing.Messages) > 1 || filing.ThreadRoot != "" {
		what = fmt.Sprintf("The thread (%s) was", plural(len(filing.Messages), "message"))
	}
	return ref, []notice{
		{room: it.RoomID, react: it.SourceEvent, text: "📋"},
		{room: it.RoomID, text: fmt.Sprintf("📋 %s filed to the chart as %s.", what, ref)},
	}, nil
}
