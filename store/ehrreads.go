package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
)

// Sources of an EHR result posted into a case room.
const (
	EHRSourcePoll         = "poll"         // found by polling with _lastUpdated
	EHRSourceSubscription = "subscription" // pushed by the EHR to the subscription endpoint
)

// EHRResult is an EHR resource (an Observation or a DiagnosticReport) posted into a case room. It holds IDs and
// times, never the result itself.
type EHRResult struct {
	CaseID      int64
	Key         string // "Observation/<id>"
	VersionID   string // meta.versionId when it was posted ("" if the EHR gave none)
	LastUpdated time.Time
	Source      string // EHRSourcePoll or EHRSourceSubscription
	OutgoingSeq int64  // the notice that announced it
	SeenAt      time.Time
}

// EHRReadQuery keeps what caseroom has read from the EHR into case rooms: the polling cursor of each case and the
// results already posted, so that polling and the subscription endpoint together post each result once.
type EHRReadQuery struct {
	db *dbutil.Database
}

// PollTargets lists the open cases linked to a FHIR Patient (the cases whose new EHR results are posted), oldest
// first.
func (q *EHRReadQuery) PollTargets(ctx context.Context) ([]*Case, error) {
	rows, err := q.db.Query(ctx, "SELECT "+caseColumns+` FROM cases
		WHERE patient_ref IS NOT NULL AND patient_ref <> '' AND closed_at IS NULL ORDER BY id`)
	return dbutil.NewRowIterWithError(rows, scanCase, err).AsList()
}

// OpenCasesOf lists the open cases linked to patientRef ("Patient/<id>").
func (q *EHRReadQuery) OpenCasesOf(ctx context.Context, patientRef string) ([]*Case, error) {
	rows, err := q.db.Query(ctx, "SELECT "+caseColumns+` FROM cases
		WHERE patient_ref = $1 AND closed_at IS NULL ORDER BY id`, patientRef)
	return dbutil.NewRowIterWithError(rows, scanCase, err).AsList()
}

// Cursor returns the newest meta.lastUpdated that polling has read for a case and resource type, or the zero time
// when polling has not read any.
func (q *EHRReadQuery) Cursor(ctx context.Context, caseID int64, resourceType string) (time.Time, error) {
	var ms int64
	err := q.db.QueryRow(ctx, `SELECT last_updated FROM ehr_read_cursors WHERE case_id = $1 AND resource_type = $2`,
		caseID, resourceType).Scan(&ms)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	} else if err != nil {
		return time.Time{}, fmt.Errorf("failed to read the EHR cursor of case %d: %w", caseID, err)
	}
	return time.UnixMilli(ms), nil
}

// AdvanceCursor moves the cursor of a case and resource type to lastUpdated; it never moves it back.
func (q *EHRReadQuery) AdvanceCursor(ctx context.Context, caseID int64, resourceType string, lastUpdated time.Time) error {
	_, err := q.db.Exec(ctx, `INSERT INTO ehr_read_cursors (case_id, resource_type, last_updated, updated_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (case_id, resource_type) DO UPDATE SET last_updated = excluded.last_updated, updated_at = excluded.updated_at
		WHERE ehr_read_cursors.last_updated < excluded.last_updated`,
		caseID, resourceType, lastUpdated.UnixMilli(), time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to store the EHR cursor of case %d: %w", caseID, err)
	}
	return nil
}

// MarkSeen records that a result is being posted into a case's room. It reports false when the result was
// recorded before, by either path: then nothing may be posted. Call it in the transaction that queues the notice,
// and SetNotice with the notice's sequence number once queued.
func (q *EHRReadQuery) MarkSeen(ctx context.Context, r *EHRResult) (bool, error) {
	now := time.Now()
	res, err := q.db.Exec(ctx, `INSERT INTO ehr_seen (case_id, resource_key, version_id, last_updated, source, seen_at)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (case_id, resource_key) DO NOTHING`,
		r.CaseID, r.Key, r.VersionID, r.LastUpdated.UnixMilli(), r.Source, now.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("failed to record EHR result of case %d: %w", r.CaseID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	if n == 1 {
		r.SeenAt = now
	}
	return n == 1, nil
}

// SetNotice records the outgoing message that announced a result.
func (q *EHRReadQuery) SetNotice(ctx context.Context, caseID int64, key string, outgoingSeq int64) error {
	_, err := q.db.Exec(ctx, `UPDATE ehr_seen SET outgoing_seq = $3 WHERE case_id = $1 AND resource_key = $2`, caseID, key, outgoingSeq)
	return err
}

// Seen reports whether a result was already posted into a case's room.
func (q *EHRReadQuery) Seen(ctx context.Context, caseID int64, key string) (bool, error) {
	var one int
	err := q.db.QueryRow(ctx, `SELECT 1 FROM ehr_seen WHERE case_id = $1 AND resource_key = $2`, caseID, key).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// Results lists the results posted into a case's room, oldest first.
func (q *EHRReadQuery) Results(ctx context.Context, caseID int64) ([]*EHRResult, error) {
	rows, err := q.db.Query(ctx, `SELECT case_id, resource_key, version_id, last_updated, source, COALESCE(outgoing_seq, 0), seen_at
		FROM ehr_seen WHERE case_id = $1 ORDER BY seen_at, resource_key`, caseID)
	return dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (*EHRResult, error) {
		var r EHRResult
		var updated, seen int64
		err := row.Scan(&r.CaseID, &r.Key, &r.VersionID, &updated, &r.Source, &r.OutgoingSeq, &seen)
		r.LastUpdated, r.SeenAt = time.UnixMilli(updated), time.UnixMilli(seen)
		return &r, err
	}, err).AsList()
}
