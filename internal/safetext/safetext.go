// Package safetext shows text a user (or the EHR) wrote inside the bot's messages as exactly that text: no
// Markdown or HTML in it becomes formatting, line breaks are kept, nothing is dropped, and bidirectional-text
// controls cannot reorder what the reader sees.
//
// There is one way per job:
//   - Markdown: untrusted text inside a Markdown message (the bot's messages are Markdown rendered by Render).
//   - format.SafeMarkdownCode (mautrix) stays the way to show an identifier or value as code; a code span cannot
//     hold formatting, and Render neutralises bidi controls in it.
//   - HTML and Plain: untrusted text inside a message whose HTML and body are built by hand (the check-ins table).
//   - Render: the only way a message's Markdown becomes event content.
//
// Bidi controls (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069) are replaced by a visible mark such as
// "[U+202E]": the reader sees that the writer put one there, and the text around it is shown in the order it was
// written. They are replaced rather than removed, so what is shown still accounts for everything typed.
package safetext

import (
	"fmt"
	"html"
	"strings"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
)

// IsBidiControl reports whether r is a Unicode bidirectional formatting character.
func IsBidiControl(r rune) bool {
	switch {
	case r == '\u061c', r == '\u200e', r == '\u200f':
		return true
	case r >= '\u202a' && r <= '\u202e':
		return true
	case r >= '\u2066' && r <= '\u2069':
		return true
	}
	return false
}

// Neutralise replaces every bidi control with a visible mark like "[U+202E]".
func Neutralise(s string) string {
	if !strings.ContainsFunc(s, IsBidiControl) {
		return s
	}
	var sb strings.Builder
	for _, r := range s {
		if IsBidiControl(r) {
			fmt.Fprintf(&sb, "[U+%04X]", r)
		} else {
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// lines splits text into lines (\r\n, \r and \n are all line breaks).
func lines(s string) []string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.Split(s, "\n")
}

// Markdown returns s as Markdown that renders as exactly s, inline (it may follow other text on a line, e.g. in
// a list item): every ASCII punctuation character is backslash-escaped (CommonMark lets any of them be), so no
// emphasis, heading, list, quote, table, spoiler, strike-through, code, link, HTML or entity can start; each line
// break becomes a hard line break (a trailing backslash), so a blank line or a line starting with a block marker
// stays inside the item the text is in; leading spaces of a line are dropped (they would otherwise start a code
// block) and bidi controls are neutralised.
func Markdown(s string) string {
	var sb strings.Builder
	for i, line := range lines(strings.TrimRight(Neutralise(s), "\r\n")) {
		if i > 0 {
			sb.WriteString("\\\n")
		}
		line = strings.TrimLeft(line, " \t")
		for _, r := range line {
			if r < 0x80 && isASCIIPunct(byte(r)) {
				sb.WriteByte('\\')
			}
			sb.WriteRune(r)
		}
	}
	return strings.TrimRight(sb.String(), " \t")
}

func isASCIIPunct(c byte) bool {
	return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~')
}

// HTML returns s escaped for HTML, with line breaks as <br> and bidi controls neutralised.
func HTML(s string) string {
	ls := lines(Neutralise(s))
	for i, l := range ls {
		ls[i] = html.EscapeString(l)
	}
	return strings.Join(ls, "<br>")
}

// Plain returns s for a plain-text body: the text as written, with bidi controls neutralised.
func Plain(s string) string {
	return Neutralise(s)
}

// Render turns a message written in Markdown into event content (HTML formatted_body and a matching body). Any
// bidi control left in it (e.g. inside a code span) is neutralised first; raw HTML in it is shown as text.
func Render(markdown string) event.MessageEventContent {
	return format.RenderMarkdown(Neutralise(markdown), true, false)
}
