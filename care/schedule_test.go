package care

import (
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the tests must not depend on the machine's zoneinfo
)

func mustLoad(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func TestParseSchedule(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	tests := []struct {
		name       string
		input      string
		defaultLoc *time.Location
		want       string
	}{
		{"daily with zone", "daily 09:00 Europe/Berlin", nil, "daily 09:00 Europe/Berlin"},
		{"daily default zone", "daily 9:05", berlin, "daily 09:05 Europe/Berlin"},
		{"daily nil default is UTC", "daily 23:59", nil, "daily 23:59 UTC"},
		{"weekdays", "Weekdays 08:30 America/New_York", berlin, "weekdays 08:30 America/New_York"},
		{"every N hours", "every 6 hours", berlin, "every 6 hours"},
		{"every Nh", "EVERY 6h", nil, "every 6 hours"},
		{"every N h", "every 12 h", nil, "every 12 hours"},
		{"every hour", "every hour", nil, "every 1 hour"},
		{"every 1 hour", "every 1 hour", nil, "every 1 hour"},
		{"extra whitespace", "  daily\t07:00   Europe/Berlin ", nil, "daily 07:00 Europe/Berlin"},
		{"midnight", "daily 00:00 UTC", berlin, "daily 00:00 UTC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSchedule(tt.input, tt.defaultLoc)
			if err != nil {
				t.Fatalf("ParseSchedule(%q): %v", tt.input, err)
			}
			if s.String() != tt.want {
				t.Errorf("String() = %q, want %q", s.String(), tt.want)
			}
			back, err := ParseSchedule(s.String(), time.UTC)
			if err != nil || back.String() != s.String() {
				t.Errorf("ParseSchedule(String()) = %q, %v", back.String(), err)
			}
		})
	}
}

func TestParseScheduleErrors(t *testing.T) {
	tests := []struct {
		name     string
		input    string
		field    string
		contains []string
	}{
		{"empty", "  ", "schedule", []string{"schedule: no value given", "daily HH:MM [zone]"}},
		{"unknown repeat", "monthly 09:00", "schedule", []string{`schedule: "monthly 09:00" is not valid`, "every N hours"}},
		{"daily without time", "daily", "schedule", []string{`"daily"`}},
		{"daily with too much", "daily 09:00 Europe/Berlin now", "schedule", []string{`"daily 09:00 Europe/Berlin now"`}},
		{"hour 24", "daily 24:00", "time", []string{`time: "24:00" is not valid`, "00:00 to 23:59"}},
		{"minute 60", "weekdays 08:60", "time", []string{`"08:60"`}},
		{"am/pm", "daily 9am", "time", []string{`"9am"`}},
		{"one-digit minutes", "daily 9:5", "time", []string{`"9:5"`}},
		{"unknown zone", "daily 09:00 Mars/Olympus", "zone", []string{`zone: "Mars/Olympus" is not valid`, "Europe/Berlin"}},
		{"zone path traversal", "daily 09:00 ../../etc/passwd", "zone", []string{`"../../etc/passwd"`}},
		{"zero hours", "every 0 hours", "every", []string{`every: "0" is not valid`, "from 1 to 168"}},
		{"too many hours", "every 169h", "every", []string{`"169"`}},
		{"fractional hours", "every 1.5h", "every", []string{`"1.5"`}},
		{"minutes", "every 30 minutes", "schedule", []string{`"every 30 minutes"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSchedule(tt.input, time.UTC)
			fes := FieldErrors(err)
			if len(fes) != 1 {
				t.Fatalf("ParseSchedule(%q) = %q, %v; want one FieldError", tt.input, s, err)
			}
			if fes[0].Field != tt.field {
				t.Errorf("field = %q, want %q (%v)", fes[0].Field, tt.field, err)
			}
			for _, part := range tt.contains {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("%q does not contain %q", err.Error(), part)
				}
			}
		})
	}
}

// The 2026 changes: Europe/Berlin springs forward on 29 March at 02:00 CET
// (01:00 UTC) and falls back on 25 October at 03:00 CEST (01:00 UTC);
// America/New_York springs forward on 8 March at 02:00 EST (07:00 UTC) and
// falls back on 1 November at 02:00 EDT (06:00 UTC).
func TestScheduleNext(t *testing.T) {
	tests := []struct {
		name     string
		schedule string
		after    string
		want     []string // successive fire times, each from the previous one
	}{
		{"daily, ordinary day", "daily 09:00 Europe/Berlin", "2026-01-15T07:00:00Z",
			[]string{"2026-01-15T08:00:00Z", "2026-01-16T08:00:00Z"}},
		{"daily, exactly at fire time goes to the next day", "daily 09:00 Europe/Berlin", "2026-01-15T08:00:00Z",
			[]string{"2026-01-16T08:00:00Z"}},
		{"daily across Berlin spring forward keeps the wall time", "daily 09:00 Europe/Berlin", "2026-03-28T08:00:00Z",
			[]string{"2026-03-29T07:00:00Z", "2026-03-30T07:00:00Z"}},
		{"02:30 on Berlin spring-forward day fires at the end of the gap", "daily 02:30 Europe/Berlin", "2026-03-28T12:00:00Z",
			[]string{"2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"}},
		{"02:00 on Berlin spring-forward day (start of the gap)", "daily 02:00 Europe/Berlin", "2026-03-28T12:00:00Z",
			[]string{"2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"}},
		{"03:00 on Berlin spring-forward day exists", "daily 03:00 Europe/Berlin", "2026-03-28T12:00:00Z",
			[]string{"2026-03-29T01:00:00Z", "2026-03-30T01:00:00Z"}},
		{"02:30 on Berlin fall-back day fires once, first occurrence", "daily 02:30 Europe/Berlin", "2026-10-24T12:00:00Z",
			[]string{"2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"}},
		{"between the two 02:30s on Berlin fall-back day", "daily 02:30 Europe/Berlin", "2026-10-25T01:00:00Z",
			[]string{"2026-10-26T01:30:00Z"}},
		{"daily across Berlin fall back keeps the wall time", "daily 09:00 Europe/Berlin", "2026-10-24T07:00:00Z",
			[]string{"2026-10-25T08:00:00Z", "2026-10-26T08:00:00Z"}},
		{"02:30 on New York spring-forward day", "daily 02:30 America/New_York", "2026-03-07T12:00:00Z",
			[]string{"2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"}},
		{"daily across New York spring forward", "daily 09:00 America/New_York", "2026-03-07T14:00:00Z",
			[]string{"2026-03-08T13:00:00Z", "2026-03-09T13:00:00Z"}},
		{"01:30 on New York fall-back day fires once", "daily 01:30 America/New_York", "2026-10-31T12:00:00Z",
			[]string{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"}},
		{"daily across New York fall back", "daily 09:00 America/New_York", "2026-10-31T13:00:00Z",
			[]string{"2026-11-01T14:00:00Z"}},
		{"weekdays skip the weekend and the New York change", "weekdays 08:30 America/New_York", "2026-03-06T13:30:00Z",
			[]string{"2026-03-09T12:30:00Z", "2026-03-10T12:30:00Z"}},
		{"weekdays from Saturday", "weekdays 08:30 Europe/Berlin", "2026-03-28T10:00:00Z",
			[]string{"2026-03-30T06:30:00Z"}},
		{"weekdays Thursday to Monday", "weekdays 08:30 Europe/Berlin", "2026-10-22T07:00:00Z",
			[]string{"2026-10-23T06:30:00Z", "2026-10-26T07:30:00Z"}},
		{"local date differs from UTC date", "daily 00:30 America/New_York", "2026-01-15T04:00:00Z",
			[]string{"2026-01-15T05:30:00Z"}},
		{"every 6 hours is elapsed time across Berlin spring forward", "every 6 hours", "2026-03-28T22:00:00Z",
			[]string{"2026-03-29T04:00:00Z", "2026-03-29T10:00:00Z"}},
		{"every 6 hours is elapsed time across New York fall back", "every 6h", "2026-11-01T03:00:00Z",
			[]string{"2026-11-01T09:00:00Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSchedule(tt.schedule, nil)
			if err != nil {
				t.Fatal(err)
			}
			after := utc(tt.after)
			for i, want := range tt.want {
				got := s.Next(after)
				if got.Location() != time.UTC {
					t.Errorf("Next returned a time in %s, want UTC", got.Location())
				}
				if !got.Equal(utc(want)) {
					t.Fatalf("fire %d: Next(%s) = %s, want %s", i, after.Format(time.RFC3339), got.Format(time.RFC3339), want)
				}
				after = got
			}
		})
	}
}

func TestScheduleNextInjectedLocalClock(t *testing.T) {
	// after may be in any zone; the result depends only on the instant.
	s, err := ParseSchedule("daily 09:00 Europe/Berlin", nil)
	if err != nil {
		t.Fatal(err)
	}
	ny := mustLoad(t, "America/New_York")
	now := time.Date(2026, 3, 28, 20, 0, 0, 0, ny) // 2026-03-29T00:00Z
	if got, want := s.Next(now), utc("2026-03-29T07:00:00Z"); !got.Equal(want) {
		t.Errorf("Next(%s) = %s, want %s", now, got, want)
	}
}

func TestScheduleNextFiresDailyThroughAYear(t *testing.T) {
	for _, zone := range []string{"Europe/Berlin", "America/New_York", "Australia/Lord_Howe"} {
		for _, clock := range []string{"00:00", "01:30", "02:00", "02:30", "03:00", "09:00", "23:59"} {
			s, err := ParseSchedule("daily "+clock+" "+zone, nil)
			if err != nil {
				t.Fatal(err)
			}
			after := utc("2026-01-01T00:00:00Z")
			for day := 0; day < 365; day++ {
				next := s.Next(after)
				if !next.After(after) || next.Sub(after) > 26*time.Hour {
					t.Fatalf("%s: Next(%s) = %s", s, after, next)
				}
				if day > 0 && next.Sub(after) < 22*time.Hour {
					t.Fatalf("%s: fired twice within a day: %s then %s", s, after, next)
				}
				after = next
			}
		}
	}
}

func TestZeroScheduleNeverFires(t *testing.T) {
	var s Schedule
	if got := s.Next(utc("2026-01-01T00:00:00Z")); !got.IsZero() {
		t.Errorf("zero Schedule.Next = %s, want zero", got)
	}
	if s.String() != "" {
		t.Errorf("zero Schedule.String = %q", s.String())
	}
}
