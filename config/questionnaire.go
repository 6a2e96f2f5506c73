package config

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/caseroom/caseroom/care"
)

// Question types of a guided check-in (checkins.questionnaire.questions[].type).
const (
	QuestionVital  = "vital"  // a reading of a vital (vital names which), typed
	QuestionChoice = "choice" // one of the choices, asked as a poll
	QuestionScore  = "score"  // a whole number from 0 to 10, asked as a poll
	QuestionText   = "text"   // free text, typed
)

// Limits of a questionnaire.
const (
	MaxQuestions          = 30
	MaxQuestionLength     = 500 // characters of a question's text
	MaxChoices            = 20  // MSC3381 polls have at most 20 answers, an optional question's Skip included
	MaxChoiceLength       = 100 // characters of one choice
	MaxQuestionnaireTitle = 100
)

// QuestionnaireConfig is checkins.questionnaire: the questions a guided check-in (/checkin start) asks, one at a
// time. No questions means guided check-ins are off.
type QuestionnaireConfig struct {
	Title     string           `yaml:"title" json:"title"`
	Questions []QuestionConfig `yaml:"questions" json:"questions"`
}

// QuestionConfig is one question of the questionnaire. Its JSON form is kept with each guided check-in, so that a
// check-in in progress keeps its questions when the configuration changes.
type QuestionConfig struct {
	// ID is a short name (lowercase a-z, 0-9, _), unique in the questionnaire; it labels the answer in the note.
	ID   string `yaml:"id" json:"id"`
	Text string `yaml:"text" json:"text"`
	// Type is QuestionVital, QuestionChoice, QuestionScore or QuestionText.
	Type string `yaml:"type" json:"type"`
	// Vital is the check-in key of the reading (type vital), or "pain" for a score stored as the pain vital.
	Vital   string   `yaml:"vital,omitempty" json:"vital,omitempty"`
	Choices []string `yaml:"choices,omitempty" json:"choices,omitempty"`
	// LOINC is the question's LOINC code, kept for the FHIR QuestionnaireResponse. Optional.
	LOINC    string `yaml:"loinc,omitempty" json:"loinc,omitempty"`
	Required bool   `yaml:"required" json:"required"`
}

// Poll reports whether the question is asked as a poll (choice and score questions).
func (q QuestionConfig) Poll() bool {
	return q.Type == QuestionChoice || q.Type == QuestionScore
}

// Kind is the check-in kind the answer is stored as, or "" when it goes into the note.
func (q QuestionConfig) Kind() care.Kind {
	if q.Type == QuestionVital || (q.Type == QuestionScore && q.Vital != "") {
		return care.Kind(q.Vital)
	}
	return ""
}

// Label is how the answer is named in a check-in's note: the ID with "_" as spaces, capitalised ("anything_else"
// becomes "Anything else").
func (q QuestionConfig) Label() string {
	label := strings.ReplaceAll(q.ID, "_", " ")
	r, size := utf8.DecodeRuneInString(label)
	return string(unicode.ToUpper(r)) + label[size:]
}

var (
	questionIDRegex = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)
	loincRegex      = regexp.MustCompile(`^[0-9]{1,7}-[0-9]$`)
)

// validateQuestionnaire checks checkins.questionnaire; every problem is named by its key.
func (c *Config) validateQuestionnaire(p *problems) {
	qn := c.CheckIns.Questionnaire
	const base = "checkins.questionnaire"
	if n := utf8.RuneCountInString(qn.Title); n > MaxQuestionnaireTitle || !printable(qn.Title, false) {
		p.got(base+".title", fmt.Sprintf("must be one line of at most %d characters", MaxQuestionnaireTitle), qn.Title)
	}
	if len(qn.Questions) > MaxQuestions {
		p.got(base+".questions", fmt.Sprintf("must hold at most %d questions", MaxQuestions), strconv.Itoa(len(qn.Questions))+" questions")
	}
	ids := make(map[string]int)
	vitals := make(map[string]int)
	for i, q := range qn.Questions {
		key := fmt.Sprintf("%s.questions[%d]", base, i)
		switch {
		case !questionIDRegex.MatchString(q.ID):
			p.got(key+".id", "must be 1 to 32 characters of lowercase a-z, 0-9 and _, starting with a letter", q.ID)
		case ids[q.ID] > 0:
			p.got(key+".id", fmt.Sprintf("must be unique, questions[%d] has it too", ids[q.ID]-1), q.ID)
		default:
			ids[q.ID] = i + 1
		}
		switch n := utf8.RuneCountInString(strings.TrimSpace(q.Text)); {
		case n == 0:
			p.got(key+".text", "must not be empty", q.Text)
		case n > MaxQuestionLength:
			p.got(key+".text", fmt.Sprintf("must be at most %d characters", MaxQuestionLength), fmt.Sprintf("%d characters", n))
		case !printable(q.Text, true):
			p.got(key+".text", "must be text without control characters (line breaks are fine)", q.Text)
		}
		switch q.Type {
		case QuestionVital:
			if !care.Kind(q.Vital).Valid() {
				p.got(key+".vital", "must be the check-in key of a vital for type vital: "+vitalKeys(), q.Vital)
			}
		case QuestionScore:
			if q.Vital != "" && care.Kind(q.Vital) != care.Pain {
				p.got(key+".vital", "must be empty or pain for type score (a 0-10 score can only be stored as the pain vital)", q.Vital)
			}
		case QuestionChoice, QuestionText:
			if q.Vital != "" {
				p.got(key+".vital", "must be empty for type "+q.Type+" (only vital and score questions are stored as vitals)", q.Vital)
			}
		default:
			p.got(key+".type", "must be vital, choice, score or text", q.Type)
		}
		if kind := q.Kind(); kind.Valid() {
			if first, dup := vitals[q.Vital]; dup {
				p.got(key+".vital", fmt.Sprintf("must be asked once, questions[%d] asks it too", first-1), q.Vital)
			} else {
				vitals[q.Vital] = i + 1
			}
		}
		validateChoices(p, key, q)
		if q.LOINC != "" {
			switch kind := q.Kind(); {
			case !loincRegex.MatchString(q.LOINC) || !loincCheckDigitOK(q.LOINC):
				p.got(key+".loinc", "must be a LOINC code such as 72514-3 (digits, a dash and the right check digit)", q.LOINC)
			case kind.Valid() && !slices.Contains(kind.LOINC(), q.LOINC):
				p.got(key+".loinc", fmt.Sprintf("must be a code of the vital %s (%s) or empty", kind, strings.Join(kind.LOINC(), ", ")), q.LOINC)
			}
		}
	}
}

func validateChoices(p *problems, key string, q QuestionConfig) {
	if q.Type != QuestionChoice {
		if len(q.Choices) > 0 && (q.Type == QuestionVital || q.Type == QuestionScore || q.Type == QuestionText) {
			p.got(key+".choices", "must be empty for type "+q.Type, strings.Join(q.Choices, ", "))
		}
		return
	}
	maxChoices, why := MaxChoices, ""
	if !q.Required {
		maxChoices, why = MaxChoices-1, " when required is false (the poll adds a Skip answer)"
	}
	if len(q.Choices) < 2 || len(q.Choices) > maxChoices {
		p.got(key+".choices", fmt.Sprintf("must hold 2 to %d choices for type choice%s", maxChoices, why), strconv.Itoa(len(q.Choices))+" choices")
	}
	seen := make(map[string]int)
	for j, choice := range q.Choices {
		ckey := fmt.Sprintf("%s.choices[%d]", key, j)
		norm := strings.ToLower(strings.Join(strings.Fields(choice), " "))
		_, numErr := strconv.Atoi(norm)
		switch n := utf8.RuneCountInString(norm); {
		case n == 0 || n > MaxChoiceLength || !printable(choice, false):
			p.got(ckey, fmt.Sprintf("must be one line of 1 to %d characters", MaxChoiceLength), choice)
		case numErr == nil:
			p.got(ckey, "must not be a bare number (a typed number picks the option with that number)", choice)
		case norm == "skip":
			p.got(ckey, `must not be "skip" (typing skip leaves out an optional question)`, choice)
		case seen[norm] > 0:
			p.got(ckey, fmt.Sprintf("must differ from choices[%d]", seen[norm]-1), choice)
		default:
			seen[norm] = j + 1
		}
	}
}

// loincCheckDigitOK checks a LOINC code's check digit (mod 10, as LOINC computes it: Luhn's algorithm).
func loincCheckDigitOK(code string) bool {
	digits, check, _ := strings.Cut(code, "-")
	sum := 0
	for i := range len(digits) {
		d := int(digits[len(digits)-1-i] - '0')
		if i%2 == 0 {
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return strconv.Itoa((10-sum%10)%10) == check
}

// printable reports whether s has no control characters (line breaks allowed when multiline).
func printable(s string, multiline bool) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\r' || r == '\t')) {
			return false
		}
	}
	return true
}

func vitalKeys() string {
	var keys []string
	for _, k := range care.Kinds() {
		keys = append(keys, string(k))
	}
	return strings.Join(keys, ", ")
}
