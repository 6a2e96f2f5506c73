package bot

import (
	"context"
	"time"
)

const (
	// pruneInterval is how often the text of old inbox events and sent messages is removed (and once at start).
	pruneInterval = time.Hour
	// pruneBatch is how many rows one pruning transaction changes.
	pruneBatch = 1000
)

// startPruner starts the goroutine that removes message text after database.message_retention (see
// store.PruneMessages); Stop ends it.
func (b *Bot) startPruner() {
	b.sched.wg.Add(1)
	go b.runPruner(b.ctx)
}

func (b *Bot) runPruner(ctx context.Context) {
	defer b.sched.wg.Done()
	log := b.Log.With().Str("component", "pruner").Logger()
	retention := b.Config.Database.MessageRetention.Duration
	interval := min(pruneInterval, max(retention/2, time.Minute))
	for {
		inbox, outgoing, err := b.Store.PruneMessages(ctx, time.Now().Add(-retention), pruneBatch)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn().Err(err).Msg("Failed to remove old message text, will retry")
		case inbox+outgoing > 0:
			log.Info().Int("inbox_events", inbox).Int("outgoing_messages", outgoing).
				Dur("retention", retention).Msg("Removed the text of old messages")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
