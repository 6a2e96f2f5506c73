package commands

import (
	"encoding/json"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/store"
)

// messageEvent parses raw message content as the bot receives it.
func messageEvent(t *testing.T, sender id.UserID, raw string) *event.Event {
	t.Helper()
	evt := &event.Event{ID: "$m", Sender: sender, Type: event.EventMessage, Timestamp: 1_773_480_413_000}
	if err := json.Unmarshal([]byte(raw), &evt.Content); err != nil {
		t.Fatal(err)
	}
	if err := evt.Content.ParseRaw(evt.Type); err != nil {
		t.Fatal(err)
	}
	return evt
}

func TestFiledText(t *testing.T) {
	tests := []struct {
		name, content, want string
	}{
		{"text", `{"msgtype":"m.text","body":"  The wound is red  "}`, "The wound is red"},
		{"notice", `{"msgtype":"m.notice","body":"Filed"}`, "Filed"},
		{"emote", `{"msgtype":"m.emote","body":"is worried"}`, "* is worried"},
		{"reply fallback removed", `{"msgtype":"m.text","body":"> <@doc:hs> How is it?\n\nBetter today",
			"m.relates_to":{"m.in_reply_to":{"event_id":"$q"}}}`, "Better today"},
		{"quote without reply kept", `{"msgtype":"m.text","body":"> <@doc:hs> said so\n\nyes"}`, "> <@doc:hs> said so\n\nyes"},
		{"image named", `{"msgtype":"m.image","body":"wound.jpg","url":"mxc://hs/x"}`, "[image: wound.jpg]"},
		{"file with caption", `{"msgtype":"m.file","body":"Discharge letter","filename":"letter.pdf","url":"mxc://hs/y"}`,
			"[file: letter.pdf] Discharge letter"},
		{"location", `{"msgtype":"m.location","body":"Home","geo_uri":"geo:52.5,13.4"}`, "[location: Home geo:52.5,13.4]"},
		// Readers see formatted_body: that is what is filed, even when the body says something else.
		{"formatted body is what was seen", `{"msgtype":"m.text","body":"all fine","format":"org.matrix.custom.html",
			"formatted_body":"<p>chest <b>pain</b> since noon, see <a href=\"https://x.example/a\">notes</a></p>"}`,
			"chest **pain** since noon, see notes (https://x.example/a)"},
		{"formatted reply fallback removed", `{"msgtype":"m.text","body":"> <@doc:hs> q\n\nhidden","format":"org.matrix.custom.html",
			"formatted_body":"<mx-reply><blockquote>q</blockquote></mx-reply>worse <em>today</em>","m.relates_to":{"m.in_reply_to":{"event_id":"$q"}}}`,
			"worse _today_"},
		{"formatted emote", `{"msgtype":"m.emote","body":"is ok","format":"org.matrix.custom.html","formatted_body":"is <i>not</i> ok"}`,
			"* is _not_ ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := filedText(messageEvent(t, "@pat:hs", tt.content)); got != tt.want {
				t.Fatalf("filedText = %q, want %q", got, tt.want)
			}
		})
	}
	m := filedMessage(messageEvent(t, "@pat:hs", `{"msgtype":"m.text","body":"hi"}`))
	if m.EventID != "$m" || m.Sender != "@pat:hs" || m.Text != "hi" || !m.Sent().Equal(time.UnixMilli(1_773_480_413_000)) {
		t.Fatalf("filedMessage = %+v", m)
	}
}

func TestDescribeFiling(t *testing.T) {
	when := func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04") }
	at := time.Date(2026, 3, 14, 9, 26, 0, 0, time.UTC).UnixMilli()
	one := &store.Filing{Messages: []store.FiledMessage{{EventID: "$1", Sender: "@pat:hs", SentAt: at}}}
	if got := describeFiling(one, when); got != "the message of `@pat:hs` (2026-03-14 09:26)" {
		t.Errorf("one message: %q", got)
	}
	thread := &store.Filing{ThreadRoot: "$1", Messages: []store.FiledMessage{
		{EventID: "$1", Sender: "@pat:hs", SentAt: at}, {EventID: "$2", Sender: "@doc:hs", SentAt: at},
		{EventID: "$3", Sender: "@pat:hs", SentAt: at}, {EventID: "$4", Sender: "@nurse`:hs", SentAt: at},
	}}
	if got := describeFiling(thread, when); got != "the thread, 4 messages from `@pat:hs`, `@doc:hs` and ``@nurse`:hs``" {
		t.Errorf("thread: %q", got)
	}
	thread.Messages = thread.Messages[:1]
	if got := describeFiling(thread, when); got != "the thread, 1 message from `@pat:hs`" {
		t.Errorf("thread of one: %q", got)
	}
}

func TestFileCommandDefinition(t *testing.T) {
	p := New()
	cmd, consumed := p.lookup("file", nil)
	if cmd == nil || consumed != 0 || cmd.Run == nil {
		t.Fatal("/file is not registered")
	}
	if cmd.Access != CareTeamAnyRoom || !cmd.PHI || len(cmd.Params) != 0 {
		t.Fatalf("/file must be for the care team in either room, need an encrypted room and take no arguments: %+v", cmd)
	}
	if got := cmd.UsageLine(); got != "/file" {
		t.Fatalf("usage = %q", got)
	}
}
