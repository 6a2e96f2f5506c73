package bot

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/internal/safetext"
	"github.com/caseroom/caseroom/store"
)

const (
	// schedulerBatch is how many due items of a kind the scheduler loads at once.
	schedulerBatch = 50
	// schedulerRetry is how long the scheduler waits after an item failed before it tries again.
	schedulerRetry = 5 * time.Second
	// latePrompt is how late a prompt may be before it says that it is late.
	latePrompt = time.Minute
)

// scheduler does the bot's timed work: check-in prompts, missed check-in reports and alert escalations. Every item
// is done in one database transaction that queues its message and moves the item on (next prompt, checked, escalated),
// so a crash never sends an item twice and a restart finishes what was due while the bot was down.
type scheduler struct {
	wg       sync.WaitGroup
	pokeOnce sync.Once
	poke     chan struct{}
}

// pokes is the channel that wakes the scheduler.
func (s *scheduler) pokes() chan struct{} {
	s.pokeOnce.Do(func() { s.poke = make(chan struct{}, 1) })
	return s.poke
}

// startScheduler starts the scheduler goroutine; Stop ends it.
func (b *Bot) startScheduler() {
	b.sched.wg.Add(1)
	go b.runScheduler(b.ctx)
}

// WakeScheduler makes the scheduler look for due work at once, e.g. after a command added a reminder. Call it after
// the change is committed (Turn.AfterCommit).
func (b *Bot) WakeScheduler() {
	select {
	case b.sched.pokes() <- struct{}{}:
	default:
	}
}

func (b *Bot) runScheduler(ctx context.Context) {
	defer b.sched.wg.Done()
	log := b.Log.With().Str("component", "scheduler").Logger()
	ctx = log.WithContext(ctx)
	for {
		wait := schedulerPoll
		if failed := b.runDue(ctx); failed {
			wait = max(wait, schedulerRetry)
		} else if next, err := b.nextScheduled(ctx); err != nil {
			log.Warn().Err(err).Msg("Failed to find the next scheduled work")
		} else if !next.IsZero() {
			wait = min(wait, max(next.Sub(b.Now()), 10*time.Millisecond))
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-b.sched.pokes():
			timer.Stop()
		case <-timer.C:
		}
	}
}

// runDue does everything that is due now and reports whether an item failed (it is tried again later).
func (b *Bot) runDue(ctx context.Context) (failed bool) {
	steps := []struct {
		what string
		run  func(ctx context.Context, now time.Time) (done int, err error)
	}{
		{"check-in prompts", b.promptDueReminders},
		{"missed check-in checks", b.checkDuePrompts},
		{"alert escalations", b.escalateDueAlerts},
	}
	for _, step := range steps {
		for ctx.Err() == nil {
			done, err := step.run(ctx, b.Now())
			if err != nil {
				if ctx.Err() == nil {
					zerolog.Ctx(ctx).Warn().Err(err).Str("work", step.what).Msg("Scheduled work failed, will retry")
				}
				failed = true
				break
			}
			if done < schedulerBatch {
				break
			}
		}
	}
	return failed
}

// nextScheduled is the earliest time at which something will be due, or zero.
func (b *Bot) nextScheduled(ctx context.Context) (time.Time, error) {
	next, err := b.Store.Reminders.NextWork(ctx)
	if err != nil {
		return time.Time{}, err
	}
	escalation, err := b.Store.Alerts.NextEscalation(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if next.IsZero() || (!escalation.IsZero() && escalation.Before(next)) {
		next = escalation
	}
	return next, nil
}

// NextPrompt is when a reminder prompts next after the prompt that was due at due is sent at now: the schedule's
// first occurrence after now. After downtime, the occurrences missed meanwhile are skipped (one late prompt is sent
// for them, not one each); interval schedules keep their rhythm (every 6 hours from the first prompt).
func NextPrompt(s care.Schedule, due, now time.Time) time.Time {
	next := s.Next(due)
	for i := 0; !next.IsZero() && !next.After(now); i++ {
		if i == 1000 { // long downtime: jump instead of stepping
			return s.Next(now)
		}
		next = s.Next(next)
	}
	return next
}

// promptDueReminders sends the prompts that are due.
func (b *Bot) promptDueReminders(ctx context.Context, now time.Time) (int, error) {
	due, err := b.Store.Reminders.Due(ctx, now, schedulerBatch)
	if err != nil {
		return 0, err
	}
	for _, r := range due {
		if err = b.promptReminder(ctx, r, now); err != nil {
			return 0, err
		}
	}
	return len(due), nil
}

// promptReminder queues one prompt in the patient room, records it and moves the reminder to its next occurrence,
// in one transaction. The reminder of a closed case (or of one the bot was removed from) is stopped instead.
func (b *Bot) promptReminder(ctx context.Context, r *store.Reminder, now time.Time) error {
	log := zerolog.Ctx(ctx).With().Int64("case_id", r.CaseID).Int64("reminder_id", r.ID).Logger()
	schedule, err := care.ParseSchedule(r.Schedule, b.Config.Location())
	if err != nil {
		return fmt.Errorf("reminder %d has an unreadable schedule: %w", r.ID, err)
	}
	next := NextPrompt(schedule, r.NextAt, now)
	var wake id.RoomID
	var outcome string
	err = b.Store.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
		wake, outcome = "", ""
		c, err := b.Store.Cases.ByID(ctx, r.CaseID)
		if err != nil {
			return err
		}
		if c == nil || !c.Open() || !c.BotRemovedAt.IsZero() || c.PatientRoomID == "" {
			if stopped, err := b.Store.Reminders.Stop(ctx, r.ID, "", now); err != nil || !stopped {
				return err
			}
			outcome = "stopped:case-closed"
			return b.auditScheduled(ctx, r.CaseID, "", "reminder:stop", outcome, fmt.Sprintf("reminder %d", r.Number))
		}
		if advanced, err := b.Store.Reminders.Advance(ctx, r.ID, r.NextAt, next); err != nil || !advanced {
			return err
		}
		latest, err := b.Store.Reminders.LatestCheckInID(ctx, c.ID)
		if err != nil {
			return err
		}
		prompt := &store.ReminderPrompt{ReminderID: r.ID, CaseID: c.ID, DueAt: r.NextAt, SentAt: now,
			AfterCheckInID: latest, CheckAt: now.Add(b.Config.Reminders.Grace.Duration)}
		if err = b.Store.Reminders.AddPrompt(ctx, prompt); err != nil {
			return err
		}
		patients, err := b.Store.Cases.Patients(ctx, c.ID)
		if err != nil {
			return err
		}
		late := now.Sub(r.NextAt) > latePrompt
		content := promptContent(r.NextAt.In(scheduleZone(schedule, b.Config.Location())), late, patients)
		if _, err = b.Store.Outgoing.Add(ctx, c.PatientRoomID, event.EventMessage, content, ""); err != nil {
			return err
		}
		outcome = "sent"
		b.Metrics.RemindersSent.Inc()
		if late {
			outcome = "sent-late"
		}
		wake = c.PatientRoomID
		return b.auditScheduled(ctx, c.ID, c.PatientRoomID, "reminder:prompt", outcome, fmt.Sprintf("reminder %d", r.Number))
	})
	if err != nil {
		return fmt.Errorf("failed to prompt for reminder %d: %w", r.ID, err)
	}
	if outcome != "" {
		log.Info().Str("outcome", outcome).Time("next_at", next).Msg("Reminder due")
	}
	if wake != "" {
		b.proc.wake(wake)
	}
	return nil
}

// scheduleZone is the zone in which a schedule's times are shown: its own, or the configured one for intervals.
func scheduleZone(s care.Schedule, fallback *time.Location) *time.Location {
	if loc := s.Location(); loc != nil {
		return loc
	}
	return fallback
}

// promptContent asks the patients of a patient room to check in.
func promptContent(due time.Time, late bool, patients []*store.CasePatient) *event.MessageEventContent {
	text := "⏰ **Time for your check-in.** Send `/checkin` with your values and, after them, how you feel, " +
		"e.g. `/checkin bp=120/80 hr=72 temp=36.8 feeling fine`."
	if late {
		text += fmt.Sprintf("\n\nThis reminder was due at %s; I could not send it in time.", formatTime(due))
	}
	content := safetext.Render(text)
	// m.text, not m.notice: the patient should be notified, and clients' default push rules silence notices.
	content.MsgType = event.MsgText
	content.Mentions = &event.Mentions{}
	for _, p := range patients {
		if p.LeftAt.IsZero() {
			content.Mentions.Add(p.UserID)
		}
	}
	return &content
}

// checkDuePrompts reports the prompts whose grace period ended without a check-in.
func (b *Bot) checkDuePrompts(ctx context.Context, now time.Time) (int, error) {
	due, err := b.Store.Reminders.PromptsToCheck(ctx, now, schedulerBatch)
	if err != nil {
		return 0, err
	}
	for _, p := range due {
		if err = b.checkPrompt(ctx, p, now); err != nil {
			return 0, err
		}
	}
	return len(due), nil
}

// checkPrompt records whether a prompt was answered and, when it was not, tells the case room, in one transaction.
func (b *Bot) checkPrompt(ctx context.Context, p *store.ReminderPrompt, now time.Time) error {
	var wake id.RoomID
	err := b.Store.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
		wake = ""
		c, err := b.Store.Cases.ByID(ctx, p.CaseID)
		if err != nil {
			return err
		}
		if c == nil || !c.Open() || !c.BotRemovedAt.IsZero() {
			_, err = b.Store.Reminders.FinishPrompt(ctx, p.ID, store.PromptCancelled, now)
			return err
		}
		answered, err := b.Store.Reminders.Answered(ctx, p)
		if err != nil {
			return err
		}
		outcome := store.PromptMissed
		if answered {
			outcome = store.PromptAnswered
		}
		if finished, err := b.Store.Reminders.FinishPrompt(ctx, p.ID, outcome, now); err != nil || !finished || answered {
			return err
		}
		r, err := b.Store.Reminders.ByID(ctx, p.ReminderID)
		if err != nil || r == nil {
			return err
		}
		patients, err := b.Store.Cases.Patients(ctx, c.ID)
		if err != nil {
			return err
		}
		zone := b.Config.Location()
		if s, err := care.ParseSchedule(r.Schedule, zone); err == nil {
			zone = scheduleZone(s, zone)
		}
		content := missedContent(r, p, patients, zone)
		if _, err = b.Store.Outgoing.Add(ctx, c.CaseRoomID, event.EventMessage, content, ""); err != nil {
			return err
		}
		wake = c.CaseRoomID
		return b.auditScheduled(ctx, c.ID, c.CaseRoomID, "reminder:missed", "reported", fmt.Sprintf("reminder %d", r.Number))
	})
	if err != nil {
		return fmt.Errorf("failed to check prompt %d: %w", p.ID, err)
	}
	if wake != "" {
		zerolog.Ctx(ctx).Info().Int64("case_id", p.CaseID).Int64("prompt_id", p.ID).Msg("Reported missed check-in")
		b.proc.wake(wake)
	}
	return nil
}

// missedContent tells the care team that a prompt went unanswered.
func missedContent(r *store.Reminder, p *store.ReminderPrompt, patients []*store.CasePatient, zone *time.Location) *event.MessageEventContent {
	var who []string
	for _, pat := range patients {
		if pat.LeftAt.IsZero() {
			who = append(who, format.SafeMarkdownCode(pat.UserID.String()))
		}
	}
	from := "the patient"
	if len(who) > 0 {
		from = strings.Join(who, ", ")
	}
	text := fmt.Sprintf("⏰ **Missed check-in:** no check-in from %s within %s of the prompt of reminder #%d (%s) at %s.",
		from, FormatDuration(p.CheckAt.Sub(p.SentAt)), r.Number, format.SafeMarkdownCode(r.Schedule), formatTime(p.SentAt.In(zone)))
	content := safetext.Render(text)
	content.MsgType = event.MsgNotice
	content.Mentions = &event.Mentions{}
	return &content
}

// escalateDueAlerts escalates the alerts nobody acknowledged in time.
func (b *Bot) escalateDueAlerts(ctx context.Context, now time.Time) (int, error) {
	due, err := b.Store.Alerts.DueEscalations(ctx, now, schedulerBatch)
	if err != nil {
		return 0, err
	}
	for _, a := range due {
		if err = b.escalateAlert(ctx, a, now); err != nil {
			return 0, err
		}
	}
	return len(due), nil
}

// escalateAlert posts an alert once more in the case room, mentioning everyone, and marks it escalated, in one
// transaction. An alert of a closed case is marked without a message.
func (b *Bot) escalateAlert(ctx context.Context, a *store.Alert, now time.Time) error {
	var wake id.RoomID
	err := b.Store.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
		wake = ""
		if escalated, err := b.Store.Alerts.MarkEscalated(ctx, a.ID, now); err != nil || !escalated {
			return err
		}
		c, err := b.Store.Cases.ByID(ctx, a.CaseID)
		if err != nil || c == nil || !c.Open() || !c.BotRemovedAt.IsZero() {
			return err
		}
		team, err := b.Store.Cases.Team(ctx, c.ID)
		if err != nil {
			return err
		}
		members := make([]id.UserID, len(team))
		for i, m := range team {
			members[i] = m.UserID
		}
		content := EscalationContent(a, members, now.Sub(a.RaisedAt))
		seq, err := b.Store.Outgoing.Add(ctx, c.CaseRoomID, event.EventMessage, content, "")
		if err != nil {
			return err
		}
		if err = b.Store.Alerts.SetEscalationMessage(ctx, a.ID, seq); err != nil {
			return err
		}
		wake = c.CaseRoomID
		return b.auditScheduled(ctx, c.ID, c.CaseRoomID, "alert:escalate", "sent", fmt.Sprintf("alert %d", a.Number))
	})
	if err != nil {
		return fmt.Errorf("failed to escalate alert %d: %w", a.ID, err)
	}
	if wake != "" {
		zerolog.Ctx(ctx).Info().Int64("case_id", a.CaseID).Int64("alert_id", a.ID).Msg("Escalated unacknowledged alert")
		b.proc.wake(wake)
	}
	return nil
}

// AlertContent is the alert the care team gets for a check-in that crossed thresholds: a notice that mentions
// every member of the team.
func AlertContent(a *store.Alert, team []id.UserID, when string) *event.MessageEventContent {
	var sb strings.Builder
	fmt.Fprintf(&sb, "🚨 **Alert #%d:** check-in from %s at %s crossed alert thresholds:\n\n", a.Number,
		format.SafeMarkdownCode(a.PatientID.String()), when)
	writeCrossings(&sb, a.Crossings)
	fmt.Fprintf(&sb, "\nCare team: %s\n\nAcknowledge with `/ack %d` or react to this message; otherwise it is escalated "+
		"to everyone in this room.", mentionList(team), a.Number)
	return mentionNotice(sb.String(), team, false)
}

// EscalationContent is the one escalation of an alert nobody acknowledged: a notice that mentions the whole room and
// the care team.
func EscalationContent(a *store.Alert, team []id.UserID, waited time.Duration) *event.MessageEventContent {
	var sb strings.Builder
	fmt.Fprintf(&sb, "🚨 @room **Alert #%d is not acknowledged** after %s. Check-in from %s:\n\n", a.Number,
		FormatDuration(waited), format.SafeMarkdownCode(a.PatientID.String()))
	writeCrossings(&sb, a.Crossings)
	fmt.Fprintf(&sb, "\nCare team: %s\n\nAcknowledge with `/ack %d` or react to this message.", mentionList(team), a.Number)
	return mentionNotice(sb.String(), team, true)
}

func writeCrossings(sb *strings.Builder, crossings string) {
	for _, line := range strings.Split(crossings, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			fmt.Fprintf(sb, "* %s\n", safetext.Markdown(line))
		}
	}
}

func mentionList(users []id.UserID) string {
	pills := make([]string, len(users))
	for i, u := range users {
		pills[i] = format.MarkdownMention(u)
	}
	return strings.Join(pills, ", ")
}

// mentionNotice is an alert for the care team. It is sent as m.text, not m.notice: the mentioned people must be
// notified, and clients' default push rules (.m.rule.suppress_notices) silence notices whatever they mention.
func mentionNotice(markdown string, users []id.UserID, room bool) *event.MessageEventContent {
	content := safetext.Render(markdown)
	content.MsgType = event.MsgText
	content.Mentions = &event.Mentions{Room: room}
	for _, u := range users {
		content.Mentions.Add(u)
	}
	return &content
}

// auditScheduled records what the scheduler did, as the bot, in the item's transaction.
func (b *Bot) auditScheduled(ctx context.Context, caseID int64, roomID id.RoomID, action, outcome, detail string) error {
	return b.Store.Audit.Add(ctx, &store.AuditEntry{At: time.Now(), Actor: b.BotID(), Action: action, Outcome: outcome,
		CaseID: caseID, RoomID: roomID, Detail: detail})
}

// formatTime shows a time to users, to the minute, in its location.
func formatTime(t time.Time) string {
	return t.Format("2006-01-02 15:04 MST")
}

// FormatDuration shows a duration the way people write it: "2h", "15m", "1h30m", "45s".
func FormatDuration(d time.Duration) string {
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
