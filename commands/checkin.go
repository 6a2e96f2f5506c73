package commands

import (
	"context"
	"database/sql"
	"errors"
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
	"github.com/caseroom/caseroom/internal/safetext"
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
		fmt.Fprintf(&sb, "* %s\n", safetext.Markdown(fe.Error()))
	}
	if len(fieldErrs) == 0 {
		fmt.Fprintf(&sb, "* %s\n", safetext.Markdown(err.Error()))
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
	// Recorded at the time the event claims, unless the sender's server dated it into the future or too far back.
	effective, claimed, received := call.EventTimes()
	record := &store.CheckIn{
		CaseID: c.ID, EventID: call.Event.ID, RoomID: call.Event.RoomID, PatientID: patient, RecordedBy: call.Sender,
		Source: source, EffectiveAt: effective, ClaimedAt: claimed, ReceivedAt: received, Values: parsed.Values, Note: parsed.Note,
	}
	limits, err := thresholds(ctx, call.Bot, c.ID)
	if err != nil {
		return err
	}
	early, err := earlyRedaction(ctx, call.Bot, call.Event, c.ID)
	if err != nil {
		return err
	}
	call.Write(func(ctx context.Context) error {
		if err := saveCheckIn(ctx, call, c, record, limits, "🩺 Check-in"); err != nil {
			return err
		}
		if early != nil { // deleted before the bot got to it: recorded, and at once entered in error
			return voidEarly(ctx, call, c, record, early)
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

// voidEarly marks a check-in whose message was deleted before the bot processed it as entered in error, in the
// transaction that recorded it, and says so in both rooms.
func voidEarly(ctx context.Context, call *Call, c *store.Case, record *store.CheckIn, early *store.EarlyRedaction) error {
	b := call.Bot
	if err := b.Store.CheckIns.MarkEnteredInError(ctx, record, early.EventID, early.Sender); err != nil {
		return err
	}
	if err := queueForEHR(ctx, call.Turn, record); err != nil {
		return err
	}
	call.Outcome = "entered-in-error"
	call.Reply(fmt.Sprintf("This check-in from %s was deleted before I got to it, so I recorded it as entered in error. "+
		"It stays in the record but no longer counts.", call.When(record.EffectiveAt)))
	call.Send(c.CaseRoomID, event.EventMessage, notice(fmt.Sprintf("🗑️ The check-in of %s from %s was deleted by %s and is marked entered in error.",
		format.SafeMarkdownCode(record.PatientID.String()), call.When(record.EffectiveAt), format.SafeMarkdownCode(early.Sender.String()))))
	return b.Store.Audit.Add(ctx, &store.AuditEntry{Actor: early.Sender, Action: "write:checkin-entered-in-error", Outcome: "ok",
		CaseID: c.ID, RoomID: record.RoomID, EventID: early.EventID, Detail: fmt.Sprintf("checkin %d (redaction arrived first)", record.ID)})
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
		fmt.Fprintf(&sb, "* Note: %s\n", safetext.Markdown(c.Note))
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
		fmt.Fprintf(&sb, "* Note: %s\n", safetext.Markdown(c.Note))
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

var pageRe = regexp.MustCompile(`^(.*?)\s*\bpage\s+(\d+)$`)

func runCheckIns(ctx context.Context, call *Call) error {
	c := call.Room.Case
	filter := store.CheckInFilter{CaseID: c.ID, Since: time.Now().Add(-7 * 24 * time.Hour)}
	span := "in the last 7 days"
	arg := strings.Join(strings.Fields(strings.ToLower(call.Str("range"))), " ")
	page := 1
	if m := pageRe.FindStringSubmatch(arg); m != nil {
		n, err := strconv.Atoi(m[2])
		if err != nil || n < 1 {
			call.Usage("The page must be a number from 1, got %s.", format.SafeMarkdownCode(m[2]))
			return nil
		}
		arg, page = m[1], n
	}
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
		call.Usage("Give a number of check-ins (e.g. `5`) or a period (e.g. `since 3d`, `since 12h`, `since 2w`), "+
			"optionally with a page (e.g. `since 52w page 2`), not %s.", format.SafeMarkdownCode(arg))
		return nil
	}
	if call.Room.Kind == RoomPatient && call.Room.IsPatient {
		filter.PatientID = call.Sender // a patient only ever sees their own
	}
	list, err := call.Bot.Store.CheckIns.List(ctx, filter)
	if err != nil {
		return err
	}
	if len(list) == 0 {
		call.Audit("read:checkins", "ok", c.ID, "0 check-ins")
		call.Reply(fmt.Sprintf("No check-ins %s.", span))
		return nil
	}
	limits, err := thresholds(ctx, call.Bot, c.ID)
	if err != nil {
		return err
	}
	pages := checkInPages(call, list, limits, bot.AnswerBytes)
	if page > len(pages) {
		call.Fail("refused:no-such-page", "⛔ There is no page %d: the answer has %d page(s). Ask for %s.", page, len(pages),
			format.SafeMarkdownCode(checkInsPageCommand(arg, len(pages))))
		return nil
	}
	call.Audit("read:checkins", "ok", c.ID, fmt.Sprintf("%d check-ins, page %d of %d", len(list), page, len(pages)))
	call.ReplyContent(checkInTable(call, list, pages[page-1], page, len(pages), arg, limits))
	return nil
}

// checkInsPageCommand is the command that shows page n of the same check-ins.
func checkInsPageCommand(arg string, n int) string {
	if arg == "" {
		return fmt.Sprintf("/checkins page %d", n)
	}
	return fmt.Sprintf("/checkins %s page %d", arg, n)
}

// checkInRow is one check-in rendered for the table: its HTML row and its plain-text line.
type checkInRow struct{ html, plain string }

// checkInKinds are the kinds of reading any of the check-ins has, in the usual order.
func checkInKinds(list []*store.CheckIn) []care.Kind {
	var kinds []care.Kind
	for _, k := range care.Kinds() {
		for _, c := range list {
			if hasKind(c, k) {
				kinds = append(kinds, k)
				break
			}
		}
	}
	return kinds
}

// checkInRows renders every check-in of list (newest first); changes are from the next older one in list.
func checkInRows(call *Call, list []*store.CheckIn, kinds []care.Kind, limits []care.Threshold) []checkInRow {
	rows := make([]checkInRow, len(list))
	for i, c := range list {
		older := list[i+1:]
		var html, plain strings.Builder
		fmt.Fprintf(&html, "<tr><td>%s%s</td>", call.When(c.EffectiveAt), safetext.HTML(statusMark(c)))
		fmt.Fprintf(&plain, "\n%s%s:", call.When(c.EffectiveAt), safetext.Plain(statusMark(c)))
		for _, k := range kinds {
			cell := ""
			for _, v := range c.Values {
				if v.Kind == k {
					cell = strings.TrimPrefix(v.Format(), k.Label()+" ") + change(v, older) + flags(v, limits)
					fmt.Fprintf(&plain, " %s%s%s;", v.Format(), change(v, older), flags(v, limits))
				}
			}
			fmt.Fprintf(&html, "<td>%s</td>", safetext.Render(cell).FormattedBody)
		}
		fmt.Fprintf(&html, "<td>%s</td></tr>", safetext.HTML(c.Note))
		if c.Note != "" {
			fmt.Fprintf(&plain, " note: %s", safetext.Plain(c.Note))
		}
		rows[i] = checkInRow{html: html.String(), plain: plain.String()}
	}
	return rows
}

// checkInPageOverhead is room for the heading, the table's head and the page line of an answer.
const checkInPageOverhead = 1024

// checkInPages splits the check-ins into pages whose answer stays under budget bytes (body and formatted_body
// together): each page is a range [from, to) of list. A check-in is never split; one alone on a page always fits
// (a note has at most care.MaxNoteLength characters).
func checkInPages(call *Call, list []*store.CheckIn, limits []care.Threshold, budget int) [][2]int {
	rows := checkInRows(call, list, checkInKinds(list), limits)
	var pages [][2]int
	from, size := 0, checkInPageOverhead
	for i, r := range rows {
		n := len(r.html) + len(r.plain)
		if i > from && size+n > budget {
			pages = append(pages, [2]int{from, i})
			from, size = i, checkInPageOverhead
		}
		size += n
	}
	return append(pages, [2]int{from, len(rows)})
}

// checkInTable renders one page of check-ins (newest first) as an HTML table with a plain-text body. User text
// (notes) is escaped with its line breaks kept; the body holds the same words as the table.
func checkInTable(call *Call, list []*store.CheckIn, rng [2]int, page, pages int, arg string, limits []care.Threshold) *event.MessageEventContent {
	shown := list[rng[0]:rng[1]]
	kinds := checkInKinds(shown)
	// Changes are computed against the whole list, so the first row of page 2 still shows its change.
	rows := checkInRows(call, list[rng[0]:], kinds, limits)[:len(shown)]
	var html, plain strings.Builder
	pageNote := ""
	if pages > 1 {
		pageNote = fmt.Sprintf("; page %d of %d", page, pages)
	}
	fmt.Fprintf(&html, "<p><strong>Check-ins</strong> (%d, newest first%s)</p><table><thead><tr><th>When</th>", len(list), pageNote)
	fmt.Fprintf(&plain, "Check-ins (%d, newest first%s)\n", len(list), pageNote)
	for _, k := range kinds {
		fmt.Fprintf(&html, "<th>%s</th>", k.Label())
	}
	html.WriteString("<th>Note</th></tr></thead><tbody>")
	for _, r := range rows {
		html.WriteString(r.html)
		plain.WriteString(r.plain)
	}
	html.WriteString("</tbody></table>")
	if page < pages {
		next := checkInsPageCommand(arg, page+1)
		fmt.Fprintf(&html, "<p>Page %d of %d; <code>%s</code> for more.</p>", page, pages, safetext.HTML(next))
		fmt.Fprintf(&plain, "\n\nPage %d of %d; `%s` for more.", page, pages, next)
	} else if pages > 1 {
		fmt.Fprintf(&html, "<p>Page %d of %d (the last).</p>", page, pages)
		fmt.Fprintf(&plain, "\n\nPage %d of %d (the last).", page, pages)
	}
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

// handleCheckInEdit records an edit of a check-in message as an amendment: a new version, the original kept.
func (p *Processor) handleCheckInEdit(ctx context.Context, turn *bot.Turn, original id.EventID, newBody string) error {
	b := turn.Bot
	record, err := b.Store.CheckIns.ByEvent(ctx, original)
	if err != nil || record == nil {
		return err
	}
	if done, err := b.Store.CheckIns.HasVersionEvent(ctx, turn.Event.ID); err != nil || done {
		return err
	}
	if refused, err := gateCheckInChange(ctx, turn, record, "write:checkin-amend", "correct"); err != nil || refused {
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

// gateCheckInChange does steps 1 to 4 of the gate (gate.go) for an edit or a deletion of a check-in: an edit must
// arrive encrypted from a trusted device; the sender's server must be allowed; only the check-in's author, still in
// the role they recorded it in, may correct it (a deletion may also come from a care-team member the room's power
// levels allow to redact); the change must come from the check-in's own room, and its case must be open. It reports
// whether the change was refused (answered in the room it came from and audited as action).
func gateCheckInChange(ctx context.Context, turn *bot.Turn, record *store.CheckIn, action, verb string) (bool, error) {
	b, evt := turn.Bot, turn.Event
	deletion := evt.Type == event.EventRedaction
	if !deletion {
		if refused, err := gateTransport(ctx, turn, action, record.CaseID, true); err != nil || refused {
			return refused, err
		}
	}
	if refused, err := gateServer(ctx, turn, action, record.CaseID); err != nil || refused {
		return refused, err
	}
	allowed := false
	if evt.Sender == record.RecordedBy {
		current, err := currentRole(ctx, b, record)
		if err != nil {
			return false, err
		}
		allowed = current
	} else if deletion && evt.RoomID == record.RoomID {
		onTeam, err := onCareTeam(ctx, b, record.CaseID, evt.Sender)
		if err != nil {
			return false, err
		}
		if onTeam {
			if allowed, err = b.CanRedact(ctx, evt.RoomID, evt.Sender); err != nil {
				return false, err
			}
		}
	}
	if !allowed {
		why := "Only the person who recorded a check-in can " + verb + " it, while they are still the case's patient or on its care team."
		if deletion {
			why = "Only the person who recorded a check-in, or a member of the care team allowed to delete messages in this room, can delete it."
		}
		turn.Refuse(action, "refused:role", record.CaseID, "⛔ "+why+" The check-in is unchanged.")
		return true, nil
	}
	c, err := b.Store.Cases.ByID(ctx, record.CaseID)
	if err != nil {
		return false, err
	}
	if !c.Open() {
		turn.Refuse(action, "refused:closed", record.CaseID, fmt.Sprintf("⛔ Case #%d is closed; its check-ins can no longer change.", c.ID))
		return true, nil
	}
	if evt.RoomID != record.RoomID {
		turn.Refuse(action, "refused:room", record.CaseID, "⛔ A check-in can be "+verb+"ed only in the room where it was recorded. The check-in is unchanged.")
		return true, nil
	}
	return false, nil
}

// HandleRedaction marks a check-in whose message was deleted as entered in error: it stays in the record.
func (p *Processor) HandleRedaction(ctx context.Context, turn *bot.Turn, redacted id.EventID) error {
	b := turn.Bot
	record, err := b.Store.CheckIns.ByEvent(ctx, redacted)
	if err != nil {
		return err
	}
	if record == nil {
		return rememberEarlyRedaction(ctx, turn, redacted)
	}
	if record.Status == store.StatusEnteredInError {
		return nil
	}
	if refused, err := gateCheckInChange(ctx, turn, record, "write:checkin-entered-in-error", "delete"); err != nil || refused {
		return err
	}
	c, err := b.Store.Cases.ByID(ctx, record.CaseID)
	if err != nil {
		return err
	}
	confirmation, err := b.Store.Outgoing.FirstSentFor(ctx, record.RoomID, record.EventID)
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
		voided := fmt.Sprintf("The check-in from %s was deleted, so I marked it "+
			"as entered in error. It stays in the record but no longer counts.", call.When(record.EffectiveAt))
		if confirmation != "" { // the confirmation that restated the values says so too
			edit := notice("🗑️ " + voided)
			edit.SetEdit(confirmation)
			turn.Send(record.RoomID, event.EventMessage, edit)
		}
		turn.Send(record.RoomID, event.EventMessage, notice(voided))
		turn.Send(c.CaseRoomID, event.EventMessage, notice(fmt.Sprintf("🗑️ The check-in of %s from %s was deleted by %s and is marked entered in error.",
			format.SafeMarkdownCode(record.PatientID.String()), call.When(record.EffectiveAt), format.SafeMarkdownCode(turn.Event.Sender.String()))))
		return b.Store.Audit.Add(ctx, &store.AuditEntry{Actor: turn.Event.Sender, Action: "write:checkin-entered-in-error", Outcome: "ok",
			CaseID: c.ID, RoomID: turn.Event.RoomID, EventID: turn.Event.ID, Detail: fmt.Sprintf("checkin %d", record.ID)})
	})
	return nil
}

// rememberEarlyRedaction keeps a redaction of an event the bot has not processed yet (a homeserver may deliver the
// redaction first), so that the event is taken as deleted when it arrives (see earlyRedaction).
func rememberEarlyRedaction(ctx context.Context, turn *bot.Turn, redacted id.EventID) error {
	outcome, err := turn.Bot.Store.Inbox.Outcome(ctx, redacted)
	if err == nil && outcome != "" {
		return nil // processed, and not a check-in
	} else if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	evt := turn.Event
	turn.Outcome = "remembered:early-redaction"
	turn.Write(func(ctx context.Context) error {
		return turn.Bot.Store.EarlyRedactions.Add(ctx, &store.EarlyRedaction{EventID: evt.ID, RoomID: evt.RoomID, Redacts: redacted,
			Sender: evt.Sender, ReceivedAt: time.Now().UTC()})
	})
	return nil
}

// earlyRedaction returns the remembered redaction of the turn's event that the gate lets delete it: a redaction in
// the event's room by its sender, or by a care-team member the room's power levels allow to redact; nil if none.
func earlyRedaction(ctx context.Context, b *bot.Bot, evt *event.Event, caseID int64) (*store.EarlyRedaction, error) {
	early, err := b.Store.EarlyRedactions.For(ctx, evt.RoomID, evt.ID)
	if err != nil {
		return nil, err
	}
	for _, r := range early {
		if r.Sender == evt.Sender {
			return r, nil
		}
		onTeam, err := onCareTeam(ctx, b, caseID, r.Sender)
		if err != nil {
			return nil, err
		}
		if onTeam {
			if may, err := b.CanRedact(ctx, evt.RoomID, r.Sender); err != nil || may {
				return r, err
			}
		}
	}
	return nil, nil
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
