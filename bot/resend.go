package bot

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// Messages that may have been sent by the previous run of the bot.
//
// A queued message is sent with the transaction ID caseroom.<instance>.<seq> (see sendOutgoing), so that the
// homeserver answers a repeated send with the first event instead of sending it again. That only holds while the
// homeserver remembers the transaction: Dendrite v0.13.8 remembers it in memory, per access token, and only after
// the send succeeded. Its send handler puts the event into the roomserver's input stream and then waits for the
// result with the request's context; when the bot dies during that wait, the roomserver still sends the event, but
// the request fails ("SendEvents failed ... context canceled") and the transaction ID is forgotten. Sending the
// message again after the restart would put it in the room twice.
//
// So the first time a room's queued messages are sent after a start, the unsent messages queued before the start are
// looked for in the room. The Matrix spec has the homeserver return an event's unsigned.transaction_id to the client
// session that sent it. Dendrite's roomserver passes the transaction ID and the sending session on with the event,
// however the request ends, and its sync API returns the ID in /sync (initial and incremental) to that session only:
// a logged-in device (the bot's encryption device), or the appservice token, whose requests all share one session
// (Dendrite's "AS_Device", session 0). /messages and /context never carry it. An initial /sync of the client that
// sends the messages, filtered to the bot's own timeline events, therefore shows which of them are already in their
// room; those are recorded as sent with the event found instead of being sent again.
//
// The lookup happens once per start, for all rooms with messages queued before the start, and only when there are
// such messages; sends of messages queued later are not affected. A message whose send was cut off is found once
// Dendrite has processed it; the lookup waits for that for a few seconds after the start (see lookUpSent). A
// homeserver that takes longer still gets the message a second time.

const (
	// sentLookupLimit is how many of its latest timeline events per room the bot looks at. The message a crash cut
	// off is the last one sent from the room's queue; only events sent outside the queue (joins, pins) and the
	// restart itself (e.g. a display name change) come after it.
	sentLookupLimit   = 50
	sentLookupTimeout = time.Minute
	sentLookupRetry   = 100 * time.Millisecond
)

// sentLookupGrace is how long after the start a message that the previous run may have been sending is waited for
// in its room (see lookUpSent).
var sentLookupGrace = 3 * time.Second

// resendCheck remembers, for one run of the bot, which rooms have been checked and what the lookup found.
type resendCheck struct {
	mu      sync.Mutex
	checked map[id.RoomID]bool
	found   map[id.RoomID]map[int64]id.EventID // nil until the lookup ran
	lookMu  sync.Mutex                         // one lookup at a time
}

// settleUnsent runs before a room's queued messages are sent. The first time for a room after the bot started, it
// records as sent those of the room's messages queued before the start that are already in the room.
func (b *Bot) settleUnsent(ctx context.Context, roomID id.RoomID) error {
	r := &b.resend
	r.mu.Lock()
	done := r.checked[roomID]
	r.mu.Unlock()
	if done {
		return nil
	}
	seqs, err := b.Store.Outgoing.UnsentBefore(ctx, roomID, b.Started)
	if err != nil {
		return err
	}
	if len(seqs) > 0 {
		sent, err := b.sentBeforeStart(ctx, roomID)
		if err != nil {
			return err
		}
		for _, seq := range seqs {
			evtID, ok := sent[seq]
			if !ok {
				continue
			}
			if err = b.Store.Outgoing.MarkSent(ctx, seq, evtID); err != nil {
				return err
			}
			zerolog.Ctx(ctx).Info().Int64("outgoing_seq", seq).Stringer("event_id", evtID).
				Msg("Message queued before the restart is already in the room; recording it instead of sending it again")
		}
	}
	r.mu.Lock()
	if r.checked == nil {
		r.checked = make(map[id.RoomID]bool)
	}
	r.checked[roomID] = true
	delete(r.found, roomID)
	r.mu.Unlock()
	return nil
}

// sentBeforeStart returns the room's messages (by sequence number) found in the room with their event IDs, looking
// them up first if that has not been done yet in this run.
func (b *Bot) sentBeforeStart(ctx context.Context, roomID id.RoomID) (map[int64]id.EventID, error) {
	r := &b.resend
	r.lookMu.Lock()
	defer r.lookMu.Unlock()
	r.mu.Lock()
	looked := r.found != nil
	r.mu.Unlock()
	if !looked {
		found, err := b.lookUpSent(ctx)
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.found = found
		r.mu.Unlock()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.found[roomID], nil
}

// lookUpSent looks for the messages queued before the start in all rooms that have any. A homeserver error that
// retrying will not fix is logged and the lookup is given up (the messages are sent as they would be without it);
// other errors are returned, so that the room's sender tries again later.
//
// A message whose send the previous run's stop cut off reaches the sync API only once Dendrite's roomserver has
// processed it, which can take a while when the homeserver is busy. So while the first unsent message of a room —
// the one the previous run may have been sending: a room's sender sends one message at a time, in order — is not
// found, the lookup is repeated until sentLookupGrace after the start. Each lookup is an initial /sync: an
// incremental one would acknowledge the to-device events of the encryption device's own /sync.
func (b *Bot) lookUpSent(ctx context.Context) (map[id.RoomID]map[int64]id.EventID, error) {
	log := zerolog.Ctx(ctx)
	// The first unsent message of each room: the one the previous run may have been sending.
	first, err := b.Store.Outgoing.FirstUnsentBefore(ctx, b.Started)
	if err != nil {
		return nil, err
	}
	found := make(map[id.RoomID]map[int64]id.EventID)
	if len(first) == 0 {
		return found, nil
	}
	rooms := slices.Collect(maps.Keys(first))
	// The client that sends the queued messages: its session is the one the transaction IDs are returned to.
	cli := b.AS.BotIntent().Client
	if b.e2ee != nil {
		cli = b.e2ee.client()
	}
	deadline := b.Started.Add(sentLookupGrace)
	wait := sentLookupRetry
	lookups := 0
	for {
		lookups++
		reqCtx, cancel := context.WithTimeout(ctx, sentLookupTimeout)
		err = lookUpSentByTxnID(reqCtx, cli, b.BotID(), b.Store.InstanceID, rooms, found)
		cancel()
		if err != nil && isInternalError(err) {
			// Synapse serves no /sync to appservice users; it remembers the transaction IDs of a device's sends for
			// a day (in its database, so across its restarts too), and the bot's sends again with the same IDs
			// duplicate nothing.
			log.Info().Msg("The homeserver serves no /sync to the bot; relying on its transaction ID deduplication " +
				"for the messages queued before the restart")
			break
		} else if err != nil {
			if IsTransient(err) {
				return nil, fmt.Errorf("failed to look for messages sent before the restart: %w", err)
			}
			log.Warn().Err(err).Msg("Failed to look for messages sent before the restart; sending them again")
			break
		}
		missing := 0
		for roomID, seq := range first {
			if _, ok := found[roomID][seq]; !ok {
				missing++
			}
		}
		if missing == 0 || !time.Now().Before(deadline) {
			break
		}
		select {
		case <-time.After(min(wait, time.Until(deadline))):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		wait *= 2
	}
	n := 0
	for _, sent := range found {
		n += len(sent)
	}
	log.Info().Int("rooms", len(rooms)).Int("lookups", lookups).Int("events_with_transaction_id", n).
		Dur("since_start", time.Since(b.Started)).
		Msg("Looked for messages queued before the restart in their rooms")
	return found, nil
}

// sentLookupFilter is the /sync filter of the lookup: the bot's own latest timeline events in the rooms, nothing
// else that a filter can leave out. (Dendrite v0.13.8 ignores "rooms" and returns all joined rooms.)
func sentLookupFilter(botID id.UserID, rooms []id.RoomID) string {
	none := map[string]any{"types": []string{}}
	filter := map[string]any{
		"presence":     none,
		"account_data": none,
		"room": map[string]any{
			"rooms":        rooms,
			"timeline":     map[string]any{"senders": []id.UserID{botID}, "limit": sentLookupLimit},
			"state":        none,
			"ephemeral":    none,
			"account_data": none,
		},
	}
	data, err := json.Marshal(filter)
	if err != nil {
		panic(err) // maps of strings and numbers always encode
	}
	return string(data)
}

// sentLookupResponse is the part of a /sync response the lookup reads.
type sentLookupResponse struct {
	Rooms struct {
		Join map[id.RoomID]struct {
			Timeline struct {
				Events []struct {
					ID       id.EventID `json:"event_id"`
					Sender   id.UserID  `json:"sender"`
					Unsigned struct {
						TransactionID string `json:"transaction_id"`
					} `json:"unsigned"`
				} `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

// lookUpSentByTxnID runs an initial /sync as cli and adds to found, per room of rooms, the queued messages (by
// sequence number) whose transaction ID one of the bot's events carries, with that event's ID.
func lookUpSentByTxnID(ctx context.Context, cli *mautrix.Client, botID id.UserID, instance string, rooms []id.RoomID,
	found map[id.RoomID]map[int64]id.EventID) error {
	url := cli.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, map[string]string{
		"filter":  sentLookupFilter(botID, rooms),
		"timeout": "0",
	})
	var resp sentLookupResponse
	if _, err := cli.MakeFullRequest(ctx, mautrix.FullRequest{Method: http.MethodGet, URL: url, ResponseJSON: &resp, MaxAttempts: 1}); err != nil {
		return err
	}
	resp.sentBySeq(botID, instance, rooms, found)
	return nil
}

// sentBySeq adds to out the bot's events carrying a queued message's transaction ID (see outgoingSeqOf) in the
// rooms. If a message is in a room more than once, the copy found first counts.
func (resp *sentLookupResponse) sentBySeq(botID id.UserID, instance string, rooms []id.RoomID, out map[id.RoomID]map[int64]id.EventID) {
	for _, roomID := range rooms {
		for _, evt := range resp.Rooms.Join[roomID].Timeline.Events {
			seq, ok := outgoingSeqOf(instance, evt.Unsigned.TransactionID)
			if !ok || evt.Sender != botID || evt.ID == "" {
				continue
			}
			if out[roomID] == nil {
				out[roomID] = make(map[int64]id.EventID)
			}
			if _, seen := out[roomID][seq]; !seen {
				out[roomID][seq] = evt.ID
			}
		}
	}
}

// outgoingTxnID is the transaction ID that queued message seq of the database with instance ID instance is sent with.
func outgoingTxnID(instance string, seq int64) string {
	return fmt.Sprintf("caseroom.%s.%d", instance, seq)
}

// outgoingSeqOf returns the sequence number of the queued message that txnID belongs to (see outgoingTxnID).
func outgoingSeqOf(instance, txnID string) (int64, bool) {
	rest, ok := strings.CutPrefix(txnID, "caseroom."+instance+".")
	if !ok || instance == "" {
		return 0, false
	}
	seq, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || seq <= 0 || strconv.FormatInt(seq, 10) != rest {
		return 0, false
	}
	return seq, true
}
