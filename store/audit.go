package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// AuditEntry is one row of the append-only audit log. It holds IDs and short words, never patient data.
type AuditEntry struct {
	ID      int64
	At      time.Time
	Actor   id.UserID
	Action  string // e.g. "command:case new", "read:checkins", "write:checkin"
	Outcome string // e.g. "ok", "refused:role", "refused:room"
	CaseID  int64
	RoomID  id.RoomID
	EventID id.EventID
	Detail  string
}

// AuditQuery appends to and reads the audit log.
type AuditQuery struct {
	db *dbutil.Database
}

// Add appends an entry. Call it inside the transaction of the action it records.
func (q *AuditQuery) Add(ctx context.Context, e *AuditEntry) error {
	at := e.At
	if at.IsZero() {
		at = time.Now()
	}
	var caseID any
	if e.CaseID != 0 {
		caseID = e.CaseID
	}
	_, err := q.db.Exec(ctx, `INSERT INTO audit (at, actor, action, outcome, case_id, room_id, event_id, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		at.UnixMilli(), e.Actor, e.Action, e.Outcome, caseID, nullString(string(e.RoomID)), nullString(string(e.EventID)), e.Detail)
	if err != nil {
		return fmt.Errorf("failed to write audit entry: %w", err)
	}
	return nil
}

// AuditFilter selects audit entries; zero fields match everything.
type AuditFilter struct {
	Actor  id.UserID
	CaseID int64
	Since  time.Time
	Limit  int
}

// List returns the newest matching entries first.
func (q *AuditQuery) List(ctx context.Context, f AuditFilter) ([]*AuditEntry, error) {
	var where []string
	var args []any
	if f.Actor != "" {
		args = append(args, f.Actor)
		where = append(where, fmt.Sprintf("actor = $%d", len(args)))
	}
	if f.CaseID != 0 {
		args = append(args, f.CaseID)
		where = append(where, fmt.Sprintf("case_id = $%d", len(args)))
	}
	if !f.Since.IsZero() {
		args = append(args, f.Since.UnixMilli())
		where = append(where, fmt.Sprintf("at >= $%d", len(args)))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	query := `SELECT id, at, actor, action, outcome, COALESCE(case_id, 0), COALESCE(room_id, ''), COALESCE(event_id, ''), detail FROM audit`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, limit)
	query += fmt.Sprintf(" ORDER BY id DESC LIMIT $%d", len(args))
	rows, err := q.db.Query(ctx, query, args...)
	return dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (*AuditEntry, error) {
		var e AuditEntry
		var at int64
		err := row.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.Outcome, &e.CaseID, &e.RoomID, &e.EventID, &e.Detail)
		e.At = time.UnixMilli(at)
		return &e, err
	}, err).AsList()
}
