package commands

import (
	"fmt"
	"html"
	"regexp"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/config"
	"github.com/caseroom/caseroom/internal/safetext"
	"github.com/caseroom/caseroom/store"
)

var textInjectionNotes = []struct {
	name  string
	note  string
	words []string
}{
	{"heading", "start\n# Headingword", []string{"start", "Headingword"}},
	{"table", "symptoms\n| Symptom | When |\n|---|---|\n| chestpain | night | hiddenword |", []string{"chestpain", "night", "hiddenword"}},
	{"spoiler", "look ||spoilerword|| here", []string{"spoilerword"}},
	{"strike", "not ~~strikeword~~", []string{"strikeword"}},
	{"code fence", "before\n```\nfenceword\n```", []string{"before", "fenceword"}},
	{"html", `<b>tagword</b> <a href="https://evil.example">anchorword</a>`, []string{"tagword", "anchorword"}},
	{"links and mentions", "[clickword](https://evil.example) @room https://matrix.to/#/@x:y", []string{"clickword", "@room"}},
	{"line breaks", "lineone\n\nlinetwo", []string{"lineone", "linetwo"}},
	{"bidi", "abc\u202edcb \u2066iso\u2069 \u200f", []string{"abc", "dcb", "iso", "[U+202E]", "[U+2066]", "[U+200F]"}},
}

var liveFromUser = regexp.MustCompile(`<(h[1-6]|hr|table|del|s|strike|pre|a|img|blockquote|ol)\b|data-mx-spoiler|<b>`)
var rawBidi = regexp.MustCompile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

func textTestCall() *Call {
	return &Call{Turn: &bot.Turn{Bot: &bot.Bot{Config: &config.Config{Timezone: "UTC"}}}}
}

func textCheck(t *testing.T, where string, content event.MessageEventContent, words []string) {
	t.Helper()
	shown := html.UnescapeString(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(content.FormattedBody, " "))
	for _, w := range words {
		if !strings.Contains(content.Body, w) {
			t.Errorf("%s: body lacks %q: %q", where, w, content.Body)
		}
		if !strings.Contains(shown, w) {
			t.Errorf("%s: formatted_body lacks %q: %q", where, w, content.FormattedBody)
		}
	}
	userPart := content.FormattedBody
	if _, rows, ok := strings.Cut(userPart, "<tbody>"); ok { // the table itself is the bot's; its rows hold user text
		userPart = rows
	}
	if m := liveFromUser.FindString(userPart); m != "" {
		t.Errorf("%s: live %q: %q", where, m, content.FormattedBody)
	}
	if rawBidi.MatchString(content.Body + content.FormattedBody) {
		t.Errorf("%s: raw bidi control", where)
	}
}

func TestCheckInRenderingShowsNotesAsText(t *testing.T) {
	call := textTestCall()
	for _, in := range textInjectionNotes {
		t.Run(in.name, func(t *testing.T) {
			c := &store.CheckIn{PatientID: "@pat:clinic.example", RecordedBy: "@pat:clinic.example", Note: in.note,
				EffectiveAt: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)}
			textCheck(t, "restatement", safetext.Render("Recorded:\n\n"+restate(c)), in.words)
			textCheck(t, "case-room summary", safetext.Render(caseRoomSummary(call, c, nil, nil, "🩺 Check-in")), in.words)
			list := []*store.CheckIn{c}
			pages := checkInPages(call, list, nil, bot.AnswerBytes)
			table := checkInTable(call, list, pages[0], 1, len(pages), "", nil)
			textCheck(t, "checkins table", *table, in.words)
			if in.name == "line breaks" && !strings.Contains(table.FormattedBody, "lineone<br><br>linetwo") {
				t.Errorf("table lost the line breaks: %q", table.FormattedBody)
			}
		})
	}
}

func TestCheckInPagesStayUnderBudget(t *testing.T) {
	call := textTestCall()
	var list []*store.CheckIn
	for i := range 60 {
		hr, err := care.ParseCheckIn(fmt.Sprintf("hr=%d", 60+i), care.Ranges{})
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, &store.CheckIn{PatientID: "@p:x", RecordedBy: "@p:x", Values: hr.Values,
			Note: fmt.Sprintf("note%02d ", i) + strings.Repeat("<&> dizzy ", 99), EffectiveAt: time.Unix(int64(1e9-i*60), 0)})
	}
	const budget = 16 * 1024
	pages := checkInPages(call, list, nil, budget)
	if len(pages) < 3 {
		t.Fatalf("%d pages for 60 long notes", len(pages))
	}
	seen := 0
	for i, rng := range pages {
		if rng[0] != seen {
			t.Fatalf("page %d starts at %d, want %d", i+1, rng[0], seen)
		}
		seen = rng[1]
		content := checkInTable(call, list, rng, i+1, len(pages), "since 52w", nil)
		if size := len(content.Body) + len(content.FormattedBody); size > budget {
			t.Errorf("page %d is %d bytes, budget %d", i+1, size, budget)
		}
		if !strings.Contains(content.Body, fmt.Sprintf("page %d of %d", i+1, len(pages))) {
			t.Errorf("page %d does not say so: %.200s", i+1, content.Body)
		}
		if i+1 < len(pages) && !strings.Contains(content.Body, fmt.Sprintf("`/checkins since 52w page %d` for more", i+2)) {
			t.Errorf("page %d does not say how to get more", i+1)
		}
		for j := rng[0]; j < rng[1]; j++ {
			if !strings.Contains(content.Body, fmt.Sprintf("note%02d", j)) {
				t.Errorf("page %d lacks note %d", i+1, j)
			}
		}
	}
	if seen != len(list) {
		t.Errorf("pages cover %d of %d check-ins", seen, len(list))
	}
}
