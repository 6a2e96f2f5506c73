package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// Outcomes of a reminder prompt.
const (
	PromptAnswered  = "answered"  // a check-in followed within the grace period
	PromptMissed    = "missed"    // none did; the care team was told
	PromptCancelled = "cancelled" // the reminder was stopped or the case closed before the grace period ended
)

// Reminder prompts the patient of a case to check in on a schedule (care.Schedule, stored as its String()).
type Reminder struct {
	ID           int64
	CaseID       int64
	Number       int // per case, from 1
	Schedule     string
	NextAt       time.Time
	CreatedBy    id.UserID
	CreatedEvent id.EventID
	CreatedAt    time.Time
	StoppedBy    id.UserID
	StoppedAt    time.Time // zero while active
}

// ReminderPrompt is one prompt sent for a reminder.
type ReminderPrompt struct {
	ID         int64
	ReminderID int64
	CaseID     int64
	DueAt      time.Time // the occurrence the prompt is for
	SentAt     time.Time // when it was queued: later than DueAt after downtime
	// AfterCheckInID is the newest check-in of the case when the prompt was queued: a newer one answers it.
	AfterCheckInID int64
	CheckAt        time.Time // when to look for the answer
	CheckedAt      time.Time
	Outcome        string
}

// ReminderQuery reads and writes reminders and their prompts.
type ReminderQuery struct {
	db *dbutil.Database
}

const (
	reminderColumns = `id, case_id, number, schedule, next_at, created_by, created_event, created_at,
		COALESCE(stopped_by, ''), COALESCE(stopped_at, 0)`
	insertReminderQuery = `INSERT INTO reminders (case_id, number, schedule, next_at, created_by, created_event, created_at)
		VALUES ($1, (SELECT COALESCE(MAX(number), 0) + 1 FROM reminders WHERE case_id = $1), $2, $3, $4, $5, $6)`
	promptColumns = `id, reminder_id, case_id, due_at, sent_at, after_checkin_id, check_at, COALESCE(checked_at, 0),
		COALESCE(outcome, '')`
)

func scanReminder(row dbutil.Scannable) (*Reminder, error) {
	var r Reminder
	var next, created, stopped int64
	err := row.Scan(&r.ID, &r.CaseID, &r.Number, &r.Schedule, &next, &r.CreatedBy, &r.CreatedEvent, &created, &r.StoppedBy, &stopped)
	if err != nil {
		return nil, err
	}
	r.NextAt, r.CreatedAt = time.UnixMilli(next).UTC(), time.UnixMilli(created).UTC()
	if stopped != 0 {
		r.StoppedAt = time.UnixMilli(stopped).UTC()
	}
	return &r, nil
}

func scanPrompt(row dbutil.Scannable) (*ReminderPrompt, error) {
	var p ReminderPrompt
	var due, sent, check, checked int64
	err := row.Scan(&p.ID, &p.ReminderID, &p.CaseID, &due, &sent, &p.AfterCheckInID, &check, &checked, &p.Outcome)
	if err != nil {
		return nil, err
	}
	p.DueAt, p.SentAt, p.CheckAt = time.UnixMilli(due).UTC(), time.UnixMilli(sent).UTC(), time.UnixMilli(check).UTC()
	if checked != 0 {
		p.CheckedAt = time.UnixMilli(checked).UTC()
	}
	return &p, nil
}

// Create stores a new reminder with the next number of its case (set on r with its ID). Call it inside the
// command's transaction.
func (q *ReminderQuery) Create(ctx context.Context, r *Reminder) error {
	args := []any{r.CaseID, r.Schedule, r.NextAt.UnixMilli(), r.CreatedBy, r.CreatedEvent, r.CreatedAt.UnixMilli()}
	err := q.db.QueryRow(ctx, insertReminderQuery+" RETURNING id", args...).Scan(&r.ID)
	if err != nil {
		return fmt.Errorf("failed to store reminder: %w", err)
	}
	if err = q.db.QueryRow(ctx, `SELECT number FROM reminders WHERE id = $1`, r.ID).Scan(&r.Number); err != nil {
		return fmt.Errorf("failed to read reminder number: %w", err)
	}
	return nil
}

// Active lists a case's reminders that are not stopped, by number.
func (q *ReminderQuery) Active(ctx context.Context, caseID int64) ([]*Reminder, error) {
	rows, err := q.db.Query(ctx, "SELECT "+reminderColumns+` FROM reminders WHERE case_id = $1 AND stopped_at IS NULL
		ORDER BY number`, caseID)
	return dbutil.NewRowIterWithError(rows, scanReminder, err).AsList()
}

// ByNumber returns a case's reminder by its number (stopped ones too), or nil.
func (q *ReminderQuery) ByNumber(ctx context.Context, caseID int64, number int) (*Reminder, error) {
	r, err := scanReminder(q.db.QueryRow(ctx, "SELECT "+reminderColumns+" FROM reminders WHERE case_id = $1 AND number = $2",
		caseID, number))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return r, err
}

// ByID returns a reminder, or nil.
func (q *ReminderQuery) ByID(ctx context.Context, reminderID int64) (*Reminder, error) {
	r, err := scanReminder(q.db.QueryRow(ctx, "SELECT "+reminderColumns+" FROM reminders WHERE id = $1", reminderID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return r, err
}

// Stop stops a reminder and cancels its prompts that still wait for their grace period; it reports false if the
// reminder was already stopped. by is "" when caseroom stopped it (the case was closed).
func (q *ReminderQuery) Stop(ctx context.Context, reminderID int64, by id.UserID, at time.Time) (bool, error) {
	res, err := q.db.Exec(ctx, `UPDATE reminders SET stopped_by = $2, stopped_at = $3 WHERE id = $1 AND stopped_at IS NULL`,
		reminderID, nullString(string(by)), at.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("failed to stop reminder: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return false, err
	}
	_, err = q.db.Exec(ctx, `UPDATE reminder_prompts SET checked_at = $2, outcome = $3 WHERE reminder_id = $1 AND checked_at IS NULL`,
		reminderID, at.UnixMilli(), PromptCancelled)
	if err != nil {
		return false, fmt.Errorf("failed to cancel prompts of reminder: %w", err)
	}
	return true, nil
}

// Due lists up to limit active reminders whose next prompt is at or before now, the earliest first.
func (q *ReminderQuery) Due(ctx context.Context, now time.Time, limit int) ([]*Reminder, error) {
	rows, err := q.db.Query(ctx, "SELECT "+reminderColumns+` FROM reminders WHERE stopped_at IS NULL AND next_at <= $1
		ORDER BY next_at, id LIMIT $2`, now.UnixMilli(), limit)
	return dbutil.NewRowIterWithError(rows, scanReminder, err).AsList()
}

// Advance moves an active reminder's next prompt from one time to another; it reports false when the reminder
// changed meanwhile (stopped, or advanced by someone else), in which case the caller must not prompt.
func (q *ReminderQuery) Advance(ctx context.Context, reminderID int64, from, to time.Time) (bool, error) {
	res, err := q.db.Exec(ctx, `UPDATE reminders SET next_at = $3 WHERE id = $1 AND next_at = $2 AND stopped_at IS NULL`,
		reminderID, from.UnixMilli(), to.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("failed to advance reminder: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// LatestCheckInID is the id of the newest check-in of a case, or 0.
func (q *ReminderQuery) LatestCheckInID(ctx context.Context, caseID int64) (int64, error) {
	var latest int64
	err := q.db.QueryRow(ctx, `SELECT COALESCE(MAX(id), 0) FROM checkins WHERE case_id = $1`, caseID).Scan(&latest)
	return latest, err
}

// AddPrompt records a prompt (its ID is set on p). Call it in the transaction that queues the prompt.
func (q *ReminderQuery) AddPrompt(ctx context.Context, p *ReminderPrompt) error {
	const insert = `INSERT INTO reminder_prompts (reminder_id, case_id, due_at, sent_at, after_checkin_id, check_at)
		VALUES ($1, $2, $3, $4, $5, $6)`
	args := []any{p.ReminderID, p.CaseID, p.DueAt.UnixMilli(), p.SentAt.UnixMilli(), p.AfterCheckInID, p.CheckAt.UnixMilli()}
	err := q.db.QueryRow(ctx, insert+" RETURNING id", args...).Scan(&p.ID)
	if err != nil {
		return fmt.Errorf("failed to store reminder prompt: %w", err)
	}
	return nil
}

// Prompts lists a reminder's prompts, oldest first.
func (q *ReminderQuery) Prompts(ctx context.Context, reminderID int64) ([]*ReminderPrompt, error) {
	rows, err := q.db.Query(ctx, "SELECT "+promptColumns+" FROM reminder_prompts WHERE reminder_id = $1 ORDER BY due_at", reminderID)
	return dbutil.NewRowIterWithError(rows, scanPrompt, err).AsList()
}

// PromptsToCheck lists up to limit prompts whose grace period ended at or before now and that were not checked.
func (q *ReminderQuery) PromptsToCheck(ctx context.Context, now time.Time, limit int) ([]*ReminderPrompt, error) {
	rows, err := q.db.Query(ctx, "SELECT "+promptColumns+` FROM reminder_prompts WHERE checked_at IS NULL AND check_at <= $1
		ORDER BY check_at, id LIMIT $2`, now.UnixMilli(), limit)
	return dbutil.NewRowIterWithError(rows, scanPrompt, err).AsList()
}

// Answered reports whether a check-in of the prompt's case arrived after the prompt was queued (one marked
// entered-in-error does not count).
func (q *ReminderQuery) Answered(ctx context.Context, p *ReminderPrompt) (bool, error) {
	var one int
	err := q.db.QueryRow(ctx, `SELECT 1 FROM checkins c WHERE c.case_id = $1 AND c.id > $2 AND NOT EXISTS (
		SELECT 1 FROM checkin_versions v WHERE v.checkin_id = c.id AND v.status = $3
		AND v.version = (SELECT MAX(version) FROM checkin_versions WHERE checkin_id = c.id)) LIMIT 1`,
		p.CaseID, p.AfterCheckInID, StatusEnteredInError).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// FinishPrompt records the outcome of a prompt's check; it reports false when it was already checked.
func (q *ReminderQuery) FinishPrompt(ctx context.Context, promptID int64, outcome string, at time.Time) (bool, error) {
	res, err := q.db.Exec(ctx, `UPDATE reminder_prompts SET checked_at = $2, outcome = $3 WHERE id = $1 AND checked_at IS NULL`,
		promptID, at.UnixMilli(), outcome)
	if err != nil {
		return false, fmt.Errorf("failed to record prompt outcome: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// NextWork is the earliest time at which a reminder is due or a prompt's grace period ends, or zero if none.
func (q *ReminderQuery) NextWork(ctx context.Context) (time.Time, error) {
	var next sql.NullInt64
	err := q.db.QueryRow(ctx, `SELECT MIN(t) FROM (
		SELECT MIN(next_at) AS t FROM reminders WHERE stopped_at IS NULL
		UNION ALL SELECT MIN(check_at) AS t FROM reminder_prompts WHERE checked_at IS NULL) AS due`).Scan(&next)
	if err != nil || !next.Valid {
		return time.Time{}, err
	}
	return time.UnixMilli(next.Int64).UTC(), nil
}
