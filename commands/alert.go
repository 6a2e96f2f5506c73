package commands

import (
	"context"
	"fmt"
	"strings"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/internal/safetext"
	"github.com/caseroom/caseroom/store"
)

const remindersAlertsCategory = "Reminders and alerts"

var alertCommands = []*Command{
	{
		Name:        "alert",
		Category:    remindersAlertsCategory,
		Description: "Alert thresholds: a check-in that crosses one alerts the care team in the case room.",
		Access:      CareTeam,
		PHI:         true,
		Subcommands: []*Command{
			{
				Name: "set", Description: "Set an alert threshold for this case; it replaces the default for the same vital and direction.",
				Params: []Param{{Name: "threshold", Type: Rest, Placeholder: "threshold",
					Description: "a vital, a comparison and a number, e.g. spo2<88, hr>130, temp>=38C, bp.sys>=170"}},
				Example: "spo2<88",
				Access:  CareTeam, PHI: true, Run: runAlertSet,
			},
			{
				Name: "list", Description: "Show the alert thresholds of this case: the defaults and the case's own.",
				Access: CareTeam, PHI: true, Run: runAlertList,
			},
			{
				Name: "clear", Description: "Remove one of this case's own thresholds, or all of them, so that the defaults apply again.",
				Params: []Param{{Name: "threshold", Type: Rest, Optional: true, Placeholder: "threshold|all",
					Description: "a threshold as /alert list shows it, or all (the default)"}},
				Example: "spo2<88",
				Access:  CareTeam, PHI: true, Run: runAlertClear,
			},
		},
	},
	{
		Name:        "ack",
		Aliases:     []string{"acknowledge"},
		Category:    remindersAlertsCategory,
		Description: "Acknowledge the latest open alert of this case (or alert n), so that it is not escalated.",
		Params:      []Param{{Name: "n", Type: Integer, Optional: true, Placeholder: "number", Description: "the alert's number, as the alert shows it"}},
		Example:     "3",
		Access:      CareTeam,
		PHI:         true,
		Run:         runAck,
	},
}

// direction says whether a threshold watches for low or for high values.
func direction(t care.Threshold) string {
	if t.Op == care.Below || t.Op == care.AtMost {
		return store.DirectionLow
	}
	return store.DirectionHigh
}

// effectiveThresholds are the thresholds a case's check-ins are compared against: the case's own, and the defaults
// for every vital and direction the case has none of.
func effectiveThresholds(ctx context.Context, defaults []care.Threshold, own []*store.CaseThreshold) []care.Threshold {
	replaced := make(map[string]bool, len(own))
	var mine []care.Threshold
	for _, ct := range own {
		t, err := care.ParseThreshold(ct.Threshold)
		if err != nil {
			zerolog.Ctx(ctx).Warn().Int64("case_id", ct.CaseID).Str("kind", ct.Kind).Msg("Ignored unreadable stored alert threshold")
			continue
		}
		replaced[string(t.Kind)+"|"+direction(t)] = true
		mine = append(mine, t)
	}
	out := make([]care.Threshold, 0, len(defaults)+len(mine))
	for _, t := range defaults {
		if !replaced[string(t.Kind)+"|"+direction(t)] {
			out = append(out, t)
		}
	}
	return append(out, mine...)
}

// crossingLines describe what crossed which threshold, one line per value: "SpO2 88 % (threshold spo2<92)".
func crossingLines(values []care.Value, limits []care.Threshold) []string {
	var lines []string
	for _, v := range values {
		var crossed []string
		for _, t := range limits {
			if t.Crossed(v) {
				crossed = append(crossed, t.String())
			}
		}
		if len(crossed) > 0 {
			word := "threshold"
			if len(crossed) > 1 {
				word = "thresholds"
			}
			lines = append(lines, fmt.Sprintf("%s (%s %s)", v.Format(), word, strings.Join(crossed, ", ")))
		}
	}
	return lines
}

// raiseAlert posts an alert in the case room when a new check-in crosses thresholds, mentioning the care team, and
// stores it so that it escalates unless acknowledged. Call it in the check-in's transaction, after the check-in is
// stored.
func raiseAlert(ctx context.Context, call *Call, c *store.Case, record *store.CheckIn, limits []care.Threshold) error {
	lines := crossingLines(record.Values, limits)
	if len(lines) == 0 {
		return nil
	}
	b := call.Bot
	team, err := b.Store.Cases.Team(ctx, c.ID)
	if err != nil {
		return err
	}
	members := make([]id.UserID, len(team))
	for i, m := range team {
		members[i] = m.UserID
	}
	now := b.Now()
	alert := &store.Alert{CaseID: c.ID, CheckInID: record.ID, PatientID: record.PatientID, Crossings: strings.Join(lines, "\n"),
		RaisedAt: now, EscalateAt: now.Add(b.Config.Alerts.AckTimeout.Duration)}
	if err = b.Store.Alerts.Create(ctx, alert); err != nil {
		return err
	}
	call.SendTracked(c.CaseRoomID, event.EventMessage, bot.AlertContent(alert, members, call.When(record.EffectiveAt)),
		func(ctx context.Context, seq int64) error { return b.Store.Alerts.SetMessage(ctx, alert.ID, seq) })
	call.AfterCommit(b.WakeScheduler)
	return b.Store.Audit.Add(ctx, &store.AuditEntry{Actor: b.BotID(), Action: "alert:raise", Outcome: "ok", CaseID: c.ID,
		RoomID: c.CaseRoomID, EventID: call.Event.ID, Detail: fmt.Sprintf("alert %d checkin %d", alert.Number, record.ID)})
}

// thresholdErr explains a threshold that does not parse, naming the field, the value and what is allowed.
func thresholdErr(call *Call, err error) {
	var msgs []string
	for _, fe := range care.FieldErrors(err) {
		msgs = append(msgs, safetext.Markdown(fe.Error()))
	}
	if len(msgs) == 0 {
		msgs = append(msgs, safetext.Markdown(err.Error()))
	}
	call.Usage("%s. Write a vital, a comparison and a number, e.g. `spo2<88`, `hr>130`, `temp>=38C` or `bp.sys>=170`.",
		strings.Join(msgs, "; "))
}

func runAlertSet(ctx context.Context, call *Call) error {
	if !requireOpen(call) {
		return nil
	}
	t, err := care.ParseThreshold(call.Str("threshold"))
	if err != nil {
		thresholdErr(call, err)
		return nil
	}
	c := call.Room.Case
	var defaults []string
	for _, d := range call.Bot.Config.AlertThresholds() {
		if d.Kind == t.Kind && direction(d) == direction(t) {
			defaults = append(defaults, format.SafeMarkdownCode(d.String()))
		}
	}
	call.Write(func(ctx context.Context) error {
		replaced, err := call.Bot.Store.Alerts.SetThreshold(ctx, &store.CaseThreshold{CaseID: c.ID, Kind: string(t.Kind),
			Direction: direction(t), Threshold: t.String(), SetBy: call.Sender, SetEvent: call.Event.ID, SetAt: call.Bot.Now()})
		if err != nil {
			return err
		}
		var what string
		switch {
		case replaced == t.String():
			what = "it was already set; nothing changed"
		case replaced != "":
			what = "it replaces this case's " + format.SafeMarkdownCode(replaced)
		case len(defaults) > 0:
			what = "it replaces the default " + strings.Join(defaults, ", ") + " for this case"
		default:
			what = "in addition to the defaults"
		}
		call.Done(c.ID, "Alert threshold %s set for case #%d (%s). A check-in that crosses it alerts the care team here.",
			format.SafeMarkdownCode(t.String()), c.ID, what)
		return nil
	})
	return nil
}

func runAlertList(ctx context.Context, call *Call) error {
	c := call.Room.Case
	own, err := call.Bot.Store.Alerts.Thresholds(ctx, c.ID)
	if err != nil {
		return err
	}
	defaults := call.Bot.Config.AlertThresholds()
	effective := effectiveThresholds(ctx, defaults, own)
	active := make(map[string]bool, len(effective))
	for _, t := range effective {
		active[t.String()] = true
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "**Alert thresholds of case #%d**\n\n", c.ID)
	if len(own) == 0 {
		sb.WriteString("This case has no thresholds of its own (set one with `/alert set spo2<88`).\n\n")
	} else {
		sb.WriteString("This case's own:\n\n")
		for _, t := range own {
			fmt.Fprintf(&sb, "* %s (set by %s on %s)\n", format.SafeMarkdownCode(t.Threshold), format.SafeMarkdownCode(t.SetBy.String()), call.When(t.SetAt))
		}
		sb.WriteString("\n")
	}
	sb.WriteString("Defaults (from the configuration):\n\n")
	if len(defaults) == 0 {
		sb.WriteString("* none\n")
	}
	for _, t := range defaults {
		note := ""
		if !active[t.String()] {
			note = " (replaced for this case)"
		}
		fmt.Fprintf(&sb, "* %s%s\n", format.SafeMarkdownCode(t.String()), note)
	}
	fmt.Fprintf(&sb, "\nAn alert is escalated to everyone in this room if nobody acknowledges it within %s.",
		bot.FormatDuration(call.Bot.Config.Alerts.AckTimeout.Duration))
	call.Audit("read:alert-thresholds", "ok", c.ID, "")
	call.Reply(sb.String())
	return nil
}

func runAlertClear(ctx context.Context, call *Call) error {
	if !requireOpen(call) {
		return nil
	}
	c := call.Room.Case
	arg := strings.TrimSpace(call.Str("threshold"))
	own, err := call.Bot.Store.Alerts.Thresholds(ctx, c.ID)
	if err != nil {
		return err
	}
	if len(own) == 0 {
		call.Outcome = "nothing"
		call.Reply(fmt.Sprintf("Case #%d has no thresholds of its own; nothing changed. The defaults apply (see `/alert list`).", c.ID))
		return nil
	}
	names := make([]string, len(own))
	for i, t := range own {
		names[i] = format.SafeMarkdownCode(t.Threshold)
	}
	if arg == "" || strings.EqualFold(arg, "all") {
		call.Write(func(ctx context.Context) error {
			if _, err := call.Bot.Store.Alerts.ClearThresholds(ctx, c.ID); err != nil {
				return err
			}
			call.Done(c.ID, "Cleared this case's thresholds %s; the defaults apply again.", strings.Join(names, ", "))
			return nil
		})
		return nil
	}
	t, err := care.ParseThreshold(arg)
	if err != nil {
		thresholdErr(call, err)
		return nil
	}
	call.Write(func(ctx context.Context) error {
		cleared, err := call.Bot.Store.Alerts.ClearThreshold(ctx, c.ID, t.String())
		if err != nil {
			return err
		}
		if !cleared {
			call.Fail("refused:unknown-threshold", "⛔ Case #%d has no threshold %s of its own; its own are %s. Nothing changed.",
				c.ID, format.SafeMarkdownCode(t.String()), strings.Join(names, ", "))
			return nil
		}
		call.Done(c.ID, "Cleared the threshold %s of case #%d; the default for it applies again (see `/alert list`).",
			format.SafeMarkdownCode(t.String()), c.ID)
		return nil
	})
	return nil
}

func runAck(ctx context.Context, call *Call) error {
	c := call.Room.Case
	b := call.Bot
	var alert *store.Alert
	var others []*store.Alert
	open, err := b.Store.Alerts.Open(ctx, c.ID)
	if err != nil {
		return err
	}
	if n, given := call.Int("n"); given {
		if alert, err = b.Store.Alerts.ByNumber(ctx, c.ID, int(n)); err != nil {
			return err
		}
		if alert == nil {
			call.Fail("refused:unknown-alert", "⛔ Case #%d has no alert #%d.", c.ID, n)
			return nil
		}
	} else if len(open) == 0 {
		call.Outcome = "nothing"
		call.Reply(fmt.Sprintf("Case #%d has no open alerts.", c.ID))
		return nil
	} else {
		alert = open[0]
	}
	for _, a := range open {
		if a.ID != alert.ID {
			others = append(others, a)
		}
	}
	call.Write(func(ctx context.Context) error {
		acked, err := b.Store.Alerts.Ack(ctx, alert.ID, call.Sender, call.Event.ID, b.Now())
		if err != nil {
			return err
		}
		if !acked {
			current, err := b.Store.Alerts.ByID(ctx, alert.ID)
			if err != nil || current == nil {
				return err
			}
			call.Outcome = "already"
			call.Reply(fmt.Sprintf("Alert #%d was already acknowledged by %s at %s.", alert.Number,
				format.SafeMarkdownCode(current.AckedBy.String()), call.When(current.AckedAt)))
			return nil
		}
		what := "it will not be escalated"
		if !alert.EscalatedAt.IsZero() {
			what = "it had already been escalated"
		}
		msg := fmt.Sprintf("Acknowledged alert #%d (%s); %s.", alert.Number, safetext.Markdown(strings.ReplaceAll(alert.Crossings, "\n", "; ")), what)
		if len(others) > 0 {
			nums := make([]string, len(others))
			for i, a := range others {
				nums[i] = fmt.Sprintf("#%d", a.Number)
			}
			msg += fmt.Sprintf(" Still open: %s.", strings.Join(nums, ", "))
		}
		call.Done(c.ID, "%s", msg)
		return nil
	})
	return nil
}

// HandleReaction acknowledges an alert when a member of the case's care team reacts to it (any reaction) or to its
// escalation.
func (p *Processor) HandleReaction(ctx context.Context, turn *bot.Turn) error {
	b, evt := turn.Bot, turn.Event
	if evt.Content.Parsed == nil {
		if err := evt.Content.ParseRaw(event.EventReaction); err != nil {
			return nil
		}
	}
	target := evt.Content.AsReaction().RelatesTo
	if target.Type != event.RelAnnotation || target.EventID == "" {
		return nil
	}
	c, err := b.Store.Cases.ByRoom(ctx, evt.RoomID)
	if err != nil || c == nil || c.CaseRoomID != evt.RoomID {
		return err
	}
	seq, err := b.Store.Outgoing.BySentEvent(ctx, target.EventID)
	if err != nil || seq == 0 {
		return err
	}
	alert, err := b.Store.Alerts.ByMessage(ctx, seq)
	if err != nil || alert == nil || alert.CaseID != c.ID {
		return err
	}
	// The gate (gate.go): an acknowledgement carries no patient data, so a reaction may come in clear text (as some
	// clients send them), but an encrypted one must come from a trusted device.
	if refused, err := gateTransport(ctx, turn, "alert:ack", c.ID, false); err != nil || refused {
		return err
	}
	if refused, err := gateServer(ctx, turn, "alert:ack", c.ID); err != nil || refused {
		return err
	}
	onTeam, err := onCareTeam(ctx, b, c.ID, evt.Sender)
	if err != nil {
		return err
	}
	if !onTeam {
		turn.Refuse("alert:ack", "refused:role", c.ID, "⛔ Only clinicians on this case's care team can acknowledge its alerts.")
		return nil
	}
	if !c.Open() {
		turn.Refuse("alert:ack", "refused:closed", c.ID, fmt.Sprintf("⛔ Case #%d is closed; its alerts can no longer change.", c.ID))
		return nil
	}
	if alert.Acked() {
		turn.Outcome = "ignored:already-acked"
		return nil
	}
	turn.Write(func(ctx context.Context) error {
		acked, err := b.Store.Alerts.Ack(ctx, alert.ID, evt.Sender, evt.ID, b.Now())
		if err != nil || !acked {
			turn.Outcome = "ignored:already-acked"
			return err
		}
		turn.Outcome = "ok"
		what := "it will not be escalated"
		if !alert.EscalatedAt.IsZero() {
			what = "it had already been escalated"
		}
		content := notice(fmt.Sprintf("✅ Alert #%d acknowledged by %s; %s.", alert.Number, format.SafeMarkdownCode(evt.Sender.String()), what))
		content.RelatesTo = (&event.RelatesTo{}).SetReplyTo(target.EventID)
		turn.Send(c.CaseRoomID, event.EventMessage, content)
		return b.Store.Audit.Add(ctx, &store.AuditEntry{Actor: evt.Sender, Action: "alert:ack", Outcome: "ok", CaseID: c.ID,
			RoomID: evt.RoomID, EventID: evt.ID, Detail: fmt.Sprintf("alert %d by reaction", alert.Number)})
	})
	return nil
}

var _ bot.ReactionHandler = (*Processor)(nil)
