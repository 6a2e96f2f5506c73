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

// Kinds of EHR outbox items.
const (
	OutboxCheckIn = "checkin" // a check-in version: version 1 creates, later versions amend or mark entered-in-error
	// OutboxCarePlan is a change of a case's treatment plan: record is the case, version the number of plan item
	// versions after the change. Delivery writes the plan as it is then, so later items find nothing to change.
	OutboxCarePlan = "careplan"
	// OutboxCommunication is a /file command: record is the filing (Filing.ID), version 1.
	OutboxCommunication = "communication"
	// OutboxQuestionnaireResponse is a completed guided check-in: record is the session (GuidedSession.ID), version 1.
	OutboxQuestionnaireResponse = "questionnaireresponse"
)

// OutboxItem is a record waiting for (or done with) delivery to the EHR.
type OutboxItem struct {
	Seq         int64
	Kind        string
	RecordID    int64
	Version     int
	CaseID      int64
	OrderKey    string // items with the same key are delivered in order (one patient)
	RoomID      id.RoomID
	SourceEvent id.EventID // the event that made the record (replies and reactions go to it)
	CreatedAt   time.Time
	Attempts    int
	NextAttempt time.Time
	LastError   string
	DeliveredAt time.Time
	Result      string
	DeadAt      time.Time
}

// EHROutboxQuery reads and writes the EHR outbox.
type EHROutboxQuery struct {
	db *dbutil.Database
}

const outboxColumns = `seq, kind, record_id, version, case_id, order_key, room_id, source_event, created_at, attempts,
	next_attempt_at, COALESCE(last_error, ''), COALESCE(delivered_at, 0), COALESCE(result, ''), COALESCE(dead_at, 0)`

func scanOutboxItem(row dbutil.Scannable) (*OutboxItem, error) {
	var it OutboxItem
	var created, next, delivered, dead int64
	err := row.Scan(&it.Seq, &it.Kind, &it.RecordID, &it.Version, &it.CaseID, &it.OrderKey, &it.RoomID, &it.SourceEvent,
		&created, &it.Attempts, &next, &it.LastError, &delivered, &it.Result, &dead)
	if err != nil {
		return nil, err
	}
	it.CreatedAt, it.NextAttempt = time.UnixMilli(created), time.UnixMilli(next)
	if delivered != 0 {
		it.DeliveredAt = time.UnixMilli(delivered)
	}
	if dead != 0 {
		it.DeadAt = time.UnixMilli(dead)
	}
	return &it, nil
}

// Add queues an item. Call it inside the transaction that stores the record. A second add of the same record
// version is ignored.
func (q *EHROutboxQuery) Add(ctx context.Context, it *OutboxItem) error {
	now := time.Now().UnixMilli()
	_, err := q.db.Exec(ctx, `INSERT INTO ehr_outbox (kind, record_id, version, case_id, order_key, room_id, source_event,
		created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (kind, record_id, version) DO NOTHING`,
		it.Kind, it.RecordID, it.Version, it.CaseID, it.OrderKey, it.RoomID, it.SourceEvent, now)
	if err != nil {
		return fmt.Errorf("failed to queue record for the EHR: %w", err)
	}
	return nil
}

// Due returns items whose turn has come: not delivered, not dead, due by now, and with no earlier undelivered item
// of the same order key (so one patient's records arrive in order; a dead item does not block the ones after it).
func (q *EHROutboxQuery) Due(ctx context.Context, now time.Time, limit int) ([]*OutboxItem, error) {
	// The first pending item of each key, by a grouped MIN over the pending index: a NOT EXISTS on earlier pending
	// items of the key is the same set, but PostgreSQL may plan it as a nested loop over all pending rows (seconds
	// for a backlog of thousands).
	rows, err := q.db.Query(ctx, `SELECT `+outboxColumns+` FROM ehr_outbox
		WHERE seq IN (SELECT MIN(seq) FROM ehr_outbox WHERE delivered_at IS NULL AND dead_at IS NULL GROUP BY order_key)
		AND next_attempt_at <= $1
		ORDER BY seq LIMIT $2`, now.UnixMilli(), limit)
	return dbutil.NewRowIterWithError(rows, scanOutboxItem, err).AsList()
}

// NextDue returns when the earliest pending item is due (zero when none is pending).
func (q *EHROutboxQuery) NextDue(ctx context.Context) (time.Time, error) {
	var next sql.NullInt64
	err := q.db.QueryRow(ctx, `SELECT MIN(next_attempt_at) FROM ehr_outbox WHERE delivered_at IS NULL AND dead_at IS NULL`).Scan(&next)
	if err != nil || !next.Valid {
		return time.Time{}, err
	}
	return time.UnixMilli(next.Int64), nil
}

// MarkDelivered records a delivery and its result (e.g. the resource IDs). Call it in the transaction that also
// queues the room's notification.
func (q *EHROutboxQuery) MarkDelivered(ctx context.Context, seq int64, result string) error {
	_, err := q.db.Exec(ctx, `UPDATE ehr_outbox SET delivered_at = $2, result = $3, attempts = attempts + 1, last_error = NULL
		WHERE seq = $1`, seq, time.Now().UnixMilli(), result)
	return err
}

// MarkRetry records a failed attempt and when to try again.
func (q *EHROutboxQuery) MarkRetry(ctx context.Context, seq int64, reason string, next time.Time) error {
	_, err := q.db.Exec(ctx, `UPDATE ehr_outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 WHERE seq = $1`,
		seq, reason, next.UnixMilli())
	return err
}

// MarkDead gives up on an item the EHR refused; it stays for `admin outbox` and can be retried.
func (q *EHROutboxQuery) MarkDead(ctx context.Context, seq int64, reason string) error {
	_, err := q.db.Exec(ctx, `UPDATE ehr_outbox SET attempts = attempts + 1, last_error = $2, dead_at = $3 WHERE seq = $1`,
		seq, reason, time.Now().UnixMilli())
	return err
}

// Requeue puts a dead item back in the queue; it reports false when seq is not a dead item.
func (q *EHROutboxQuery) Requeue(ctx context.Context, seq int64) (bool, error) {
	res, err := q.db.Exec(ctx, `UPDATE ehr_outbox SET dead_at = NULL, next_attempt_at = $2 WHERE seq = $1 AND dead_at IS NOT NULL`,
		seq, time.Now().UnixMilli())
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Get returns one item, or nil.
func (q *EHROutboxQuery) Get(ctx context.Context, seq int64) (*OutboxItem, error) {
	it, err := scanOutboxItem(q.db.QueryRow(ctx, `SELECT `+outboxColumns+` FROM ehr_outbox WHERE seq = $1`, seq))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return it, err
}

// OutboxStats counts the outbox.
type OutboxStats struct {
	Pending, Dead, Delivered int
	OldestPending            time.Time
}

const outboxStatsQuery = `SELECT
		COALESCE(SUM(CASE WHEN delivered_at IS NULL AND dead_at IS NULL THEN 1 ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN dead_at IS NOT NULL THEN 1 ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN delivered_at IS NOT NULL THEN 1 ELSE 0 END), 0),
		COALESCE(MIN(CASE WHEN delivered_at IS NULL AND dead_at IS NULL THEN created_at END), 0)
		FROM ehr_outbox`

// Stats counts pending, dead and delivered items.
func (q *EHROutboxQuery) Stats(ctx context.Context) (s OutboxStats, err error) {
	var oldest int64
	err = q.db.QueryRow(ctx, outboxStatsQuery).Scan(&s.Pending, &s.Dead, &s.Delivered, &oldest)
	if oldest != 0 {
		s.OldestPending = time.UnixMilli(oldest)
	}
	return
}

// List returns the newest items: pending and dead ones (undelivered) when onlyOpen.
func (q *EHROutboxQuery) List(ctx context.Context, onlyOpen bool, limit int) ([]*OutboxItem, error) {
	where := ""
	if onlyOpen {
		where = " WHERE delivered_at IS NULL"
	}
	rows, err := q.db.Query(ctx, `SELECT `+outboxColumns+` FROM ehr_outbox`+where+` ORDER BY seq DESC LIMIT $1`, limit)
	return dbutil.NewRowIterWithError(rows, scanOutboxItem, err).AsList()
}

// CheckInVersion returns one version of a check-in (as stored then), or nil.
func (q *CheckInQuery) CheckInVersion(ctx context.Context, checkInID int64, version int) (*CheckIn, error) {
	c, err := scanCheckIn(q.db.QueryRow(ctx, `SELECT c.id, c.case_id, c.event_id, c.room_id, c.patient_id, c.recorded_by, c.source,
		c.effective_at, c.created_at, v.version, v.status, v.values_json, v.note, v.event_id, v.author, v.created_at
		FROM checkins c JOIN checkin_versions v ON v.checkin_id = c.id WHERE c.id = $1 AND v.version = $2`, checkInID, version))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return c, err
}
