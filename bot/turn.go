package bot

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/internal/safetext"
)

// Turn is the processing of one inbox event. Handlers read what they need, make idempotent Matrix calls, and
// queue their database writes and messages on the turn; the processor then stores all of them in one database
// transaction together with the event's processed mark, so they take effect exactly once.
type Turn struct {
	Event *event.Event
	Bot   *Bot
	// ReceivedAt is when the event was stored in the inbox, by the bot's clock (zero for a turn not made from it).
	ReceivedAt time.Time

	// Command is the name of the command the event ran, if any (for metrics).
	Command string
	// Outcome is a short, PHI-free word for the audit trail and logs (e.g. "replied", "refused").
	Outcome string

	writes []func(ctx context.Context) error
	out    []queuedEvent
	after  []func()
}

// AfterCommit queues a function to run once the turn's transaction has committed (e.g. waking a worker that
// delivers what the turn stored). It does not run when the turn fails.
func (t *Turn) AfterCommit(fn func()) {
	t.after = append(t.after, fn)
}

type queuedEvent struct {
	roomID   id.RoomID
	evtType  event.Type
	content  any
	onQueued func(ctx context.Context, seq int64) error
}

// Write queues a database write to run inside the turn's transaction. A write may itself queue messages.
func (t *Turn) Write(fn func(ctx context.Context) error) {
	t.writes = append(t.writes, fn)
}

// Send queues an event to be sent once the turn is stored.
func (t *Turn) Send(roomID id.RoomID, evtType event.Type, content any) {
	t.out = append(t.out, queuedEvent{roomID: roomID, evtType: evtType, content: content})
}

// SendTracked is Send for a message the caller must find again (e.g. an alert, to recognise reactions to it):
// onQueued gets the message's outgoing sequence number inside the turn's transaction, once it is queued.
func (t *Turn) SendTracked(roomID id.RoomID, evtType event.Type, content any, onQueued func(ctx context.Context, seq int64) error) {
	t.out = append(t.out, queuedEvent{roomID: roomID, evtType: evtType, content: content, onQueued: onQueued})
}

// Reply queues an m.notice reply to the turn's event. markdown is rendered; callers must escape user text in it
// (safetext.Markdown for text, format.SafeMarkdownCode for identifiers and values).
//
// An answer larger than AnswerBytes is sent as several replies ("part 1 of 3"), split between lines, so that the
// homeserver's event size limit never swallows it.
func (t *Turn) Reply(markdown string) {
	content := safetext.Render(markdown)
	if len(content.Body)+len(content.FormattedBody) <= AnswerBytes {
		t.ReplyContent(&content)
		return
	}
	parts := splitMarkdown(markdown, AnswerBytes/3)
	for i, part := range parts {
		content := safetext.Render(fmt.Sprintf("%s\n\n(part %d of %d)", part, i+1, len(parts)))
		t.ReplyContent(&content)
	}
}

// splitMarkdown cuts markdown between lines into parts of at most limit bytes (a longer line is cut between
// characters). Rendered, a part is at most about three times its Markdown (body plus HTML with escapes).
func splitMarkdown(markdown string, limit int) []string {
	var parts []string
	var cur strings.Builder
	flush := func() {
		if strings.TrimSpace(cur.String()) != "" {
			parts = append(parts, strings.TrimRight(cur.String(), "\n"))
		}
		cur.Reset()
	}
	for _, line := range strings.SplitAfter(markdown, "\n") {
		for len(line) > limit {
			cut := limit
			for cut > 0 && !utf8.RuneStart(line[cut]) {
				cut--
			}
			flush()
			cur.WriteString(line[:cut])
			flush()
			line = line[cut:]
		}
		if cur.Len()+len(line) > limit {
			flush()
		}
		cur.WriteString(line)
	}
	flush()
	return parts
}

// ReplyContent queues a prepared message as a reply to the turn's event, in the event's thread if it has one.
func (t *Turn) ReplyContent(content *event.MessageEventContent) {
	if content.MsgType == "" || content.MsgType == event.MsgText {
		content.MsgType = event.MsgNotice
	}
	if content.Mentions == nil {
		content.Mentions = &event.Mentions{}
	}
	if relatable, ok := t.Event.Content.Parsed.(event.Relatable); ok && relatable.OptionalGetRelatesTo().GetThreadParent() != "" {
		content.SetThread(t.Event)
	} else {
		content.SetReply(t.Event)
	}
	t.Send(t.Event.RoomID, event.EventMessage, content)
}

// React queues a reaction (e.g. ✅ or ⛔) to the turn's event.
func (t *Turn) React(key string) {
	t.Send(t.Event.RoomID, event.EventReaction, &event.ReactionEventContent{
		RelatesTo: event.RelatesTo{Type: event.RelAnnotation, EventID: t.Event.ID, Key: key},
	})
}

// defaultMaxClockSkew is checkins.max_clock_skew when the config leaves it unset (tests).
const defaultMaxClockSkew = 5 * time.Minute

// EventTimes returns when the turn's event claims to have been sent (origin_server_ts, which the sender's homeserver
// sets as it likes), when the bot received it, and the time to record it under: the claimed time, or the receive
// time when the claim lies in the future or more than checkins.max_clock_skew back (care.EffectiveTime). All UTC.
func (t *Turn) EventTimes() (effective, claimed, received time.Time) {
	claimed = time.UnixMilli(t.Event.Timestamp).UTC()
	received = t.ReceivedAt.UTC()
	if t.ReceivedAt.IsZero() {
		received = time.Now().UTC()
	}
	skew := defaultMaxClockSkew
	if t.Bot != nil && t.Bot.Config != nil && t.Bot.Config.CheckIns.MaxClockSkew.Duration > 0 {
		skew = t.Bot.Config.CheckIns.MaxClockSkew.Duration
	}
	return care.EffectiveTime(claimed, received, skew), claimed, received
}
