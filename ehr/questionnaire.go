package ehr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/store"
)

// A completed guided check-in becomes, besides its Observations, one QuestionnaireResponse: the answers as the
// patient gave them, question by question. The questionnaire itself is not a resource of the EHR (it is
// caseroom's configuration, and each check-in keeps the version it was asked with), so it travels contained in the
// response, with each question's LOINC code when the configuration names one.

// QuestionnaireResponseIdentifierSystem identifies the QuestionnaireResponse of a guided check-in; the value is the
// Matrix event ID of the /checkin start command (the event the check-in is recorded under).
const QuestionnaireResponseIdentifierSystem = "urn:caseroom:questionnaireresponse"

// containedQuestionnaireID is the id of the Questionnaire contained in each QuestionnaireResponse.
const containedQuestionnaireID = "questionnaire"

// QuestionnaireResponse is a FHIR R4 QuestionnaireResponse.
type QuestionnaireResponse struct {
	ResourceType  string                      `json:"resourceType"`
	ID            string                      `json:"id,omitempty"`
	Meta          *Meta                       `json:"meta,omitempty"`
	Contained     []json.RawMessage           `json:"contained,omitempty"`
	Identifier    *Identifier                 `json:"identifier,omitempty"`
	Questionnaire string                      `json:"questionnaire,omitempty"`
	Status        string                      `json:"status"`
	Subject       *Reference                  `json:"subject,omitempty"`
	Authored      string                      `json:"authored,omitempty"`
	Author        *Reference                  `json:"author,omitempty"`
	Source        *Reference                  `json:"source,omitempty"`
	Item          []QuestionnaireResponseItem `json:"item,omitempty"`
}

// QuestionnaireResponseItem is the answer to one question.
type QuestionnaireResponseItem struct {
	LinkID string                        `json:"linkId"`
	Text   string                        `json:"text,omitempty"`
	Answer []QuestionnaireResponseAnswer `json:"answer,omitempty"`
}

// QuestionnaireResponseAnswer is one answer value; exactly one of the fields is set.
type QuestionnaireResponseAnswer struct {
	ValueString   string    `json:"valueString,omitempty"`
	ValueInteger  *int      `json:"valueInteger,omitempty"`
	ValueCoding   *Coding   `json:"valueCoding,omitempty"`
	ValueQuantity *Quantity `json:"valueQuantity,omitempty"`
}

// ResourceKey implements Resource.
func (q *QuestionnaireResponse) ResourceKey() (string, string) { return "QuestionnaireResponse", q.ID }

// MarshalJSON always writes resourceType "QuestionnaireResponse".
func (q QuestionnaireResponse) MarshalJSON() ([]byte, error) {
	type plain QuestionnaireResponse
	q.ResourceType = "QuestionnaireResponse"
	return json.Marshal(plain(q))
}

// Questionnaire is the FHIR R4 Questionnaire contained in a QuestionnaireResponse.
type Questionnaire struct {
	ResourceType string              `json:"resourceType"`
	ID           string              `json:"id,omitempty"`
	Status       string              `json:"status"`
	Title        string              `json:"title,omitempty"`
	Item         []QuestionnaireItem `json:"item,omitempty"`
}

// QuestionnaireItem is one question of a Questionnaire.
type QuestionnaireItem struct {
	LinkID       string                `json:"linkId"`
	Code         []Coding              `json:"code,omitempty"`
	Text         string                `json:"text,omitempty"`
	Type         string                `json:"type"`
	Required     bool                  `json:"required,omitempty"`
	AnswerOption []QuestionnaireOption `json:"answerOption,omitempty"`
}

// QuestionnaireOption is one permitted answer of a choice question.
type QuestionnaireOption struct {
	ValueCoding *Coding `json:"valueCoding,omitempty"`
}

// MarshalJSON always writes resourceType "Questionnaire".
func (q Questionnaire) MarshalJSON() ([]byte, error) {
	type plain Questionnaire
	q.ResourceType = "Questionnaire"
	return json.Marshal(plain(q))
}

// Question types of a guided check-in, as in its configuration (checkins.questionnaire.questions[].type).
const (
	questionVital  = "vital"
	questionChoice = "choice"
	questionScore  = "score"
	questionText   = "text"
)

// GuidedQuestion is a question of a guided check-in, as configured (its JSON form is the configuration's).
type GuidedQuestion struct {
	ID       string   `json:"id"`
	Text     string   `json:"text"`
	Type     string   `json:"type"`
	Vital    string   `json:"vital,omitempty"`
	Choices  []string `json:"choices,omitempty"`
	LOINC    string   `json:"loinc,omitempty"`
	Required bool     `json:"required"`
}

// GuidedAnswer is the answer to a question of a guided check-in.
type GuidedAnswer struct {
	// Question is the index of the question.
	Question int
	// Text is the answer as shown to the patient: the choice's text, the score, the reading or the typed text.
	Text string
	// Value is the reading of a vital question or of a score stored as a vital.
	Value   *care.Value
	Skipped bool
}

// GuidedRecord is a completed guided check-in with the context FHIR needs.
type GuidedRecord struct {
	// EventID is the Matrix event ID of the /checkin start command: it makes the identifier.
	EventID string
	// PatientRef is the subject, author and source, "Patient/<id>".
	PatientRef string
	// Authored is when the last question was answered.
	Authored  time.Time
	Title     string
	Questions []GuidedQuestion
	Answers   []GuidedAnswer
}

// ChoiceSystem is the code system of the choices of a question: urn:caseroom:choice:<question id>; the codes are
// the choices' numbers from 1, as in the question's poll.
func ChoiceSystem(questionID string) string { return "urn:caseroom:choice:" + questionID }

// GuidedQuestionnaireResponse maps a guided check-in to a QuestionnaireResponse: status completed; subject, author
// and source the patient; authored in UTC; a contained Questionnaire with the questions (linkId the question's id,
// code its LOINC code when configured); one item per answered question (skipped ones are left out) with
// valueCoding (choices, in ChoiceSystem), valueInteger (scores), valueQuantity (readings, in the patient's UCUM
// unit), valueString (blood pressure, as "142/91 mmHg", and typed text); identifier
// urn:caseroom:questionnaireresponse|<event ID>.
func GuidedQuestionnaireResponse(rec GuidedRecord) (*QuestionnaireResponse, error) {
	var errs []error
	if rec.EventID == "" {
		errs = append(errs, errors.New("no event ID"))
	}
	if !isReference(rec.PatientRef, "Patient") {
		errs = append(errs, fmt.Errorf("patient reference %q is not Patient/<id>", rec.PatientRef))
	}
	if rec.Authored.IsZero() {
		errs = append(errs, errors.New("no time"))
	}
	if len(rec.Questions) == 0 {
		errs = append(errs, errors.New("no questions"))
	}
	qn := Questionnaire{ResourceType: "Questionnaire", ID: containedQuestionnaireID, Status: "active", Title: rec.Title}
	for _, q := range rec.Questions {
		item, err := questionnaireItem(q)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		qn.Item = append(qn.Item, item)
	}
	var items []QuestionnaireResponseItem
	for _, a := range rec.Answers {
		if a.Question < 0 || a.Question >= len(rec.Questions) {
			errs = append(errs, fmt.Errorf("an answer is to question %d of %d", a.Question+1, len(rec.Questions)))
			continue
		}
		if a.Skipped {
			continue
		}
		q := rec.Questions[a.Question]
		answer, err := questionnaireAnswer(q, a)
		if err != nil {
			errs = append(errs, fmt.Errorf("answer to %s: %w", q.ID, err))
			continue
		}
		items = append(items, QuestionnaireResponseItem{LinkID: q.ID, Text: q.Text, Answer: []QuestionnaireResponseAnswer{answer}})
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("ehr: invalid guided check-in: %w", errors.Join(errs...))
	}
	contained, err := json.Marshal(qn)
	if err != nil {
		return nil, err
	}
	patient := &Reference{Reference: rec.PatientRef}
	return &QuestionnaireResponse{
		ResourceType:  "QuestionnaireResponse",
		Contained:     []json.RawMessage{contained},
		Identifier:    &Identifier{System: QuestionnaireResponseIdentifierSystem, Value: rec.EventID},
		Questionnaire: "#" + containedQuestionnaireID,
		Status:        "completed",
		Subject:       patient,
		Authored:      rec.Authored.UTC().Truncate(time.Millisecond).Format(time.RFC3339Nano),
		Author:        patient,
		Source:        patient,
		Item:          items,
	}, nil
}

func questionnaireItem(q GuidedQuestion) (QuestionnaireItem, error) {
	item := QuestionnaireItem{LinkID: q.ID, Text: q.Text, Required: q.Required}
	if q.ID == "" {
		return item, errors.New("a question has no id")
	}
	if q.LOINC != "" {
		item.Code = []Coding{{System: care.LOINCSystem, Code: q.LOINC, Display: loincDisplay[q.LOINC]}}
	}
	switch q.Type {
	case questionChoice:
		item.Type = "choice"
		for i, choice := range q.Choices {
			item.AnswerOption = append(item.AnswerOption, QuestionnaireOption{
				ValueCoding: &Coding{System: ChoiceSystem(q.ID), Code: strconv.Itoa(i + 1), Display: choice},
			})
		}
	case questionScore:
		item.Type = "integer"
	case questionVital:
		item.Type = "quantity"
		if care.Kind(q.Vital) == care.BloodPressure {
			item.Type = "string"
		}
	case questionText:
		item.Type = "text"
	default:
		return item, fmt.Errorf("question %s has an unknown type %q", q.ID, q.Type)
	}
	return item, nil
}

func questionnaireAnswer(q GuidedQuestion, a GuidedAnswer) (QuestionnaireResponseAnswer, error) {
	switch q.Type {
	case questionChoice:
		for i, choice := range q.Choices {
			if choice == a.Text {
				return QuestionnaireResponseAnswer{ValueCoding: &Coding{System: ChoiceSystem(q.ID), Code: strconv.Itoa(i + 1), Display: choice}}, nil
			}
		}
		return QuestionnaireResponseAnswer{}, errors.New("the answer is not one of the choices")
	case questionScore:
		n, err := strconv.Atoi(strings.TrimSuffix(a.Text, "/10"))
		if err != nil && a.Value != nil {
			n, err = int(a.Value.Quantity.Value), nil
		}
		if err != nil || n < 0 || n > 10 {
			return QuestionnaireResponseAnswer{}, errors.New("the answer is not a score from 0 to 10")
		}
		return QuestionnaireResponseAnswer{ValueInteger: &n}, nil
	case questionVital:
		if a.Value == nil {
			return QuestionnaireResponseAnswer{}, errors.New("no reading")
		}
		if a.Value.Kind == care.BloodPressure {
			return QuestionnaireResponseAnswer{ValueString: strings.TrimPrefix(a.Value.Format(), a.Value.Kind.Label()+" ")}, nil
		}
		return QuestionnaireResponseAnswer{ValueQuantity: quantity(a.Value.Quantity)}, nil
	default:
		if strings.TrimSpace(a.Text) == "" {
			return QuestionnaireResponseAnswer{}, errors.New("empty text")
		}
		return QuestionnaireResponseAnswer{ValueString: a.Text}, nil
	}
}

// deliverQuestionnaireResponse files the answers of a completed guided check-in (a conditional create on its
// identifier, so a repeated delivery creates nothing new).
func (o *Outbox) deliverQuestionnaireResponse(ctx context.Context, it *store.OutboxItem) (string, []notice, error) {
	s, err := o.Store.Guided.ByID(ctx, it.RecordID)
	if err != nil {
		return "", nil, err
	}
	if s == nil || s.Status != store.GuidedCompleted {
		return "", nil, permanentError{fmt.Sprintf("guided check-in %d does not exist or was not completed", it.RecordID)}
	}
	c, err := o.Store.Cases.ByID(ctx, it.CaseID)
	if err != nil {
		return "", nil, err
	}
	if c == nil || c.PatientRef == "" {
		return "", nil, permanentError{fmt.Sprintf("case #%d is not linked to a FHIR Patient (open cases with --patient or --mrn)", it.CaseID)}
	}
	var qn struct {
		Title     string           `json:"title"`
		Questions []GuidedQuestion `json:"questions"`
	}
	if err := json.Unmarshal(s.Questionnaire, &qn); err != nil {
		return "", nil, permanentError{fmt.Sprintf("guided check-in %d has an unreadable questionnaire", s.ID)}
	}
	answers, err := o.Store.Guided.Answers(ctx, s.ID)
	if err != nil {
		return "", nil, err
	}
	// Authored is when the last answer was sent (its event's time), not when the bot processed it.
	rec := GuidedRecord{EventID: string(s.StartEvent), PatientRef: c.PatientRef, Title: qn.Title, Questions: qn.Questions}
	for _, a := range answers {
		rec.Answers = append(rec.Answers, GuidedAnswer{Question: a.Question, Text: a.Answer, Value: a.Value, Skipped: a.Skipped})
		if a.AnsweredAt.After(rec.Authored) {
			rec.Authored = a.AnsweredAt
		}
	}
	if rec.Authored.IsZero() {
		rec.Authored = s.ClosedAt
	}
	qr, err := GuidedQuestionnaireResponse(rec)
	if err != nil {
		return "", nil, permanentError{err.Error()}
	}
	var stored QuestionnaireResponse
	if _, err = o.Client.Create(ctx, qr, IdentifierQuery(QuestionnaireResponseIdentifierSystem, rec.EventID), &stored); err != nil {
		return "", nil, err
	}
	if stored.ID == "" {
		return "", nil, &Error{Op: "POST QuestionnaireResponse", Status: 200, detail: "answer has no id"}
	}
	ref := "QuestionnaireResponse/" + stored.ID
	return ref, []notice{{room: c.CaseRoomID, text: fmt.Sprintf("📋 Guided check-in answers of %s filed in the EHR as %s.", s.PatientID, ref)}}, nil
}
