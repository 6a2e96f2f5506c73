package config

import (
	"strings"
	"testing"
)

func TestDefaultQuestionnaire(t *testing.T) {
	qn := validConfig(t).CheckIns.Questionnaire
	if qn.Title == "" || len(qn.Questions) != 4 {
		t.Fatalf("default questionnaire = %+v, want a title and 4 questions", qn)
	}
	wantTypes := []string{QuestionChoice, QuestionScore, QuestionVital, QuestionText}
	for i, q := range qn.Questions {
		if q.Type != wantTypes[i] {
			t.Errorf("questions[%d].type = %s, want %s", i, q.Type, wantTypes[i])
		}
	}
	if !qn.Questions[0].Poll() || !qn.Questions[1].Poll() || qn.Questions[2].Poll() || qn.Questions[1].Kind() != "pain" ||
		qn.Questions[2].Kind() != "temp" || qn.Questions[0].Kind() != "" || qn.Questions[3].Label() != "Anything else" {
		t.Errorf("default questions: %+v", qn.Questions)
	}
}

func TestQuestionnaireFromFile(t *testing.T) {
	cfg, err := Parse([]byte(minimalYAML + `
checkins:
    questionnaire:
        title: Evening
        questions:
            - {id: sleep, type: score, text: "How well did you sleep?", required: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	if qn := cfg.CheckIns.Questionnaire; qn.Title != "Evening" || len(qn.Questions) != 1 || qn.Questions[0].ID != "sleep" {
		t.Fatalf("questions from the file must replace the default ones: %+v", qn)
	}
	cfg, err = Parse([]byte(minimalYAML + "checkins:\n    questionnaire:\n        questions: []\n"))
	if err != nil || len(cfg.CheckIns.Questionnaire.Questions) != 0 {
		t.Fatalf("an empty questionnaire (guided check-ins off) must be valid: %v", err)
	}
}

func TestValidateQuestionnaire(t *testing.T) {
	q := func(mutate func(q *QuestionConfig)) []QuestionConfig {
		base := QuestionConfig{ID: "feeling", Type: QuestionChoice, Text: "How do you feel?", Choices: []string{"Better", "Worse"}, Required: true}
		mutate(&base)
		return []QuestionConfig{base}
	}
	tests := []struct {
		name      string
		questions []QuestionConfig
		title     string
		key       string
		value     string // must appear quoted in the error; "" = don't check
	}{
		{name: "id empty", questions: q(func(q *QuestionConfig) { q.ID = "" }), key: "checkins.questionnaire.questions[0].id"},
		{name: "id uppercase", questions: q(func(q *QuestionConfig) { q.ID = "Feeling" }), key: "checkins.questionnaire.questions[0].id", value: "Feeling"},
		{name: "id twice", questions: append(q(func(*QuestionConfig) {}), q(func(*QuestionConfig) {})...), key: "checkins.questionnaire.questions[1].id", value: "feeling"},
		{name: "text empty", questions: q(func(q *QuestionConfig) { q.Text = "  " }), key: "checkins.questionnaire.questions[0].text"},
		{name: "text too long", questions: q(func(q *QuestionConfig) { q.Text = strings.Repeat("x", MaxQuestionLength+1) }), key: "checkins.questionnaire.questions[0].text", value: "501 characters"},
		{name: "text control character", questions: q(func(q *QuestionConfig) { q.Text = "a\x00b" }), key: "checkins.questionnaire.questions[0].text"},
		{name: "type unknown", questions: q(func(q *QuestionConfig) { q.Type = "slider" }), key: "checkins.questionnaire.questions[0].type", value: "slider"},
		{name: "vital unknown", questions: q(func(q *QuestionConfig) { q.Type, q.Vital, q.Choices = QuestionVital, "height", nil }), key: "checkins.questionnaire.questions[0].vital", value: "height"},
		{name: "vital missing", questions: q(func(q *QuestionConfig) { q.Type, q.Choices = QuestionVital, nil }), key: "checkins.questionnaire.questions[0].vital", value: ""},
		{name: "vital component", questions: q(func(q *QuestionConfig) { q.Type, q.Vital, q.Choices = QuestionVital, "bp.sys", nil }), key: "checkins.questionnaire.questions[0].vital", value: "bp.sys"},
		{name: "score as another vital", questions: q(func(q *QuestionConfig) { q.Type, q.Vital, q.Choices = QuestionScore, "hr", nil }), key: "checkins.questionnaire.questions[0].vital", value: "hr"},
		{name: "vital on a choice", questions: q(func(q *QuestionConfig) { q.Vital = "temp" }), key: "checkins.questionnaire.questions[0].vital", value: "temp"},
		{name: "vital asked twice", questions: []QuestionConfig{
			{ID: "t1", Type: QuestionVital, Vital: "temp", Text: "Temperature?"},
			{ID: "t2", Type: QuestionVital, Vital: "temp", Text: "Temperature again?"},
		}, key: "checkins.questionnaire.questions[1].vital", value: "temp"},
		{name: "one choice", questions: q(func(q *QuestionConfig) { q.Choices = []string{"Yes"} }), key: "checkins.questionnaire.questions[0].choices", value: "1 choices"},
		{name: "too many choices", questions: q(func(q *QuestionConfig) {
			q.Choices = nil
			for i := range MaxChoices + 1 {
				q.Choices = append(q.Choices, "option "+string(rune('a'+i)))
			}
		}), key: "checkins.questionnaire.questions[0].choices", value: "21 choices"},
		{name: "optional with 20 choices", questions: q(func(q *QuestionConfig) {
			q.Choices, q.Required = nil, false
			for i := range MaxChoices {
				q.Choices = append(q.Choices, "option "+string(rune('a'+i)))
			}
		}), key: "checkins.questionnaire.questions[0].choices", value: "20 choices"},
		{name: "choice a number", questions: q(func(q *QuestionConfig) { q.Choices = []string{"Better", "2"} }), key: "checkins.questionnaire.questions[0].choices[1]", value: "2"},
		{name: "choice skip", questions: q(func(q *QuestionConfig) { q.Choices = []string{"Better", "Skip"} }), key: "checkins.questionnaire.questions[0].choices[1]", value: "Skip"},
		{name: "choice twice", questions: q(func(q *QuestionConfig) { q.Choices = []string{"Better", " better "} }), key: "checkins.questionnaire.questions[0].choices[1]", value: " better "},
		{name: "choice empty", questions: q(func(q *QuestionConfig) { q.Choices = []string{"Better", ""} }), key: "checkins.questionnaire.questions[0].choices[1]", value: ""},
		{name: "choices on a text question", questions: q(func(q *QuestionConfig) { q.Type = QuestionText }), key: "checkins.questionnaire.questions[0].choices", value: "Better, Worse"},
		{name: "loinc malformed", questions: q(func(q *QuestionConfig) { q.LOINC = "72514" }), key: "checkins.questionnaire.questions[0].loinc", value: "72514"},
		{name: "loinc check digit", questions: q(func(q *QuestionConfig) { q.LOINC = "72514-4" }), key: "checkins.questionnaire.questions[0].loinc", value: "72514-4"},
		{name: "loinc of another vital", questions: q(func(q *QuestionConfig) { q.Type, q.Vital, q.Choices, q.LOINC = QuestionVital, "temp", nil, "8867-4" }), key: "checkins.questionnaire.questions[0].loinc", value: "8867-4"},
		{name: "title two lines", questions: q(func(*QuestionConfig) {}), title: "Daily\ncheck-in", key: "checkins.questionnaire.title"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig(t)
			cfg.CheckIns.Questionnaire = QuestionnaireConfig{Title: tt.title, Questions: tt.questions}
			err := cfg.Validate()
			var line string
			for _, l := range errorLines(err) {
				if strings.HasPrefix(l, tt.key+": ") {
					line = l
				}
			}
			if line == "" {
				t.Fatalf("no error for %s in:\n%v", tt.key, err)
			}
			if tt.value != "" && !strings.Contains(line, `got "`+tt.value+`"`) {
				t.Errorf("error %q does not show the value %q", line, tt.value)
			}
		})
	}
}

func TestValidateQuestionnaireAccepts(t *testing.T) {
	cfg := validConfig(t)
	cfg.CheckIns.Questionnaire.Questions = []QuestionConfig{
		{ID: "bp", Type: QuestionVital, Vital: "bp", LOINC: "85354-9", Text: "Your blood pressure?", Required: true},
		{ID: "sugar", Type: QuestionVital, Vital: "glucose", LOINC: "41653-7", Text: "Your blood sugar?"},
		{ID: "spo2", Type: QuestionVital, Vital: "spo2", LOINC: "59408-5", Text: "Your oxygen?"},
		{ID: "tired", Type: QuestionScore, Text: "How tired are you?\n0 is not at all."},
		{ID: "mood", Type: QuestionChoice, Choices: []string{"Good", "Bad", "2 bad"}, Text: "Mood?"},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLOINCCheckDigit(t *testing.T) {
	for _, code := range []string{"85354-9", "8480-6", "8462-4", "8867-4", "8310-5", "9279-1", "2708-6", "59408-5", "29463-7", "41653-7", "15074-8", "72514-3"} {
		if !loincCheckDigitOK(code) {
			t.Errorf("%s: valid code refused", code)
		}
	}
	for _, code := range []string{"85354-8", "8480-5", "72514-0"} {
		if loincCheckDigitOK(code) {
			t.Errorf("%s: wrong check digit accepted", code)
		}
	}
}
