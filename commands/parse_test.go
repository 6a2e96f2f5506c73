package commands

import (
	"slices"
	"strings"
	"testing"
)

func TestSplitCommand(t *testing.T) {
	tests := []struct {
		name, body, cmd, args string
		ok                    bool
	}{
		{name: "slash", body: "/ping", cmd: "ping", ok: true},
		{name: "bang with args", body: "!help  ping ", cmd: "help", args: "ping", ok: true},
		{name: "newline separates", body: "/case\nnew x", cmd: "case", args: "new x", ok: true},
		{name: "plain chat", body: "hello /ping", ok: false},
		{name: "lone prefix", body: "/", ok: false},
		{name: "path-like", body: "/ /etc", ok: false},
		{name: "digits first", body: "!1abc", ok: false},
		{name: "smiley", body: "!!!", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, args, ok := SplitCommand(tt.body)
			if ok != tt.ok || cmd != tt.cmd || args != tt.args {
				t.Fatalf("SplitCommand(%q) = %q, %q, %v; want %q, %q, %v", tt.body, cmd, args, ok, tt.cmd, tt.args, tt.ok)
			}
		})
	}
}

func TestSplitArgs(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    []string
		wantErr string
	}{
		{name: "empty", raw: "", want: nil},
		{name: "words", raw: "new  Mr  Smith", want: []string{"new", "Mr", "Smith"}},
		{name: "double quotes", raw: `new "Chest pain, 3 days" --mrn 12`, want: []string{"new", "Chest pain, 3 days", "--mrn", "12"}},
		{name: "single quotes keep backslash", raw: `'a\b' c`, want: []string{`a\b`, "c"}},
		{name: "escaped quote", raw: `say \"hi\"`, want: []string{"say", `"hi"`}},
		{name: "empty quoted arg", raw: `a "" b`, want: []string{"a", "", "b"}},
		{name: "unicode", raw: "Zoë «Ärztin»", want: []string{"Zoë", "«Ärztin»"}},
		{name: "unclosed quote", raw: `new "Chest pain`, wantErr: "quote"},
		{name: "trailing backslash", raw: `a \`, wantErr: "backslash"},
		{name: "too long", raw: strings.Repeat("x", MaxCommandLength+1), wantErr: "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SplitArgs(tt.raw)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("SplitArgs(%q) error = %v, want one mentioning %q", tt.raw, err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("SplitArgs(%q) = %q, %v; want %q", tt.raw, got, err, tt.want)
			}
		})
	}
}

func TestSuggest(t *testing.T) {
	p := New()
	if got := p.suggest("pnig"); got != "ping" {
		t.Fatalf("suggest(pnig) = %q, want ping", got)
	}
	if got := p.suggest("xyzzy"); got != "" {
		t.Fatalf("suggest(xyzzy) = %q, want none", got)
	}
}

func TestHelpHidesPHICommandsInUnencryptedRooms(t *testing.T) {
	p := New()
	hidden := p.overview(nil, "", true)
	for _, cmd := range p.Runnable() {
		if listed := strings.Contains(hidden, "`"+cmd.UsageLine()+"`"); listed == cmd.PHI {
			t.Errorf("%s (PHI %v) listed=%v in an unencrypted room", cmd.FullName(), cmd.PHI, listed)
		}
	}
	if !strings.Contains(hidden, "not end-to-end encrypted") {
		t.Error("the overview does not say why commands are missing")
	}
}

func TestHelpIsGeneratedFromDefinitions(t *testing.T) {
	p := New()
	overview := p.overview(nil, "", false)
	for _, cmd := range p.Runnable() {
		if !strings.Contains(overview, cmd.UsageLine()) || !strings.Contains(overview, cmd.Description) {
			t.Errorf("overview lacks %s", cmd.Name)
		}
	}
	if detail := p.commandHelp("help"); !strings.Contains(detail, "**Usage:** `/help [<command>]`") || !strings.Contains(detail, "/help case new") {
		t.Errorf("help detail = %q", detail)
	}
}
