package store

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// EffectQuery remembers the results of Matrix calls that are not idempotent, such as creating a room, by the
// event that caused them and a step name.
type EffectQuery struct {
	db *dbutil.Database
}

// Get returns the stored result of a step, or "".
func (q *EffectQuery) Get(ctx context.Context, cause id.EventID, step string) (string, error) {
	var result string
	err := q.db.QueryRow(ctx, `SELECT result FROM matrix_effects WHERE cause_event_id = $1 AND step = $2`, cause, step).Scan(&result)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return result, err
}

// Put stores the result of a step at once (outside the event's transaction: the Matrix call already happened).
func (q *EffectQuery) Put(ctx context.Context, cause id.EventID, step, result string) error {
	_, err := q.db.Exec(ctx, `INSERT INTO matrix_effects (cause_event_id, step, result, created_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (cause_event_id, step) DO NOTHING`, cause, step, result, time.Now().UnixMilli())
	return err
}
