//go:build goolm

package integration

import (
	"fmt"
	"html"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// textInjection is a check-in note that tries to become formatting: every word must reach the reader as text, and
// none of the forbidden HTML may appear in what the bot sends.
type textInjection struct {
	name   string
	note   string
	words  []string // must be in body and (unescaped) formatted_body
	forbid []string // must not be in formatted_body
	check  func(t *testing.T, content *event.MessageEventContent)
}

var bidiControls = regexp.MustCompile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

func textInjections() []textInjection {
	return []textInjection{
		{name: "heading", note: "start\n# Headingword\n## Subword", words: []string{"start", "Headingword", "Subword"},
			forbid: []string{"<h1", "<h2", "<h3"}},
		{name: "thematic break", note: "upper\n---\nlower", words: []string{"upper", "lower"}, forbid: []string{"<hr", "<h2"}},
		{name: "table", note: "symptoms\n| Symptom | When |\n|---|---|\n| chestpain | night | hiddenword |",
			words: []string{"symptoms", "Symptom", "When", "chestpain", "night", "hiddenword"}, forbid: []string{"<table", "<td", "<th"}},
		{name: "spoiler", note: "look ||spoilerword|| here", words: []string{"look", "spoilerword", "here"},
			forbid: []string{"data-mx-spoiler", "<span"}},
		{name: "strike", note: "not ~~strikeword~~ crossed", words: []string{"strikeword", "crossed"}, forbid: []string{"<del", "<s>", "<strike"}},
		{name: "code fence", note: "before\n```\nfenceword\n```\nafter", words: []string{"before", "fenceword", "after"},
			forbid: []string{"<pre", "<code>fenceword"}},
		{name: "inline formatting", note: "`codeword` **boldword** _italicword_ *starword*",
			words:  []string{"codeword", "boldword", "italicword", "starword"},
			forbid: []string{"<code>codeword", "<strong>boldword", "<em>italicword", "<em>starword"}},
		{name: "html tags", note: `<b>tagword</b> <img src="x" onerror="y"> <a href="https://evil.example">anchorword</a> <script>x</script>`,
			words: []string{"tagword", "anchorword", "evil.example"}, forbid: []string{"<b>", "<img", "<a ", "<script"}},
		{name: "links", note: "[clickword](https://evil.example/a) <https://evil.example/auto> ![imgword](mxc://evil.example/x)",
			words: []string{"clickword", "evil.example", "imgword"}, forbid: []string{"<a ", "<img"}},
		{name: "mentions", note: "@room [docword](https://matrix.to/#/@someone:example.org)", words: []string{"@room", "docword"},
			forbid: []string{"<a "}, check: func(t *testing.T, content *event.MessageEventContent) {
				if content.Mentions == nil || content.Mentions.Room {
					t.Errorf("@room from user text mentions the room: %+v", content.Mentions)
				}
				for _, u := range content.Mentions.UserIDs {
					if u == "@someone:example.org" {
						t.Errorf("a link in user text mentions %s", u)
					}
				}
			}},
		{name: "line breaks", note: "lineone\nlinetwo\n\nlinethree", words: []string{"lineone", "linetwo", "linethree"},
			check: func(t *testing.T, content *event.MessageEventContent) {
				if !regexp.MustCompile(`lineone\s*<br\s*/?>\s*linetwo`).MatchString(content.FormattedBody) {
					t.Errorf("line break not kept in formatted_body: %q", content.FormattedBody)
				}
				if !regexp.MustCompile(`linetwo\s*<br\s*/?>\s*(<br\s*/?>\s*)*linethree`).MatchString(content.FormattedBody) {
					t.Errorf("blank line split the note out of its item: %q", content.FormattedBody)
				}
				if !regexp.MustCompile(`lineone\n\s*linetwo`).MatchString(content.Body) {
					t.Errorf("line break not kept in body: %q", content.Body)
				}
			}},
		{name: "quote and lists", note: "intro\n> quoteword\n- listword\n1. numword", words: []string{"intro", "quoteword", "listword", "numword"},
			forbid: []string{"<blockquote", "<ol"}, check: func(t *testing.T, content *event.MessageEventContent) {
				if n := strings.Count(content.FormattedBody, "<li"); n > 2 {
					t.Errorf("%d list items, want at most 2 (the reading and the note): %q", n, content.FormattedBody)
				}
			}},
		{name: "entities", note: "&lt;b&gt;entword&amp; &#42;", words: []string{"entword", "&lt;b&gt;", "&#42;"}},
		{name: "bidi controls", note: "abc\u202edcb \u2066iso\u2069 \u2067rtl\u2069 \u2068fsi\u2069 rlm\u200f lrm\u200e \u202bemb\u202c",
			words: []string{"abc", "dcb", "iso", "rtl", "fsi", "rlm", "lrm", "emb"}},
	}
}

// textCheckContent asserts that content shows every word of in as text, has no live formatting from it, and no raw
// bidi controls.
func textCheckContent(t *testing.T, where string, in textInjection, content *event.MessageEventContent) {
	t.Helper()
	if content.Format != event.FormatHTML || content.FormattedBody == "" {
		t.Errorf("%s: no formatted_body: %+v", where, content)
		return
	}
	shown := html.UnescapeString(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(content.FormattedBody, " "))
	for _, w := range in.words {
		if !strings.Contains(content.Body, w) {
			t.Errorf("%s: body lacks %q: %q", where, w, content.Body)
		}
		if !strings.Contains(shown, w) {
			t.Errorf("%s: formatted_body lacks %q: %q", where, w, content.FormattedBody)
		}
	}
	for _, f := range in.forbid {
		if strings.Contains(content.FormattedBody, f) {
			t.Errorf("%s: formatted_body has live %q from user text: %q", where, f, content.FormattedBody)
		}
	}
	if bidiControls.MatchString(content.Body) || bidiControls.MatchString(content.FormattedBody) {
		t.Errorf("%s: raw bidi control passed: body %q formatted %q", where, content.Body, content.FormattedBody)
	}
	if in.check != nil {
		in.check(t, content)
	}
}

func TestAttackTextInjection(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		c := newClinicOn(t, on, nil)
		doc, pat, caseRoom, patientRoom := patientCase(t, c)
		cases := textInjections()
		for i, in := range cases {
			marker := fmt.Sprintf("zq%02dx", i)
			t.Run(in.name, func(t *testing.T) {
				evtID, err := pat.SendMessageEvent(t.Context(), patientRoom, event.EventMessage,
					&event.MessageEventContent{MsgType: event.MsgText, Body: "!checkin hr=80 " + marker + " " + in.note})
				if err != nil {
					t.Fatal(err)
				}
				reply := pat.WaitFor(30*time.Second, "the restatement of "+in.name, replyTo(c.botID, evtID.EventID))
				pat.requireArrivedEncrypted(reply)
				if !strings.Contains(reply.Content.AsMessage().Body, "Recorded") {
					t.Fatalf("not recorded: %s", reply.Content.AsMessage().Body)
				}
				textCheckContent(t, "restatement", in, reply.Content.AsMessage())
				summary := doc.WaitFor(30*time.Second, "the case-room summary of "+in.name, func(evt *event.Event) bool {
					return evt.RoomID == caseRoom && evt.Sender == c.botID && evt.Type == event.EventMessage &&
						strings.Contains(evt.Content.AsMessage().Body, marker)
				})
				doc.requireArrivedEncrypted(summary)
				textCheckContent(t, "case-room summary", in, summary.Content.AsMessage())
			})
		}
		// The check-ins table shows the same notes as text.
		evtID, err := doc.SendMessageEvent(t.Context(), caseRoom, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "!checkins 100"})
		if err != nil {
			t.Fatal(err)
		}
		var table []*event.MessageEventContent
		deadline := time.Now().Add(60 * time.Second)
		for {
			table = nil
			for _, evt := range doc.Matching(replyTo(c.botID, evtID.EventID)) {
				table = append(table, evt.Content.AsMessage())
			}
			all := ""
			for _, m := range table {
				all += m.Body
			}
			if strings.Contains(all, "zq00x") || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if len(table) == 0 {
			t.Fatal("no check-ins table")
		}
		joined := &event.MessageEventContent{Format: event.FormatHTML}
		for _, m := range table {
			joined.Body += m.Body + "\n"
			joined.FormattedBody += m.FormattedBody
		}
		for _, in := range cases {
			if in.name == "mentions" || in.name == "quote and lists" {
				in.check = nil // whole-message checks
			}
			if in.name == "line breaks" {
				in.check = func(t *testing.T, content *event.MessageEventContent) {
					if !regexp.MustCompile(`lineone\s*<br\s*/?>\s*linetwo`).MatchString(content.FormattedBody) {
						t.Errorf("table: line break not kept: %q", content.FormattedBody)
					}
				}
			}
			in.forbid = append(in.forbid[:len(in.forbid):len(in.forbid)], "<h1", "<hr", "<del", "data-mx-spoiler", "<a ", "<pre", "<blockquote")
			if in.name == "table" {
				in.forbid = []string{"<table><thead><tr><th>Symptom"}
			}
			textCheckContent(t, "checkins table ("+in.name+")", in, joined)
		}
	})
}

// textLongNote is a note of about 950 characters that starts with a marker.
func textLongNote(i int) string {
	marker := fmt.Sprintf("longnote%02dz", i)
	return marker + " " + strings.Repeat(fmt.Sprintf("felt dizzy after walking %d ", i), 36)[:930]
}

// textManyLongCheckIns records n check-ins with long notes.
func textManyLongCheckIns(t *testing.T, c *clinic, pat *user, patientRoom id.RoomID, n int) {
	t.Helper()
	for i := range n {
		c.mustSucceed(pat, patientRoom, fmt.Sprintf("!checkin hr=%d %s", 60+i, textLongNote(i)))
	}
}

// textReplies waits until the bot has answered evtID and returns its answers.
func textReplies(t *testing.T, u *user, c *clinic, evtID id.EventID) []*event.MessageEventContent {
	t.Helper()
	u.WaitFor(60*time.Second, "the answer to "+evtID.String(), replyTo(c.botID, evtID))
	time.Sleep(time.Second) // a paged answer is one message; give a wrongly split answer time to show
	var out []*event.MessageEventContent
	for _, evt := range u.Matching(replyTo(c.botID, evtID)) {
		out = append(out, evt.Content.AsMessage())
	}
	return out
}

func TestAttackTextOversizedAnswerIsPaged(t *testing.T) {
	c := newClinic(t, nil)
	doc, pat, caseRoom, patientRoom := patientCase(t, c)
	const n = 45
	textManyLongCheckIns(t, c, pat, patientRoom, n)

	seen := map[string]bool{}
	pages := 0
	for page := 1; ; page++ {
		cmd := "!checkins since 52w"
		if page > 1 {
			cmd += fmt.Sprintf(" page %d", page)
		}
		evtID, err := doc.SendMessageEvent(t.Context(), caseRoom, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: cmd})
		if err != nil {
			t.Fatal(err)
		}
		replies := textReplies(t, doc, c, evtID.EventID)
		if len(replies) != 1 {
			t.Fatalf("%q: %d answers, want 1", cmd, len(replies))
		}
		body := replies[0].Body
		if size := len(body) + len(replies[0].FormattedBody); size > 32*1024 {
			t.Errorf("page %d is %d bytes of text, want well below 64 KiB", page, size)
		}
		m := regexp.MustCompile(`page (\d+) of (\d+)`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("%q: the answer does not say which page it is: %.300s", cmd, body)
		}
		if m[1] != fmt.Sprint(page) {
			t.Fatalf("%q answered page %s", cmd, m[1])
		}
		for i := range n {
			if marker := fmt.Sprintf("longnote%02dz", i); strings.Contains(body, marker) {
				if seen[marker] {
					t.Errorf("%s on two pages", marker)
				}
				seen[marker] = true
			}
		}
		pages++
		if m[1] == m[2] {
			break
		}
		if want := fmt.Sprintf("/checkins since 52w page %d", page+1); !strings.Contains(body, want) {
			t.Errorf("page %d does not say how to get more (%q): %.300s", page, want, body)
		}
		if page > 20 {
			t.Fatal("too many pages")
		}
	}
	if pages < 2 {
		t.Errorf("%d page(s) for %d long notes: the answer was not paged", pages, n)
	}
	if len(seen) != n {
		t.Errorf("%d of %d notes shown over all pages", len(seen), n)
	}
	_, body := c.command(doc, caseRoom, fmt.Sprintf("!checkins since 52w page %d", pages+5))
	if !strings.Contains(body, "⛔") || !strings.Contains(body, fmt.Sprintf("%d page", pages)) {
		t.Errorf("a page past the end: %s", body)
	}
}

func TestAttackTextSendFailureIsReported(t *testing.T) {
	w := getWorld(t)
	admin := newUser(t, w.hsA, "admin")
	// The test build lifts the page budget, so the answer is the size it would be unpaged and the homeserver
	// really refuses it.
	c := &clinic{t: t, hs: w.hsA, bot: startBot(t, map[string]any{"admins": []string{admin.UserID.String()}}, "CASEROOM_FAULT_PAGE_BYTES=10000000"),
		botID: id.NewUserID(w.reg.SenderLocalpart, w.hsA.ServerName), admin: admin}
	c.adminDM = admin.EncryptedRoomWithBot(c.botID)
	doc, pat, caseRoom, patientRoom := patientCase(t, c)
	textManyLongCheckIns(t, c, pat, patientRoom, 45)
	before := textScrape(t, c.bot, `caseroom_messages_sent_total{outcome="failed"}`)

	evtID, body := c.command(doc, caseRoom, "!checkins since 52w")
	if !strings.Contains(body, "could not") || !strings.Contains(body, "too large") {
		t.Errorf("the user is not told the answer failed: %s", body)
	}
	if len(body) > 1000 {
		t.Errorf("the failure report is %d bytes, want a short message", len(body))
	}
	if after := textScrape(t, c.bot, `caseroom_messages_sent_total{outcome="failed"}`); after < before+1 {
		t.Errorf("failed sends counted %v, before %v", after, before)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.auditOutcome(evtID) != "send-failed" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := c.auditOutcome(evtID); got != "send-failed" {
		t.Errorf("audit outcome of the command = %q, want send-failed", got)
	}
	if n := c.countRows("SELECT COUNT(*) FROM audit WHERE event_id = $1 AND action = 'send-failed' AND outcome = 'send-failed'", evtID); n != 1 {
		t.Errorf("%d send-failed audit rows for the command, want 1", n)
	}
}

// textScrape is scrape for a counter that may not have been created yet (0 then).
func textScrape(t *testing.T, bot *botProcess, sample string) float64 {
	t.Helper()
	resp, err := http.Get(bot.MetricsURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics scrape: HTTP %d", resp.StatusCode)
	}
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` ([0-9.e+-]+)$`).FindSubmatch(body)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
