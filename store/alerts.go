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

// Directions of an alert threshold: a per-case threshold replaces the defaults of its vital and direction.
const (
	DirectionLow  = "low"  // < and <=
	DirectionHigh = "high" // > and >=
)

// CaseThreshold is an alert threshold set for one case.
type CaseThreshold struct {
	CaseID    int64
	Kind      string // care.Kind
	Direction string // DirectionLow or DirectionHigh
	Threshold string // care.Threshold.String()
	SetBy     id.UserID
	SetEvent  id.EventID
	SetAt     time.Time
}

// Alert is raised by a check-in that crossed a threshold. It escalates once unless acknowledged in time.
type Alert struct {
	ID        int64
	CaseID    int64
	Number    int // per case, from 1
	CheckInID int64
	PatientID id.UserID
	Crossings string // the crossed values with their thresholds, one per line
	RaisedAt  time.Time

	OutgoingSeq   int64     // the alert message in the outgoing queue (0 until queued)
	EscalationSeq int64     // the escalation message (0 if none)
	EscalateAt    time.Time // zero once escalated or acknowledged
	EscalatedAt   time.Time
	AckedBy       id.UserID
	AckedAt       time.Time
	AckEvent      id.EventID
}

// Acked reports whether someone acknowledged the alert.
func (a *Alert) Acked() bool { return !a.AckedAt.IsZero() }

// AlertQuery reads and writes per-case alert thresholds and alerts.
type AlertQuery struct {
	db *dbutil.Database
}

// SetThreshold stores a case's threshold for its vital and direction, replacing the one there was; it returns the
// replaced threshold's text, or "".
func (q *AlertQuery) SetThreshold(ctx context.Context, t *CaseThreshold) (replaced string, err error) {
	err = q.db.QueryRow(ctx, `SELECT threshold FROM alert_thresholds WHERE case_id = $1 AND kind = $2 AND direction = $3`,
		t.CaseID, t.Kind, t.Direction).Scan(&replaced)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("failed to read alert threshold: %w", err)
	}
	_, err = q.db.Exec(ctx, `INSERT INTO alert_thresholds (case_id, kind, direction, threshold, set_by, set_event, set_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (case_id, kind, direction) DO UPDATE SET threshold = excluded.threshold, set_by = excluded.set_by,
			set_event = excluded.set_event, set_at = excluded.set_at`,
		t.CaseID, t.Kind, t.Direction, t.Threshold, t.SetBy, t.SetEvent, t.SetAt.UnixMilli())
	if err != nil {
		return "", fmt.Errorf("failed to store alert threshold: %w", err)
	}
	return replaced, nil
}

// Thresholds lists a case's own thresholds, by vital and direction.
func (q *AlertQuery) Thresholds(ctx context.Context, caseID int64) ([]*CaseThreshold, error) {
	rows, err := q.db.Query(ctx, `SELECT case_id, kind, direction, threshold, set_by, set_event, set_at FROM alert_thresholds
		WHERE case_id = $1 ORDER BY kind, direction`, caseID)
	return dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (*CaseThreshold, error) {
		var t CaseThreshold
		var at int64
		err := row.Scan(&t.CaseID, &t.Kind, &t.Direction, &t.Threshold, &t.SetBy, &t.SetEvent, &at)
		t.SetAt = time.UnixMilli(at).UTC()
		return &t, err
	}, err).AsList()
}

// ClearThreshold removes one of a case's thresholds by its text; it reports false if the case has no such one.
func (q *AlertQuery) ClearThreshold(ctx context.Context, caseID int64, threshold string) (bool, error) {
	res, err := q.db.Exec(ctx, `DELETE FROM alert_thresholds WHERE case_id = $1 AND threshold = $2`, caseID, threshold)
	if err != nil {
		return false, fmt.Errorf("failed to clear alert threshold: %w", err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// ClearThresholds removes all of a case's thresholds and returns how many there were.
func (q *AlertQuery) ClearThresholds(ctx context.Context, caseID int64) (int, error) {
	res, err := q.db.Exec(ctx, `DELETE FROM alert_thresholds WHERE case_id = $1`, caseID)
	if err != nil {
		return 0, fmt.Errorf("failed to clear alert thresholds: %w", err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}

const (
	alertColumns = `id, case_id, number, checkin_id, patient_id, crossings, raised_at, COALESCE(outgoing_seq, 0),
		COALESCE(escalation_seq, 0), COALESCE(escalate_at, 0), COALESCE(escalated_at, 0), COALESCE(acked_by, ''),
		COALESCE(acked_at, 0), COALESCE(ack_event, '')`
	insertAlertQuery = `INSERT INTO alerts (case_id, number, checkin_id, patient_id, crossings, raised_at, escalate_at)
		VALUES ($1, (SELECT COALESCE(MAX(number), 0) + 1 FROM alerts WHERE case_id = $1), $2, $3, $4, $5, $6)`
)

func scanAlert(row dbutil.Scannable) (*Alert, error) {
	var a Alert
	var raised, escalate, escalated, acked int64
	err := row.Scan(&a.ID, &a.CaseID, &a.Number, &a.CheckInID, &a.PatientID, &a.Crossings, &raised, &a.OutgoingSeq,
		&a.EscalationSeq, &escalate, &escalated, &a.AckedBy, &acked, &a.AckEvent)
	if err != nil {
		return nil, err
	}
	a.RaisedAt = time.UnixMilli(raised).UTC()
	for _, f := range []struct {
		ms  int64
		dst *time.Time
	}{{escalate, &a.EscalateAt}, {escalated, &a.EscalatedAt}, {acked, &a.AckedAt}} {
		if f.ms != 0 {
			*f.dst = time.UnixMilli(f.ms).UTC()
		}
	}
	return &a, nil
}

func (q *AlertQuery) one(ctx context.Context, where string, args ...any) (*Alert, error) {
	a, err := scanAlert(q.db.QueryRow(ctx, "SELECT "+alertColumns+" FROM alerts WHERE "+where, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return a, err
}

// Create stores a new alert with the next number of its case (set on a with its ID). Call it in the check-in's
// transaction.
func (q *AlertQuery) Create(ctx context.Context, a *Alert) error {
	args := []any{a.CaseID, a.CheckInID, a.PatientID, a.Crossings, a.RaisedAt.UnixMilli(), a.EscalateAt.UnixMilli()}
	err := q.db.QueryRow(ctx, insertAlertQuery+" RETURNING id", args...).Scan(&a.ID)
	if err != nil {
		return fmt.Errorf("failed to store alert: %w", err)
	}
	if err = q.db.QueryRow(ctx, `SELECT number FROM alerts WHERE id = $1`, a.ID).Scan(&a.Number); err != nil {
		return fmt.Errorf("failed to read alert number: %w", err)
	}
	return nil
}

// SetMessage records the outgoing sequence number of the alert message.
func (q *AlertQuery) SetMessage(ctx context.Context, alertID, seq int64) error {
	_, err := q.db.Exec(ctx, `UPDATE alerts SET outgoing_seq = $2 WHERE id = $1`, alertID, seq)
	return err
}

// ByID returns an alert, or nil.
func (q *AlertQuery) ByID(ctx context.Context, alertID int64) (*Alert, error) {
	return q.one(ctx, "id = $1", alertID)
}

// ByNumber returns a case's alert by its number, or nil.
func (q *AlertQuery) ByNumber(ctx context.Context, caseID int64, number int) (*Alert, error) {
	return q.one(ctx, "case_id = $1 AND number = $2", caseID, number)
}

// ByMessage returns the alert whose alert or escalation message has the outgoing sequence number seq, or nil.
func (q *AlertQuery) ByMessage(ctx context.Context, seq int64) (*Alert, error) {
	return q.one(ctx, "outgoing_seq = $1 OR escalation_seq = $1", seq)
}

// Open lists a case's alerts that nobody acknowledged, newest first.
func (q *AlertQuery) Open(ctx context.Context, caseID int64) ([]*Alert, error) {
	rows, err := q.db.Query(ctx, "SELECT "+alertColumns+" FROM alerts WHERE case_id = $1 AND acked_at IS NULL ORDER BY number DESC", caseID)
	return dbutil.NewRowIterWithError(rows, scanAlert, err).AsList()
}

// Ack records who acknowledged an alert, and when; it reports false if the alert was already acknowledged.
// An acknowledged alert does not escalate.
func (q *AlertQuery) Ack(ctx context.Context, alertID int64, by id.UserID, evt id.EventID, at time.Time) (bool, error) {
	res, err := q.db.Exec(ctx, `UPDATE alerts SET acked_by = $2, ack_event = $3, acked_at = $4, escalate_at = NULL
		WHERE id = $1 AND acked_at IS NULL`, alertID, by, evt, at.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("failed to acknowledge alert: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// DueEscalations lists up to limit unacknowledged alerts whose escalation is due at or before now.
func (q *AlertQuery) DueEscalations(ctx context.Context, now time.Time, limit int) ([]*Alert, error) {
	rows, err := q.db.Query(ctx, "SELECT "+alertColumns+` FROM alerts WHERE escalate_at IS NOT NULL AND escalate_at <= $1
		AND acked_at IS NULL ORDER BY escalate_at, id LIMIT $2`, now.UnixMilli(), limit)
	return dbutil.NewRowIterWithError(rows, scanAlert, err).AsList()
}

// MarkEscalated records that an alert escalated, and its escalation message; it reports false when the alert was
// acknowledged or escalated meanwhile, in which case the caller must not escalate.
func (q *AlertQuery) MarkEscalated(ctx context.Context, alertID int64, at time.Time) (bool, error) {
	res, err := q.db.Exec(ctx, `UPDATE alerts SET escalate_at = NULL, escalated_at = $2
		WHERE id = $1 AND escalate_at IS NOT NULL AND acked_at IS NULL`, alertID, at.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("failed to mark alert escalated: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// SetEscalationMessage records the outgoing sequence number of the escalation message.
func (q *AlertQuery) SetEscalationMessage(ctx context.Context, alertID, seq int64) error {
	_, err := q.db.Exec(ctx, `UPDATE alerts SET escalation_seq = $2 WHERE id = $1`, alertID, seq)
	return err
}

// NextEscalation is the earliest due escalation, or zero if none.
func (q *AlertQuery) NextEscalation(ctx context.Context) (time.Time, error) {
	var next sql.NullInt64
	err := q.db.QueryRow(ctx, `SELECT MIN(escalate_at) FROM alerts WHERE escalate_at IS NOT NULL AND acked_at IS NULL`).Scan(&next)
	if err != nil || !next.Valid {
		return time.Time{}, err
	}
	return time.UnixMilli(next.Int64).UTC(), nil
}
