package bot

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// ErrUndecryptable means the bot's device could not decrypt a fetched event (it never got the room key, or the
// bot was built without encryption).
var ErrUndecryptable = errors.New("the event could not be decrypted")

// ErrTooManyEvents means a thread holds more events than a caller asked for.
var ErrTooManyEvents = errors.New("too many events")

// FetchEvent reads one event of a room from the homeserver as it is now, decrypted with the bot's device when it
// was encrypted (the decrypted event keeps its ID, room, sender and timestamp). A redacted event comes back with
// empty content.
func (b *Bot) FetchEvent(ctx context.Context, roomID id.RoomID, eventID id.EventID) (*event.Event, error) {
	evt, err := b.readClient().GetEvent(ctx, roomID, eventID)
	if err != nil {
		return nil, fmt.Errorf("failed to fetch event %s: %w", eventID, err)
	}
	return b.readableEvent(ctx, roomID, evt)
}

// FetchThread reads the events of the thread rooted at root (without the root itself) from the homeserver, through
// the relations endpoint, decrypted, oldest first. It fails with ErrTooManyEvents when the thread holds more than
// limit events.
func (b *Bot) FetchThread(ctx context.Context, roomID id.RoomID, root id.EventID, limit int) ([]*event.Event, error) {
	cli := b.readClient()
	req := &mautrix.ReqGetRelations{RelationType: event.RelThread, Dir: mautrix.DirectionForward, Limit: 50}
	var raw []*event.Event
	seen := make(map[id.EventID]bool)
	for page := 0; ; page++ {
		resp, err := cli.GetRelations(ctx, roomID, root, req)
		if err != nil {
			return nil, fmt.Errorf("failed to fetch thread %s: %w", root, err)
		}
		for _, evt := range resp.Chunk {
			if evt != nil && !seen[evt.ID] {
				seen[evt.ID] = true
				raw = append(raw, evt)
			}
		}
		if len(raw) > limit {
			return nil, fmt.Errorf("thread %s: %w (more than %d)", root, ErrTooManyEvents, limit)
		}
		if resp.NextBatch == "" || resp.NextBatch == req.From || len(resp.Chunk) == 0 {
			break
		}
		req.From = resp.NextBatch
	}
	// The homeserver's stream order is close to, but not always, the order in which people wrote.
	slices.SortStableFunc(raw, func(a, b *event.Event) int {
		switch {
		case a.Timestamp < b.Timestamp:
			return -1
		case a.Timestamp > b.Timestamp:
			return 1
		}
		return 0
	})
	out := make([]*event.Event, 0, len(raw))
	for _, evt := range raw {
		readable, err := b.readableEvent(ctx, roomID, evt)
		if err != nil {
			return nil, err
		}
		out = append(out, readable)
	}
	return out, nil
}

// readClient is the client that reads room history: the bot's encryption device when it has one (a real device
// access token works on every endpoint), otherwise the appservice's bot user.
func (b *Bot) readClient() *mautrix.Client {
	if b.e2ee != nil {
		if cli := b.e2ee.client(); cli != nil {
			return cli
		}
	}
	return b.AS.BotIntent().Client
}

// readableEvent parses an event read from the client API and decrypts it when it is encrypted.
func (b *Bot) readableEvent(ctx context.Context, roomID id.RoomID, evt *event.Event) (*event.Event, error) {
	if evt.RoomID == "" {
		evt.RoomID = roomID
	}
	if evt.StateKey != nil {
		evt.Type.Class = event.StateEventType
	} else {
		evt.Type.Class = event.MessageEventType
	}
	if evt.Unsigned.RedactedBecause != nil || len(evt.Content.VeryRaw) == 0 {
		return evt, nil
	}
	if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrUnsupportedContentType) &&
		!errors.Is(err, event.ErrContentAlreadyParsed) {
		return nil, fmt.Errorf("failed to parse event %s: %w", evt.ID, err)
	}
	if evt.Type != event.EventEncrypted {
		return evt, nil
	}
	if b.e2ee == nil {
		return nil, fmt.Errorf("%w: %s (no encryption support)", ErrUndecryptable, evt.ID)
	}
	decrypted, err := b.e2ee.decrypt(ctx, evt)
	if err == nil && decrypted.Type == event.EventEncrypted {
		err = errors.New("decrypted event is itself encrypted")
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrUndecryptable, evt.ID, err)
	}
	return decrypted, nil
}
