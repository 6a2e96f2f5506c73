package store

import (
	"context"
	"fmt"
	"time"
)

// Pruning message text. The inbox holds every event as the homeserver sent it and the outgoing queue every message
// the bot sent, both with their text (patient data). Once an event is processed, or a message sent or given up on,
// the text is only needed for a while (debugging, the resend check after a restart); after the retention window it
// is removed and the row stays as a text-free marker: an inbox row keeps its event ID (the unique key that makes a
// replayed or re-delivered event a no-op), room, sender, type, times and outcome; an outgoing row keeps its sequence
// number (the transaction ID of the send, never reused), room, type, cause and sent event ID (what reactions to the
// bot's alerts and polls are matched against). Deleting the rows instead would let an old event the homeserver
// delivers again be processed a second time.
const (
	pruneInboxQuery = `UPDATE inbox SET raw = '' WHERE seq IN (
		SELECT seq FROM inbox WHERE processed_at < $1 AND raw <> '' ORDER BY processed_at LIMIT $2)`
	pruneOutgoingQuery = `UPDATE outgoing SET content = '' WHERE seq IN (
		SELECT seq FROM outgoing WHERE COALESCE(sent_at, failed_at) < $1 AND content <> ''
		ORDER BY COALESCE(sent_at, failed_at) LIMIT $2)`
)

// PruneMessages removes the text of inbox events processed before cutoff and of outgoing messages sent or given up
// on before cutoff, batch rows per database transaction, and returns how many rows of each it pruned.
func (s *Store) PruneMessages(ctx context.Context, cutoff time.Time, batch int) (inbox, outgoing int, err error) {
	if batch <= 0 {
		batch = 1000
	}
	if inbox, err = s.pruneBatches(ctx, pruneInboxQuery, cutoff, batch); err != nil {
		return inbox, 0, fmt.Errorf("failed to prune inbox: %w", err)
	}
	if outgoing, err = s.pruneBatches(ctx, pruneOutgoingQuery, cutoff, batch); err != nil {
		return inbox, outgoing, fmt.Errorf("failed to prune outgoing messages: %w", err)
	}
	return inbox, outgoing, nil
}

func (s *Store) pruneBatches(ctx context.Context, query string, cutoff time.Time, batch int) (total int, err error) {
	for {
		res, err := s.DB.Exec(ctx, query, cutoff.UnixMilli(), batch)
		if err != nil {
			return total, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, err
		}
		total += int(n)
		if n < int64(batch) {
			return total, nil
		}
	}
}

// scrapeQueries are the queries a metrics scrape runs (see Gauges); each reads a partial index of open work only.
var scrapeQueries = map[string]string{
	"inbox backlog":      backlogQuery,
	"ehr outbox pending": outboxPendingGaugeQuery,
	"ehr outbox dead":    outboxDeadGaugeQuery,
}

const (
	outboxPendingGaugeQuery = `SELECT COUNT(*), COALESCE(MIN(created_at), 0) FROM ehr_outbox
		WHERE delivered_at IS NULL AND dead_at IS NULL`
	outboxDeadGaugeQuery = `SELECT COUNT(*) FROM ehr_outbox WHERE dead_at IS NOT NULL`
)

// OpenStats counts pending and dead items and finds the oldest pending one, for metrics: unlike Stats it reads only
// the indexes of open work, not every delivered record (Delivered stays 0).
func (q *EHROutboxQuery) OpenStats(ctx context.Context) (s OutboxStats, err error) {
	var oldest int64
	if err = q.db.QueryRow(ctx, outboxPendingGaugeQuery).Scan(&s.Pending, &oldest); err != nil {
		return
	}
	if oldest != 0 {
		s.OldestPending = time.UnixMilli(oldest)
	}
	err = q.db.QueryRow(ctx, outboxDeadGaugeQuery).Scan(&s.Dead)
	return
}
