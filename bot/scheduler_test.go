package bot

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the tests must not depend on the machine's zoneinfo

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/config"
	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

func utcTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func TestNextPrompt(t *testing.T) {
	tests := []struct {
		name     string
		schedule string
		due      string // the occurrence that is being prompted
		now      string // when the prompt is sent
		want     string
	}{
		{"daily on time, into summer time", "daily 09:00 Europe/Berlin", "2026-03-28T08:00:00Z", "2026-03-28T08:00:30Z", "2026-03-29T07:00:00Z"},
		{"daily on time, into winter time", "daily 09:00 Europe/Berlin", "2026-10-24T07:00:00Z", "2026-10-24T07:00:30Z", "2026-10-25T08:00:00Z"},
		{"daily in the spring gap fires at its end", "daily 02:30 Europe/Berlin", "2026-03-28T01:30:00Z", "2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z"},
		{"daily after the spring gap", "daily 02:30 Europe/Berlin", "2026-03-29T01:00:00Z", "2026-03-29T01:00:01Z", "2026-03-30T00:30:00Z"},
		{"daily in the repeated hour fires once", "daily 02:30 Europe/Berlin", "2026-10-25T00:30:00Z", "2026-10-25T00:30:10Z", "2026-10-26T01:30:00Z"},
		{"daily sent during the repeated hour", "daily 02:30 Europe/Berlin", "2026-10-25T00:30:00Z", "2026-10-25T01:35:00Z", "2026-10-26T01:30:00Z"},
		{"weekdays over the fall-back weekend", "weekdays 08:00 Europe/Berlin", "2026-10-23T06:00:00Z", "2026-10-23T06:00:01Z", "2026-10-26T07:00:00Z"},
		{"interval counts elapsed time over the change", "every 6 hours", "2026-03-29T00:00:00Z", "2026-03-29T00:00:01Z", "2026-03-29T06:00:00Z"},
		{"downtime: daily skips the missed days", "daily 09:00 Europe/Berlin", "2026-03-27T08:00:00Z", "2026-03-30T08:00:00Z", "2026-03-31T07:00:00Z"},
		{"downtime: daily later the same day", "daily 09:00 Europe/Berlin", "2026-03-28T08:00:00Z", "2026-03-29T06:59:59Z", "2026-03-29T07:00:00Z"},
		{"downtime: interval keeps its rhythm", "every 6 hours", "2026-03-29T00:00:00Z", "2026-03-29T13:00:00Z", "2026-03-29T18:00:00Z"},
		{"downtime: interval exactly on an occurrence", "every 6 hours", "2026-03-29T00:00:00Z", "2026-03-29T12:00:00Z", "2026-03-29T18:00:00Z"},
		{"long downtime", "every 1 hour", "2020-01-01T00:00:00Z", "2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := care.ParseSchedule(tt.schedule, nil)
			if err != nil {
				t.Fatal(err)
			}
			now := utcTime(tt.now)
			got := NextPrompt(s, utcTime(tt.due), now)
			if !got.Equal(utcTime(tt.want)) {
				t.Fatalf("NextPrompt = %s, want %s", got.Format(time.RFC3339), tt.want)
			}
			if !got.After(now) {
				t.Fatalf("NextPrompt %s is not after now %s: the next tick would prompt again", got, now)
			}
		})
	}
}

// clock is a clock the test sets.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

const schedulerTestConfig = `
homeserver: {url: "https://matrix.hospital.test", domain: hospital.test}
appservice: {as_token: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", hs_token: "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh"}
admins: ["@alice:hospital.test"]
encryption: {pickle_key: "pppppppppppppppppppppppppppppppppppppppp"}
timezone: Europe/Berlin
reminders: {grace: 2h}
alerts: {ack_timeout: 15m}
`

// schedulerBot is a bot that is not connected to a homeserver: its scheduler queues messages that nothing sends.
func schedulerBot(t *testing.T, st *store.Store, c *clock) *Bot {
	t.Helper()
	cfg, err := config.Parse([]byte(schedulerTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg, st, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	b.Now = c.Now
	return b
}

func openStore(t *testing.T, cfg store.Config) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// queued returns the messages queued for a room, oldest first.
func queued(t *testing.T, st *store.Store, roomID id.RoomID) []*event.MessageEventContent {
	t.Helper()
	pending, err := st.Outgoing.Pending(context.Background(), roomID, 100)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*event.MessageEventContent, len(pending))
	for i, p := range pending {
		out[i] = &event.MessageEventContent{}
		if err = json.Unmarshal(p.Content, out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func testCase(t *testing.T, st *store.Store) *store.Case {
	t.Helper()
	ctx := context.Background()
	c := &store.Case{Title: "x", CaseRoomID: "!case:hs", PatientRoomID: "!patient:hs", CreatedBy: "@doc:hs"}
	if err := st.Cases.Create(ctx, c, "$case"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Cases.AddTeamMember(ctx, c.ID, "@doc:hs", "", "@doc:hs"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Cases.AddTeamMember(ctx, c.ID, "@nurse:hs", "", "@doc:hs"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Cases.AddPatient(ctx, c.ID, "@pat:hs", "@doc:hs"); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSchedulerReminders runs a daily 09:00 Berlin reminder across the change to summer time with an injected
// clock: one prompt per occurrence, none twice (also after a restart), one late prompt after downtime rather than
// one per missed day, and a missed check-in reported once when no check-in followed within the grace period.
func TestSchedulerReminders(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := openStore(t, cfg)
		clk := &clock{now: utcTime("2026-03-27T11:00:00Z")} // Friday 12:00 CET
		b := schedulerBot(t, st, clk)
		c := testCase(t, st)
		s, err := care.ParseSchedule("daily 09:00", b.Config.Location())
		if err != nil {
			t.Fatal(err)
		}
		r := &store.Reminder{CaseID: c.ID, Schedule: s.String(), NextAt: s.Next(clk.now), CreatedBy: "@doc:hs", CreatedEvent: "$remind", CreatedAt: clk.now}
		if err = st.Reminders.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		if r.Schedule != "daily 09:00 Europe/Berlin" || !r.NextAt.Equal(utcTime("2026-03-28T08:00:00Z")) {
			t.Fatalf("reminder %q first at %s", r.Schedule, r.NextAt)
		}
		tick := func(at string) {
			t.Helper()
			clk.now = utcTime(at)
			if failed := b.runDue(ctx); failed {
				t.Fatalf("scheduled work failed at %s", at)
			}
		}
		prompts := func(want int) []*event.MessageEventContent {
			t.Helper()
			got := queued(t, st, c.PatientRoomID)
			if len(got) != want {
				t.Fatalf("%d prompts queued at %s, want %d", len(got), clk.now.Format(time.RFC3339), want)
			}
			return got
		}
		missed := func(want int) []*event.MessageEventContent {
			t.Helper()
			got := queued(t, st, c.CaseRoomID)
			if len(got) != want {
				t.Fatalf("%d missed check-in reports at %s, want %d", len(got), clk.now.Format(time.RFC3339), want)
			}
			return got
		}
		nextAt := func(want string) {
			t.Helper()
			got, _ := st.Reminders.ByID(ctx, r.ID)
			if !got.NextAt.Equal(utcTime(want)) {
				t.Fatalf("next prompt at %s, want %s", got.NextAt.Format(time.RFC3339), want)
			}
		}

		tick("2026-03-28T07:59:59Z") // 08:59:59 CET
		prompts(0)
		tick("2026-03-28T08:00:30Z") // 09:00:30 CET
		first := prompts(1)[0]
		if !strings.Contains(first.Body, "Time for your check-in") || strings.Contains(first.Body, "was due") ||
			first.MsgType != event.MsgText || !first.Mentions.Has("@pat:hs") {
			t.Fatalf("prompt: %+v", first)
		}
		nextAt("2026-03-29T07:00:00Z") // Sunday 09:00 CEST, the first day of summer time
		tick("2026-03-28T08:00:31Z")
		prompts(1)

		// A restart (a new bot on the same database) at the same time sends nothing again.
		b = schedulerBot(t, st, clk)
		tick("2026-03-28T08:01:00Z")
		prompts(1)

		// No check-in within the 2 h grace: reported once in the case room.
		tick("2026-03-28T10:00:29Z")
		missed(0)
		tick("2026-03-28T10:00:30Z")
		report := missed(1)[0]
		if !strings.Contains(report.Body, "Missed check-in") || !strings.Contains(report.Body, "@pat:hs") ||
			!strings.Contains(report.Body, "within 2h") || !strings.Contains(report.Body, "2026-03-28 09:00 CET") {
			t.Fatalf("missed report: %s", report.Body)
		}
		tick("2026-03-28T12:00:00Z")
		missed(1)

		// Summer time: 09:00 CEST is 07:00 UTC.
		tick("2026-03-29T06:59:59Z")
		prompts(1)
		tick("2026-03-29T07:00:00Z")
		prompts(2)
		nextAt("2026-03-30T07:00:00Z")

		// Down from before the grace period of the second prompt until Wednesday afternoon: one late prompt for the
		// missed Monday to Wednesday prompts, the second prompt's missed check-in reported, the next prompt tomorrow.
		tick("2026-04-01T13:00:00Z") // 15:00 CEST
		late := prompts(3)[2]
		if !strings.Contains(late.Body, "was due at 2026-03-30 09:00 CEST") {
			t.Fatalf("late prompt: %s", late.Body)
		}
		missed(2)
		nextAt("2026-04-02T07:00:00Z")
		tick("2026-04-01T13:00:01Z")
		prompts(3)

		// A check-in after the late prompt answers it: no report.
		if err = st.CheckIns.Create(ctx, &store.CheckIn{CaseID: c.ID, EventID: "$checkin", RoomID: c.PatientRoomID, PatientID: "@pat:hs",
			RecordedBy: "@pat:hs", Source: store.SourcePatient, EffectiveAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		tick("2026-04-01T15:00:00Z")
		missed(2)
		list, _ := st.Reminders.Prompts(ctx, r.ID)
		var outcomes []string
		for _, p := range list {
			outcomes = append(outcomes, p.Outcome)
		}
		if strings.Join(outcomes, ",") != "missed,missed,answered" {
			t.Fatalf("prompt outcomes %v, want missed, missed, answered", outcomes)
		}

		// A closed case's reminder stops instead of prompting.
		if err = st.Cases.Close(ctx, c.ID, "@doc:hs"); err != nil {
			t.Fatal(err)
		}
		tick("2026-04-02T07:00:00Z")
		prompts(3)
		if got, _ := st.Reminders.ByID(ctx, r.ID); got.StoppedAt.IsZero() {
			t.Fatal("the reminder of a closed case was not stopped")
		}
	})
}

// TestSchedulerEscalation escalates an unacknowledged alert once, mentioning the room and the care team, and leaves
// an acknowledged one alone.
func TestSchedulerEscalation(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := openStore(t, cfg)
		clk := &clock{now: utcTime("2026-10-25T00:50:00Z")} // 02:50 CEST, ten minutes before the clocks go back
		b := schedulerBot(t, st, clk)
		c := testCase(t, st)
		alert := func(evt id.EventID) *store.Alert {
			t.Helper()
			ci := &store.CheckIn{CaseID: c.ID, EventID: evt, RoomID: c.PatientRoomID, PatientID: "@pat:hs", RecordedBy: "@pat:hs",
				Source: store.SourcePatient, EffectiveAt: clk.now}
			if err := st.CheckIns.Create(ctx, ci); err != nil {
				t.Fatal(err)
			}
			a := &store.Alert{CaseID: c.ID, CheckInID: ci.ID, PatientID: "@pat:hs", Crossings: "SpO2 88% (threshold spo2<92)",
				RaisedAt: clk.now, EscalateAt: clk.now.Add(b.Config.Alerts.AckTimeout.Duration)}
			if err := st.Alerts.Create(ctx, a); err != nil {
				t.Fatal(err)
			}
			return a
		}
		open, acked := alert("$one"), alert("$two")
		if ok, err := st.Alerts.Ack(ctx, acked.ID, "@nurse:hs", "$ack", clk.now); !ok || err != nil {
			t.Fatal("ack failed", err)
		}
		clk.now = utcTime("2026-10-25T01:04:59Z")
		b.runDue(ctx)
		if got := queued(t, st, c.CaseRoomID); len(got) != 0 {
			t.Fatalf("escalated early: %+v", got)
		}
		clk.now = utcTime("2026-10-25T01:05:00Z") // 02:05 CET, after the change
		b.runDue(ctx)
		clk.now = clk.now.Add(time.Hour)
		b.runDue(ctx)
		got := queued(t, st, c.CaseRoomID)
		if len(got) != 1 {
			t.Fatalf("%d escalations, want exactly 1", len(got))
		}
		esc := got[0]
		if esc.Mentions == nil || !esc.Mentions.Room || !esc.Mentions.Has("@doc:hs") || !esc.Mentions.Has("@nurse:hs") ||
			!strings.Contains(esc.Body, "@room") || !strings.Contains(esc.Body, "Alert #1") || !strings.Contains(esc.Body, "SpO2 88%") ||
			!strings.Contains(esc.Body, "after 15m") || esc.MsgType != event.MsgText {
			t.Fatalf("escalation: %+v %+v", esc, esc.Mentions)
		}
		stored, _ := st.Alerts.ByID(ctx, open.ID)
		if stored.EscalationSeq == 0 || !stored.EscalatedAt.Equal(utcTime("2026-10-25T01:05:00Z")) {
			t.Fatalf("escalation not recorded: %+v", stored)
		}
	})
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		2 * time.Hour: "2h", 15 * time.Minute: "15m", 90 * time.Minute: "1h30m", 45 * time.Second: "45s", 168 * time.Hour: "168h",
		time.Hour + 5*time.Second: "1h0m5s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%s) = %q, want %q", d, got, want)
		}
	}
}
