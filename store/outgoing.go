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
)

// Outgoing is a Matrix event the bot has decided to send. It is stored in the same database transaction as the
// decision and sent afterwards with a transaction ID derived from its sequence number, so a crash between sending
// and recording the send makes the homeserver deduplicate the retry instead of showing the message twice.
type Outgoing struct {
	Seq          int64
	RoomID       id.RoomID
	Type         event.Type
	Content      json.RawMessage
	CauseEventID id.EventID
	Attempts     int
	// CauseTime is the timestamp of the event that caused the message (zero when none), for reply latency.
	CauseTime time.Time
}

// OutgoingQuery reads and writes the outgoing table.
type OutgoingQuery struct {
	db *dbutil.Database
}

const (
	insertOutgoingQuery = `
		INSERT INTO outgoing (room_id, event_type, content, cause_event_id, created_at) VALUES ($1, $2, $3, $4, $5)`
	pendingOutgoingQuery = `
		SELECT o.seq, o.room_id, o.event_type, o.content, COALESCE(o.cause_event_id, ''), o.attempts, COALESCE(i.origin_ts, 0)
		FROM outgoing o LEFT JOIN inbox i ON i.event_id = o.cause_event_id
		WHERE o.room_id = $1 AND o.sent_at IS NULL AND o.failed_at IS NULL ORDER BY o.seq LIMIT $2`
	pendingOutgoingRoomsQuery = `SELECT DISTINCT room_id FROM outgoing WHERE sent_at IS NULL AND failed_at IS NULL`
	markSentQuery             = `UPDATE outgoing SET sent_at = $2, sent_event_id = $3, attempts = attempts + 1 WHERE seq = $1`
	markAttemptQuery          = `UPDATE outgoing SET attempts = attempts + 1, last_error = $2 WHERE seq = $1`
	markFailedQuery           = `UPDATE outgoing SET attempts = attempts + 1, last_error = $2, failed_at = $3 WHERE seq = $1`
	sentEventQuery            = `SELECT COALESCE(sent_event_id, '') FROM outgoing WHERE seq = $1`
	unsentBeforeQuery         = `
		SELECT seq FROM outgoing WHERE room_id = $1 AND sent_at IS NULL AND failed_at IS NULL AND created_at < $2 ORDER BY seq`
	firstUnsentBeforeQuery = `
		SELECT room_id, MIN(seq) FROM outgoing WHERE sent_at IS NULL AND failed_at IS NULL AND created_at < $1
		GROUP BY room_id`
)

// Add queues an event for sending. Call it inside the transaction that records the decision to send it.
func (q *OutgoingQuery) Add(ctx context.Context, roomID id.RoomID, evtType event.Type, content any, cause id.EventID) (int64, error) {
	data, err := json.Marshal(content)
	if err != nil {
		return 0, fmt.Errorf("failed to encode outgoing %s: %w", evtType.Type, err)
	}
	var causeCol any
	if cause != "" {
		causeCol = cause
	}
	var seq int64
	err = q.db.QueryRow(ctx, insertOutgoingQuery+" RETURNING seq", roomID, evtType.Type, string(data), causeCol,
		time.Now().UnixMilli()).Scan(&seq)
	if err != nil {
		return 0, fmt.Errorf("failed to queue outgoing %s: %w", evtType.Type, err)
	}
	return seq, nil
}

// Pending returns up to limit unsent events of a room in the order they were queued.
func (q *OutgoingQuery) Pending(ctx context.Context, roomID id.RoomID, limit int) ([]*Outgoing, error) {
	rows, err := q.db.Query(ctx, pendingOutgoingQuery, roomID, limit)
	return dbutil.NewRowIterWithError(rows, scanOutgoing, err).AsList()
}

func scanOutgoing(row dbutil.Scannable) (*Outgoing, error) {
	var out Outgoing
	var evtType, content string
	var causeTS int64
	err := row.Scan(&out.Seq, &out.RoomID, &evtType, &content, &out.CauseEventID, &out.Attempts, &causeTS)
	if err != nil {
		return nil, err
	}
	if causeTS > 0 {
		out.CauseTime = time.UnixMilli(causeTS)
	}
	out.Type = event.Type{Type: evtType, Class: event.MessageEventType}
	out.Content = json.RawMessage(content)
	return &out, nil
}

// PendingRooms lists the rooms with unsent events.
func (q *OutgoingQuery) PendingRooms(ctx context.Context) ([]id.RoomID, error) {
	rows, err := q.db.Query(ctx, pendingOutgoingRoomsQuery)
	return dbutil.NewRowIterWithError(rows, dbutil.ScanSingleColumn[id.RoomID], err).AsList()
}

// UnsentBefore returns the sequence numbers of a room's unsent events that were queued before t, in order.
func (q *OutgoingQuery) UnsentBefore(ctx context.Context, roomID id.RoomID, t time.Time) ([]int64, error) {
	rows, err := q.db.Query(ctx, unsentBeforeQuery, roomID, t.UnixMilli())
	return dbutil.NewRowIterWithError(rows, dbutil.ScanSingleColumn[int64], err).AsList()
}

// FirstUnsentBefore returns, per room with unsent events queued before t, the first of them.
func (q *OutgoingQuery) FirstUnsentBefore(ctx context.Context, t time.Time) (map[id.RoomID]int64, error) {
	rows, err := q.db.Query(ctx, firstUnsentBeforeQuery, t.UnixMilli())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	first := make(map[id.RoomID]int64)
	for rows.Next() {
		var roomID id.RoomID
		var seq int64
		if err = rows.Scan(&roomID, &seq); err != nil {
			return nil, err
		}
		first[roomID] = seq
	}
	return first, rows.Err()
}

// MarkSent records the event ID the homeserver gave a sent event.
func (q *OutgoingQuery) MarkSent(ctx context.Context, seq int64, eventID id.EventID) error {
	_, err := q.db.Exec(ctx, markSentQuery, seq, time.Now().UnixMilli(), eventID)
	return err
}

// MarkAttempt records a failed attempt that will be retried.
func (q *OutgoingQuery) MarkAttempt(ctx context.Context, seq int64, reason string) error {
	_, err := q.db.Exec(ctx, markAttemptQuery, seq, reason)
	return err
}

// MarkFailed gives up on an event the homeserver refused for good.
func (q *OutgoingQuery) MarkFailed(ctx context.Context, seq int64, reason string) error {
	_, err := q.db.Exec(ctx, markFailedQuery, seq, reason, time.Now().UnixMilli())
	return err
}

// SentEventID returns the event ID of a sent event, or "" while it is unsent.
func (q *OutgoingQuery) SentEventID(ctx context.Context, seq int64) (evtID id.EventID, err error) {
	err = q.db.QueryRow(ctx, sentEventQuery, seq).Scan(&evtID)
	return
}

// FirstSentFor returns the event ID of the first message the bot sent in a room because of an event (e.g. its
// confirmation of a command), or "" if none was sent.
func (q *OutgoingQuery) FirstSentFor(ctx context.Context, roomID id.RoomID, cause id.EventID) (id.EventID, error) {
	var evtID id.EventID
	err := q.db.QueryRow(ctx, `SELECT sent_event_id FROM outgoing WHERE room_id = $1 AND cause_event_id = $2
		AND event_type = $3 AND sent_event_id IS NOT NULL ORDER BY seq LIMIT 1`, roomID, cause, event.EventMessage.Type).Scan(&evtID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return evtID, err
}

// BySentEvent returns the sequence number of the sent message that became eventID, or 0 if the bot sent no such
// message.
func (q *OutgoingQuery) BySentEvent(ctx context.Context, eventID id.EventID) (int64, error) {
	var seq int64
	err := q.db.QueryRow(ctx, `SELECT seq FROM outgoing WHERE sent_event_id = $1`, eventID).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return seq, err
}
