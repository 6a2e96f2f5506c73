package commands

import (
	"context"
	"fmt"
	"strings"
	"time"

	"maunium.net/go/mautrix/format"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/internal/safetext"
	"github.com/caseroom/caseroom/store"
)

// MaxRemindersPerCase limits the active reminders of a case.
const MaxRemindersPerCase = 10

var remindCommands = []*Command{
	{
		Name:        "remind",
		Category:    remindersAlertsCategory,
		Description: "Check-in reminders: the patient is prompted on a schedule, and a missed check-in is reported here.",
		Access:      CareTeam,
		PHI:         true,
		Subcommands: []*Command{
			{
				Name: "checkin", Description: "Prompt the patient to check in on a schedule (times in the patient's local time).",
				Params: []Param{{Name: "schedule", Type: Rest, Placeholder: "schedule",
					Description: "daily HH:MM [zone], weekdays HH:MM [zone] or every N hours; zone e.g. Europe/Berlin"}},
				Example: "daily 09:00 Europe/Berlin",
				Access:  CareTeam, PHI: true, Run: runRemindCheckIn,
			},
			{
				Name: "list", Description: "Show this case's check-in reminders with their next prompt.",
				Access: CareTeam, PHI: true, Run: runRemindList,
			},
			{
				Name: "stop", Description: "Stop a check-in reminder.",
				Params:  []Param{{Name: "n", Type: Integer, Placeholder: "number", Description: "the reminder's number, as /remind list shows it"}},
				Example: "1",
				Access:  CareTeam, PHI: true, Run: runRemindStop,
			},
		},
	},
}

// whenIn shows a time in the schedule's own zone (or the configured one for interval schedules).
func whenIn(call *Call, s care.Schedule, t time.Time) string {
	loc := s.Location()
	if loc == nil {
		loc = call.Bot.Config.Location()
	}
	return t.In(loc).Format("2006-01-02 15:04 MST")
}

func runRemindCheckIn(ctx context.Context, call *Call) error {
	if !requireOpen(call) {
		return nil
	}
	c := call.Room.Case
	schedule, err := care.ParseSchedule(call.Str("schedule"), call.Bot.Config.Location())
	if err != nil {
		var msgs []string
		for _, fe := range care.FieldErrors(err) {
			msgs = append(msgs, safetext.Markdown(fe.Error()))
		}
		if len(msgs) == 0 {
			msgs = append(msgs, safetext.Markdown(err.Error()))
		}
		call.Usage("%s. For example: `daily 09:00 Europe/Berlin`, `weekdays 08:30` (in %s) or `every 6 hours`.",
			strings.Join(msgs, "; "), format.SafeMarkdownCode(call.Bot.Config.Location().String()))
		return nil
	}
	if c.PatientRoomID == "" {
		call.Fail("refused:no-patient-room", "⛔ Case #%d has no patient room to send prompts to.", c.ID)
		return nil
	}
	active, err := call.Bot.Store.Reminders.Active(ctx, c.ID)
	if err != nil {
		return err
	}
	for _, r := range active {
		if r.Schedule == schedule.String() {
			call.Fail("refused:duplicate", "⛔ Reminder #%d already prompts %s; nothing was added.", r.Number, format.SafeMarkdownCode(r.Schedule))
			return nil
		}
	}
	if len(active) >= MaxRemindersPerCase {
		call.Fail("refused:too-many", "⛔ Case #%d already has %d reminders, the most allowed; stop one with `/remind stop <number>` first.",
			c.ID, len(active))
		return nil
	}
	now := call.Bot.Now()
	r := &store.Reminder{CaseID: c.ID, Schedule: schedule.String(), NextAt: schedule.Next(now), CreatedBy: call.Sender,
		CreatedEvent: call.Event.ID, CreatedAt: now}
	call.Write(func(ctx context.Context) error {
		if err := call.Bot.Store.Reminders.Create(ctx, r); err != nil {
			return err
		}
		call.AfterCommit(call.Bot.WakeScheduler)
		call.Done(c.ID, "Reminder #%d: the patient is asked to check in %s, first at %s. If no check-in follows within %s, I say so here.",
			r.Number, format.SafeMarkdownCode(r.Schedule), whenIn(call, schedule, r.NextAt),
			bot.FormatDuration(call.Bot.Config.Reminders.Grace.Duration))
		return nil
	})
	return nil
}

func runRemindList(ctx context.Context, call *Call) error {
	c := call.Room.Case
	active, err := call.Bot.Store.Reminders.Active(ctx, c.ID)
	if err != nil {
		return err
	}
	call.Audit("read:reminders", "ok", c.ID, fmt.Sprintf("%d reminders", len(active)))
	if len(active) == 0 {
		call.Reply(fmt.Sprintf("Case #%d has no check-in reminders. Add one with `/remind checkin daily 09:00`.", c.ID))
		return nil
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "**Check-in reminders of case #%d** (a missed check-in is reported after %s)\n\n", c.ID,
		bot.FormatDuration(call.Bot.Config.Reminders.Grace.Duration))
	for _, r := range active {
		next := call.When(r.NextAt)
		if s, err := care.ParseSchedule(r.Schedule, call.Bot.Config.Location()); err == nil {
			next = whenIn(call, s, r.NextAt)
		}
		fmt.Fprintf(&sb, "* #%d %s, next at %s (set by %s)\n", r.Number, format.SafeMarkdownCode(r.Schedule), next,
			format.SafeMarkdownCode(r.CreatedBy.String()))
	}
	call.Reply(sb.String())
	return nil
}

func runRemindStop(ctx context.Context, call *Call) error {
	c := call.Room.Case
	n, _ := call.Int("n")
	r, err := call.Bot.Store.Reminders.ByNumber(ctx, c.ID, int(n))
	if err != nil {
		return err
	}
	switch {
	case r == nil:
		call.Fail("refused:unknown-reminder", "⛔ Case #%d has no reminder #%d; `/remind list` shows its reminders.", c.ID, n)
		return nil
	case !r.StoppedAt.IsZero():
		call.Fail("refused:stopped", "⛔ Reminder #%d was already stopped on %s.", r.Number, call.When(r.StoppedAt))
		return nil
	}
	call.Write(func(ctx context.Context) error {
		stopped, err := call.Bot.Store.Reminders.Stop(ctx, r.ID, call.Sender, call.Bot.Now())
		if err != nil {
			return err
		}
		if !stopped {
			call.Fail("refused:stopped", "⛔ Reminder #%d was already stopped.", r.Number)
			return nil
		}
		call.Done(c.ID, "Stopped reminder #%d (%s); the patient gets no more prompts from it.", r.Number, format.SafeMarkdownCode(r.Schedule))
		return nil
	})
	return nil
}
