package bot

import (
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
)

func TestReplySplitsOversizedAnswers(t *testing.T) {
	var md strings.Builder
	md.WriteString("**Plan**\n\n")
	for i := range 400 {
		fmt.Fprintf(&md, "* item%03d %s\n", i, strings.Repeat("wörd ", 30))
	}
	turn := &Turn{Event: &event.Event{ID: "$cmd", RoomID: "!r:hs", Content: event.Content{Parsed: &event.MessageEventContent{Body: "!plan"}}}}
	turn.Reply(md.String())
	if len(turn.out) < 2 {
		t.Fatalf("%d messages for an answer of %d bytes", len(turn.out), md.Len())
	}
	all := ""
	for i, out := range turn.out {
		c := out.content.(*event.MessageEventContent)
		if size := len(c.Body) + len(c.FormattedBody); size > AnswerBytes {
			t.Errorf("part %d is %d bytes, budget %d", i+1, size, AnswerBytes)
		}
		if want := fmt.Sprintf("(part %d of %d)", i+1, len(turn.out)); !strings.Contains(c.Body, want) {
			t.Errorf("part %d does not say %q", i+1, want)
		}
		if c.RelatesTo.GetReplyTo() != "$cmd" {
			t.Errorf("part %d is not a reply to the command", i+1)
		}
		all += c.Body
	}
	for i := range 400 {
		if !strings.Contains(all, fmt.Sprintf("item%03d", i)) {
			t.Errorf("item %d lost", i)
		}
	}
	small := &Turn{Event: turn.Event}
	small.Reply("short")
	if len(small.out) != 1 || strings.Contains(small.out[0].content.(*event.MessageEventContent).Body, "part") {
		t.Errorf("a short answer was split: %+v", small.out)
	}
}

func TestSplitMarkdownCutsLongLines(t *testing.T) {
	line := strings.Repeat("é", 5000) // 10000 bytes, no line break
	parts := splitMarkdown(line, 3000)
	if strings.Join(parts, "") != line {
		t.Fatal("text lost or changed when cut")
	}
	for _, p := range parts {
		if len(p) > 3000 || !strings.HasPrefix(p, "é") {
			t.Errorf("bad part of %d bytes", len(p))
		}
	}
}
