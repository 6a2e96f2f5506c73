package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// InboxEvent is one homeserver event as stored before the transaction that brought it was acknowledged.
type InboxEvent struct {
	Seq        int64
	EventID    id.EventID
	RoomID     id.RoomID
	Sender     id.UserID
	Type       string
	OriginTS   int64
	Raw        []byte
	ReceivedAt time.Time
}

// InboxQuery reads and writes the inbox table.
type InboxQuery struct {
	db *dbutil.Database
}

const (
	pendingInboxQuery = `
		SELECT seq, event_id, room_id, sender, event_type, origin_ts, raw, received_at
		FROM inbox WHERE room_id = $1 AND processed_at IS NULL ORDER BY seq LIMIT $2`
	markProcessedQuery  = `UPDATE inbox SET processed_at = $2, outcome = $3 WHERE seq = $1 AND processed_at IS NULL`
	pendingRoomsQuery   = `SELECT DISTINCT room_id FROM inbox WHERE processed_at IS NULL`
	backlogQuery        = `SELECT COUNT(*), COALESCE(MIN(received_at), 0) FROM inbox WHERE processed_at IS NULL`
	outcomeByEventQuery = `SELECT COALESCE(outcome, '') FROM inbox WHERE event_id = $1`
)

// Add stores events with one multi-row statement per batch, in one database transaction. Events already in the
// inbox (same event ID) are skipped; the room IDs that received new events are returned so that their processing
// can be woken up.
func (q *InboxQuery) Add(ctx context.Context, events []*InboxEvent) (newRooms []id.RoomID, err error) {
	if len(events) == 0 {
		return nil, nil
	}
	events = uniqueEvents(events)
	seen := make(map[id.RoomID]struct{})
	err = q.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for start := 0; start < len(events); start += inboxInsertBatch {
			batch := events[start:min(start+inboxInsertBatch, len(events))]
			var sb strings.Builder
			sb.WriteString("INSERT INTO inbox (event_id, room_id, sender, event_type, origin_ts, raw, received_at) VALUES ")
			args := make([]any, 0, len(batch)*7)
			for i, evt := range batch {
				if i > 0 {
					sb.WriteString(", ")
				}
				n := len(args)
				fmt.Fprintf(&sb, "($%d, $%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7)
				args = append(args, evt.EventID, evt.RoomID, evt.Sender, evt.Type, evt.OriginTS, string(evt.Raw), evt.ReceivedAt.UnixMilli())
			}
			sb.WriteString(" ON CONFLICT (event_id) DO NOTHING RETURNING room_id")
			rows, err := q.db.Query(ctx, sb.String(), args...)
			if err != nil {
				return fmt.Errorf("failed to store events: %w", err)
			}
			for rows.Next() {
				var roomID id.RoomID
				if err = rows.Scan(&roomID); err != nil {
					_ = rows.Close()
					return err
				}
				if _, ok := seen[roomID]; !ok {
					seen[roomID] = struct{}{}
					newRooms = append(newRooms, roomID)
				}
			}
			if err = rows.Close(); err != nil {
				return err
			}
			if err = rows.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return newRooms, nil
}

// uniqueEvents drops repeats of an event ID within one batch (a homeserver may re-form a batch with repeats).
func uniqueEvents(events []*InboxEvent) []*InboxEvent {
	ids := make(map[id.EventID]struct{}, len(events))
	out := events[:0:0]
	for _, evt := range events {
		if _, dup := ids[evt.EventID]; !dup {
			ids[evt.EventID] = struct{}{}
			out = append(out, evt)
		}
	}
	return out
}

// inboxInsertBatch keeps a multi-row insert under SQLite's limit of bound parameters.
const inboxInsertBatch = 100

// Pending returns up to limit unprocessed events of a room in arrival order.
func (q *InboxQuery) Pending(ctx context.Context, roomID id.RoomID, limit int) ([]*InboxEvent, error) {
	rows, err := q.db.Query(ctx, pendingInboxQuery, roomID, limit)
	if err != nil {
		return nil, fmt.Errorf("failed to query pending events: %w", err)
	}
	return dbutil.NewRowIterWithError(rows, scanInboxEvent, err).AsList()
}

func scanInboxEvent(row dbutil.Scannable) (*InboxEvent, error) {
	var evt InboxEvent
	var raw string
	var receivedAt int64
	err := row.Scan(&evt.Seq, &evt.EventID, &evt.RoomID, &evt.Sender, &evt.Type, &evt.OriginTS, &raw, &receivedAt)
	if err != nil {
		return nil, err
	}
	evt.Raw = []byte(raw)
	evt.ReceivedAt = time.UnixMilli(receivedAt)
	return &evt, nil
}

// MarkProcessed records that an event's effects are stored. Call it inside the transaction that stores them.
// It reports false when the event had already been marked, so the caller can roll back a duplicate.
func (q *InboxQuery) MarkProcessed(ctx context.Context, seq int64, outcome string) (bool, error) {
	res, err := q.db.Exec(ctx, markProcessedQuery, seq, time.Now().UnixMilli(), outcome)
	if err != nil {
		return false, fmt.Errorf("failed to mark event processed: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// PendingRooms lists the rooms that have unprocessed events.
func (q *InboxQuery) PendingRooms(ctx context.Context) ([]id.RoomID, error) {
	rows, err := q.db.Query(ctx, pendingRoomsQuery)
	return dbutil.NewRowIterWithError(rows, dbutil.ScanSingleColumn[id.RoomID], err).AsList()
}

// Backlog returns how many events wait for processing and when the oldest of them arrived.
func (q *InboxQuery) Backlog(ctx context.Context) (count int, oldest time.Time, err error) {
	var oldestMS int64
	err = q.db.QueryRow(ctx, backlogQuery).Scan(&count, &oldestMS)
	if oldestMS > 0 {
		oldest = time.UnixMilli(oldestMS)
	}
	return
}

// Outcome returns what processing an event resulted in ("" while it is pending or unknown).
func (q *InboxQuery) Outcome(ctx context.Context, eventID id.EventID) (outcome string, err error) {
	err = q.db.QueryRow(ctx, outcomeByEventQuery, eventID).Scan(&outcome)
	return
}
