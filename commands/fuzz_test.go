package commands

import (
	"strings"
	"testing"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"
)

// quoteArg quotes a word so that SplitArgs reads it back unchanged.
func quoteArg(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func FuzzSplitArgs(f *testing.F) {
	for _, seed := range []string{
		`"Wound care after hip surgery" --mrn 0012345`,
		`@nurse.kim:clinic.example wound nurse`,
		`'single quoted' "double \"escaped\"" back\ slash`,
		`"unclosed`,
		`trailing\`,
		`a  	b` + "\n" + `c`,
		`""  ''`,
		"\u00a0\u2003nbsp and em space\u3000ideographic",
		"\xff\xfe invalid utf-8 \x00",
		`it's "it's" 'say "hi"'`,
		strings.Repeat("x ", MaxCommandLength/2+1),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		args, err := SplitArgs(raw)
		if err != nil {
			if args != nil {
				t.Fatalf("SplitArgs(%q) returned %q with error %v", raw, args, err)
			}
			return
		}
		if len(raw) > MaxCommandLength {
			t.Fatalf("SplitArgs accepted %d bytes, more than %d", len(raw), MaxCommandLength)
		}
		// Quoting every argument and splitting again gives the same arguments.
		quoted := make([]string, len(args))
		for i, arg := range args {
			quoted[i] = quoteArg(arg)
		}
		joined := strings.Join(quoted, " ")
		if len(joined) > MaxCommandLength {
			return
		}
		again, err := SplitArgs(joined)
		if err != nil {
			t.Fatalf("SplitArgs(%q) (quoted %q) failed: %v", joined, args, err)
		}
		if strings.Join(again, "\x00") != strings.Join(args, "\x00") || len(again) != len(args) {
			t.Fatalf("round trip of %q: %q, then %q", raw, args, again)
		}
	})
}

// FuzzParseArgs runs message bodies through what HandleMessage does before permission checks: recognising a
// command, finding it (and its subcommands) among caseroom's real definitions, and parsing its arguments as typed
// text and as MSC4391 structured arguments.
func FuzzParseArgs(f *testing.F) {
	for _, seed := range []string{
		`!case new "Wound care after hip surgery" --mrn 0012345`,
		`/case new --patient Patient/42 Diabetes --mrn`,
		`!case new --mrn=1 --mrn=2 x`,
		`!team add @nurse.kim:clinic.example wound nurse`,
		`!team add nurse.kim wound nurse`,
		`!patient invite @jo:clinic.example extra`,
		`!checkin bp=142/91 hr=88 temp=38.4 dizzy "since" this morning`,
		`!checkin for @jo:clinic.example bp=128/82 reported by phone`,
		`!checkins since 3d`,
		`!plan amend 2 Change the dressing daily --due 2026-12-05`,
		`!plan done 99999999999999999999`,
		`!admin clinician add @dr.lee:clinic.example --practitioner Practitioner/42`,
		`!admin audit @dr.lee:clinic.example case 12 since 2d`,
		`!help case new`,
		`!CASE NEW x`,
		`!x`, `/`, `!`, `! case`, `!1abc`, "!\u00e9t\u00e9 \xff",
		`!team add {"user":"@a:b","role":3}`,
		`!case new {"title":null,"mrn":["x"]}`,
		`!case new {"title":"x","mrn":7,"extra":1}`,
		`!case new ` + strings.Repeat("a", MaxArgLength+1),
	} {
		f.Add(seed)
	}
	p := New()
	f.Fuzz(func(t *testing.T, body string) {
		name, rawArgs, ok := SplitCommand(body)
		if !ok {
			return
		}
		if name == "" || strings.TrimSpace(rawArgs) != rawArgs {
			t.Fatalf("SplitCommand(%q) = %q, %q", body, name, rawArgs)
		}
		words := strings.Fields(rawArgs)
		cmd, consumed := p.lookup(name, words)
		if cmd == nil {
			return
		}
		if consumed > len(words) {
			t.Fatalf("lookup consumed %d of %d words", consumed, len(words))
		}
		for range consumed {
			rawArgs = strings.TrimSpace(rawArgs)
			_, rawArgs, _ = strings.Cut(rawArgs, strings.Fields(rawArgs)[0])
		}
		if values, err := ParseArgs(cmd.Params, rawArgs); err == nil {
			checkValues(t, cmd, values, rawArgs)
		} else if err.Error() == "" {
			t.Fatalf("ParseArgs(%q) failed without a message", rawArgs)
		}
		// The same text as MSC4391 structured arguments (mostly not JSON, which must be refused cleanly).
		if values, err := structuredArgs(cmd.Params, []byte(rawArgs)); err == nil {
			checkValues(t, cmd, values, rawArgs)
		}
	})
}

// checkValues checks parsed arguments against the command's parameters: every required one given, nothing else,
// each of its type and within the length limit.
func checkValues(t *testing.T, cmd *Command, values map[string]any, raw string) {
	t.Helper()
	for _, p := range cmd.Params {
		v, ok := values[p.Name]
		if !ok {
			if !p.Optional {
				t.Fatalf("/%s %q: required %s missing without an error", cmd.FullName(), raw, p.Name)
			}
			continue
		}
		switch p.Type {
		case User:
			u, isUser := v.(id.UserID)
			if !isUser || !strings.HasPrefix(string(u), "@") {
				t.Fatalf("/%s %q: %s = %#v, not a user ID", cmd.FullName(), raw, p.Name, v)
			}
			if _, _, err := u.Parse(); err != nil {
				t.Fatalf("/%s %q: %s = %q does not parse: %v", cmd.FullName(), raw, p.Name, u, err)
			}
		case Integer:
			if _, isInt := v.(int64); !isInt {
				t.Fatalf("/%s %q: %s = %#v, not an integer", cmd.FullName(), raw, p.Name, v)
			}
		default:
			s, isString := v.(string)
			if !isString || len(s) > MaxArgLength {
				t.Fatalf("/%s %q: %s = %#v, not a string of at most %d bytes", cmd.FullName(), raw, p.Name, v, MaxArgLength)
			}
			if !p.Optional && strings.TrimSpace(s) == "" {
				t.Fatalf("/%s %q: required %s is blank", cmd.FullName(), raw, p.Name)
			}
			if utf8.ValidString(raw) && !utf8.ValidString(s) {
				t.Fatalf("/%s %q: %s = %q is not valid UTF-8", cmd.FullName(), raw, p.Name, s)
			}
		}
	}
	if len(values) > len(cmd.Params) {
		t.Fatalf("/%s %q: %d values for %d parameters: %v", cmd.FullName(), raw, len(values), len(cmd.Params), values)
	}
	for name := range values {
		if !hasParam(cmd.Params, name) {
			t.Fatalf("/%s %q: value for unknown parameter %q", cmd.FullName(), raw, name)
		}
	}
}
