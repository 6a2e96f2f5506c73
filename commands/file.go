package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/store"
)

// /file puts chat into the patient's chart: sent as a reply to a message it files that message; sent in a thread
// it files the whole thread (its root and every message in it, without the bot's own messages and the command).
// The messages are read (and decrypted) when the command runs and stored with the EHR outbox item in the command's
// transaction, so that delivery does not depend on the homeserver later; the outbox files them as one FHIR
// Communication (see ehr.CommunicationFor) and says so in the room. Messages are filed as they were first sent:
// later edits are not followed.

// maxFiledMessages bounds the messages one /file files (a longer thread is refused, not cut short).
const maxFiledMessages = 200

var fileCommands = []*Command{
	{
		Name:     "file",
		Category: "Chart",
		Description: "File a message to the patient's chart in the EHR: send it as a reply to the message, or in a thread " +
			"to file the whole thread.",
		Access: CareTeamAnyRoom,
		PHI:    true,
		Run:    runFile,
	},
}

// fileRefusal is a reason, for the user, why nothing can be filed. Its message is Markdown.
type fileRefusal struct{ outcome, message string }

func (r *fileRefusal) Error() string { return r.message }

func runFile(ctx context.Context, call *Call) error {
	if !requireOpen(call) {
		return nil
	}
	c := call.Room.Case
	rel := call.Event.Content.AsMessage().RelatesTo
	target, root := rel.GetNonFallbackReplyTo(), rel.GetThreadParent()
	switch {
	case target == "" && root == "":
		call.Usage("Send `/file` as a reply to the message to file, or in a thread to file the whole thread.")
		return nil
	case call.Bot.EHR == nil:
		call.Fail("refused:no-ehr", "⛔ No EHR is connected to caseroom, so there is no chart to file to. Nothing was filed. "+
			"An admin can connect one (`ehr.url` in the configuration).")
		return nil
	case c.PatientRef == "":
		call.Fail("refused:no-patient", "⛔ Case #%d is not linked to a FHIR Patient (cases are linked when opened with "+
			"`--patient` or `--mrn`), so there is no chart to file to. Nothing was filed.", c.ID)
		return nil
	}
	filing := &store.Filing{CaseID: c.ID, RoomID: call.Event.RoomID, CommandEvent: call.Event.ID, FiledBy: call.Sender,
		CreatedAt: time.Now().UTC()}
	var err error
	if target != "" {
		filing.Messages, err = fileMessage(ctx, call, target)
	} else {
		filing.ThreadRoot = root
		filing.Messages, err = fileThread(ctx, call, root)
	}
	var refusal *fileRefusal
	switch {
	case errors.As(err, &refusal):
		call.Fail(refusal.outcome, "⛔ %s Nothing was filed.", refusal.message)
		return nil
	case errors.Is(err, bot.ErrUndecryptable):
		call.Fail("refused:undecryptable", "⛔ I couldn't decrypt %s: my device never received its room key. Nothing was "+
			"filed. (Messages sent before I joined, or from a device that does not share keys with unverified devices, "+
			"cannot be read by me.)", whatIsFiled(filing))
		return nil
	case errors.Is(err, bot.ErrTooManyEvents):
		call.Fail("refused:too-long", "⛔ The thread holds more than %d messages, more than I file at once. Nothing was "+
			"filed. File the messages that matter one by one, by replying to each with `/file`.", maxFiledMessages)
		return nil
	case errors.Is(err, mautrix.MNotFound), errors.Is(err, mautrix.MForbidden):
		call.Fail("not-found", "⛔ I can't read %s (the homeserver does not show it to me). Nothing was filed.", whatIsFiled(filing))
		return nil
	case err != nil:
		return err
	}
	same, err := call.Bot.Store.Filings.Same(ctx, filing)
	if err != nil {
		return err
	}
	if same != nil {
		what := "That message was"
		if filing.ThreadRoot != "" {
			what = "This thread (the same messages) was"
		}
		call.Fail("unchanged", "%s already filed to the chart by %s at %s; nothing was filed again.",
			what, format.SafeMarkdownCode(same.FiledBy.String()), call.When(same.CreatedAt))
		return nil
	}
	call.Write(func(ctx context.Context) error {
		b := call.Bot
		if err := b.Store.Filings.Add(ctx, filing); err != nil {
			return err
		}
		if err := b.Store.EHR.Add(ctx, &store.OutboxItem{
			Kind: store.OutboxCommunication, RecordID: filing.ID, Version: 1, CaseID: c.ID,
			OrderKey: fmt.Sprintf("case:%d", c.ID), RoomID: call.Event.RoomID, SourceEvent: call.Event.ID,
		}); err != nil {
			return err
		}
		if b.KickEHR != nil {
			call.AfterCommit(b.KickEHR)
		}
		if err := b.Store.Audit.Add(ctx, &store.AuditEntry{Actor: call.Sender, Action: "write:filing", Outcome: "ok",
			CaseID: c.ID, RoomID: call.Event.RoomID, EventID: call.Event.ID,
			Detail: fmt.Sprintf("filing %d, %d messages", filing.ID, len(filing.Messages))}); err != nil {
			return err
		}
		call.Done(c.ID, "Queued for the chart: %s. I will say here when the EHR has it.", describeFiling(filing, call.When))
		return nil
	})
	return nil
}

// fileMessage reads the one message a /file replies to.
func fileMessage(ctx context.Context, call *Call, target id.EventID) ([]store.FiledMessage, error) {
	evt, err := call.Bot.FetchEvent(ctx, call.Event.RoomID, target)
	if err != nil {
		return nil, err
	}
	switch {
	case evt.Unsigned.RedactedBecause != nil:
		return nil, &fileRefusal{"refused:deleted", "That message was deleted."}
	case evt.Type != event.EventMessage:
		return nil, &fileRefusal{"refused:not-a-message", "I file messages, and what you replied to is not one."}
	}
	return []store.FiledMessage{filedMessage(evt)}, nil
}

// fileThread reads a thread: its root and the messages in it, oldest first, without deleted messages, events that
// are not messages, the bot's own messages and the /file command itself.
func fileThread(ctx context.Context, call *Call, root id.EventID) ([]store.FiledMessage, error) {
	rootEvt, err := call.Bot.FetchEvent(ctx, call.Event.RoomID, root)
	if err != nil {
		return nil, err
	}
	thread, err := call.Bot.FetchThread(ctx, call.Event.RoomID, root, maxFiledMessages)
	if err != nil {
		return nil, err
	}
	var out []store.FiledMessage
	for _, evt := range append([]*event.Event{rootEvt}, thread...) {
		if evt.ID == call.Event.ID || evt.Sender == call.Bot.BotID() || evt.Type != event.EventMessage ||
			evt.Unsigned.RedactedBecause != nil {
			continue
		}
		out = append(out, filedMessage(evt))
	}
	if len(out) == 0 {
		return nil, &fileRefusal{"refused:empty", "The thread holds no messages to file."}
	}
	if len(out) > maxFiledMessages {
		return nil, fmt.Errorf("%w: %d messages", bot.ErrTooManyEvents, len(out))
	}
	return out, nil
}

func filedMessage(evt *event.Event) store.FiledMessage {
	return store.FiledMessage{EventID: evt.ID, Sender: evt.Sender, SentAt: evt.Timestamp, Text: filedText(evt)}
}

// filedText is the text of a message as it goes into the chart: what readers saw (the formatted_body as text, with
// link targets, when there is one; a sender can put other words in body), without a reply fallback; attachments are
// named, not included.
func filedText(evt *event.Event) string {
	content := evt.Content.AsMessage()
	body := strings.TrimSpace(content.Body)
	if content.RelatesTo.GetReplyTo() != "" {
		body = event.TrimReplyFallbackText(body)
	}
	if content.Format == event.FormatHTML && strings.TrimSpace(content.FormattedBody) != "" &&
		(content.MsgType == event.MsgText || content.MsgType == event.MsgNotice || content.MsgType == event.MsgEmote) {
		body = strings.TrimSpace(format.HTMLToText(event.TrimReplyFallbackHTML(content.FormattedBody)))
	}
	switch content.MsgType {
	case event.MsgEmote:
		return "* " + body
	case event.MsgImage, event.MsgFile, event.MsgAudio, event.MsgVideo:
		name := content.FileName
		if name == "" {
			name = body
		}
		kind := strings.TrimPrefix(string(content.MsgType), "m.")
		if content.FileName != "" && body != "" && body != content.FileName {
			return fmt.Sprintf("[%s: %s] %s", kind, name, body) // a caption
		}
		return fmt.Sprintf("[%s: %s]", kind, name)
	case event.MsgLocation:
		return fmt.Sprintf("[location: %s %s]", body, content.GeoURI)
	}
	return body
}

// whatIsFiled names what a filing files, for messages: "that message" or "a message of the thread".
func whatIsFiled(f *store.Filing) string {
	if f.ThreadRoot != "" {
		return "a message of the thread"
	}
	return "that message"
}

// describeFiling restates what was queued: "the message of @pat:hs (2026-03-14 09:26 CET)" or "the thread, 5
// messages from @a:hs and @b:hs".
func describeFiling(f *store.Filing, when func(time.Time) string) string {
	if f.ThreadRoot == "" && len(f.Messages) == 1 {
		m := f.Messages[0]
		return fmt.Sprintf("the message of %s (%s)", format.SafeMarkdownCode(m.Sender.String()), when(m.Sent()))
	}
	var senders []string
	seen := make(map[id.UserID]bool)
	for _, m := range f.Messages {
		if !seen[m.Sender] {
			seen[m.Sender] = true
			senders = append(senders, format.SafeMarkdownCode(m.Sender.String()))
		}
	}
	count := fmt.Sprintf("%d messages", len(f.Messages))
	if len(f.Messages) == 1 {
		count = "1 message"
	}
	return fmt.Sprintf("the thread, %s from %s", count, joinAnd(senders))
}

// joinAnd joins words as "a", "a and b", "a, b and c".
func joinAnd(words []string) string {
	switch len(words) {
	case 0:
		return ""
	case 1:
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}
