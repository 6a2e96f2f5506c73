package care

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Limits of an interval schedule, in hours.
const (
	MinIntervalHours = 1
	MaxIntervalHours = 168
)

type repeat int

const (
	repeatDaily repeat = iota + 1
	repeatWeekdays
	repeatInterval
)

// Schedule says when to prompt a patient for a check-in: at a wall-clock time
// every day or every weekday (Monday to Friday) in a time zone, or every N
// hours of elapsed time. The zero Schedule never fires; build one with
// ParseSchedule and persist it as String().
type Schedule struct {
	repeat       repeat
	hour, minute int
	loc          *time.Location
	interval     time.Duration
}

// ParseSchedule reads "daily HH:MM [zone]", "weekdays HH:MM [zone]",
// "every N hours", "every Nh" (N from 1 to 168) or "every hour". Words are
// case-insensitive; zone is an IANA name such as Europe/Berlin (case as in the
// tz database) and defaults to defaultLoc, or UTC when that is nil.
// Errors are *FieldError.
func ParseSchedule(args string, defaultLoc *time.Location) (Schedule, error) {
	if defaultLoc == nil {
		defaultLoc = time.UTC
	}
	const allowed = "daily HH:MM [zone], weekdays HH:MM [zone] or every N hours"
	fields := strings.Fields(args)
	if len(fields) == 0 {
		return Schedule{}, &FieldError{Field: "schedule", Reason: ReasonMissing,
			Allowed: allowed + ", like daily 09:00 Europe/Berlin"}
	}
	bad := &FieldError{Field: "schedule", Value: strings.Join(fields, " "), Reason: ReasonInvalid, Allowed: allowed}
	switch strings.ToLower(fields[0]) {
	case "every":
		return parseInterval(strings.Join(fields[1:], ""), bad)
	case "daily":
		return parseWallClock(repeatDaily, fields[1:], defaultLoc, bad)
	case "weekdays":
		return parseWallClock(repeatWeekdays, fields[1:], defaultLoc, bad)
	}
	return Schedule{}, bad
}

func parseInterval(text string, bad *FieldError) (Schedule, error) {
	num, unit := splitNumber(text)
	switch strings.ToLower(unit) {
	case "h", "hr", "hrs", "hour", "hours":
	default:
		return Schedule{}, bad
	}
	if num == "" {
		num = "1" // "every hour"
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < MinIntervalHours || n > MaxIntervalHours {
		return Schedule{}, &FieldError{Field: "every", Value: num, Reason: ReasonInvalid,
			Allowed: fmt.Sprintf("a whole number of hours from %d to %d", MinIntervalHours, MaxIntervalHours)}
	}
	return Schedule{repeat: repeatInterval, interval: time.Duration(n) * time.Hour}, nil
}

func parseWallClock(r repeat, fields []string, loc *time.Location, bad *FieldError) (Schedule, error) {
	if len(fields) < 1 || len(fields) > 2 {
		return Schedule{}, bad
	}
	hour, minute, ok := parseTimeOfDay(fields[0])
	if !ok {
		return Schedule{}, &FieldError{Field: "time", Value: fields[0], Reason: ReasonInvalid,
			Allowed: "HH:MM from 00:00 to 23:59"}
	}
	if len(fields) == 2 {
		var err error
		if loc, err = time.LoadLocation(fields[1]); err != nil || fields[1] == "" {
			return Schedule{}, &FieldError{Field: "zone", Value: fields[1], Reason: ReasonInvalid,
				Allowed: "an IANA time zone like Europe/Berlin or America/New_York"}
		}
	}
	return Schedule{repeat: r, hour: hour, minute: minute, loc: loc}, nil
}

// parseTimeOfDay reads "9:05" or "09:05".
func parseTimeOfDay(s string) (hour, minute int, ok bool) {
	h, m, found := strings.Cut(s, ":")
	if !found || len(h) < 1 || len(h) > 2 || len(m) != 2 || !allDigits(h) || !allDigits(m) {
		return 0, 0, false
	}
	hour, _ = strconv.Atoi(h)
	minute, _ = strconv.Atoi(m)
	return hour, minute, hour < 24 && minute < 60
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// Location is the time zone of a daily or weekdays schedule (nil otherwise).
func (s Schedule) Location() *time.Location { return s.loc }

// Next returns the first fire time strictly after after, in UTC.
//
// Daily and weekdays schedules fire at their wall-clock time in their zone.
// When that time does not exist (spring forward), they fire at the first
// instant after the gap, e.g. 03:00 local for 02:30; when it exists twice
// (fall back), they fire once, at the first occurrence.
//
// Interval schedules count elapsed time: Next returns after plus the
// interval, so pass the previous fire time (or the start time) as after.
// The zero Schedule returns the zero time.
func (s Schedule) Next(after time.Time) time.Time {
	switch s.repeat {
	case repeatInterval:
		return after.Add(s.interval).UTC()
	case repeatDaily, repeatWeekdays:
		y, m, d := after.In(s.loc).Date()
		// A weekday schedule may skip a weekend: a week always holds a fire time.
		for i := 0; i <= 7; i++ {
			date := time.Date(y, m, d+i, 0, 0, 0, 0, time.UTC)
			if wd := date.Weekday(); s.repeat == repeatWeekdays && (wd == time.Saturday || wd == time.Sunday) {
				continue
			}
			if t := wallClock(date, s.hour, s.minute, s.loc); t.After(after) {
				return t.UTC()
			}
		}
	}
	return time.Time{}
}

// wallClock returns the instant at which clocks in loc show hour:minute on
// date (a UTC midnight naming the local calendar day): the first occurrence
// if it exists twice, the end of the gap if it does not exist.
func wallClock(date time.Time, hour, minute int, loc *time.Location) time.Time {
	civil := date.Add(time.Duration(hour)*time.Hour + time.Duration(minute)*time.Minute)
	// Zone offsets well before and after the wall time; a zone changes its
	// offset at most once within these three days.
	_, before := civil.Add(-36 * time.Hour).In(loc).Zone()
	_, after := civil.Add(36 * time.Hour).In(loc).Zone()
	var first time.Time
	for _, offset := range []int{before, after} {
		t := civil.Add(-time.Duration(offset) * time.Second)
		if showsWallClock(t.In(loc), civil) && (first.IsZero() || t.Before(first)) {
			first = t
		}
	}
	if !first.IsZero() {
		return first
	}
	// In a gap: read with the old offset, the wall time lands after the
	// transition; the zone that starts there starts at the end of the gap.
	start, _ := civil.Add(-time.Duration(before) * time.Second).In(loc).ZoneBounds()
	return start
}

func showsWallClock(t, civil time.Time) bool {
	y1, m1, d1 := t.Date()
	y2, m2, d2 := civil.Date()
	return y1 == y2 && m1 == m2 && d1 == d2 && t.Hour() == civil.Hour() && t.Minute() == civil.Minute()
}

// String is the canonical text of s, which ParseSchedule reads back:
// "daily 09:00 Europe/Berlin", "weekdays 08:30 America/New_York", "every 6 hours".
func (s Schedule) String() string {
	switch s.repeat {
	case repeatInterval:
		n := int(s.interval / time.Hour)
		if n == 1 {
			return "every 1 hour"
		}
		return fmt.Sprintf("every %d hours", n)
	case repeatDaily:
		return fmt.Sprintf("daily %02d:%02d %s", s.hour, s.minute, s.loc)
	case repeatWeekdays:
		return fmt.Sprintf("weekdays %02d:%02d %s", s.hour, s.minute, s.loc)
	}
	return ""
}
