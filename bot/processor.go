package bot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/safetext"
	"github.com/caseroom/caseroom/store"
)

const (
	pendingBatch      = 50
	maxRoomWorkers    = 16
	maxBackoff        = 30 * time.Second
	maxPermanentTries = 5
)

// processor runs, per room with pending work, one processing worker (events in order) and one sending worker
// (queued messages in order), so events of a room are handled in order, rooms proceed in parallel, and processing
// does not wait for the homeserver to accept the replies of earlier events.
type processor struct {
	bot *Bot

	mu         sync.Mutex
	started    bool // set by resume: until then events are only stored (the bot is still setting up, e.g. encryption)
	processing *lane
	sending    *lane
	wg         sync.WaitGroup
}

// lane is one kind of per-room work with at most one worker per room.
type lane struct {
	name    string
	work    func(ctx context.Context, roomID id.RoomID) error
	sem     chan struct{}
	workers map[id.RoomID]*roomWorker
}

type roomWorker struct {
	roomID id.RoomID
	more   bool // set when new work arrived while the worker was busy
}

func newProcessor(b *Bot) *processor {
	p := &processor{bot: b}
	p.processing = &lane{name: "processing", work: p.drain, sem: make(chan struct{}, maxRoomWorkers), workers: make(map[id.RoomID]*roomWorker)}
	p.sending = &lane{name: "sending", work: b.flush, sem: make(chan struct{}, maxRoomWorkers), workers: make(map[id.RoomID]*roomWorker)}
	return p
}

// resume starts processing: it wakes every room that has unprocessed events or unsent messages, e.g. after a crash
// or stored while the bot was starting.
func (p *processor) resume(ctx context.Context) error {
	p.mu.Lock()
	p.started = true // before listing the pending rooms, so that no room stored meanwhile is missed
	p.mu.Unlock()
	rooms, err := p.bot.Store.Inbox.PendingRooms(ctx)
	if err != nil {
		return err
	}
	outRooms, err := p.bot.Store.Outgoing.PendingRooms(ctx)
	if err != nil {
		return err
	}
	for _, roomID := range rooms {
		p.wakeLane(p.processing, roomID)
	}
	for _, roomID := range outRooms {
		p.wakeLane(p.sending, roomID)
	}
	if len(rooms)+len(outRooms) > 0 {
		p.bot.Log.Info().Int("rooms", len(rooms)).Int("rooms_with_unsent", len(outRooms)).Msg("Resuming pending work")
	}
	return nil
}

// wake makes sure workers will look at the room's pending events and unsent messages.
func (p *processor) wake(roomID id.RoomID) {
	p.wakeLane(p.processing, roomID)
	p.wakeLane(p.sending, roomID)
}

func (p *processor) wakeLane(l *lane, roomID id.RoomID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started || p.bot.ctx == nil || p.bot.ctx.Err() != nil {
		return
	}
	if w, ok := l.workers[roomID]; ok {
		w.more = true
		return
	}
	w := &roomWorker{roomID: roomID}
	l.workers[roomID] = w
	p.wg.Add(1)
	go p.run(l, w)
}

func (p *processor) wait() {
	p.wg.Wait()
}

// run does a lane's work for a room until there is none left, retrying with backoff after errors.
func (p *processor) run(l *lane, w *roomWorker) {
	defer p.wg.Done()
	ctx := p.bot.ctx
	log := p.bot.Log.With().Stringer("room_id", w.roomID).Str("lane", l.name).Logger()
	ctx = log.WithContext(ctx)
	if !p.acquire(ctx, l) {
		p.finish(l, w, true)
		return
	}
	held := true
	defer func() {
		if held {
			<-l.sem
		}
	}()
	backoff := time.Second
	for {
		err := l.work(ctx, w.roomID)
		var await *awaitRoomKey
		if errors.As(err, &await) {
			// The room's next event waits for its room key: without this room's slot, so that a flood of
			// undecryptable events in a few rooms does not stall all the others. The room's later events wait.
			<-l.sem
			held = false
			await.wait(ctx)
			if ctx.Err() != nil || !p.acquire(ctx, l) {
				p.finish(l, w, true)
				return
			}
			held = true
			continue
		}
		if err == nil {
			backoff = time.Second
			if p.finish(l, w, false) {
				return
			}
			continue
		}
		if ctx.Err() != nil {
			p.finish(l, w, true)
			return
		}
		log.Warn().Err(err).Dur("retry_in", backoff).Msg("Room work failed, will retry")
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			p.finish(l, w, true)
			return
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// acquire takes one of the lane's slots, or reports false when the bot stops first.
func (p *processor) acquire(ctx context.Context, l *lane) bool {
	select {
	case l.sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// finish removes the worker unless more work arrived meanwhile; it reports whether the worker should stop.
func (p *processor) finish(l *lane, w *roomWorker, force bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.more && !force {
		w.more = false
		return false
	}
	delete(l.workers, w.roomID)
	return true
}

// drain processes the room's pending events in order and returns when there are none left or an error says to
// retry later. After each event with messages to send it wakes the room's sender, which sends them meanwhile.
func (p *processor) drain(ctx context.Context, roomID id.RoomID) error {
	if holdProcessing {
		<-ctx.Done()
		return ctx.Err()
	}
	for {
		events, err := p.bot.Store.Inbox.Pending(ctx, roomID, pendingBatch)
		if err != nil {
			return err
		}
		if len(events) == 0 {
			return nil
		}
		var quiet []processedMark
		for _, evt := range events {
			if err = p.bot.process(ctx, evt, &quiet); err != nil {
				break
			}
		}
		// Marks of events without effects that no later event's transaction took along: before the next batch
		// is read, since it would return them again.
		if markErr := p.bot.markQuiet(ctx, quiet); err == nil {
			err = markErr
		}
		if err != nil {
			return err
		}
	}
}

// processedMark is an event handled without effects (nothing to store, send or do afterwards, e.g. chat the bot
// has nothing to say about) whose processed mark waits for the next transaction, so that a run of such events costs
// one database transaction instead of one each. If the bot stops before the mark is stored, the event is handled
// again, which changes nothing.
type processedMark struct {
	seq     int64
	outcome string
}

// markQuiet stores the waiting marks of events without effects.
func (b *Bot) markQuiet(ctx context.Context, quiet []processedMark) error {
	if len(quiet) == 0 {
		return nil
	}
	return b.Store.DB.DoTxn(ctx, nil, func(ctx context.Context) error { return b.storeMarks(ctx, quiet) })
}

// storeMarks stores processed marks; call it inside a transaction.
func (b *Bot) storeMarks(ctx context.Context, marks []processedMark) error {
	for _, m := range marks {
		if _, err := b.Store.Inbox.MarkProcessed(ctx, m.seq, m.outcome); err != nil {
			return err
		}
	}
	return nil
}

// process handles one inbox event and stores its effects together with its processed mark. An event without
// effects only adds its mark to quiet (see processedMark); an event with effects stores the waiting marks in its
// transaction and empties quiet.
func (b *Bot) process(ctx context.Context, stored *store.InboxEvent, quiet *[]processedMark) error {
	log := zerolog.Ctx(ctx).With().Stringer("event_id", stored.EventID).Str("event_type", stored.Type).Logger()
	ctx = log.WithContext(ctx)
	evt, err := parseEvent(stored.Raw)
	if err != nil {
		log.Warn().Err(err).Msg("Event content could not be parsed")
	}
	mautrix.UpdateStateStore(ctx, b.stateStore, evt)
	b.trackEncryptionState(ctx, evt)
	turn := &Turn{Event: evt, Bot: b, ReceivedAt: stored.ReceivedAt}
	handleErr := b.handle(ctx, turn)
	if isAwaitRoomKey(handleErr) {
		return handleErr // not a failure: the worker waits for the key and handles the event again
	}
	if handleErr != nil {
		attempts := b.noteFailure(stored.Seq)
		if IsTransient(handleErr) || (attempts < maxPermanentTries && !isPermanent(handleErr)) {
			return handleErr
		}
		log.Err(handleErr).Int("attempts", attempts).Msg("Giving up on event")
		failed := turn.Event // decrypted, if the event was encrypted
		turn = &Turn{Event: failed, Bot: b, Outcome: "failed"}
		if (failed.Type == event.EventMessage || failed.Type == event.EventEncrypted) && failed.Sender != b.BotID() {
			turn.Reply(fmt.Sprintf("⛔ Something went wrong handling this message; nothing was stored. "+
				"Please try again or tell an admin (reference `%s`).", evt.ID))
		}
	}
	b.forgetFailure(stored.Seq)
	if turn.Outcome == "" {
		turn.Outcome = "ignored"
	}
	if len(turn.writes) == 0 && len(turn.out) == 0 && len(turn.after) == 0 {
		*quiet = append(*quiet, processedMark{seq: stored.Seq, outcome: turn.Outcome})
		b.countProcessed(turn)
		log.Debug().Str("outcome", turn.Outcome).Msg("Processed event")
		return nil
	}
	err = b.Store.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := b.storeMarks(ctx, *quiet); err != nil {
			return err
		}
		for i := 0; i < len(turn.writes); i++ { // a write may queue more writes (e.g. its audit entry)
			if err := turn.writes[i](ctx); err != nil {
				return err
			}
		}
		for _, out := range turn.out {
			seq, err := b.Store.Outgoing.Add(ctx, out.roomID, out.evtType, out.content, evt.ID)
			if err != nil {
				return err
			}
			if out.onQueued != nil {
				if err = out.onQueued(ctx, seq); err != nil {
					return err
				}
			}
		}
		marked, err := b.Store.Inbox.MarkProcessed(ctx, stored.Seq, turn.Outcome)
		if err != nil {
			return err
		} else if !marked {
			return errAlreadyProcessed
		}
		return nil
	})
	if errors.Is(err, errAlreadyProcessed) {
		log.Warn().Msg("Event was already processed, discarded the second result")
		return nil
	} else if err != nil {
		return fmt.Errorf("failed to store result of event %s: %w", evt.ID, err)
	}
	*quiet = (*quiet)[:0]
	for _, out := range turn.out {
		b.proc.wakeLane(b.proc.sending, out.roomID)
	}
	for _, fn := range turn.after {
		fn()
	}
	b.countProcessed(turn)
	log.Debug().Str("outcome", turn.Outcome).Msg("Processed event")
	return nil
}

func (b *Bot) countProcessed(turn *Turn) {
	b.Metrics.EventsProcessed.WithLabelValues(metricOutcome(turn.Outcome)).Inc()
	if turn.Command != "" {
		b.Metrics.Commands.WithLabelValues(turn.Command, metricOutcome(turn.Outcome)).Inc()
	}
}

var errAlreadyProcessed = errors.New("event already processed")

// handle dispatches an event; a panic in a handler becomes a permanent error.
func (b *Bot) handle(ctx context.Context, turn *Turn) (err error) {
	defer func() {
		if r := recover(); r != nil {
			zerolog.Ctx(ctx).Error().Bytes("stack", debug.Stack()).Msg("Panic while handling event")
			err = permanent(fmt.Errorf("panic: %v", r))
		}
	}()
	evt := turn.Event
	switch {
	case evt.Type == event.StateMember:
		if id.UserID(evt.GetStateKey()) == b.BotID() {
			if err := b.handleBotMembership(ctx, turn); err != nil {
				return err
			}
		}
		if mh, ok := b.Handler.(MembershipHandler); ok {
			return mh.HandleMembership(ctx, turn)
		}
		return nil
	case evt.Type == event.StateEncryption || evt.Type == event.StateJoinRules:
		if sh, ok := b.Handler.(RoomStateHandler); ok {
			return sh.HandleRoomState(ctx, turn)
		}
		return nil
	case evt.Sender == b.BotID():
		return nil
	case evt.Type == event.EventRedaction:
		redacted := evt.Redacts
		if redacted == "" {
			redacted = evt.Content.AsRedaction().Redacts
		}
		if rh, ok := b.Handler.(RedactionHandler); ok && redacted != "" {
			return rh.HandleRedaction(ctx, turn, redacted)
		}
		return nil
	case evt.Type == event.EventEncrypted:
		return b.handleEncrypted(ctx, turn)
	case evt.Type == event.EventReaction:
		if rh, ok := b.Handler.(ReactionHandler); ok {
			return rh.HandleReaction(ctx, turn)
		}
		return nil
	case evt.Type == event.EventMessage && b.Handler != nil:
		return b.Handler.HandleMessage(ctx, turn)
	case evt.Type == event.EventUnstablePollResponse:
		if ph, ok := b.Handler.(PollResponseHandler); ok {
			return ph.HandlePollResponse(ctx, turn)
		}
		return nil
	}
	return nil
}

func parseEvent(raw []byte) (*event.Event, error) {
	var evt event.Event
	if err := json.Unmarshal(raw, &evt); err != nil {
		return &evt, err
	}
	if evt.StateKey != nil {
		evt.Type.Class = event.StateEventType
	} else {
		evt.Type.Class = event.MessageEventType
	}
	err := evt.Content.ParseRaw(evt.Type)
	if errors.Is(err, event.ErrUnsupportedContentType) || errors.Is(err, event.ErrContentAlreadyParsed) {
		err = nil
	}
	return &evt, err
}

// flush sends the room's queued messages in order. Each is sent with a transaction ID made from the database's
// instance ID and the message's sequence number, so that resending after a crash is deduplicated by the homeserver;
// where the homeserver forgot the transaction, settleUnsent (resend.go) finds the message in the room first.
// With end-to-end encryption, messages are sent by the bot's device, which encrypts them for encrypted rooms.
func (b *Bot) flush(ctx context.Context, roomID id.RoomID) error {
	if holdSending {
		return nil
	}
	if err := b.settleUnsent(ctx, roomID); err != nil {
		return err
	}
	for {
		pending, err := b.Store.Outgoing.Pending(ctx, roomID, pendingBatch)
		if err != nil {
			return err
		}
		if len(pending) == 0 {
			return nil
		}
		for _, out := range pending {
			if err = b.sendOutgoing(ctx, out); err != nil {
				return err
			}
		}
	}
}

func (b *Bot) sendOutgoing(ctx context.Context, out *store.Outgoing) error {
	log := zerolog.Ctx(ctx).With().Int64("outgoing_seq", out.Seq).Logger()
	txnID := outgoingTxnID(b.Store.InstanceID, out.Seq)
	req := mautrix.ReqSendEvent{TransactionID: txnID}
	if blocked, err := b.sendBlocked(ctx, out.RoomID); err != nil {
		return err
	} else if blocked {
		// The room's encryption was changed away from megolm: sending would put the message in clear text.
		b.Metrics.MessagesSent.WithLabelValues("failed").Inc()
		log.Warn().Str("type", out.Type.Type).Msg("Room encryption changed, not sending")
		return b.Store.Outgoing.MarkFailed(ctx, out.Seq, "room-encryption-changed")
	}
	var resp *mautrix.RespSendEvent
	var err error
	if b.e2ee != nil {
		resp, err = b.e2ee.client().SendMessageEvent(ctx, out.RoomID, out.Type, out.Content, req)
	} else {
		resp, err = b.AS.BotIntent().SendMessageEvent(ctx, out.RoomID, out.Type, out.Content, req)
	}
	if err == nil {
		b.Metrics.MessagesSent.WithLabelValues("sent").Inc()
		if !out.CauseTime.IsZero() && out.Type == event.EventMessage {
			b.Metrics.ReplyLatency.Observe(time.Since(out.CauseTime).Seconds())
		}
		return b.Store.Outgoing.MarkSent(ctx, out.Seq, resp.EventID)
	}
	var httpErr mautrix.HTTPError
	// An error without a homeserver answer that is not a network error (e.g. encrypting failed) gets a few tries.
	if IsTransient(err) || (!errors.As(err, &httpErr) && out.Attempts+1 < maxPermanentTries) {
		b.Metrics.MessagesSent.WithLabelValues("retry").Inc()
		_ = b.Store.Outgoing.MarkAttempt(ctx, out.Seq, errorCode(err))
		return fmt.Errorf("failed to send %s: %w", out.Type.Type, err)
	}
	b.Metrics.MessagesSent.WithLabelValues("failed").Inc()
	log.Err(err).Str("type", out.Type.Type).Msg("Homeserver refused message, giving up on it")
	return b.Store.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := b.Store.Outgoing.MarkFailed(ctx, out.Seq, errorCode(err)); err != nil {
			return err
		}
		return b.reportSendFailure(ctx, out, err)
	})
}

// sendFailedMarker is a key in the content of a send-failure report, so that a report that fails in turn is not
// reported again.
const sendFailedMarker = "org.caseroom.send_failed"

// reportSendFailure tells the room that an answer the homeserver refused for good did not arrive, and audits it as
// send-failed against the event that caused the answer (the command's own audit row stays as it was: it says what
// the command did; this row says its answer was lost). The report is a few hundred bytes, so it cannot fail for the
// same reason; if it fails anyway, it is audited but not reported again.
func (b *Bot) reportSendFailure(ctx context.Context, out *store.Outgoing, sendErr error) error {
	code := errorCode(sendErr)
	report := bytes.Contains(out.Content, []byte(sendFailedMarker))
	detail := fmt.Sprintf("outgoing %d (%s) refused: %s", out.Seq, out.Type.Type, code)
	if report {
		detail = fmt.Sprintf("send-failure report %d refused: %s", out.Seq, code)
	}
	if err := b.Store.Audit.Add(ctx, &store.AuditEntry{Actor: b.BotID(), Action: "send-failed", Outcome: "send-failed",
		RoomID: out.RoomID, EventID: out.CauseEventID, Detail: detail}); err != nil {
		return err
	}
	if report || out.Type != event.EventMessage && out.Type != event.EventUnstablePollStart {
		return nil // reactions, redactions and state are not answers; the audit row is enough
	}
	why := fmt.Sprintf("the homeserver refused it (`%s`)", code)
	var httpErr mautrix.HTTPError
	if errors.As(sendErr, &httpErr) && (httpErr.IsStatus(http.StatusRequestEntityTooLarge) ||
		httpErr.RespError != nil && httpErr.RespError.ErrCode == "M_TOO_LARGE") {
		why = "it was too large for the homeserver (the limit is 64 KiB)"
	}
	msg := safetext.Render(fmt.Sprintf("⚠️ I could not deliver my answer to this message: %s. "+
		"What it says was done is done; only the answer is missing. Please ask again for less (e.g. a shorter period, "+
		"or one page at a time).", why))
	msg.MsgType = event.MsgNotice
	msg.Mentions = &event.Mentions{}
	// Where the lost answer replied to the command (in this room), the report does too; a notice caused by an
	// event in another room (e.g. a case-room summary of a check-in) is not a reply.
	var lost event.MessageEventContent
	if json.Unmarshal(out.Content, &lost) == nil && lost.RelatesTo.GetReplyTo() != "" {
		msg.RelatesTo = &event.RelatesTo{InReplyTo: &event.InReplyTo{EventID: lost.RelatesTo.GetReplyTo()}}
	}
	content := &event.Content{Parsed: &msg, Raw: map[string]any{sendFailedMarker: out.Seq}}
	_, err := b.Store.Outgoing.Add(ctx, out.RoomID, event.EventMessage, content, out.CauseEventID)
	return err
}

func (b *Bot) noteFailure(seq int64) int {
	b.failMu.Lock()
	defer b.failMu.Unlock()
	if b.failures == nil {
		b.failures = make(map[int64]int)
	}
	b.failures[seq]++
	return b.failures[seq]
}

func (b *Bot) forgetFailure(seq int64) {
	b.failMu.Lock()
	delete(b.failures, seq)
	b.failMu.Unlock()
}
