package ehr_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/store"
)

// exampleQuestionnaire is the questionnaire of config.example.yaml, as a guided check-in keeps it.
const exampleQuestionnaire = `{"title":"Daily check-in","questions":[
	{"id":"feeling","text":"How do you feel today, compared with yesterday?","type":"choice","choices":["Better","The same","Worse"],"required":true},
	{"id":"pain","text":"How strong is your pain right now?","type":"score","vital":"pain","loinc":"72514-3","required":true},
	{"id":"temperature","text":"What is your temperature?","type":"vital","vital":"temp","loinc":"8310-5","required":false},
	{"id":"bp","text":"Your blood pressure?","type":"vital","vital":"bp","required":false},
	{"id":"anything_else","text":"Anything else?","type":"text","required":false}]}`

func reading(t *testing.T, input string) *care.Value {
	t.Helper()
	in, err := care.ParseCheckIn(input, nil)
	if err != nil || len(in.Values) != 1 {
		t.Fatalf("parse %q: %v", input, err)
	}
	return &in.Values[0]
}

func TestQuestionnaireResponseFiled(t *testing.T) {
	f := newOutboxFixture(t, nil)
	ctx := testContext(t)
	start := time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)
	s := &store.GuidedSession{CaseID: f.c.ID, RoomID: f.c.PatientRoomID, PatientID: "@pat:hs", StartEvent: "$start+/x",
		Questionnaire: json.RawMessage(exampleQuestionnaire), StartedAt: start}
	if err := f.st.Guided.Start(ctx, s); err != nil {
		t.Fatal(err)
	}
	answers := []*store.GuidedAnswer{
		{Question: 0, QuestionID: "feeling", Answer: "Worse", EventID: "$a1"},
		{Question: 1, QuestionID: "pain", Answer: "4", Value: reading(t, "pain=4"), EventID: "$a2"},
		{Question: 2, QuestionID: "temperature", Answer: "38.4 °C", Value: reading(t, "temp=38.4"), EventID: "$a3"},
		{Question: 3, QuestionID: "bp", Answer: "142/91 mmHg", Value: reading(t, "bp=142/91"), EventID: "$a4"},
		{Question: 4, QuestionID: "anything_else", Skipped: true, EventID: "$a5"},
	}
	for i, a := range answers {
		a.AnsweredAt = start.Add(time.Duration(i+1) * time.Minute)
		if err := f.st.Guided.Answer(ctx, s, a, i+1, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.st.Guided.Close(ctx, s, store.GuidedCompleted, 0, "$a5"); err != nil {
		t.Fatal(err)
	}
	f.queue(t, store.OutboxQuestionnaireResponse, s.ID, 1, s.RoomID, s.StartEvent)
	results := f.deliver(t)
	if len(results) != 1 || !strings.HasPrefix(results[0], "QuestionnaireResponse/") {
		t.Fatalf("results = %q", results)
	}
	var qr struct {
		ehr.QuestionnaireResponse
		Contained []ehr.Questionnaire `json:"contained"`
	}
	typ, qrID, _ := ehr.ParseReference(results[0])
	if err := f.fhir.Read(ctx, typ, qrID, &qr); err != nil {
		t.Fatal(err)
	}
	if qr.Status != "completed" || qr.Subject.Reference != f.patient || qr.Author.Reference != f.patient ||
		qr.Identifier == nil || qr.Identifier.System != ehr.QuestionnaireResponseIdentifierSystem || qr.Identifier.Value != "$start+/x" ||
		qr.Authored != "2026-03-14T09:05:00Z" || qr.Questionnaire != "#questionnaire" {
		t.Fatalf("QuestionnaireResponse = %+v", qr.QuestionnaireResponse)
	}
	if len(qr.Contained) != 1 || len(qr.Contained[0].Item) != 5 || qr.Contained[0].Item[1].Code[0].Code != "72514-3" ||
		qr.Contained[0].Item[0].Type != "choice" || len(qr.Contained[0].Item[0].AnswerOption) != 3 || qr.Contained[0].Title != "Daily check-in" {
		t.Fatalf("contained questionnaire = %+v", qr.Contained)
	}
	items := qr.Item
	if len(items) != 4 {
		t.Fatalf("items = %+v, want 4 (the skipped question left out)", items)
	}
	if a := items[0].Answer[0].ValueCoding; items[0].LinkID != "feeling" || a == nil || a.Code != "3" || a.Display != "Worse" ||
		a.System != ehr.ChoiceSystem("feeling") {
		t.Errorf("feeling = %+v", items[0])
	}
	if a := items[1].Answer[0].ValueInteger; items[1].LinkID != "pain" || a == nil || *a != 4 {
		t.Errorf("pain = %+v", items[1])
	}
	if a := items[2].Answer[0].ValueQuantity; a == nil || a.Value != 38.4 || a.Code != "Cel" || a.System != care.UCUMSystem {
		t.Errorf("temperature = %+v", items[2])
	}
	if a := items[3].Answer[0].ValueString; !strings.Contains(a, "142/91") {
		t.Errorf("blood pressure = %+v", items[3])
	}
	if notices := f.notices(t, f.c.CaseRoomID); len(notices) != 1 || !strings.Contains(notices[0], "@pat:hs") ||
		!strings.Contains(notices[0], results[0]) {
		t.Fatalf("notices = %q", notices)
	}

	// Delivered again: no second resource.
	f.queue(t, store.OutboxQuestionnaireResponse, s.ID, 2, s.RoomID, s.StartEvent)
	if again := f.deliver(t); len(again) != 1 || again[0] != results[0] {
		t.Fatalf("second delivery = %q", again)
	}
	if n, err := f.srv.Count(ctx, "QuestionnaireResponse", nil); err != nil || n != 1 {
		t.Fatalf("%d QuestionnaireResponses (%v), want 1", n, err)
	}
}

func TestGuidedQuestionnaireResponseRejectsBadRecords(t *testing.T) {
	var questions []ehr.GuidedQuestion
	var qn struct {
		Questions []ehr.GuidedQuestion `json:"questions"`
	}
	if err := json.Unmarshal([]byte(exampleQuestionnaire), &qn); err != nil {
		t.Fatal(err)
	}
	questions = qn.Questions
	good := ehr.GuidedRecord{EventID: "$e", PatientRef: "Patient/1", Authored: time.Now(), Questions: questions,
		Answers: []ehr.GuidedAnswer{{Question: 0, Text: "Better"}}}
	if _, err := ehr.GuidedQuestionnaireResponse(good); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(r *ehr.GuidedRecord)
	}{
		{"no event", func(r *ehr.GuidedRecord) { r.EventID = "" }},
		{"bad patient", func(r *ehr.GuidedRecord) { r.PatientRef = "Patient/" }},
		{"no time", func(r *ehr.GuidedRecord) { r.Authored = time.Time{} }},
		{"unknown choice", func(r *ehr.GuidedRecord) { r.Answers = []ehr.GuidedAnswer{{Question: 0, Text: "Great"}} }},
		{"score out of range", func(r *ehr.GuidedRecord) { r.Answers = []ehr.GuidedAnswer{{Question: 1, Text: "11"}} }},
		{"vital without reading", func(r *ehr.GuidedRecord) { r.Answers = []ehr.GuidedAnswer{{Question: 2, Text: "hot"}} }},
		{"no such question", func(r *ehr.GuidedRecord) { r.Answers = []ehr.GuidedAnswer{{Question: 9, Text: "x"}} }},
		{"unknown type", func(r *ehr.GuidedRecord) {
			r.Questions = append([]ehr.GuidedQuestion{{ID: "x", Type: "slider"}}, r.Questions[1:]...)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good
			r.Questions = append([]ehr.GuidedQuestion(nil), good.Questions...)
			tt.change(&r)
			if _, err := ehr.GuidedQuestionnaireResponse(r); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
