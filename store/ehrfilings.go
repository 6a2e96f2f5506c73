package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// FiledMessage is one Matrix message as it was filed to the chart.
type FiledMessage struct {
	EventID id.EventID `json:"event_id"`
	Sender  id.UserID  `json:"sender"`
	// SentAt is the message's origin_server_ts in milliseconds since the epoch.
	SentAt int64  `json:"ts"`
	Text   string `json:"text"`
}

// Sent is when the message was sent, in UTC.
func (m FiledMessage) Sent() time.Time { return time.UnixMilli(m.SentAt).UTC() }

// Filing is what one /file command filed: a message, or the messages of a thread, oldest first.
type Filing struct {
	ID           int64
	CaseID       int64
	RoomID       id.RoomID
	CommandEvent id.EventID
	FiledBy      id.UserID
	ThreadRoot   id.EventID // "" when one message was filed
	Messages     []FiledMessage
	CreatedAt    time.Time
}

// MessagesKey is a digest of the filed messages' event IDs (in any order): two filings of the same messages have the
// same key.
func (f *Filing) MessagesKey() string {
	ids := make([]string, len(f.Messages))
	for i, m := range f.Messages {
		ids[i] = string(m.EventID)
	}
	slices.Sort(ids)
	sum := sha256.Sum256([]byte(strings.Join(ids, "\n")))
	return hex.EncodeToString(sum[:])
}

// FilingQuery stores what /file filed until the EHR outbox delivers it. Nothing is updated or deleted.
type FilingQuery struct {
	db *dbutil.Database
}

const (
	filingColumns     = `id, case_id, room_id, command_event, filed_by, thread_root, messages_json, created_at`
	insertFilingQuery = `INSERT INTO ehr_filings (case_id, room_id, command_event, filed_by, thread_root, messages_key,
		messages_json, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
)

func scanFiling(row dbutil.Scannable) (*Filing, error) {
	var f Filing
	var messages string
	var created int64
	if err := row.Scan(&f.ID, &f.CaseID, &f.RoomID, &f.CommandEvent, &f.FiledBy, &f.ThreadRoot, &messages, &created); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(messages), &f.Messages); err != nil {
		return nil, fmt.Errorf("filing %d has unreadable messages: %w", f.ID, err)
	}
	f.CreatedAt = time.UnixMilli(created).UTC()
	return &f, nil
}

// Add stores a filing and sets its ID. Call it inside the command's transaction, with the outbox item that
// delivers it.
func (q *FilingQuery) Add(ctx context.Context, f *Filing) error {
	if len(f.Messages) == 0 {
		return errors.New("a filing needs at least one message")
	}
	data, err := json.Marshal(f.Messages)
	if err != nil {
		return err
	}
	if f.CreatedAt.IsZero() {
		f.CreatedAt = time.Now().UTC()
	}
	args := []any{f.CaseID, f.RoomID, f.CommandEvent, f.FiledBy, f.ThreadRoot, f.MessagesKey(), string(data), f.CreatedAt.UnixMilli()}
	if q.db.Dialect == dbutil.Postgres {
		err = q.db.QueryRow(ctx, insertFilingQuery+" RETURNING id", args...).Scan(&f.ID)
	} else {
		var res sql.Result
		if res, err = q.db.Exec(ctx, insertFilingQuery, args...); err == nil {
			f.ID, err = res.LastInsertId()
		}
	}
	if err != nil {
		return fmt.Errorf("failed to store filing: %w", err)
	}
	return nil
}

// Get returns a filing, or nil.
func (q *FilingQuery) Get(ctx context.Context, filingID int64) (*Filing, error) {
	f, err := scanFiling(q.db.QueryRow(ctx, `SELECT `+filingColumns+` FROM ehr_filings WHERE id = $1`, filingID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return f, err
}

// Same returns the earliest filing of a case with the same messages as f (see MessagesKey), or nil.
func (q *FilingQuery) Same(ctx context.Context, f *Filing) (*Filing, error) {
	existing, err := scanFiling(q.db.QueryRow(ctx, `SELECT `+filingColumns+` FROM ehr_filings
		WHERE case_id = $1 AND messages_key = $2 ORDER BY id LIMIT 1`, f.CaseID, f.MessagesKey()))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return existing, err
}

// VersionCount counts the versions of all plan items of a case: each change adds one, so it numbers the states of
// the whole plan (the EHR outbox's version of a case's CarePlan).
func (q *PlanQuery) VersionCount(ctx context.Context, caseID int64) (int, error) {
	var n int
	err := q.db.QueryRow(ctx, `SELECT COUNT(*) FROM plan_item_versions v JOIN plan_items i ON i.id = v.item_id
		WHERE i.case_id = $1`, caseID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("failed to count plan versions of case %d: %w", caseID, err)
	}
	return n, nil
}
