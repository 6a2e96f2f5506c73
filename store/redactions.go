package store

import (
	"context"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// EarlyRedaction is a redaction of an event the bot had not processed when the redaction arrived (the homeserver's
// order of delivery is not the room's order); it is applied when the event arrives.
type EarlyRedaction struct {
	EventID    id.EventID // the redaction
	RoomID     id.RoomID
	Redacts    id.EventID
	Sender     id.UserID
	ReceivedAt time.Time
}

// EarlyRedactionQuery reads and writes the early_redactions table.
type EarlyRedactionQuery struct {
	db *dbutil.Database
}

// Add remembers a redaction (once per redaction event); call it in the transaction of the redaction's turn.
func (q *EarlyRedactionQuery) Add(ctx context.Context, r *EarlyRedaction) error {
	_, err := q.db.Exec(ctx, `INSERT INTO early_redactions (event_id, room_id, redacts, sender, received_at)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING`,
		r.EventID, r.RoomID, r.Redacts, r.Sender, r.ReceivedAt.UnixMilli())
	return err
}

// For lists the remembered redactions of an event in a room, oldest first.
func (q *EarlyRedactionQuery) For(ctx context.Context, roomID id.RoomID, redacts id.EventID) ([]*EarlyRedaction, error) {
	rows, err := q.db.Query(ctx, `SELECT event_id, room_id, redacts, sender, received_at FROM early_redactions
		WHERE redacts = $1 AND room_id = $2 ORDER BY received_at, event_id`, redacts, roomID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*EarlyRedaction
	for rows.Next() {
		r := &EarlyRedaction{}
		var received int64
		if err = rows.Scan(&r.EventID, &r.RoomID, &r.Redacts, &r.Sender, &received); err != nil {
			return nil, err
		}
		r.ReceivedAt = time.UnixMilli(received).UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}
