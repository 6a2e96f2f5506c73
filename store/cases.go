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

// Case is a patient context with a care team and two rooms: the case room (clinicians only) and the patient room.
type Case struct {
	ID            int64
	Title         string
	PatientRef    string // FHIR reference, e.g. Patient/123
	MRN           string
	CaseRoomID    id.RoomID
	PatientRoomID id.RoomID
	CreatedBy     id.UserID
	CreatedAt     time.Time
	ClosedBy      id.UserID
	ClosedAt      time.Time
	BotRemovedAt  time.Time
}

// Open reports whether the case has not been closed.
func (c *Case) Open() bool { return c.ClosedAt.IsZero() }

// TeamMember is a clinician on a case's care team.
type TeamMember struct {
	UserID  id.UserID
	Label   string
	AddedBy id.UserID
	AddedAt time.Time
}

// CasePatient is a patient user invited into a case's patient room.
type CasePatient struct {
	UserID    id.UserID
	InvitedBy id.UserID
	InvitedAt time.Time
	JoinedAt  time.Time
	LeftAt    time.Time
}

// CaseQuery reads and writes cases, care teams and case patients.
type CaseQuery struct {
	db *dbutil.Database
}

const caseColumns = `id, title, COALESCE(patient_ref, ''), COALESCE(mrn, ''), case_room_id, COALESCE(patient_room_id, ''),
	created_by, created_at, COALESCE(closed_by, ''), COALESCE(closed_at, 0), COALESCE(bot_removed_at, 0)`

func scanCase(row dbutil.Scannable) (*Case, error) {
	var c Case
	var created, closed, removed int64
	err := row.Scan(&c.ID, &c.Title, &c.PatientRef, &c.MRN, &c.CaseRoomID, &c.PatientRoomID, &c.CreatedBy, &created,
		&c.ClosedBy, &closed, &removed)
	if err != nil {
		return nil, err
	}
	c.CreatedAt = time.UnixMilli(created)
	if closed != 0 {
		c.ClosedAt = time.UnixMilli(closed)
	}
	if removed != 0 {
		c.BotRemovedAt = time.UnixMilli(removed)
	}
	return &c, nil
}

// Create stores a new case; causeEvent is the command's event ID (unique: a command creates at most one case).
func (q *CaseQuery) Create(ctx context.Context, c *Case, causeEvent id.EventID) error {
	now := time.Now()
	args := []any{c.Title, nullString(c.PatientRef), nullString(c.MRN), c.CaseRoomID, nullString(string(c.PatientRoomID)),
		c.CreatedBy, causeEvent, now.UnixMilli()}
	const insert = `INSERT INTO cases (title, patient_ref, mrn, case_room_id, patient_room_id, created_by, created_event, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
	err := q.db.QueryRow(ctx, insert+" RETURNING id", args...).Scan(&c.ID)
	if err != nil {
		return fmt.Errorf("failed to store case: %w", err)
	}
	c.CreatedAt = now
	return nil
}

func (q *CaseQuery) one(ctx context.Context, where string, arg any) (*Case, error) {
	c, err := scanCase(q.db.QueryRow(ctx, "SELECT "+caseColumns+" FROM cases WHERE "+where, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return c, err
}

// ByID returns a case, or nil.
func (q *CaseQuery) ByID(ctx context.Context, caseID int64) (*Case, error) {
	return q.one(ctx, "id = $1", caseID)
}

// ByRoom returns the case whose case room or patient room is roomID, or nil.
func (q *CaseQuery) ByRoom(ctx context.Context, roomID id.RoomID) (*Case, error) {
	return q.one(ctx, "case_room_id = $1 OR patient_room_id = $1", roomID)
}

// ForMember lists the cases whose care team includes userID, newest first.
func (q *CaseQuery) ForMember(ctx context.Context, userID id.UserID) ([]*Case, error) {
	rows, err := q.db.Query(ctx, "SELECT "+caseColumns+` FROM cases
		WHERE id IN (SELECT case_id FROM care_team WHERE user_id = $1) ORDER BY id DESC`, userID)
	return dbutil.NewRowIterWithError(rows, scanCase, err).AsList()
}

// Close marks a case closed.
func (q *CaseQuery) Close(ctx context.Context, caseID int64, by id.UserID) error {
	_, err := q.db.Exec(ctx, `UPDATE cases SET closed_by = $2, closed_at = $3 WHERE id = $1 AND closed_at IS NULL`,
		caseID, by, time.Now().UnixMilli())
	return err
}

// MarkBotRemoved records that the bot was removed from one of the case's rooms.
func (q *CaseQuery) MarkBotRemoved(ctx context.Context, caseID int64) error {
	_, err := q.db.Exec(ctx, `UPDATE cases SET bot_removed_at = $2 WHERE id = $1 AND bot_removed_at IS NULL`,
		caseID, time.Now().UnixMilli())
	return err
}

// AddTeamMember puts a clinician on a care team; it reports false if they already were on it.
func (q *CaseQuery) AddTeamMember(ctx context.Context, caseID int64, userID id.UserID, label string, by id.UserID) (bool, error) {
	res, err := q.db.Exec(ctx, `INSERT INTO care_team (case_id, user_id, label, added_by, added_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (case_id, user_id) DO NOTHING`, caseID, userID, label, by, time.Now().UnixMilli())
	if err != nil {
		return false, fmt.Errorf("failed to add team member: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// RemoveTeamMember takes a clinician off a care team; it reports false if they were not on it.
func (q *CaseQuery) RemoveTeamMember(ctx context.Context, caseID int64, userID id.UserID) (bool, error) {
	res, err := q.db.Exec(ctx, `DELETE FROM care_team WHERE case_id = $1 AND user_id = $2`, caseID, userID)
	if err != nil {
		return false, fmt.Errorf("failed to remove team member: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// IsOnTeam reports whether userID is on the case's care team.
func (q *CaseQuery) IsOnTeam(ctx context.Context, caseID int64, userID id.UserID) (bool, error) {
	var one int
	err := q.db.QueryRow(ctx, `SELECT 1 FROM care_team WHERE case_id = $1 AND user_id = $2`, caseID, userID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// Team lists a case's care team in the order they were added.
func (q *CaseQuery) Team(ctx context.Context, caseID int64) ([]*TeamMember, error) {
	rows, err := q.db.Query(ctx, `SELECT user_id, label, added_by, added_at FROM care_team WHERE case_id = $1 ORDER BY added_at, user_id`, caseID)
	return dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (*TeamMember, error) {
		var m TeamMember
		var at int64
		err := row.Scan(&m.UserID, &m.Label, &m.AddedBy, &at)
		m.AddedAt = time.UnixMilli(at)
		return &m, err
	}, err).AsList()
}

// AddPatient records a patient invited into the case's patient room; it reports false if they were already.
func (q *CaseQuery) AddPatient(ctx context.Context, caseID int64, userID, by id.UserID) (bool, error) {
	res, err := q.db.Exec(ctx, `INSERT INTO case_patients (case_id, user_id, invited_by, invited_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (case_id, user_id) DO UPDATE SET left_at = NULL WHERE case_patients.left_at IS NOT NULL`,
		caseID, userID, by, time.Now().UnixMilli())
	if err != nil {
		return false, fmt.Errorf("failed to add patient: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// SetPatientMembership records a patient joining or leaving the patient room.
func (q *CaseQuery) SetPatientMembership(ctx context.Context, caseID int64, userID id.UserID, joined bool) error {
	query := `UPDATE case_patients SET joined_at = $3, left_at = NULL WHERE case_id = $1 AND user_id = $2`
	if !joined {
		query = `UPDATE case_patients SET left_at = $3 WHERE case_id = $1 AND user_id = $2`
	}
	_, err := q.db.Exec(ctx, query, caseID, userID, time.Now().UnixMilli())
	return err
}

// Patients lists a case's patients (current and former).
func (q *CaseQuery) Patients(ctx context.Context, caseID int64) ([]*CasePatient, error) {
	rows, err := q.db.Query(ctx, `SELECT user_id, invited_by, invited_at, COALESCE(joined_at, 0), COALESCE(left_at, 0)
		FROM case_patients WHERE case_id = $1 ORDER BY invited_at`, caseID)
	return dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (*CasePatient, error) {
		var p CasePatient
		var invited, joined, left int64
		err := row.Scan(&p.UserID, &p.InvitedBy, &invited, &joined, &left)
		p.InvitedAt = time.UnixMilli(invited)
		if joined != 0 {
			p.JoinedAt = time.UnixMilli(joined)
		}
		if left != 0 {
			p.LeftAt = time.UnixMilli(left)
		}
		return &p, err
	}, err).AsList()
}

// IsPatientOf reports whether userID is a current (not departed) patient of the case.
func (q *CaseQuery) IsPatientOf(ctx context.Context, caseID int64, userID id.UserID) (bool, error) {
	var one int
	err := q.db.QueryRow(ctx, `SELECT 1 FROM case_patients WHERE case_id = $1 AND user_id = $2 AND left_at IS NULL`,
		caseID, userID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// IsAnyPatient reports whether userID is a patient of any case (a patient can never join a care team).
func (q *CaseQuery) IsAnyPatient(ctx context.Context, userID id.UserID) (bool, error) {
	var one int
	err := q.db.QueryRow(ctx, `SELECT 1 FROM case_patients WHERE user_id = $1 LIMIT 1`, userID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// OpenCases lists the cases that are not closed.
func (q *CaseQuery) OpenCases(ctx context.Context) ([]*Case, error) {
	rows, err := q.db.Query(ctx, "SELECT "+caseColumns+" FROM cases WHERE closed_at IS NULL ORDER BY id")
	return dbutil.NewRowIterWithError(rows, scanCase, err).AsList()
}

// RemoveTeamMembersOfServer removes the users of a homeserver from every care team and returns how many team
// memberships ended.
func (q *CaseQuery) RemoveTeamMembersOfServer(ctx context.Context, server string) (int, error) {
	rows, err := q.db.Query(ctx, `SELECT case_id, user_id FROM care_team WHERE user_id LIKE $1`, "%:"+server)
	if err != nil {
		return 0, err
	}
	type member struct {
		caseID int64
		userID id.UserID
	}
	var found []member
	for rows.Next() {
		var m member
		if err = rows.Scan(&m.caseID, &m.userID); err != nil {
			_ = rows.Close()
			return 0, err
		}
		if m.userID.Homeserver() == server {
			found = append(found, m)
		}
	}
	if err = rows.Err(); err != nil {
		return 0, err
	}
	_ = rows.Close()
	for _, m := range found {
		if _, err = q.RemoveTeamMember(ctx, m.caseID, m.userID); err != nil {
			return 0, err
		}
	}
	return len(found), nil
}
