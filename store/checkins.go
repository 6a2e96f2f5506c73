package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/care"
)

// Check-in statuses, as FHIR Observation.status names them.
const (
	StatusFinal          = "final"
	StatusAmended        = "amended"
	StatusEnteredInError = "entered-in-error"
)

// Sources of a check-in.
const (
	SourcePatient   = "patient"   // typed by the patient
	SourceClinician = "clinician" // recorded by a clinician on the patient's behalf
	SourceGuided    = "guided"    // answers to a guided check-in
)

// CheckIn is a check-in with its current (latest) version.
type CheckIn struct {
	ID          int64
	CaseID      int64
	EventID     id.EventID // the message that created it
	RoomID      id.RoomID
	PatientID   id.UserID
	RecordedBy  id.UserID
	Source      string
	EffectiveAt time.Time // when the patient reported it (the event's claimed time or its receive time), UTC
	CreatedAt   time.Time
	// ClaimedAt is the time the event claims (origin_server_ts) and ReceivedAt when caseroom received it; stored by
	// Create (when ClaimedAt is set) but not read back by the queries that list check-ins.
	ClaimedAt, ReceivedAt time.Time

	Version int
	Status  string
	Values  []care.Value
	Note    string
	// VersionEventID is the event of the latest version (the original, an edit or a redaction).
	VersionEventID id.EventID
	VersionAuthor  id.UserID
	VersionAt      time.Time
}

// CheckInQuery reads and writes check-ins. Nothing is ever updated or deleted: changes add versions.
type CheckInQuery struct {
	db *dbutil.Database
}

// Create stores a new check-in as version 1 (status final). Call it inside the event's transaction.
func (q *CheckInQuery) Create(ctx context.Context, c *CheckIn) error {
	now := time.Now()
	args := []any{c.CaseID, c.EventID, c.RoomID, c.PatientID, c.RecordedBy, c.Source, c.EffectiveAt.UnixMilli(), now.UnixMilli()}
	const insert = `INSERT INTO checkins (case_id, event_id, room_id, patient_id, recorded_by, source, effective_at, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
	err := q.db.QueryRow(ctx, insert+" RETURNING id", args...).Scan(&c.ID)
	if err != nil {
		return fmt.Errorf("failed to store check-in: %w", err)
	}
	c.CreatedAt = now
	if !c.ClaimedAt.IsZero() {
		received := c.ReceivedAt
		if received.IsZero() {
			received = now
		}
		_, err = q.db.Exec(ctx, `INSERT INTO checkin_times (checkin_id, claimed_at, received_at) VALUES ($1, $2, $3)`,
			c.ID, c.ClaimedAt.UnixMilli(), received.UnixMilli())
		if err != nil {
			return fmt.Errorf("failed to store check-in times: %w", err)
		}
	}
	c.Version, c.Status, c.VersionEventID, c.VersionAuthor = 0, StatusFinal, c.EventID, c.RecordedBy
	return q.addVersion(ctx, c, StatusFinal, c.EventID, c.RecordedBy)
}

// Amend stores new values as a new version with status amended.
func (q *CheckInQuery) Amend(ctx context.Context, c *CheckIn, values []care.Value, note string, editEvent id.EventID, author id.UserID) error {
	c.Values, c.Note = values, note
	return q.addVersion(ctx, c, StatusAmended, editEvent, author)
}

// MarkEnteredInError stores a version with status entered-in-error and the last values.
func (q *CheckInQuery) MarkEnteredInError(ctx context.Context, c *CheckIn, redaction id.EventID, author id.UserID) error {
	return q.addVersion(ctx, c, StatusEnteredInError, redaction, author)
}

func (q *CheckInQuery) addVersion(ctx context.Context, c *CheckIn, status string, evtID id.EventID, author id.UserID) error {
	values, err := json.Marshal(c.Values)
	if err != nil {
		return err
	}
	now := time.Now()
	version := c.Version + 1
	_, err = q.db.Exec(ctx, `INSERT INTO checkin_versions (checkin_id, version, status, values_json, note, event_id, author, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, c.ID, version, status, string(values), c.Note, evtID, author, now.UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to store check-in version: %w", err)
	}
	c.Version, c.Status, c.VersionEventID, c.VersionAuthor, c.VersionAt = version, status, evtID, author, now
	return nil
}

const checkInSelect = `SELECT c.id, c.case_id, c.event_id, c.room_id, c.patient_id, c.recorded_by, c.source, c.effective_at,
	c.created_at, v.version, v.status, v.values_json, v.note, v.event_id, v.author, v.created_at
	FROM checkins c JOIN checkin_versions v ON v.checkin_id = c.id
	AND v.version = (SELECT MAX(version) FROM checkin_versions WHERE checkin_id = c.id)`

func scanCheckIn(row dbutil.Scannable) (*CheckIn, error) {
	var c CheckIn
	var effective, created, versionAt int64
	var values string
	err := row.Scan(&c.ID, &c.CaseID, &c.EventID, &c.RoomID, &c.PatientID, &c.RecordedBy, &c.Source, &effective, &created,
		&c.Version, &c.Status, &values, &c.Note, &c.VersionEventID, &c.VersionAuthor, &versionAt)
	if err != nil {
		return nil, err
	}
	if err = json.Unmarshal([]byte(values), &c.Values); err != nil {
		return nil, fmt.Errorf("check-in %d has unreadable values: %w", c.ID, err)
	}
	c.EffectiveAt, c.CreatedAt, c.VersionAt = time.UnixMilli(effective).UTC(), time.UnixMilli(created).UTC(), time.UnixMilli(versionAt).UTC()
	return &c, nil
}

// ByEvent returns the check-in created by an event, or nil.
func (q *CheckInQuery) ByEvent(ctx context.Context, eventID id.EventID) (*CheckIn, error) {
	c, err := scanCheckIn(q.db.QueryRow(ctx, checkInSelect+" WHERE c.event_id = $1", eventID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return c, err
}

// Times returns the time a check-in's event claimed and the time caseroom received it (zero for check-ins recorded
// before both were kept).
func (q *CheckInQuery) Times(ctx context.Context, checkInID int64) (claimed, received time.Time, err error) {
	var c, r int64
	err = q.db.QueryRow(ctx, `SELECT claimed_at, received_at FROM checkin_times WHERE checkin_id = $1`, checkInID).Scan(&c, &r)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, time.Time{}, nil
	} else if err != nil {
		return time.Time{}, time.Time{}, err
	}
	return time.UnixMilli(c).UTC(), time.UnixMilli(r).UTC(), nil
}

// HasVersionEvent reports whether an event (an edit or a redaction) already made a version.
func (q *CheckInQuery) HasVersionEvent(ctx context.Context, eventID id.EventID) (bool, error) {
	var one int
	err := q.db.QueryRow(ctx, `SELECT 1 FROM checkin_versions WHERE event_id = $1`, eventID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// CheckInFilter selects check-ins of a case.
type CheckInFilter struct {
	CaseID    int64
	PatientID id.UserID // "" = every patient of the case
	Since     time.Time // zero = no lower bound
	Limit     int       // 0 = no limit
	// WithErrors includes check-ins marked entered-in-error.
	WithErrors bool
}

// List returns a case's check-ins, newest first.
func (q *CheckInQuery) List(ctx context.Context, f CheckInFilter) ([]*CheckIn, error) {
	return q.Iter(ctx, f).AsList()
}

// Iter is List row by row, so that a caller can stop reading early.
func (q *CheckInQuery) Iter(ctx context.Context, f CheckInFilter) dbutil.RowIter[*CheckIn] {
	query := checkInSelect + " WHERE c.case_id = $1 AND c.effective_at >= $2"
	args := []any{f.CaseID, f.Since.UnixMilli()}
	if f.PatientID != "" {
		args = append(args, f.PatientID)
		query += fmt.Sprintf(" AND c.patient_id = $%d", len(args))
	}
	if !f.WithErrors {
		query += " AND v.status <> '" + StatusEnteredInError + "'"
	}
	query += " ORDER BY c.effective_at DESC, c.id DESC"
	if f.Limit > 0 {
		args = append(args, f.Limit)
		query += fmt.Sprintf(" LIMIT $%d", len(args))
	}
	rows, err := q.db.Query(ctx, query, args...)
	return dbutil.NewRowIterWithError(rows, scanCheckIn, err)
}

// Versions returns every version of a check-in, oldest first.
func (q *CheckInQuery) Versions(ctx context.Context, checkInID int64) ([]*CheckIn, error) {
	rows, err := q.db.Query(ctx, `SELECT c.id, c.case_id, c.event_id, c.room_id, c.patient_id, c.recorded_by, c.source,
		c.effective_at, c.created_at, v.version, v.status, v.values_json, v.note, v.event_id, v.author, v.created_at
		FROM checkins c JOIN checkin_versions v ON v.checkin_id = c.id WHERE c.id = $1 ORDER BY v.version`, checkInID)
	return dbutil.NewRowIterWithError(rows, scanCheckIn, err).AsList()
}
