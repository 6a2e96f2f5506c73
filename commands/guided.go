package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/config"
	"github.com/caseroom/caseroom/internal/safetext"
	"github.com/caseroom/caseroom/store"
)

// A guided check-in (/checkin start) asks the configured questionnaire one question at a time in the patient room.
// Choice and score questions are sent as MSC3381 polls; every question can also be answered by typing a plain
// message (no command prefix). Each answer is stored in the turn that received it, and the last one turns the
// answers into one check-in (source guided).

var (
	cmdCheckInStart = &Command{
		Name:        "start",
		Description: "Start a guided check-in: I ask a few questions one at a time, as polls where you can tap the answer.",
		Access:      OwnPatientRoom,
		PHI:         true,
		Run:         runGuidedStart,
	}
	cmdCheckInCancel = &Command{
		Name:        "cancel",
		Aliases:     []string{"stop"},
		Description: "Stop the guided check-in that is open; its answers are not recorded as a check-in.",
		Access:      CaseMember,
		PHI:         true,
		Run:         runGuidedCancel,
	}
)

var _ bot.PollResponseHandler = (*Processor)(nil)

// defaultGuidedTitle names a guided check-in whose questionnaire has no title.
const defaultGuidedTitle = "Guided check-in"

// MSC3381 poll content, unstable prefixes. PollStart is mautrix's; the text fallback is for clients without polls.
const pollKindDisclosed = "org.matrix.msc3381.poll.disclosed"

type pollStartContent struct {
	PollStart event.PollStart `json:"org.matrix.msc3381.poll.start"`
	Text      string          `json:"org.matrix.msc1767.text"`
	Body      string          `json:"body"`
	Mentions  *event.Mentions `json:"m.mentions,omitempty"`
}

type pollEndContent struct {
	RelatesTo event.RelatesTo `json:"m.relates_to"`
	PollEnd   struct{}        `json:"org.matrix.msc3381.poll.end"`
	Text      string          `json:"org.matrix.msc1767.text"`
	Body      string          `json:"body"`
}

// skipAnswer is what a patient types, and the poll answer ID they pick, to leave out an optional question.
const skipAnswer = "skip"

// vitalExamples are typed answers shown as examples for vital questions.
var vitalExamples = map[care.Kind]string{
	care.BloodPressure: "`142/91`", care.HeartRate: "`72`", care.Temperature: "`37.2` or `99.1F`", care.SpO2: "`97`",
	care.RespiratoryRate: "`16`", care.Weight: "`70.5` or `156lb`", care.Glucose: "`5.6` or `101mg/dL`", care.Pain: "`3`",
}

// questionnaireOf reads a session's questionnaire snapshot.
func questionnaireOf(s *store.GuidedSession) (*config.QuestionnaireConfig, error) {
	var qn config.QuestionnaireConfig
	if err := json.Unmarshal(s.Questionnaire, &qn); err != nil {
		return nil, fmt.Errorf("guided check-in %d has an unreadable questionnaire: %w", s.ID, err)
	}
	if qn.Title == "" {
		qn.Title = defaultGuidedTitle
	}
	return &qn, nil
}

func runGuidedStart(ctx context.Context, call *Call) error {
	if !requireOpen(call) {
		return nil
	}
	qn := call.Bot.Config.CheckIns.Questionnaire
	if len(qn.Questions) == 0 {
		call.Fail("refused:no-questionnaire", "⛔ Guided check-ins are not set up here (the configuration has no questions). "+
			"Check in with your values instead, e.g. `/checkin bp=120/80 hr=72 feeling better`.")
		return nil
	}
	open, err := call.Bot.Store.Guided.Open(ctx, call.Event.RoomID)
	if err != nil {
		return err
	}
	if open != nil {
		msg := "⛔ A guided check-in is already open here. Answer its question, or type `/checkin cancel` to stop it."
		if current, err := questionnaireOf(open); err == nil && open.Question < len(current.Questions) {
			msg += "\n\n" + questionMarkdown(current.Questions[open.Question], open.Question, len(current.Questions))
		}
		call.Fail("refused:guided-open", "%s", msg)
		return nil
	}
	if qn.Title == "" {
		qn.Title = defaultGuidedTitle
	}
	snapshot, err := json.Marshal(qn)
	if err != nil {
		return err
	}
	c := call.Room.Case
	session := &store.GuidedSession{
		CaseID: c.ID, RoomID: call.Event.RoomID, PatientID: call.Sender, StartEvent: call.Event.ID, Questionnaire: snapshot,
		PollCause: pollCause(qn.Questions[0], call.Event.ID), StartedAt: time.UnixMilli(call.Event.Timestamp),
	}
	call.Write(func(ctx context.Context) error {
		if err := call.Bot.Store.Guided.Start(ctx, session); err != nil {
			return err
		}
		call.Done(c.ID, "📝 **%s**: %d questions, one at a time. Tap an answer in a poll or type it here as a message. "+
			"Type `/checkin cancel` to stop.", safetext.Markdown(qn.Title), len(qn.Questions))
		askQuestion(call.Turn, call.Event.RoomID, qn.Questions, 0)
		return nil
	})
	return nil
}

func runGuidedCancel(ctx context.Context, call *Call) error {
	c := call.Room.Case
	room := call.Event.RoomID
	if call.Room.Kind == RoomCase {
		room = c.PatientRoomID
	}
	s, err := call.Bot.Store.Guided.Open(ctx, room)
	if err != nil {
		return err
	}
	if s == nil {
		call.Outcome = "nothing-open"
		call.Reply("No guided check-in is open, so there is nothing to stop.")
		return nil
	}
	qn, err := questionnaireOf(s)
	if err != nil {
		return err
	}
	pollEvt, err := currentPoll(ctx, call.Bot, s)
	if err != nil {
		return err
	}
	call.Write(func(ctx context.Context) error {
		if err := call.Bot.Store.Guided.Close(ctx, s, store.GuidedCancelled, 0, call.Event.ID); err != nil {
			return err
		}
		endPoll(call.Turn, room, pollEvt, "The guided check-in was stopped.")
		call.Done(c.ID, "Stopped the guided check-in after %d of %d questions; no check-in was recorded.", s.Question, len(qn.Questions))
		if room != call.Event.RoomID {
			call.Send(room, event.EventMessage, notice(fmt.Sprintf("Your guided check-in was stopped by %s; no check-in was recorded. "+
				"Type `/checkin start` to begin a new one.", format.SafeMarkdownCode(call.Sender.String()))))
		}
		return nil
	})
	return nil
}

// handleGuidedText takes a plain message (no command) as the answer to the open guided check-in of the room, when
// the patient of that check-in sent it; other messages are left alone.
func (p *Processor) handleGuidedText(ctx context.Context, turn *bot.Turn) error {
	content := turn.Event.Content.AsMessage()
	body := content.Body
	if content.RelatesTo.GetReplyTo() != "" {
		body = event.TrimReplyFallbackText(body)
	}
	s, err := turn.Bot.Store.Guided.Open(ctx, turn.Event.RoomID)
	if err != nil || s == nil || turn.Event.Sender != s.PatientID {
		return err
	}
	if refused, err := gateGuidedAnswer(ctx, turn, s); err != nil || refused {
		return err
	}
	return answerGuided(ctx, turn, s, body, false)
}

// gateGuidedAnswer does the gate's checks (gate.go) for an answer of a guided check-in (patient data): it arrived
// encrypted from a trusted device, the patient is still the case's patient, and the case is open. The server check
// is answerGuided's.
func gateGuidedAnswer(ctx context.Context, turn *bot.Turn, s *store.GuidedSession) (bool, error) {
	if refused, err := gateTransport(ctx, turn, "write:guided-answer", s.CaseID, true); err != nil || refused {
		return refused, err
	}
	b := turn.Bot
	isPatient, err := b.Store.Cases.IsPatientOf(ctx, s.CaseID, turn.Event.Sender)
	if err != nil {
		return false, err
	}
	if !isPatient {
		turn.Refuse("write:guided-answer", "refused:role", s.CaseID, "⛔ Only this case's patient can answer its guided check-in.")
		return true, nil
	}
	c, err := b.Store.Cases.ByID(ctx, s.CaseID)
	if err != nil {
		return false, err
	}
	if !c.Open() {
		turn.Refuse("write:guided-answer", "refused:closed", s.CaseID, fmt.Sprintf("⛔ Case #%d is closed; nothing was recorded.", c.ID))
		return true, nil
	}
	return false, nil
}

// HandlePollResponse takes a vote in the poll of the current guided check-in question as its answer.
func (p *Processor) HandlePollResponse(ctx context.Context, turn *bot.Turn) error {
	content, ok := turn.Event.Content.Parsed.(*event.PollResponseEventContent)
	if !ok || content.RelatesTo.EventID == "" {
		return nil
	}
	b, roomID := turn.Bot, turn.Event.RoomID
	cause, err := b.Store.Guided.PollCause(ctx, roomID, content.RelatesTo.EventID)
	if err != nil || cause == "" {
		return err // not a poll of the bot's
	}
	s, err := b.Store.Guided.Open(ctx, roomID)
	if err != nil {
		return err
	}
	if s == nil || s.PollCause != cause {
		turn.Outcome = "ignored:guided-old-poll"
		if s == nil || turn.Event.Sender == s.PatientID {
			turn.Send(roomID, event.EventMessage, notice("That poll belongs to a question that was already answered or to a "+
				"guided check-in that has ended, so your vote changes nothing."))
		}
		return nil
	}
	if turn.Event.Sender != s.PatientID {
		turn.Outcome = "ignored:guided-not-patient"
		return nil
	}
	if refused, err := gateGuidedAnswer(ctx, turn, s); err != nil || refused {
		return err
	}
	if len(content.Response.Answers) == 0 {
		turn.Outcome = "ignored:guided-vote-removed"
		return nil
	}
	if len(content.Response.Answers) > 1 {
		qn, err := questionnaireOf(s)
		if err != nil {
			return err
		}
		rejectAnswer(turn, s, qn, true, "pick one answer only")
		return nil
	}
	return answerGuided(ctx, turn, s, content.Response.Answers[0], true)
}

// answerGuided checks an answer to the session's current question and, when it is valid, stores it and asks the
// next question, or records the check-in after the last one. viaPoll says the answer is a poll answer ID.
func answerGuided(ctx context.Context, turn *bot.Turn, s *store.GuidedSession, raw string, viaPoll bool) error {
	b := turn.Bot
	sender := turn.Event.Sender
	if allowed, err := b.ServerAllowed(ctx, sender.Homeserver()); err != nil || !allowed {
		turn.Outcome = "ignored:server"
		return err
	}
	qn, err := questionnaireOf(s)
	if err != nil {
		return err
	}
	if s.Question >= len(qn.Questions) {
		return fmt.Errorf("guided check-in %d is at question %d of %d", s.ID, s.Question, len(qn.Questions))
	}
	c, err := b.Store.Cases.ByID(ctx, s.CaseID)
	if err != nil {
		return err
	}
	pollEvt, err := currentPoll(ctx, b, s)
	if err != nil {
		return err
	}
	if !c.Open() {
		turn.Outcome = "refused:closed"
		turn.Write(func(ctx context.Context) error {
			if err := b.Store.Guided.Close(ctx, s, store.GuidedCancelled, 0, turn.Event.ID); err != nil {
				return err
			}
			endPoll(turn, s.RoomID, pollEvt, "The guided check-in was stopped.")
			tell(turn, viaPoll, fmt.Sprintf("⛔ Case #%d is closed, so this guided check-in was stopped and nothing was recorded.", c.ID))
			return nil
		})
		return nil
	}
	q := qn.Questions[s.Question]
	answer, err := parseGuidedAnswer(q, raw, viaPoll, ranges(b))
	if err != nil {
		rejectAnswer(turn, s, qn, viaPoll, err.Error())
		return nil
	}
	previous, err := b.Store.Guided.Answers(ctx, s.ID)
	if err != nil {
		return err
	}
	record := &store.GuidedAnswer{Question: s.Question, QuestionID: q.ID, Answer: answer.text, Value: answer.value,
		Skipped: answer.skipped, EventID: turn.Event.ID, AnsweredAt: time.UnixMilli(turn.Event.Timestamp)}
	answers := append(previous, record)
	if note := guidedNote(qn.Questions, answers); utf8.RuneCountInString(note) > care.MaxNoteLength && q.Kind() == "" {
		rejectAnswer(turn, s, qn, viaPoll, fmt.Sprintf("your answers together are %d characters long, and at most %d fit "+
			"in one check-in; please answer more briefly", utf8.RuneCountInString(note), care.MaxNoteLength))
		return nil
	}
	next := s.Question + 1
	var nextCause id.EventID
	if next < len(qn.Questions) {
		nextCause = pollCause(qn.Questions[next], turn.Event.ID)
	}
	var limits []care.Threshold
	if next == len(qn.Questions) {
		if limits, err = thresholds(ctx, b, c.ID); err != nil {
			return err
		}
	}
	answered := s.Question
	turn.Write(func(ctx context.Context) error {
		if err := b.Store.Guided.Answer(ctx, s, record, next, nextCause); err != nil {
			return err
		}
		turn.Outcome = "guided:answered"
		endPoll(turn, s.RoomID, pollEvt, "The poll has ended. Answer: "+displayAnswer(q, record))
		if !viaPoll {
			turn.React("✅")
		}
		if err := b.Store.Audit.Add(ctx, &store.AuditEntry{Actor: sender, Action: "write:guided-answer", Outcome: "ok",
			CaseID: c.ID, RoomID: s.RoomID, EventID: turn.Event.ID, Detail: fmt.Sprintf("guided %d question %d", s.ID, answered+1)}); err != nil {
			return err
		}
		if next < len(qn.Questions) {
			askQuestion(turn, s.RoomID, qn.Questions, next)
			return nil
		}
		return finishGuided(ctx, turn, c, s, qn, answers, limits, viaPoll)
	})
	return nil
}

// finishGuided turns the answers into one check-in, inside the turn's transaction: it stores the check-in, closes
// the session, restates the answers to the patient and posts the summary to the case room.
func finishGuided(ctx context.Context, turn *bot.Turn, c *store.Case, s *store.GuidedSession, qn *config.QuestionnaireConfig,
	answers []*store.GuidedAnswer, limits []care.Threshold, viaPoll bool) error {
	b := turn.Bot
	checkIn := &care.CheckIn{Note: guidedNote(qn.Questions, answers)}
	for _, a := range answers {
		if a.Value != nil {
			checkIn.Values = append(checkIn.Values, *a.Value)
		}
	}
	if len(checkIn.Values) == 0 && checkIn.Note == "" {
		turn.Outcome = "guided:all-skipped"
		if err := b.Store.Guided.Close(ctx, s, store.GuidedCompleted, 0, turn.Event.ID); err != nil {
			return err
		}
		tell(turn, viaPoll, "You skipped every question, so no check-in was recorded. Type `/checkin start` to try again.")
		return nil
	}
	if err := checkIn.Validate(ranges(b)); err != nil {
		// Only when the configured ranges changed while the check-in was open: the answers were checked one by one.
		turn.Outcome = "guided:invalid"
		if err := b.Store.Guided.Close(ctx, s, store.GuidedCancelled, 0, turn.Event.ID); err != nil {
			return err
		}
		var sb strings.Builder
		sb.WriteString("⛔ Nothing was recorded, the answers no longer pass the checks:\n\n")
		for _, fe := range care.FieldErrors(err) {
			fmt.Fprintf(&sb, "* %s\n", safetext.Markdown(fe.Error()))
		}
		sb.WriteString("\nType `/checkin start` to begin again.")
		tell(turn, viaPoll, sb.String())
		return nil
	}
	// The last answer's time, clamped like a typed check-in's (the sender's server sets origin_server_ts).
	effective, claimed, received := turn.EventTimes()
	record := &store.CheckIn{
		CaseID: c.ID, EventID: s.StartEvent, RoomID: s.RoomID, PatientID: s.PatientID, RecordedBy: s.PatientID,
		Source: store.SourceGuided, EffectiveAt: effective, ClaimedAt: claimed, ReceivedAt: received,
		Values: checkIn.Values, Note: checkIn.Note,
	}
	call := &Call{Turn: turn, Command: cmdCheckInStart, Sender: s.PatientID}
	if err := saveCheckIn(ctx, call, c, record, limits, "📝 Guided check-in"); err != nil {
		return err
	}
	if err := b.Store.Guided.Close(ctx, s, store.GuidedCompleted, record.ID, turn.Event.ID); err != nil {
		return err
	}
	// The answers as answers, besides the check-in's readings: one QuestionnaireResponse (after the check-in, in the
	// same order of the case), for a case linked to a FHIR Patient.
	if fileableCase(c) {
		if err := b.Store.EHR.Add(ctx, &store.OutboxItem{
			Kind: store.OutboxQuestionnaireResponse, RecordID: s.ID, Version: 1, CaseID: c.ID, OrderKey: fmt.Sprintf("case:%d", c.ID),
			RoomID: s.RoomID, SourceEvent: s.StartEvent,
		}); err != nil {
			return err
		}
	}
	turn.Outcome = "guided:completed"
	var sb strings.Builder
	fmt.Fprintf(&sb, "✅ Recorded your %s at %s:\n\n", safetext.Markdown(qn.Title), call.When(record.EffectiveAt))
	for _, a := range answers {
		q := qn.Questions[a.Question]
		fmt.Fprintf(&sb, "* %s: %s\n", safetext.Markdown(q.Label()), safetext.Markdown(displayAnswer(q, a)))
	}
	sb.WriteString("\nYour care team can see it. Thank you!")
	tell(turn, viaPoll, sb.String())
	return nil
}

// rejectAnswer answers an invalid answer: the question, why the answer was not taken, and the question again.
func rejectAnswer(turn *bot.Turn, s *store.GuidedSession, qn *config.QuestionnaireConfig, viaPoll bool, why string) {
	turn.Outcome = "guided:invalid"
	n := len(qn.Questions)
	tell(turn, viaPoll, fmt.Sprintf("⛔ Your answer to question %d of %d was not stored: %s.\n\nPlease answer again. %s",
		s.Question+1, n, why, questionMarkdown(qn.Questions[s.Question], s.Question, n)))
	turn.Write(func(ctx context.Context) error {
		return turn.Bot.Store.Audit.Add(ctx, &store.AuditEntry{Actor: turn.Event.Sender, Action: "write:guided-answer",
			Outcome: "invalid", CaseID: s.CaseID, RoomID: s.RoomID, EventID: turn.Event.ID,
			Detail: fmt.Sprintf("guided %d question %d", s.ID, s.Question+1)})
	})
}

// tell answers a typed message with a reply, and a poll vote with a plain notice (a reply to a vote would point
// at an event clients do not show).
func tell(turn *bot.Turn, viaPoll bool, markdown string) {
	if viaPoll {
		turn.Send(turn.Event.RoomID, event.EventMessage, notice(markdown))
		return
	}
	turn.Reply(markdown)
}

// pollCause is the event that queues question q's poll (the event being handled), or "" when q is not a poll.
func pollCause(q config.QuestionConfig, evtID id.EventID) id.EventID {
	if q.Poll() {
		return evtID
	}
	return ""
}

// currentPoll returns the sent poll of the session's current question, or "" when there is none.
func currentPoll(ctx context.Context, b *bot.Bot, s *store.GuidedSession) (id.EventID, error) {
	if s.PollCause == "" {
		return "", nil
	}
	return b.Store.Guided.PollEvent(ctx, s.RoomID, s.PollCause)
}

// askQuestion queues question i: a poll for choice and score questions, a notice otherwise.
func askQuestion(turn *bot.Turn, roomID id.RoomID, questions []config.QuestionConfig, i int) {
	q := questions[i]
	if q.Poll() {
		turn.Send(roomID, event.EventUnstablePollStart, questionPoll(q, i, len(questions)))
		return
	}
	turn.Send(roomID, event.EventMessage, notice(questionMarkdown(q, i, len(questions))))
}

// endPoll queues the end of a poll, when there is one.
func endPoll(turn *bot.Turn, roomID id.RoomID, pollEvt id.EventID, text string) {
	if pollEvt == "" {
		return
	}
	turn.Send(roomID, event.EventUnstablePollEnd, pollEnd(pollEvt, text))
}

// pollEnd is the MSC3381 end of a poll, with a text fallback.
func pollEnd(pollEvt id.EventID, text string) *pollEndContent {
	return &pollEndContent{RelatesTo: event.RelatesTo{Type: event.RelReference, EventID: pollEvt}, Text: text, Body: text}
}

// pollOption is one answer of a question's poll: its ID (what a vote names) and its text.
type pollOption struct{ id, text string }

func pollOptions(q config.QuestionConfig) []pollOption {
	var opts []pollOption
	switch q.Type {
	case config.QuestionChoice:
		for i, choice := range q.Choices {
			opts = append(opts, pollOption{strconv.Itoa(i + 1), choice})
		}
	case config.QuestionScore:
		for n := 0; n <= 10; n++ {
			opts = append(opts, pollOption{strconv.Itoa(n), strconv.Itoa(n)})
		}
	}
	if !q.Required && len(opts) > 0 {
		opts = append(opts, pollOption{skipAnswer, "Skip this question"})
	}
	return opts
}

// questionPoll is the MSC3381 poll of a choice or score question, with a text fallback that lists the options.
func questionPoll(q config.QuestionConfig, i, total int) *pollStartContent {
	title := fmt.Sprintf("Question %d of %d: %s", i+1, total, q.Text)
	start := event.PollStart{Kind: pollKindDisclosed, MaxSelections: 1, Question: event.MSC1767Message{Text: title}}
	var fallback strings.Builder
	fallback.WriteString(title + "\n")
	for _, opt := range pollOptions(q) {
		start.Answers = append(start.Answers, event.PollOption{ID: opt.id, MSC1767Message: event.MSC1767Message{Text: opt.text}})
		if q.Type == config.QuestionChoice || opt.id == skipAnswer {
			fmt.Fprintf(&fallback, "%s. %s\n", opt.id, opt.text)
		}
	}
	if q.Type == config.QuestionScore {
		fallback.WriteString("Answer with a whole number from 0 to 10 (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10).\n")
	}
	fallback.WriteString("Tap an answer in the poll, or type the number or the text of your answer.")
	return &pollStartContent{PollStart: start, Text: fallback.String(), Body: fallback.String(), Mentions: &event.Mentions{}}
}

// questionMarkdown asks question i as a message: for typed questions, and to ask any question again.
func questionMarkdown(q config.QuestionConfig, i, total int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "**Question %d of %d:** %s\n\n", i+1, total, safetext.Markdown(q.Text))
	switch q.Type {
	case config.QuestionChoice:
		sb.WriteString("Tap an answer in the poll above, or type its number or text:\n\n")
		for n, choice := range q.Choices {
			fmt.Fprintf(&sb, "%d. %s\n", n+1, safetext.Markdown(choice))
		}
		sb.WriteString("\n")
	case config.QuestionScore:
		sb.WriteString("Tap a number in the poll above, or type a whole number from 0 to 10.")
	case config.QuestionVital:
		sb.WriteString("Type the value")
		if example, ok := vitalExamples[care.Kind(q.Vital)]; ok {
			sb.WriteString(", e.g. " + example)
		}
		sb.WriteString(".")
	default:
		sb.WriteString("Type your answer.")
	}
	if !q.Required {
		sb.WriteString(" Type `skip` to leave this question out.")
	}
	return strings.TrimSpace(sb.String())
}

// guidedAnswerValue is a checked answer: its text as shown back, the reading it stands for (vital questions and
// pain scores), or that it was skipped.
type guidedAnswerValue struct {
	text    string
	value   *care.Value
	skipped bool
}

// answerError says why an answer was refused, naming the value and what is allowed. Its message is Markdown.
type answerError string

func (e answerError) Error() string { return string(e) }

// parseGuidedAnswer checks an answer to q: a typed message, or with viaPoll a poll answer ID.
func parseGuidedAnswer(q config.QuestionConfig, raw string, viaPoll bool, ranges care.Ranges) (guidedAnswerValue, error) {
	raw = strings.TrimSpace(raw)
	if q.Type != config.QuestionText {
		raw = strings.Join(strings.Fields(raw), " ")
	}
	if raw == "" {
		return guidedAnswerValue{}, answerError("the answer is empty")
	}
	shown := format.SafeMarkdownCode(truncate(raw, 40))
	if strings.EqualFold(raw, skipAnswer) {
		if q.Required {
			return guidedAnswerValue{}, answerError("this question cannot be skipped")
		}
		return guidedAnswerValue{skipped: true}, nil
	}
	switch q.Type {
	case config.QuestionChoice:
		if n, err := strconv.Atoi(strings.TrimRight(raw, ".)")); err == nil {
			if n >= 1 && n <= len(q.Choices) {
				return guidedAnswerValue{text: q.Choices[n-1]}, nil
			}
			return guidedAnswerValue{}, answerError(fmt.Sprintf("there is no option %s; the options are 1 to %d", shown, len(q.Choices)))
		}
		if !viaPoll {
			typed := strings.ToLower(strings.TrimRight(raw, ".!"))
			for _, choice := range q.Choices {
				if strings.ToLower(strings.Join(strings.Fields(choice), " ")) == typed {
					return guidedAnswerValue{text: choice}, nil
				}
			}
		}
		return guidedAnswerValue{}, answerError(fmt.Sprintf("%s is not one of the options; answer with a number from 1 to %d "+
			"or the text of an option (%s)", shown, len(q.Choices), safetext.Markdown(strings.Join(q.Choices, ", "))))
	case config.QuestionScore:
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimRight(raw, "."), "/10"))
		if err != nil || n < 0 || n > 10 {
			return guidedAnswerValue{}, answerError(fmt.Sprintf("%s is not a score; answer with a whole number from 0 to 10", shown))
		}
		answer := guidedAnswerValue{text: strconv.Itoa(n)}
		if kind := q.Kind(); kind != "" {
			v, err := parseVital(kind, answer.text, ranges)
			if err != nil {
				return guidedAnswerValue{}, answerError(fmt.Sprintf("%s: %s", shown, safetext.Markdown(err.Error())))
			}
			answer.value = &v
		}
		return answer, nil
	case config.QuestionVital:
		if viaPoll {
			return guidedAnswerValue{}, answerError("this question is answered by typing the value")
		}
		kind := q.Kind()
		v, err := parseVital(kind, raw, ranges)
		if err != nil {
			return guidedAnswerValue{}, answerError(fmt.Sprintf("%s: %s", shown, safetext.Markdown(err.Error())))
		}
		return guidedAnswerValue{text: strings.TrimPrefix(v.Format(), kind.Label()+" "), value: &v}, nil
	default:
		if viaPoll {
			return guidedAnswerValue{}, answerError("this question is answered by typing")
		}
		if err := (&care.CheckIn{Note: raw}).Validate(ranges); err != nil {
			var why []string
			for _, fe := range care.FieldErrors(err) {
				why = append(why, safetext.Markdown(strings.TrimPrefix(fe.Error(), "note: ")))
			}
			return guidedAnswerValue{}, answerError("the answer " + strings.Join(why, "; "))
		}
		return guidedAnswerValue{text: raw}, nil
	}
}

// parseVital reads one reading of kind as typed, e.g. "38.4", "101.2 F", "temp=38.4", with care's parser and ranges.
func parseVital(kind care.Kind, raw string, ranges care.Ranges) (care.Value, error) {
	text := strings.Join(strings.Fields(raw), "")
	if key, rest, ok := strings.Cut(text, "="); ok {
		if k, known := care.LookupKind(key); known && k == kind {
			text = rest
		}
	} else if key, rest, ok := strings.Cut(text, ":"); ok {
		if k, known := care.LookupKind(key); known && k == kind {
			text = rest
		}
	}
	parsed, err := care.ParseCheckIn(string(kind)+"="+text, ranges)
	if err != nil {
		var msgs []string
		for _, fe := range care.FieldErrors(err) {
			msgs = append(msgs, fe.Error())
		}
		if len(msgs) == 0 {
			msgs = append(msgs, err.Error())
		}
		return care.Value{}, fmt.Errorf("%s", strings.Join(msgs, "; "))
	}
	if len(parsed.Values) != 1 || parsed.Note != "" {
		return care.Value{}, fmt.Errorf("expected one %s reading", kind.Title())
	}
	return parsed.Values[0], nil
}

// guidedNote is the check-in note made of the answers that are not readings: "Feeling: Worse; Anything else: ...".
func guidedNote(questions []config.QuestionConfig, answers []*store.GuidedAnswer) string {
	var parts []string
	for _, a := range answers {
		if a.Skipped || a.Value != nil || a.Question >= len(questions) {
			continue
		}
		q := questions[a.Question]
		parts = append(parts, q.Label()+": "+displayAnswer(q, a))
	}
	return strings.Join(parts, "; ")
}

// displayAnswer shows an answer to the patient and the care team.
func displayAnswer(q config.QuestionConfig, a *store.GuidedAnswer) string {
	switch {
	case a.Skipped:
		return "skipped"
	case q.Type == config.QuestionScore:
		return a.Answer + "/10"
	}
	return a.Answer
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}
