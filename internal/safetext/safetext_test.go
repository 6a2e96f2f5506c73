package safetext_test

import (
	"html"
	"regexp"
	"strings"
	"testing"

	"github.com/caseroom/caseroom/internal/safetext"
)

// Injections are user texts that try to become formatting; Words are what must still be shown.
var Injections = []struct {
	Name, Text string
	Words      []string
}{
	{"heading", "start\n# Headingword\nSetext\n===", []string{"start", "Headingword", "Setext", "==="}},
	{"thematic break", "upper\n---\n***\nlower", []string{"upper", "---", "***", "lower"}},
	{"table", "symptoms\n| Symptom | When |\n|---|---|\n| chestpain | night | hiddenword |", []string{"Symptom", "chestpain", "night", "hiddenword", "|---|"}},
	{"spoiler", "look ||spoilerword|| here", []string{"||spoilerword||"}},
	{"strike", "not ~~strikeword~~ ~single~", []string{"~~strikeword~~", "~single~"}},
	{"code fence", "before\n```go\nfenceword\n```\n~~~\ntilde\n~~~", []string{"```go", "fenceword", "~~~", "tilde"}},
	{"indented code", "first\n\n    indentword", []string{"first", "indentword"}},
	{"inline", "`codeword` **boldword** _italicword_ *starword* __under__", []string{"`codeword`", "**boldword**", "_italicword_", "*starword*", "__under__"}},
	{"html", `<b>tagword</b> <img src="x"> <a href="https://evil.example">anchorword</a> <script>alert(1)</script> <!-- c -->`,
		[]string{"<b>tagword</b>", `<img src="x">`, "anchorword", "<script>", "<!-- c -->"}},
	{"links", "[clickword](https://evil.example/a) <https://evil.example/auto> ![imgword](mxc://evil/x) [ref]\n\n[ref]: https://evil.example",
		[]string{"[clickword](https://evil.example/a)", "<https://evil.example/auto>", "![imgword](mxc://evil/x)", "[ref]: https://evil.example"}},
	{"mentions", "@room [docword](https://matrix.to/#/@someone:example.org) @someone:example.org", []string{"@room", "docword", "@someone:example.org"}},
	{"lists and quotes", "intro\n> quoteword\n- listword\n+ plusword\n1. numword\n2) parenword", []string{"> quoteword", "- listword", "+ plusword", "1. numword", "2) parenword"}},
	{"entities", "&lt;b&gt; &amp; &#42; &copy;", []string{"&lt;b&gt;", "&amp;", "&#42;", "&copy;"}},
	{"backslashes", `a\*b\\c\`, []string{`a\*b\\c\`}},
	{"math and emoji", "$x$ $$y$$ :smile:", []string{"$x$", "$$y$$", ":smile:"}},
}

var live = regexp.MustCompile(`<(h[1-6]|hr|table|td|th|del|s|strike|pre|code|strong|em|a|img|script|blockquote|ol|ul|li|span)\b|data-mx-spoiler`)

// text is what a reader sees of HTML: tags dropped, <br> as line breaks, entities decoded.
func text(h string) string {
	h = regexp.MustCompile(`<br\s*/?>\n?`).ReplaceAllString(h, "\n")
	return html.UnescapeString(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(h, ""))
}

func TestMarkdownShowsTextAsWritten(t *testing.T) {
	for _, in := range Injections {
		t.Run(in.Name, func(t *testing.T) {
			content := safetext.Render("* Note: " + safetext.Markdown(in.Text) + "\n")
			inner := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(content.FormattedBody), "<ul>\n<li>"), "</li>\n</ul>")
			if m := live.FindString(inner); m != "" {
				t.Errorf("live %q from user text: %q", m, content.FormattedBody)
			}
			for _, w := range in.Words {
				if !strings.Contains(text(content.FormattedBody), w) {
					t.Errorf("formatted_body does not show %q: %q", w, content.FormattedBody)
				}
				if !strings.Contains(content.Body, w) {
					t.Errorf("body does not show %q: %q", w, content.Body)
				}
			}
			// Every line of the text is shown, in order, inside the one list item.
			want := "Note: " + strings.Join(trimmedLines(in.Text), "\n")
			if got := text(inner); got != want {
				t.Errorf("shown as\n%q\nwant\n%q", got, want)
			}
		})
	}
}

func trimmedLines(s string) []string {
	ls := strings.Split(s, "\n")
	for i, l := range ls {
		ls[i] = strings.TrimLeft(l, " \t")
	}
	return ls
}

func TestBidiControlsAreShownVisibly(t *testing.T) {
	in := "abc\u202edcb \u2066iso\u2069 \u2067r\u2069 \u2068f\u2069 \u200f \u200e \u202ae\u202c \u202bx\u202c \u202dy\u202c \u061c"
	bidi := regexp.MustCompile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
	for name, out := range map[string]string{
		"markdown": safetext.Render("**Note:** " + safetext.Markdown(in)).FormattedBody,
		"body":     safetext.Render(safetext.Markdown(in)).Body,
		"code":     safetext.Render("`" + in + "`").FormattedBody,
		"html":     safetext.HTML(in),
		"plain":    safetext.Plain(in),
	} {
		if bidi.MatchString(out) {
			t.Errorf("%s: raw bidi control in %q", name, out)
		}
		for _, w := range []string{"abc", "dcb", "[U+202E]", "[U+2066]", "[U+2069]", "[U+200F]", "[U+061C]"} {
			if !strings.Contains(out, w) {
				t.Errorf("%s: %q missing from %q", name, w, out)
			}
		}
	}
}

func TestMarkdownTrailingLineBreakLeavesNoBackslash(t *testing.T) {
	content := safetext.Render("* Note: " + safetext.Markdown("worse\n\n") + "\n* next\n")
	if strings.Contains(content.Body, "\\") || strings.Contains(content.FormattedBody, "\\") {
		t.Errorf("stray backslash: %q / %q", content.Body, content.FormattedBody)
	}
}

func TestHTMLKeepsLineBreaksAndEscapes(t *testing.T) {
	got := safetext.HTML("a <b>&\r\nc\n\nd")
	if want := "a &lt;b&gt;&amp;<br>c<br><br>d"; got != want {
		t.Errorf("HTML = %q, want %q", got, want)
	}
}
