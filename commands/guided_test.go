package commands

import (
	"encoding/json"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"

	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/config"
	"github.com/caseroom/caseroom/store"
)

var (
	qFeeling = config.QuestionConfig{ID: "feeling", Type: config.QuestionChoice, Text: "How do you feel?", Choices: []string{"Better", "The same", "Worse"}, Required: true}
	qPain    = config.QuestionConfig{ID: "pain", Type: config.QuestionScore, Vital: "pain", Text: "Pain?", Required: true}
	qTired   = config.QuestionConfig{ID: "tired", Type: config.QuestionScore, Text: "Tired?"}
	qTemp    = config.QuestionConfig{ID: "temperature", Type: config.QuestionVital, Vital: "temp", Text: "Temperature?"}
	qBP      = config.QuestionConfig{ID: "bp", Type: config.QuestionVital, Vital: "bp", Text: "Blood pressure?", Required: true}
	qOther   = config.QuestionConfig{ID: "anything_else", Type: config.QuestionText, Text: "Anything else?"}
)

func TestParseGuidedAnswer(t *testing.T) {
	tests := []struct {
		name      string
		q         config.QuestionConfig
		raw       string
		viaPoll   bool
		wantText  string
		wantValue string // Value.Format() of the reading, "" for none
		wantSkip  bool
		wantErr   []string // parts of the refusal
	}{
		{name: "choice by poll id", q: qFeeling, raw: "3", viaPoll: true, wantText: "Worse"},
		{name: "choice by typed number", q: qFeeling, raw: " 2. ", wantText: "The same"},
		{name: "choice by text, any case and spacing", q: qFeeling, raw: "the   SAME!", wantText: "The same"},
		{name: "choice number out of range", q: qFeeling, raw: "4", wantErr: []string{"no option `4`", "1 to 3"}},
		{name: "choice unknown text", q: qFeeling, raw: "meh", wantErr: []string{"`meh` is not one of the options", "1 to 3", `Better\, The same\, Worse`}},
		{name: "choice text is not a poll id", q: qFeeling, raw: "Worse", viaPoll: true, wantErr: []string{"not one of the options"}},
		{name: "required cannot be skipped", q: qFeeling, raw: "skip", wantErr: []string{"cannot be skipped"}},
		{name: "pain score by poll", q: qPain, raw: "4", viaPoll: true, wantText: "4", wantValue: "Pain 4/10"},
		{name: "pain score typed as x/10", q: qPain, raw: "7/10", wantText: "7", wantValue: "Pain 7/10"},
		{name: "score above 10", q: qPain, raw: "12", wantErr: []string{"`12` is not a score", "whole number from 0 to 10"}},
		{name: "score not whole", q: qPain, raw: "4.5", wantErr: []string{"`4.5`", "0 to 10"}},
		{name: "score words", q: qTired, raw: "very", wantErr: []string{"`very`"}},
		{name: "score without vital", q: qTired, raw: "0", wantText: "0"},
		{name: "optional score skipped by poll", q: qTired, raw: "skip", viaPoll: true, wantSkip: true},
		{name: "temperature", q: qTemp, raw: "38.4", wantText: "38.4 °C", wantValue: "Temp 38.4 °C"},
		{name: "temperature in F with a space", q: qTemp, raw: "101.2 F", wantText: "101.2 °F", wantValue: "Temp 101.2 °F"},
		{name: "temperature with its key", q: qTemp, raw: "temp=37", wantText: "37 °C", wantValue: "Temp 37 °C"},
		{name: "temperature out of range", q: qTemp, raw: "52", wantErr: []string{"`52`", "outside the plausible range", "30–45"}},
		{name: "temperature not a number", q: qTemp, raw: "hot", wantErr: []string{"`hot`", "not a number"}},
		{name: "optional vital skipped", q: qTemp, raw: "SKIP", wantSkip: true},
		{name: "blood pressure", q: qBP, raw: "142/91", wantText: "142/91 mmHg", wantValue: "BP 142/91 mmHg"},
		{name: "blood pressure reversed", q: qBP, raw: "80/120", wantErr: []string{"systolic above diastolic"}},
		{name: "text kept verbatim", q: qOther, raw: "  Coughing *at* night\nand tired ", wantText: "Coughing *at* night\nand tired"},
		{name: "text too long", q: qOther, raw: strings.Repeat("a", care.MaxNoteLength+1), wantErr: []string{"1001 characters", "too long"}},
		{name: "empty", q: qOther, raw: "   ", wantErr: []string{"empty"}},
		{name: "long value is shortened in the refusal", q: qFeeling, raw: strings.Repeat("x", 60), wantErr: []string{strings.Repeat("x", 40) + "…"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseGuidedAnswer(tt.q, tt.raw, tt.viaPoll, care.DefaultRanges())
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("accepted %q as %+v", tt.raw, got)
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("refusal %q lacks %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.text != tt.wantText || got.skipped != tt.wantSkip {
				t.Errorf("= %+v, want text %q skipped %v", got, tt.wantText, tt.wantSkip)
			}
			switch {
			case tt.wantValue == "" && got.value != nil:
				t.Errorf("value = %s, want none", got.value.Format())
			case tt.wantValue != "" && (got.value == nil || got.value.Format() != tt.wantValue):
				t.Errorf("value = %+v, want %s", got.value, tt.wantValue)
			}
		})
	}
}

func TestQuestionPoll(t *testing.T) {
	poll := questionPoll(qFeeling, 0, 4)
	data, err := json.Marshal(poll)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err = json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	start, ok := raw["org.matrix.msc3381.poll.start"].(map[string]any)
	if !ok {
		t.Fatalf("no poll start in %s", data)
	}
	if start["kind"] != "org.matrix.msc3381.poll.disclosed" || start["max_selections"] != float64(1) {
		t.Errorf("poll start = %v", start)
	}
	if q := start["question"].(map[string]any)["org.matrix.msc1767.text"]; q != "Question 1 of 4: How do you feel?" {
		t.Errorf("question = %v", q)
	}
	answers := start["answers"].([]any)
	if len(answers) != 3 {
		t.Fatalf("answers = %v", answers)
	}
	if a := answers[2].(map[string]any); a["id"] != "3" || a["org.matrix.msc1767.text"] != "Worse" {
		t.Errorf("third answer = %v", a)
	}
	fallback, _ := raw["org.matrix.msc1767.text"].(string)
	if fallback != raw["body"] || !strings.Contains(fallback, "1. Better\n2. The same\n3. Worse") || !strings.Contains(fallback, "type the number") {
		t.Errorf("text fallback = %q, body %q", fallback, raw["body"])
	}
	// mautrix (as clients) reads it as a poll.
	var parsed event.PollStartEventContent
	if err = json.Unmarshal(data, &parsed); err != nil || len(parsed.PollStart.Answers) != 3 || parsed.PollStart.MaxSelections != 1 {
		t.Fatalf("parsed = %+v, %v", parsed, err)
	}

	score := questionPoll(qTired, 1, 4)
	if n := len(score.PollStart.Answers); n != 12 {
		t.Fatalf("an optional score has %d answers, want 0-10 and skip", n)
	}
	if first, last := score.PollStart.Answers[0], score.PollStart.Answers[11]; first.ID != "0" || first.Text != "0" || last.ID != "skip" {
		t.Errorf("score answers: first %+v, last %+v", first, last)
	}
	if !strings.Contains(score.Text, "0 to 10") || !strings.Contains(score.Text, "skip. Skip this question") {
		t.Errorf("score fallback = %q", score.Text)
	}
}

func TestPollEndContent(t *testing.T) {
	data, err := json.Marshal(pollEnd("$poll", "The poll has ended. Answer: Worse"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"m.relates_to":{"rel_type":"m.reference","event_id":"$poll"},"org.matrix.msc3381.poll.end":{},` +
		`"org.matrix.msc1767.text":"The poll has ended. Answer: Worse","body":"The poll has ended. Answer: Worse"}`
	if string(data) != want {
		t.Fatalf("poll end = %s\nwant %s", data, want)
	}
}

func TestQuestionMarkdown(t *testing.T) {
	tests := []struct {
		name string
		q    config.QuestionConfig
		want []string
	}{
		{name: "choice", q: qFeeling, want: []string{`**Question 2 of 5:** How do you feel\?`, "1. Better\n2. The same\n3. Worse"}},
		{name: "score", q: qPain, want: []string{"whole number from 0 to 10"}},
		{name: "optional vital", q: qTemp, want: []string{"`37.2` or `99.1F`", "Type `skip`"}},
		{name: "required text says nothing of skipping", q: config.QuestionConfig{ID: "x", Type: config.QuestionText, Text: "Why *so*?", Required: true},
			want: []string{`Why \*so\*\?`, "Type your answer."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md := questionMarkdown(tt.q, 1, 5)
			for _, want := range tt.want {
				if !strings.Contains(md, want) {
					t.Errorf("%q lacks %q", md, want)
				}
			}
			if tt.q.Required && strings.Contains(md, "skip") {
				t.Errorf("a required question offers skipping: %q", md)
			}
		})
	}
}

func TestGuidedNote(t *testing.T) {
	questions := []config.QuestionConfig{qFeeling, qPain, qTemp, qTired, qOther}
	pain := care.Value{Kind: care.Pain, Quantity: care.Quantity{Value: 4, Unit: care.UnitScore}}
	answers := []*store.GuidedAnswer{
		{Question: 0, Answer: "Worse"},
		{Question: 1, Answer: "4", Value: &pain},
		{Question: 2, Skipped: true},
		{Question: 3, Answer: "6"},
		{Question: 4, Answer: "Coughing at night"},
	}
	if got, want := guidedNote(questions, answers), "Feeling: Worse; Tired: 6/10; Anything else: Coughing at night"; got != want {
		t.Fatalf("note = %q, want %q", got, want)
	}
	if got := displayAnswer(qTemp, answers[2]); got != "skipped" {
		t.Errorf("skipped answer shown as %q", got)
	}
	if got := guidedNote(questions, answers[1:3]); got != "" {
		t.Errorf("note of only readings and skips = %q, want empty", got)
	}
}

func TestGuidedSubcommands(t *testing.T) {
	p := New()
	for _, tt := range []struct{ line, want string }{
		{"checkin start", "checkin start"},
		{"checkin cancel", "checkin cancel"},
		{"check-in stop", "checkin cancel"},
		{"checkin bp=120/80", "checkin"},
	} {
		words := strings.Fields(tt.line)
		cmd, _ := p.lookup(words[0], words[1:])
		if cmd == nil || cmd.FullName() != tt.want {
			t.Errorf("%q runs %v, want %s", tt.line, cmd, tt.want)
		}
	}
	if cmdCheckInStart.Access != OwnPatientRoom || !cmdCheckInStart.PHI || !cmdCheckInCancel.PHI {
		t.Error("guided check-in commands must be PHI commands, start for the patient in their room")
	}
}
