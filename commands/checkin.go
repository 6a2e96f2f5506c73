package commands

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/store"
)

var checkinValuesParam = Param{Name: "values", Type: Rest, Placeholder: "values... [note]",
	Description: "e.g. bp=142/91 hr=88 temp=38.4 spo2=95 rr=18 weight=71.2kg glucose=6.1mmol/L pain=4, then any free text"}

var checkinCommands = []*Command{
	{
		Name:        "checkin",
		Aliases:     []string{"check-in"},
		Category:    "Check-ins",
		Description: "Tell your care team how you are: vitals and, after them, anything in your own words.",
		Params:      []Param{checkinValuesParam},
		Example:     "bp=142/91 hr=88 temp=38.4 pain=4 dizzy since this morning",
		Access:      OwnPatientRoom,
		PHI:         true,
		Run:         runCheckIn,
		Subcommands: []*Command{
			{
				Name:        "for",
				Description: "Record a check-in on a patient's behalf (the record says you recorded it).",
				Params:      []Param{{Name: "patient", Type: User, Placeholder: "@patient:server"}, checkinValuesParam},
				Example:     "@jo.patient:clinic.example bp=128/82 hr=70 reported by phone",
				Access:      CareTeamAnyRoom,
				PHI:         true,
				Run:         runCheckInFor,
			},
			cmdCheckInStart,
			cmdCheckInCancel,
		},
	},
	{
		Name:        "checkins",
		Category:    "Check-ins",
		Description: "Show recent check-ins with the change from the previous value and flags (default: the last 7 days).",
		Params:      []Param{{Name: "range", Type: Rest, Optional: true, Placeholder: "n | since <duration>", Description: "a number of check-ins, or e.g. since 3d, since 12h, since 2w"}},
		Example:     "since 3d",
		Access:      CaseMember,
		PHI:         true,
		Run:         runCheckIns,
	},
}

// ranges are the plausibility ranges check-ins are validated against.
func ranges(b *bot.Bot) care.Ranges {
	return b.Config.CheckInRanges()
}

// thresholds are the alert thresholds a case's check-ins are compared against.
func thresholds(ctx context.Context, b *bot.Bot, caseID int64) ([]care.Threshold, error) {
	own, err := b.Store.Alerts.Thresholds(ctx, caseID)
	if err != nil {
		return nil, err
	}
	return effectiveThresholds(ctx, b.Config.AlertThresholds(), own), nil
}

func runCheckIn(ctx context.Context, call *Call) error {
	if !requireOpen(call) {
		return nil
	}
	return recordCheckIn(ctx, call, call.Sender, store.SourcePatient, call.Str("values"))
}

func runCheckInFor(ctx context.Context, call *Call) error {
	if !requireOpen(call) {
		return nil
	}
	patient := call.UserArg("patient")
	isPatient, err := call.Bot.Store.Cases.IsPatientOf(ctx, call.Room.Case.ID, patient)
	if err != nil {
		return err
	}
	if !isPatient {
		call.Fail("refused:not-patient", "⛔ %s is not a patient of case #%d; nothing was stored.", format.SafeMarkdownCode(patient.String()), call.Room.Case.ID)
		return nil
	}
	return recordCheckIn(ctx, call, patient, store.SourceClinician, call.Str("values"))
}

// checkInErrors answers a check-in that did not validate: every problem, and that nothing was stored.
func checkInErrors(call *Call, err error) {
	var sb strings.Builder
	sb.WriteString("⛔ Nothing was stored:\n\n")
	fieldErrs := care.FieldErrors(err)
	for _, fe := range fieldErrs {
		fmt.Fprintf(&sb, "* %s\n", format.EscapeMarkdown(fe.Error()))
	}
	if len(fieldErrs) == 0 {
		fmt.Fprintf(&sb, "* %s\n", format.EscapeMarkdown(err.Error()))
	}
	sb.WriteString("\nPlease send the check-in again with the values corrected, e.g. `/checkin bp=120/80 hr=72 feeling better`.")
	call.Fail("invalid", "%s", sb.String())
}

// recordCheckIn stores a check-in and answers with what was recorded. The answer is the confirmation (there is no
// ✅ reaction besides it): a homeserver handles a room's events one at a time, so every extra event in the patient
// room delays the next answer there. The 📋 reaction follows once the EHR has the check-in.
func recordCheckIn(ctx context.Context, call *Call, patient id.UserID, source, input string) error {
	parsed, err := care.ParseCheckIn(input, ranges(call.Bot))
	if err != nil {
		checkInErrors(call, err)
		return nil
	}
	c := call.Room.Case
	record := &store.CheckIn{
		CaseID: c.ID, EventID: call.Event.ID, RoomID: call.Event.RoomID, PatientID: patient, RecordedBy: call.Sender,
		Source: source, EffectiveAt: time.UnixMilli(call.Event.Timestamp).UTC(), Values: parsed.Values, Note: parsed.Note,
	}
	limits, err := thresholds(ctx, call.Bot, c.ID)
	if err != nil {
		return err
	}
	call.Write(func(ctx context.Context) error {
		if err := saveCheckIn(ctx, call, c, record, limits, "🩺 Check-in"); err != nil {
			return err
		}
		call.Outcome = "ok"
		who, filing := "your check-in", ""
		if source == store.SourceClinician {
			who, filing = "a check-in for "+format.SafeMarkdownCode(patient.String()), notFiledNote(c)
		}
		call.Reply(fmt.Sprintf("Recorded %s at %s:\n\n%s\n\nIf something is wrong, edit your message: I keep the original and record the correction.%s",
			who, call.When(record.EffectiveAt), restate(record), filing))
		return nil
	})
	return nil
}

// saveCheckIn stores a validated check-in inside the turn's transaction with what follows from it: the EHR outbox
// entry, the case-room summary (with the changes from the previous readings), an alert where a value crosses a
// threshold, and the audit entry. Callers confirm to the person who checked in.
func saveCheckIn(ctx context.Context, call *Call, c *store.Case, record *store.CheckIn, limits []care.Threshold, title string) error {
	previous, err := previousReadings(ctx, call.Bot.Store, c.ID, record)
	if err != nil {
		return err
	}
	if err = call.Bot.Store.CheckIns.Create(ctx, record); err != nil {
		return err
	}
	if err = queueForEHR(ctx, call.Turn, record); err != nil {
		return err
	}
	call.Send(c.CaseRoomID, event.EventMessage, notice(caseRoomSummary(call, record, previous, limits, title)))
	if err = raiseAlert(ctx, call, c, record, limits); err != nil {
		return err
	}
	return call.Bot.Store.Audit.Add(ctx, &store.AuditEntry{Actor: call.Sender, Action: "write:checkin", Outcome: "ok",
		CaseID: c.ID, RoomID: call.Event.RoomID, EventID: call.Event.ID, Detail: fmt.Sprintf("checkin %d", record.ID)})
}

// restate lists what was recorded, in the patient's units.
func restate(c *store.CheckIn) string {
	var sb strings.Builder
	for _, v := range c.Values {
		fmt.Fprintf(&sb, "* %s\n", v.Format())
	}
	if c.Note != "" {
		fmt.Fprintf(&sb, "* Note: %s\n", format.EscapeMarkdown(c.Note))
	}
	return sb.String()
}

// previousReadings returns the patient's latest check-ins, newest first, up to the one that holds the previous
// reading of each kind the new check-in has (at most 20 check-ins back).
func previousReadings(ctx context.Context, st *store.Store, caseID int64, record *store.CheckIn) ([]*store.CheckIn, error) {
	missing := make(map[care.Kind]bool, len(record.Values))
	for _, v := range record.Values {
		missing[v.Kind] = true
	}
	var previous []*store.CheckIn
	err := st.CheckIns.Iter(ctx, store.CheckInFilter{CaseID: caseID, PatientID: record.PatientID, Limit: 20}).
		Iter(func(p *store.CheckIn) (bool, error) {
			previous = append(previous, p)
			for _, v := range p.Values {
				delete(missing, v.Kind)
			}
			return len(missing) > 0, nil
		})
	return previous, err
}

// caseRoomSummary is the notice the care team sees for a check-in: values with the change from the previous
// reading of the same kind, and flags where a value crosses an alert threshold.
func caseRoomSummary(call *Call, c *store.CheckIn, previous []*store.CheckIn, limits []care.Threshold, title string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "**%s** from %s at %s", title, format.SafeMarkdownCode(c.PatientID.String()), call.When(c.EffectiveAt))
	if c.RecordedBy != c.PatientID {
		fmt.Fprintf(&sb, " (recorded by %s)", format.SafeMarkdownCode(c.RecordedBy.String()))
	}
	sb.WriteString("\n\n")
	for _, v := range c.Values {
		fmt.Fprintf(&sb, "* %s%s%s\n", v.Format(), change(v, previous), flags(v, limits))
	}
	if c.Note != "" {
		fmt.Fprintf(&sb, "* Note: %s\n", format.EscapeMarkdown(c.Note))
	}
	return sb.String()
}

// change describes the difference to the latest earlier reading of the same kind, in this reading's unit.
func change(v care.Value, previous []*store.CheckIn) string {
	for _, p := range previous {
		for _, pv := range p.Values {
			if pv.Kind != v.Kind {
				continue
			}
			if v.Kind == care.BloodPressure {
				return fmt.Sprintf(" (was %s/%s)", trimFloat(pv.Systolic.Value), trimFloat(pv.Diastolic.Value))
			}
			old, err := pv.In(v.Quantity.Unit)
			if err != nil {
				return ""
			}
			delta := v.Quantity.Value - old
			switch {
			case delta > 0.05:
				return fmt.Sprintf(" (↑ %s)", trimFloat(delta))
			case delta < -0.05:
				return fmt.Sprintf(" (↓ %s)", trimFloat(-delta))
			default:
				return " (=)"
			}
		}
	}
	return ""
}

// flags marks a reading that crosses alert thresholds.
func flags(v care.Value, limits []care.Threshold) string {
	var crossed []string
	for _, th := range limits {
		if th.Crossed(v) {
			crossed = append(crossed, th.String())
		}
	}
	if len(crossed) == 0 {
		return ""
	}
	return " ⚠️ " + format.SafeMarkdownCode(strings.Join(crossed, ", "))
}

func trimFloat(x float64) string {
	return strconv.FormatFloat(math.Round(x*10)/10, 'f', -1, 64)
}

var sinceRe = regexp.MustCompile(`^since\s+(\d+)\s*([hdw])$`)

func runCheckIns(ctx context.Context, call *Call) error {
	c := call.Room.Case
	filter := store.CheckInFilter{CaseID: c.ID, Since: time.Now().Add(-7 * 24 * time.Hour)}
	span := "in the last 7 days"
	arg := strings.ToLower(strings.TrimSpace(call.Str("range")))
	if n, err := strconv.Atoi(arg); err == nil {
		if n < 1 || n > 100 {
			call.Usage("The number of check-ins must be between 1 and 100, got %d.", n)
			return nil
		}
		filter.Since, filter.Limit, span = time.Time{}, n, "yet"
	} else if m := sinceRe.FindStringSubmatch(arg); m != nil {
		n, _ := strconv.Atoi(m[1])
		unit := map[string]time.Duration{"h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour}[m[2]]
		if n < 1 || time.Duration(n)*unit > 366*24*time.Hour {
			call.Usage("The period must be between 1 hour and a year, got %s.", format.SafeMarkdownCode(arg))
			return nil
		}
		filter.Since = time.Now().Add(-time.Duration(n) * unit)
		span = "since " + call.When(filter.Since)
	} else if arg != "" {
		call.Usage("Give a number of check-ins (e.g. `5`) or a period (e.g. `since 3d`, `since 12h`, `since 2w`), not %s.", format.SafeMarkdownCode(arg))
		return nil
	}
	if call.Room.Kind == RoomPatient && call.Room.IsPatient {
		filter.PatientID = call.Sender // a patient only ever sees their own
	}
	list, err := call.Bot.Store.CheckIns.List(ctx, filter)
	if err != nil {
		return err
	}
	call.Audit("read:checkins", "ok", c.ID, fmt.Sprintf("%d check-ins", len(list)))
	if len(list) == 0 {
		call.Reply(fmt.Sprintf("No check-ins %s.", span))
		return nil
	}
	limits, err := thresholds(ctx, call.Bot, c.ID)
	if err != nil {
		return err
	}
	call.ReplyContent(checkInTable(call, list, limits))
	return nil
}

// checkInTable renders check-ins (newest first) as an HTML table with a plain-text body.
func checkInTable(call *Call, list []*store.CheckIn, limits []care.Threshold) *event.MessageEventContent {
	var kinds []care.Kind
	for _, k := range care.Kinds() {
		for _, c := range list {
			if hasKind(c, k) {
				kinds = append(kinds, k)
				break
			}
		}
	}
	var html, plain strings.Builder
	fmt.Fprintf(&html, "<p><strong>Check-ins</strong> (%d, newest first)</p><table><thead><tr><th>When</th>", len(list))
	fmt.Fprintf(&plain, "Check-ins (%d, newest first)\n", len(list))
	for _, k := range kinds {
		fmt.Fprintf(&html, "<th>%s</th>", k.Label())
	}
	html.WriteString("<th>Note</th></tr></thead><tbody>")
	for i, c := range list {
		older := list[i+1:]
		fmt.Fprintf(&html, "<tr><td>%s%s</td>", call.When(c.EffectiveAt), escapeHTML(statusMark(c)))
		fmt.Fprintf(&plain, "\n%s%s:", call.When(c.EffectiveAt), statusMark(c))
		for _, k := range kinds {
			cell := ""
			for _, v := range c.Values {
				if v.Kind == k {
					cell = strings.TrimPrefix(v.Format(), k.Label()+" ") + change(v, older) + flags(v, limits)
					fmt.Fprintf(&plain, " %s%s%s;", v.Format(), change(v, older), flags(v, limits))
				}
			}
			fmt.Fprintf(&html, "<td>%s</td>", format.RenderMarkdown(cell, true, false).FormattedBody)
		}
		fmt.Fprintf(&html, "<td>%s</td></tr>", escapeHTML(c.Note))
		if c.Note != "" {
			fmt.Fprintf(&plain, " note: %s", c.Note)
		}
	}
	html.WriteString("</tbody></table>")
	return &event.MessageEventContent{MsgType: event.MsgNotice, Body: plain.String(), Format: event.FormatHTML, FormattedBody: html.String()}
}

func statusMark(c *store.CheckIn) string {
	switch {
	case c.Status == store.StatusAmended:
		return " (amended)"
	case c.RecordedBy != c.PatientID:
		return " (recorded by " + c.RecordedBy.String() + ")"
	}
	return ""
}

func hasKind(c *store.CheckIn, k care.Kind) bool {
	for _, v := range c.Values {
		if v.Kind == k {
			return true
		}
	}
	return false
}

func escapeHTML(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#39;").Replace(s)
}

// handleCheckInEdit records an edit of a check-in message as an amendment: a new version, the original kept.
func (p *Processor) handleCheckInEdit(ctx context.Context, turn *bot.Turn, original id.EventID, newBody string) error {
	b := turn.Bot
	record, err := b.Store.CheckIns.ByEvent(ctx, original)
	if err != nil || record == nil {
		return err
	}
	if turn.Event.Sender != record.RecordedBy {
		turn.Outcome = "ignored:foreign-edit"
		return nil
	}
	if done, err := b.Store.CheckIns.HasVersionEvent(ctx, turn.Event.ID); err != nil || done {
		return err
	}
	if record.Status == store.StatusEnteredInError {
		turn.Outcome = "refused:entered-in-error"
		turn.Reply("⛔ That check-in was removed (entered in error), so the edit was not recorded. Send a new check-in instead.")
		return nil
	}
	name, rawArgs, ok := SplitCommand(newBody)
	cmd, consumed := p.lookup(name, strings.Fields(rawArgs))
	if !ok || cmd == nil || (cmd.FullName() != "checkin" && cmd.FullName() != "checkin for") {
		turn.Outcome = "refused:not-checkin"
		turn.Reply("⛔ The edited message is no longer a check-in, so nothing changed. To remove a check-in, delete the message.")
		return nil
	}
	if consumed > 0 { // checkin for @patient ...: the patient cannot change with an edit
		fields := strings.Fields(rawArgs)
		if len(fields) < 2 || id.UserID(fields[1]) != record.PatientID {
			turn.Outcome = "refused:patient-changed"
			turn.Reply("⛔ An edit cannot change whom a check-in is about; nothing changed.")
			return nil
		}
		_, rawArgs, _ = strings.Cut(rawArgs, fields[1])
	}
	parsed, err := care.ParseCheckIn(rawArgs, ranges(b))
	if err != nil {
		call := &Call{Turn: turn, Command: cmd, Sender: turn.Event.Sender}
		checkInErrors(call, err)
		return nil
	}
	c, err := b.Store.Cases.ByID(ctx, record.CaseID)
	if err != nil {
		return err
	}
	limits, err := thresholds(ctx, b, c.ID)
	if err != nil {
		return err
	}
	turn.Write(func(ctx context.Context) error {
		if err := b.Store.CheckIns.Amend(ctx, record, parsed.Values, parsed.Note, turn.Event.ID, turn.Event.Sender); err != nil {
			return err
		}
		if err := queueForEHR(ctx, turn, record); err != nil {
			return err
		}
		turn.Outcome = "amended"
		call := &Call{Turn: turn, Command: cmd, Sender: turn.Event.Sender}
		turn.Reply(fmt.Sprintf("Corrected the check-in from %s (version %d; the original is kept):\n\n%s",
			call.When(record.EffectiveAt), record.Version, restate(record)))
		turn.Send(c.CaseRoomID, event.EventMessage, notice(caseRoomSummary(call, record, nil, limits, "✏️ Corrected check-in")))
		return b.Store.Audit.Add(ctx, &store.AuditEntry{Actor: turn.Event.Sender, Action: "write:checkin-amend", Outcome: "ok",
			CaseID: c.ID, RoomID: turn.Event.RoomID, EventID: turn.Event.ID, Detail: fmt.Sprintf("checkin %d v%d", record.ID, record.Version)})
	})
	return nil
}

// HandleRedaction marks a check-in whose message was deleted as entered in error: it stays in the record.
func (p *Processor) HandleRedaction(ctx context.Context, turn *bot.Turn, redacted id.EventID) error {
	b := turn.Bot
	record, err := b.Store.CheckIns.ByEvent(ctx, redacted)
	if err != nil || record == nil || record.Status == store.StatusEnteredInError {
		return err
	}
	c, err := b.Store.Cases.ByID(ctx, record.CaseID)
	if err != nil {
		return err
	}
	turn.Write(func(ctx context.Context) error {
		if err := b.Store.CheckIns.MarkEnteredInError(ctx, record, turn.Event.ID, turn.Event.Sender); err != nil {
			return err
		}
		if err := queueForEHR(ctx, turn, record); err != nil {
			return err
		}
		turn.Outcome = "entered-in-error"
		call := &Call{Turn: turn, Sender: turn.Event.Sender}
		turn.Send(record.RoomID, event.EventMessage, notice(fmt.Sprintf("The check-in from %s was deleted, so I marked it "+
			"as entered in error. It stays in the record but no longer counts.", call.When(record.EffectiveAt))))
		turn.Send(c.CaseRoomID, event.EventMessage, notice(fmt.Sprintf("🗑️ The check-in of %s from %s was deleted by %s and is marked entered in error.",
			format.SafeMarkdownCode(record.PatientID.String()), call.When(record.EffectiveAt), format.SafeMarkdownCode(turn.Event.Sender.String()))))
		return b.Store.Audit.Add(ctx, &store.AuditEntry{Actor: turn.Event.Sender, Action: "write:checkin-entered-in-error", Outcome: "ok",
			CaseID: c.ID, RoomID: turn.Event.RoomID, EventID: turn.Event.ID, Detail: fmt.Sprintf("checkin %d", record.ID)})
	})
	return nil
}

// queueForEHR puts the check-in's current version into the EHR outbox, in the transaction that stored it. Records
// are queued even while no EHR is configured, so that nothing is missing from the chart once one is; records of a
// case without a FHIR Patient are not (see fileableCase).
func queueForEHR(ctx context.Context, turn *bot.Turn, record *store.CheckIn) error {
	if ok, err := fileableCaseID(ctx, turn.Bot, record.CaseID); err != nil || !ok {
		return err
	}
	err := turn.Bot.Store.EHR.Add(ctx, &store.OutboxItem{
		Kind: store.OutboxCheckIn, RecordID: record.ID, Version: record.Version, CaseID: record.CaseID,
		OrderKey: fmt.Sprintf("case:%d", record.CaseID), RoomID: record.RoomID, SourceEvent: record.EventID,
	})
	if err == nil && turn.Bot.KickEHR != nil {
		turn.AfterCommit(turn.Bot.KickEHR)
	}
	return err
}
