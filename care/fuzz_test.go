package care

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzParseCheckIn(f *testing.F) {
	for _, seed := range []string{
		"bp=142/91 hr=88 temp=38.4 spo2=95 rr=18 weight=71.2kg glucose=6.1mmol/L pain=4 dizzy since this morning",
		"temp=101.2F wt=156lbs bg=110mg/dL",
		"Pain: 8 out of 10, worse at night",
		"T:38,4°C  sat=92%\tpulse=130bpm\n\"can't breathe\" 😵‍💫",
		"bp=80/120 hrr=88 weight=11st hr=abc hr=90 pain=4.5",
		"bp=120/80, hr=72; rr=16/min pain=0/10",
		"hr=" + strings.Repeat("9", 400),
		"temp=38.4.5 bp=/ bp=1/ =5 :x hr= weight=71.2 kg",
		"\x00\xff\u202e hr=88",
		"",
		"   \u00a0\u2003",
		"glucose=-.5mmol/L spo2=-0 pain=-0 sugar=,5",
	} {
		f.Add(seed)
	}
	ranges := DefaultRanges()
	f.Fuzz(func(t *testing.T, input string) {
		c, err := ParseCheckIn(input, ranges)
		if err != nil {
			if c != nil {
				t.Fatalf("ParseCheckIn(%q) returned a CheckIn with error %v", input, err)
			}
			fes := FieldErrors(err)
			if len(fes) == 0 {
				t.Fatalf("ParseCheckIn(%q) error %v holds no FieldError", input, err)
			}
			for _, fe := range fes {
				if fe.Field == "" || fe.Allowed == "" || !utf8.ValidString(fe.Error()) {
					t.Fatalf("ParseCheckIn(%q): incomplete FieldError %#v", input, fe)
				}
			}
			return
		}
		if c == nil {
			t.Fatalf("ParseCheckIn(%q) returned nil, nil", input)
		}
		if err := c.Validate(ranges); err != nil {
			t.Fatalf("ParseCheckIn(%q) accepted a check-in that does not validate: %v", input, err)
		}
		if c.Note != strings.TrimSpace(c.Note) || !strings.Contains(input, c.Note) {
			t.Fatalf("ParseCheckIn(%q): note %q is not a trimmed part of the input", input, c.Note)
		}

		// Round trip: each Format() written back as key=value re-parses to the same values and note.
		var b strings.Builder
		for _, v := range c.Values {
			b.WriteString(tokenFromFormat(v.Format()) + " ")
		}
		b.WriteString(c.Note)
		again := b.String()
		if utf8.RuneCountInString(again) > MaxInputLength {
			return // restating may lengthen an input at the limit
		}
		back, err := ParseCheckIn(again, ranges)
		if err != nil {
			t.Fatalf("re-parsing %q (from %q): %v", again, input, err)
		}
		if !reflect.DeepEqual(back.Values, c.Values) || back.Note != c.Note {
			t.Fatalf("round trip of %q via %q:\n got %+v %q\nwant %+v %q", input, again, back.Values, back.Note, c.Values, c.Note)
		}
	})
}

// tokenFromFormat turns "Temp 38.4 °C" into "Temp=38.4°C".
func tokenFromFormat(s string) string {
	label, rest, _ := strings.Cut(s, " ")
	return label + "=" + strings.ReplaceAll(rest, " ", "")
}
