package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/care"
)

// Statuses of a guided check-in.
const (
	GuidedOpen      = "open"
	GuidedCompleted = "completed"
	GuidedCancelled = "cancelled"
)

// ErrGuidedChanged means a guided check-in was no longer open at the question an answer was meant for.
var ErrGuidedChanged = errors.New("guided check-in is no longer at that question")

// GuidedSession is a guided check-in: the questions of a questionnaire asked one at a time in a patient room.
type GuidedSession struct {
	ID         int64
	CaseID     int64
	RoomID     id.RoomID
	PatientID  id.UserID
	StartEvent id.EventID // the /checkin start command
	// Questionnaire is the questionnaire (JSON) as it was when the session started.
	Questionnaire json.RawMessage
	Question      int        // index of the question being asked
	PollCause     id.EventID // the event whose turn queued the current question's poll; "" when it is not a poll
	Status        string
	CheckInID     int64 // the check-in the answers became, once completed (0 when every question was skipped)
	StartedAt     time.Time
	ClosedAt      time.Time
	ClosedEvent   id.EventID
}

// GuidedAnswer is the answer to one question of a guided check-in.
type GuidedAnswer struct {
	SessionID  int64
	Question   int    // index in the questionnaire
	QuestionID string // the question's configured id
	Answer     string // as shown back to the patient; "" when skipped
	Value      *care.Value
	Skipped    bool
	EventID    id.EventID // the typed message or poll response
	AnsweredAt time.Time
}

// GuidedQuery reads and writes guided check-ins and their answers.
type GuidedQuery struct {
	db *dbutil.Database
}

const (
	guidedSessionColumns = `id, case_id, room_id, patient_id, start_event, questionnaire_json, question, poll_cause, status,
		COALESCE(checkin_id, 0), started_at, COALESCE(closed_at, 0), COALESCE(closed_event, '')`
	insertGuidedSessionQuery = `INSERT INTO guided_sessions (case_id, room_id, patient_id, start_event, questionnaire_json,
		question, poll_cause, status, started_at) VALUES ($1, $2, $3, $4, $5, 0, $6, 'open', $7)`
	openGuidedSessionQuery  = `SELECT ` + guidedSessionColumns + ` FROM guided_sessions WHERE room_id = $1 AND status = 'open'`
	guidedSessionByIDQuery  = `SELECT ` + guidedSessionColumns + ` FROM guided_sessions WHERE id = $1`
	insertGuidedAnswerQuery = `INSERT INTO guided_answers (session_id, question, question_id, answer, value_json, skipped,
		event_id, answered_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
	advanceGuidedSessionQuery = `UPDATE guided_sessions SET question = $3, poll_cause = $4
		WHERE id = $1 AND question = $2 AND status = 'open'`
	closeGuidedSessionQuery = `UPDATE guided_sessions SET status = $2, checkin_id = $3, closed_at = $4, closed_event = $5
		WHERE id = $1 AND status = 'open'`
	guidedAnswersQuery = `SELECT session_id, question, question_id, answer, COALESCE(value_json, ''), skipped, event_id,
		answered_at FROM guided_answers WHERE session_id = $1 ORDER BY question`
)

// The poll queries name the event type literally, so that the partial indexes on outgoing (07-guided.sql) apply.
var (
	pollCauseQuery = `SELECT COALESCE(cause_event_id, '') FROM outgoing
		WHERE sent_event_id = $1 AND room_id = $2 AND event_type = '` + event.EventUnstablePollStart.Type + `'`
	pollEventQuery = `SELECT COALESCE(sent_event_id, '') FROM outgoing
		WHERE cause_event_id = $1 AND room_id = $2 AND event_type = '` + event.EventUnstablePollStart.Type + `'
		ORDER BY seq DESC LIMIT 1`
)

func scanGuidedSession(row dbutil.Scannable) (*GuidedSession, error) {
	var s GuidedSession
	var questionnaire string
	var started, closed int64
	err := row.Scan(&s.ID, &s.CaseID, &s.RoomID, &s.PatientID, &s.StartEvent, &questionnaire, &s.Question, &s.PollCause,
		&s.Status, &s.CheckInID, &started, &closed, &s.ClosedEvent)
	if err != nil {
		return nil, err
	}
	s.Questionnaire = json.RawMessage(questionnaire)
	s.StartedAt = time.UnixMilli(started).UTC()
	if closed != 0 {
		s.ClosedAt = time.UnixMilli(closed).UTC()
	}
	return &s, nil
}

// Start stores a new open session at its first question and sets its ID. A room holds at most one open session:
// starting a second one fails. Call it inside the event's transaction.
func (q *GuidedQuery) Start(ctx context.Context, s *GuidedSession) error {
	if s.StartedAt.IsZero() {
		s.StartedAt = time.Now()
	}
	args := []any{s.CaseID, s.RoomID, s.PatientID, s.StartEvent, string(s.Questionnaire), s.PollCause, s.StartedAt.UnixMilli()}
	err := q.db.QueryRow(ctx, insertGuidedSessionQuery+" RETURNING id", args...).Scan(&s.ID)
	if err != nil {
		return fmt.Errorf("failed to store guided check-in: %w", err)
	}
	s.Question, s.Status = 0, GuidedOpen
	return nil
}

// Open returns the room's open session, or nil.
func (q *GuidedQuery) Open(ctx context.Context, roomID id.RoomID) (*GuidedSession, error) {
	s, err := scanGuidedSession(q.db.QueryRow(ctx, openGuidedSessionQuery, roomID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to load guided check-in of %s: %w", roomID, err)
	}
	return s, nil
}

// ByID returns a session, or nil.
func (q *GuidedQuery) ByID(ctx context.Context, sessionID int64) (*GuidedSession, error) {
	s, err := scanGuidedSession(q.db.QueryRow(ctx, guidedSessionByIDQuery, sessionID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return s, err
}

// Answer stores the answer to the session's current question and moves the session to question next, whose poll
// (if it is one) is queued by the event pollCause. It fails with ErrGuidedChanged when the session is closed or at
// another question. Call it inside the event's transaction.
func (q *GuidedQuery) Answer(ctx context.Context, s *GuidedSession, a *GuidedAnswer, next int, pollCause id.EventID) error {
	if a.Question != s.Question {
		return fmt.Errorf("%w: answer to question %d, session at %d", ErrGuidedChanged, a.Question, s.Question)
	}
	var value any
	if a.Value != nil {
		data, err := json.Marshal(a.Value)
		if err != nil {
			return err
		}
		value = string(data)
	}
	if a.AnsweredAt.IsZero() {
		a.AnsweredAt = time.Now()
	}
	a.SessionID = s.ID
	res, err := q.db.Exec(ctx, advanceGuidedSessionQuery, s.ID, s.Question, next, pollCause)
	if err != nil {
		return fmt.Errorf("failed to advance guided check-in %d: %w", s.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return fmt.Errorf("%w: session %d, question %d", ErrGuidedChanged, s.ID, s.Question)
	}
	_, err = q.db.Exec(ctx, insertGuidedAnswerQuery, s.ID, a.Question, a.QuestionID, a.Answer, value, a.Skipped, a.EventID,
		a.AnsweredAt.UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to store answer to guided check-in %d: %w", s.ID, err)
	}
	s.Question, s.PollCause = next, pollCause
	return nil
}

// Answers lists a session's answers in question order.
func (q *GuidedQuery) Answers(ctx context.Context, sessionID int64) ([]*GuidedAnswer, error) {
	rows, err := q.db.Query(ctx, guidedAnswersQuery, sessionID)
	return dbutil.NewRowIterWithError(rows, scanGuidedAnswer, err).AsList()
}

func scanGuidedAnswer(row dbutil.Scannable) (*GuidedAnswer, error) {
	var a GuidedAnswer
	var value string
	var answered int64
	if err := row.Scan(&a.SessionID, &a.Question, &a.QuestionID, &a.Answer, &value, &a.Skipped, &a.EventID, &answered); err != nil {
		return nil, err
	}
	if value != "" {
		a.Value = &care.Value{}
		if err := json.Unmarshal([]byte(value), a.Value); err != nil {
			return nil, fmt.Errorf("answer %d of guided check-in %d has an unreadable value: %w", a.Question, a.SessionID, err)
		}
	}
	a.AnsweredAt = time.UnixMilli(answered).UTC()
	return &a, nil
}

// Close ends an open session as completed (with the check-in its answers became, or 0) or cancelled. It fails with
// ErrGuidedChanged when the session is not open. Call it inside the event's transaction.
func (q *GuidedQuery) Close(ctx context.Context, s *GuidedSession, status string, checkInID int64, evtID id.EventID) error {
	if status != GuidedCompleted && status != GuidedCancelled {
		return fmt.Errorf("a guided check-in cannot be closed as %q", status)
	}
	var checkIn any
	if checkInID != 0 {
		checkIn = checkInID
	}
	now := time.Now()
	res, err := q.db.Exec(ctx, closeGuidedSessionQuery, s.ID, status, checkIn, now.UnixMilli(), evtID)
	if err != nil {
		return fmt.Errorf("failed to close guided check-in %d: %w", s.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return fmt.Errorf("%w: session %d is not open", ErrGuidedChanged, s.ID)
	}
	s.Status, s.CheckInID, s.ClosedAt, s.ClosedEvent, s.PollCause = status, checkInID, now, evtID, ""
	return nil
}

// PollCause returns the event whose turn queued the poll that the bot sent as pollEvent in a room, or "" when
// pollEvent is not a poll the bot sent there.
func (q *GuidedQuery) PollCause(ctx context.Context, roomID id.RoomID, pollEvent id.EventID) (id.EventID, error) {
	var cause id.EventID
	err := q.db.QueryRow(ctx, pollCauseQuery, pollEvent, roomID).Scan(&cause)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return cause, err
}

// PollEvent returns the event ID of the poll queued by the turn of cause in a room, or "" when there is none or it
// has not been sent (yet).
func (q *GuidedQuery) PollEvent(ctx context.Context, roomID id.RoomID, cause id.EventID) (id.EventID, error) {
	var evtID id.EventID
	err := q.db.QueryRow(ctx, pollEventQuery, cause, roomID).Scan(&evtID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return evtID, err
}
