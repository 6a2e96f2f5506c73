package commands

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/internal/safetext"
	"github.com/caseroom/caseroom/store"
)

// MaxPlanTextLength limits the text of one plan item.
const MaxPlanTextLength = 1000

// How far a due date may lie in the past (a day, so that a clinician in another time zone can still write
// yesterday's date) and in the future.
const (
	planDuePastDays   = 1
	planDueFutureYear = 10
)

// Size limits of the markdown of plan messages, so that they stay within Matrix's 64 KiB event limit once rendered
// to HTML and encrypted; an edit of the summary carries the whole summary.
const (
	maxPlanSummaryBytes = 12000
	maxPlanReplyBytes   = 16000
)

// planSummaryStep names the posting of a case's plan summary in the matrix_effects table.
const planSummaryStep = "plan-summary"

var planDueParam = Param{Name: "due", Type: Word, Flag: true, Optional: true, Placeholder: "YYYY-MM-DD",
	Description: "the date the task is due (tasks only); the text may also end with due YYYY-MM-DD"}

var planCommands = []*Command{
	{
		Name:     "plan",
		Category: "Treatment plan",
		Description: "Show the treatment plan: everything in the case room; goals and tasks (the patient's summary) in the " +
			"patient room.",
		Access: CaseMember,
		PHI:    true,
		Run:    runPlanShow,
		Subcommands: []*Command{
			{
				Name: "goal", Description: "Add a goal to the plan (the patient sees it).",
				Params:  []Param{{Name: "text", Type: Rest, Description: "the goal"}},
				Example: "Walk 500 m without pain by the end of March",
				Access:  CareTeam, PHI: true, Run: planAdder(store.PlanGoal),
			},
			{
				Name: "task", Description: "Add a task to the plan, optionally with a due date (the patient sees it).",
				Params:  []Param{{Name: "text", Type: Rest, Description: "the task"}, planDueParam},
				Example: "Change the dressing every other day due 2026-12-01",
				Access:  CareTeam, PHI: true, Run: planAdder(store.PlanTask),
			},
			{
				Name: "note", Description: "Add a note for the care team (never shown to the patient).",
				Params:  []Param{{Name: "text", Type: Rest, Description: "the note"}},
				Example: "Prefers morning visits; anxious about the wound",
				Access:  CareTeam, PHI: true, Run: planAdder(store.PlanNote),
			},
			{
				Name: "done", Description: "Mark a goal or task done (a new version; nothing is overwritten).",
				Params:  []Param{{Name: "n", Type: Integer, Placeholder: "number", Description: "the item's number, as shown by /plan"}},
				Example: "2",
				Access:  CareTeam, PHI: true, Run: runPlanDone,
			},
			{
				Name: "amend", Description: "Change the text (and a task's due date) of an item (a new version; nothing is overwritten).",
				Params: []Param{
					{Name: "n", Type: Integer, Placeholder: "number", Description: "the item's number, as shown by /plan"},
					{Name: "text", Type: Rest, Description: "the new text"},
					planDueParam,
				},
				Example: "2 Change the dressing daily due 2026-12-05",
				Access:  CareTeam, PHI: true, Run: runPlanAmend,
			},
			{
				Name: "history", Description: "Show every version of the plan's items, or of one item, with author and time.",
				Params:  []Param{{Name: "n", Type: Integer, Optional: true, Placeholder: "number", Description: "only this item"}},
				Example: "2",
				Access:  CareTeam, PHI: true, Run: runPlanHistory,
			},
		},
	},
}

// planKindName is a kind as a capitalised word for messages: "Goal", "Task", "Note".
func planKindName(k store.PlanKind) string {
	s := string(k)
	if s == "" {
		return ""
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// planToday is today's date in the configured time zone.
func planToday(call *Call) time.Time {
	now := time.Now().In(call.Bot.Config.Location())
	return time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
}

// parsePlanText checks an item's text and, for tasks, its due date: from the --due flag or a trailing
// `due YYYY-MM-DD` in the text. White space runs become single spaces. Errors are user-facing, in markdown.
func parsePlanText(raw, dueFlag string, kind store.PlanKind, today time.Time) (text, due string, err error) {
	text = strings.Join(strings.Fields(raw), " ")
	if kind != store.PlanTask {
		if dueFlag != "" {
			return "", "", fmt.Errorf("only tasks have a due date; `--due` cannot be given for a %s", kind)
		}
	} else if rest, trailing, ok := planSplitDue(text); ok {
		if dueFlag != "" {
			return "", "", fmt.Errorf("give the due date once: either %s or %s at the end of the text, not both",
				format.SafeMarkdownCode("--due "+dueFlag), format.SafeMarkdownCode("due "+trailing))
		}
		text, dueFlag = rest, trailing
	}
	switch n := utf8.RuneCountInString(text); {
	case n == 0:
		return "", "", fmt.Errorf("the text of the %s is missing", kind)
	case n > MaxPlanTextLength:
		return "", "", fmt.Errorf("the text is %d characters long; at most %d are allowed", n, MaxPlanTextLength)
	}
	if dueFlag != "" {
		if due, err = parsePlanDue(dueFlag, today); err != nil {
			return "", "", err
		}
	}
	return text, due, nil
}

// planSplitDue separates a trailing `due <date>` from a task's text. Only a word that looks like an attempt at a
// date counts (it starts with a digit, or is a word like "tomorrow"), so "ask what is due" stays text.
func planSplitDue(text string) (rest, due string, ok bool) {
	words := strings.Fields(text)
	n := len(words)
	if n < 2 || !strings.EqualFold(words[n-2], "due") {
		return text, "", false
	}
	last := words[n-1]
	first, _ := utf8.DecodeRuneInString(last)
	if !unicode.IsDigit(first) && !planDateWords[strings.ToLower(strings.TrimRight(last, ".,;!"))] {
		return text, "", false
	}
	return strings.Join(words[:n-2], " "), last, true
}

// planDateWords are words that mean a date but are not in the accepted format: they get a clear error rather than
// becoming part of the text.
var planDateWords = map[string]bool{
	"today": true, "tomorrow": true, "tonight": true, "yesterday": true, "monday": true, "tuesday": true,
	"wednesday": true, "thursday": true, "friday": true, "saturday": true, "sunday": true,
}

// parsePlanDue checks a due date: YYYY-MM-DD, not more than a day in the past, not absurdly far ahead.
func parsePlanDue(value string, today time.Time) (string, error) {
	date, err := time.Parse(store.DateLayout, value)
	if err != nil {
		return "", fmt.Errorf("the due date must be a date written as `YYYY-MM-DD` (for example `%s`), got %s",
			today.AddDate(0, 0, 7).Format(store.DateLayout), format.SafeMarkdownCode(value))
	}
	if date.Before(today.AddDate(0, 0, -planDuePastDays)) {
		return "", fmt.Errorf("the due date %s is more than a day in the past (today is %s); give a date from yesterday on",
			format.SafeMarkdownCode(value), today.Format(store.DateLayout))
	}
	if date.After(today.AddDate(planDueFutureYear, 0, 0)) {
		return "", fmt.Errorf("the due date %s is more than %d years ahead; check the year", format.SafeMarkdownCode(value), planDueFutureYear)
	}
	return date.Format(store.DateLayout), nil
}

// planDescribe restates an item version for replies: the escaped text and the due date.
func planDescribe(v *store.PlanVersion) string {
	s := safetext.Markdown(v.Text)
	if v.Due != "" {
		s += ", due " + v.Due
	}
	return s
}

func planAdder(kind store.PlanKind) func(ctx context.Context, call *Call) error {
	return func(ctx context.Context, call *Call) error {
		if !requireOpen(call) {
			return nil
		}
		text, due, err := parsePlanText(call.Str("text"), call.Str("due"), kind, planToday(call))
		if err != nil {
			call.Usage("%s.", planSentence(err))
			return nil
		}
		c := call.Room.Case
		items, err := call.Bot.Store.Plans.Items(ctx, c.ID)
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		v := &store.PlanVersion{
			Number: planNextNumber(items), Kind: kind, Version: 1, Change: store.PlanCreated, Text: text, Due: due,
			Status: store.PlanActive, EventID: call.Event.ID, Author: call.Sender, At: now,
		}
		item := &store.PlanItem{CaseID: c.ID, Number: v.Number, Kind: kind, CreatedBy: call.Sender, CreatedAt: now,
			CreatedEvent: call.Event.ID, Current: v}
		return commitPlanChange(ctx, call, items, item, func(ctx context.Context) (*store.PlanVersion, error) {
			stored, err := call.Bot.Store.Plans.AddItem(ctx, &store.NewPlanItem{
				CaseID: c.ID, Kind: kind, Text: text, Due: due, Author: call.Sender, EventID: call.Event.ID, At: now,
			})
			if err != nil {
				return nil, err
			}
			return stored.Current, nil
		}, func(v *store.PlanVersion) string {
			visibility := ""
			if kind == store.PlanNote {
				visibility = " (care team only)"
			}
			return fmt.Sprintf("%s %d added%s: %s.", planKindName(kind), v.Number, visibility, planDescribe(v))
		})
	}
}

func planNextNumber(items []*store.PlanItem) int {
	n := 0
	for _, item := range items {
		n = max(n, item.Number)
	}
	return n + 1
}

// planFind returns the item numbered n, answering when there is none.
func planFind(call *Call, items []*store.PlanItem) *store.PlanItem {
	n, _ := call.Int("n")
	for _, item := range items {
		if int64(item.Number) == n {
			return item
		}
	}
	if len(items) == 0 {
		call.Fail("not-found", "The plan of case #%d is empty, so there is no item %d.", call.Room.Case.ID, n)
	} else {
		call.Fail("not-found", "There is no item %d in the plan of case #%d (items are numbered 1 to %d). Type `/plan` to see them.",
			n, call.Room.Case.ID, planNextNumber(items)-1)
	}
	return nil
}

func runPlanDone(ctx context.Context, call *Call) error {
	if !requireOpen(call) {
		return nil
	}
	items, err := call.Bot.Store.Plans.Items(ctx, call.Room.Case.ID)
	if err != nil {
		return err
	}
	item := planFind(call, items)
	if item == nil {
		return nil
	}
	cur := item.Current
	switch {
	case item.Kind == store.PlanNote:
		call.Fail("refused:note", "Item %d is a note; only goals and tasks can be marked done. Nothing changed.", item.Number)
		return nil
	case cur.Status == store.PlanDone:
		call.Fail("unchanged", "%s %d is already done (since %s); nothing changed.", planKindName(item.Kind), item.Number, call.When(cur.At))
		return nil
	}
	return planNewVersion(ctx, call, items, item, store.PlanMarked, cur.Text, cur.Due, store.PlanDone,
		func(v *store.PlanVersion) string {
			return fmt.Sprintf("%s %d is done (version %d): %s.", planKindName(item.Kind), item.Number, v.Version, planDescribe(v))
		})
}

func runPlanAmend(ctx context.Context, call *Call) error {
	if !requireOpen(call) {
		return nil
	}
	items, err := call.Bot.Store.Plans.Items(ctx, call.Room.Case.ID)
	if err != nil {
		return err
	}
	item := planFind(call, items)
	if item == nil {
		return nil
	}
	text, due, err := parsePlanText(call.Str("text"), call.Str("due"), item.Kind, planToday(call))
	if err != nil {
		call.Usage("%s.", planSentence(err))
		return nil
	}
	cur := item.Current
	if due == "" {
		due = cur.Due // a new text keeps the task's due date
	}
	if text == cur.Text && due == cur.Due {
		call.Fail("unchanged", "%s %d already says that; nothing changed.", planKindName(item.Kind), item.Number)
		return nil
	}
	// An amended item keeps its status: a done task stays done.
	return planNewVersion(ctx, call, items, item, store.PlanAmended, text, due, cur.Status,
		func(v *store.PlanVersion) string {
			status := ""
			if v.Status == store.PlanDone {
				status = " It stays done."
			}
			return fmt.Sprintf("%s %d amended (version %d): %s.%s", planKindName(item.Kind), item.Number, v.Version, planDescribe(v), status)
		})
}

// planNewVersion stores a new version of an existing item.
func planNewVersion(ctx context.Context, call *Call, items []*store.PlanItem, item *store.PlanItem, change store.PlanChange,
	text, due string, status store.PlanStatus, confirm func(*store.PlanVersion) string) error {
	now := time.Now().UTC()
	v := &store.PlanVersion{
		ItemID: item.ID, Number: item.Number, Kind: item.Kind, Version: item.Current.Version + 1, Change: change,
		Text: text, Due: due, Status: status, EventID: call.Event.ID, Author: call.Sender, At: now,
	}
	next := *item
	next.Current = v
	return commitPlanChange(ctx, call, items, &next, func(ctx context.Context) (*store.PlanVersion, error) {
		stored := *v
		var err error
		stored.Version, err = call.Bot.Store.Plans.AddVersion(ctx, item.ID, v)
		return &stored, err
	}, confirm)
}

// commitPlanChange stores a change in the turn's transaction and keeps the patient's pinned summary current: the
// first change the patient can see posts and pins the summary now; later ones queue an edit of it in the same
// transaction as the change, so that each change edits the summary exactly once.
func commitPlanChange(ctx context.Context, call *Call, items []*store.PlanItem, changed *store.PlanItem,
	write func(ctx context.Context) (*store.PlanVersion, error), confirm func(*store.PlanVersion) string) error {
	c := call.Room.Case
	var summary *store.PlanSummary
	var posted string // the summary as posted in this turn, if it was
	if changed.Kind.PatientVisible() && c.PatientRoomID != "" {
		var err error
		if summary, err = call.Bot.Store.Plans.Summary(ctx, c.ID); err != nil {
			return err
		}
		if summary == nil {
			after := slices.Clone(items)
			if i := slices.IndexFunc(after, func(it *store.PlanItem) bool { return it.Number == changed.Number }); i >= 0 {
				after[i] = changed
			} else {
				after = append(after, changed)
			}
			if summary, posted, err = postPlanSummary(ctx, call, renderPatientPlan(after, call.When)); err != nil {
				return err
			}
		}
	}
	call.Write(func(ctx context.Context) error {
		plans := call.Bot.Store.Plans
		v, err := write(ctx)
		if err != nil {
			return err
		}
		if changed.Kind.PatientVisible() {
			if err = queuePlanForEHR(ctx, call, c); err != nil {
				return err
			}
		}
		note := ""
		if summary != nil {
			if summary.CauseEvent == call.Event.ID {
				if err = plans.PutSummary(ctx, summary); err != nil {
					return err
				}
				note = "\n\nI posted the plan summary in the patient room and pinned it; I will keep it up to date."
			} else {
				note = "\n\nI updated the pinned plan summary in the patient room."
			}
			current, err := plans.Items(ctx, c.ID)
			if err != nil {
				return err
			}
			if text := renderPatientPlan(current, call.When); text != posted {
				call.Send(summary.RoomID, event.EventMessage, planSummaryEdit(summary.EventID, text))
			}
		}
		if changed.Kind.PatientVisible() {
			note += notFiledNote(c)
		}
		call.Done(c.ID, "%s%s", confirm(v), note)
		return nil
	})
	return nil
}

// queuePlanForEHR queues the case's CarePlan for the EHR, inside the transaction that stores a change of a goal or
// task: the item's version is the number of plan versions after the change, and its delivery writes the plan as it
// is then. Notes are not part of the CarePlan (see package ehr), so changes of notes queue nothing.
func queuePlanForEHR(ctx context.Context, call *Call, c *store.Case) error {
	if !fileableCase(c) {
		return nil // it stays in caseroom (see fileableCase)
	}
	n, err := call.Bot.Store.Plans.VersionCount(ctx, c.ID)
	if err != nil {
		return err
	}
	err = call.Bot.Store.EHR.Add(ctx, &store.OutboxItem{
		Kind: store.OutboxCarePlan, RecordID: c.ID, Version: n, CaseID: c.ID, OrderKey: fmt.Sprintf("case:%d", c.ID),
		RoomID: c.CaseRoomID, SourceEvent: call.Event.ID,
	})
	if err == nil && call.Bot.KickEHR != nil {
		call.AfterCommit(call.Bot.KickEHR)
	}
	return err
}

// postPlanSummary posts a case's first plan summary in its patient room and pins it. The post is remembered by the
// command's event, so processing the event again after a crash pins the same message instead of posting another.
func postPlanSummary(ctx context.Context, call *Call, text string) (summary *store.PlanSummary, posted string, err error) {
	return postPlanSummaryFor(ctx, call.Bot, call.Room.Case, call.Event.ID, text)
}

// postPlanSummaryFor posts a plan summary in a case's patient room because of the event cause, once per event.
func postPlanSummaryFor(ctx context.Context, b *bot.Bot, c *store.Case, cause id.EventID, text string) (summary *store.PlanSummary, posted string, err error) {
	existing, err := b.Store.Effects.Get(ctx, cause, planSummaryStep)
	if err != nil {
		return nil, "", err
	}
	eventID := id.EventID(existing)
	if eventID == "" {
		if eventID, err = b.SendNow(ctx, c.PatientRoomID, notice(text), cause, planSummaryStep); err != nil {
			return nil, "", err
		}
		if err = b.Store.Effects.Put(ctx, cause, planSummaryStep, eventID.String()); err != nil {
			return nil, "", err
		}
		posted = text
	}
	if err = pinEvent(ctx, b, c.PatientRoomID, eventID); err != nil {
		return nil, "", err
	}
	return &store.PlanSummary{CaseID: c.ID, RoomID: c.PatientRoomID, EventID: eventID, CauseEvent: cause, PostedAt: time.Now().UTC()}, posted, nil
}

// pinEvent adds an event to a room's pinned events, keeping the others; an event already pinned counts as done.
func pinEvent(ctx context.Context, b *bot.Bot, roomID id.RoomID, eventID id.EventID) error {
	var pinned event.PinnedEventsEventContent
	err := b.AS.BotIntent().StateEvent(ctx, roomID, event.StatePinnedEvents, "", &pinned)
	if err != nil && !errors.Is(err, mautrix.MNotFound) {
		return fmt.Errorf("failed to get pinned events: %w", err)
	}
	if slices.Contains(pinned.Pinned, eventID) {
		return nil
	}
	pinned.Pinned = append(pinned.Pinned, eventID)
	if _, err = b.AS.BotIntent().SendStateEvent(ctx, roomID, event.StatePinnedEvents, "", &pinned); err != nil {
		return fmt.Errorf("failed to pin event: %w", err)
	}
	return nil
}

// planSummaryEdit is an edit (m.replace) of the summary message with new text.
func planSummaryEdit(original id.EventID, text string) *event.MessageEventContent {
	content := notice(text)
	content.SetEdit(original)
	// The fallback for clients without edits is cut short by bytes; keep it valid UTF-8.
	content.Body = strings.ToValidUTF8(content.Body, "")
	return content
}

// renderPatientPlan is the patient-facing summary: goals and tasks, never notes, without item numbers (which would
// reveal that notes exist). It is the text of the pinned summary and of /plan in the patient room.
func renderPatientPlan(items []*store.PlanItem, when func(time.Time) string) string {
	var goals, tasks []*store.PlanItem
	var updated time.Time
	for _, item := range items {
		switch item.Kind {
		case store.PlanGoal:
			goals = append(goals, item)
		case store.PlanTask:
			tasks = append(tasks, item)
		default:
			continue
		}
		if item.Current.At.After(updated) {
			updated = item.Current.At
		}
	}
	if len(goals)+len(tasks) == 0 {
		return "Your care team has not written a treatment plan for you yet."
	}
	var sb strings.Builder
	sb.WriteString("**Your treatment plan**\n")
	omitted := 0
	section := func(title string, list []*store.PlanItem) {
		if len(list) == 0 {
			return
		}
		// Open items first, then those done, each in the order they were added.
		slices.SortStableFunc(list, func(a, b *store.PlanItem) int {
			return planStatusOrder(a.Current.Status) - planStatusOrder(b.Current.Status)
		})
		fmt.Fprintf(&sb, "\n**%s**\n\n", title)
		for _, item := range list {
			line := "* " + safetext.Markdown(item.Current.Text)
			if item.Current.Due != "" {
				line += " — due " + item.Current.Due
			}
			if item.Current.Status == store.PlanDone {
				line = "* ✅ " + strings.TrimPrefix(line, "* ") + " (done)"
			}
			if sb.Len()+len(line) > maxPlanSummaryBytes {
				omitted++
				continue
			}
			sb.WriteString(line + "\n")
		}
	}
	section("Goals", goals)
	section("Tasks", tasks)
	if omitted > 0 {
		fmt.Fprintf(&sb, "\n…and %d more, too many to show here. Ask your care team.\n", omitted)
	}
	fmt.Fprintf(&sb, "\n_Last updated %s by your care team._", when(updated))
	return sb.String()
}

func planStatusOrder(s store.PlanStatus) int {
	if s == store.PlanDone {
		return 1
	}
	return 0
}

// renderCasePlan is the care team's view: every item with its number, kind, status, due date and version.
func renderCasePlan(c *store.Case, items []*store.PlanItem, when func(time.Time) string) string {
	if len(items) == 0 {
		return fmt.Sprintf("The treatment plan of case #%d is empty. Add to it with `/plan goal <text>`, `/plan task <text> [due YYYY-MM-DD]` "+
			"or `/plan note <text>`.", c.ID)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "**Treatment plan of case #%d** (%d items)\n", c.ID, len(items))
	omitted := 0
	for _, kind := range []store.PlanKind{store.PlanGoal, store.PlanTask, store.PlanNote} {
		first := true
		for _, item := range items {
			if item.Kind != kind {
				continue
			}
			if first {
				fmt.Fprintf(&sb, "\n**%ss**", planKindName(kind))
				if kind == store.PlanNote {
					sb.WriteString(" (care team only)")
				}
				sb.WriteString("\n\n")
				first = false
			}
			v := item.Current
			line := fmt.Sprintf("* **%d.** %s", item.Number, safetext.Markdown(v.Text))
			if v.Due != "" {
				line += " — due " + v.Due
			}
			if v.Status == store.PlanDone {
				line += " — ✅ done"
			}
			line += fmt.Sprintf(" _(v%d, %s, %s)_\n", v.Version, format.SafeMarkdownCode(v.Author.String()), when(v.At))
			if sb.Len()+len(line) > maxPlanReplyBytes {
				omitted++
				continue
			}
			sb.WriteString(line)
		}
	}
	if omitted > 0 {
		fmt.Fprintf(&sb, "\n%d more items are not shown: the message would be too long. `/plan history <number>` shows one item.\n", omitted)
	}
	sb.WriteString("\n`/plan history [number]` shows every version.")
	return sb.String()
}

// planChangeWord says what a version did, for the history.
func planChangeWord(v *store.PlanVersion) string {
	switch v.Change {
	case store.PlanCreated:
		return "added"
	case store.PlanMarked:
		return "marked done"
	default:
		if v.Status == store.PlanDone {
			return "amended (still done)"
		}
		return "amended"
	}
}

// renderPlanHistory lists versions oldest first; when they do not all fit, the newest that fit are shown.
func renderPlanHistory(c *store.Case, number int, versions []*store.PlanVersion, when func(time.Time) string) string {
	var lines []string
	size := 0
	for i := len(versions) - 1; i >= 0; i-- {
		v := versions[i]
		line := fmt.Sprintf("* %s — %s: %s %d %s (v%d): %s\n", when(v.At), format.SafeMarkdownCode(v.Author.String()),
			planKindName(v.Kind), v.Number, planChangeWord(v), v.Version, planDescribe(v))
		if size+len(line) > maxPlanReplyBytes {
			break
		}
		size += len(line)
		lines = append(lines, line)
	}
	slices.Reverse(lines)
	var sb strings.Builder
	if number != 0 {
		fmt.Fprintf(&sb, "**History of item %d of case #%d** (%d versions, oldest first)\n\n", number, c.ID, len(versions))
	} else {
		fmt.Fprintf(&sb, "**Plan history of case #%d** (%d versions, oldest first)\n\n", c.ID, len(versions))
	}
	if len(lines) < len(versions) {
		fmt.Fprintf(&sb, "The %d oldest versions are not shown (the message would be too long); `/plan history <number>` shows one item.\n\n",
			len(versions)-len(lines))
	}
	for _, line := range lines {
		sb.WriteString(line)
	}
	return sb.String()
}

func runPlanShow(ctx context.Context, call *Call) error {
	c := call.Room.Case
	items, err := call.Bot.Store.Plans.Items(ctx, c.ID)
	if err != nil {
		return err
	}
	if call.Room.Kind == RoomPatient {
		// Whoever asks in the patient room, the answer is what the patient may read.
		call.Audit("read:plan", "ok", c.ID, "patient summary")
		call.Reply(renderPatientPlan(items, call.When))
		return nil
	}
	call.Audit("read:plan", "ok", c.ID, "care team view")
	call.Reply(renderCasePlan(c, items, call.When))
	return nil
}

func runPlanHistory(ctx context.Context, call *Call) error {
	c := call.Room.Case
	n, given := call.Int("n")
	number := 0
	if given {
		items, err := call.Bot.Store.Plans.Items(ctx, c.ID)
		if err != nil {
			return err
		}
		item := planFind(call, items)
		if item == nil {
			return nil
		}
		number = int(n)
	}
	versions, err := call.Bot.Store.Plans.History(ctx, c.ID, number)
	if err != nil {
		return err
	}
	detail := "history"
	if number != 0 {
		detail = fmt.Sprintf("history of item %d", number)
	}
	call.Audit("read:plan", "ok", c.ID, detail)
	if len(versions) == 0 {
		call.Reply(fmt.Sprintf("The treatment plan of case #%d is empty: nothing has been recorded yet.", c.ID))
		return nil
	}
	call.Reply(renderPlanHistory(c, number, versions, call.When))
	return nil
}

// planSentence makes an error message start with a capital letter.
func planSentence(err error) string {
	s := err.Error()
	r, size := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[size:]
}

// repostPlanSummary gives a patient who just joined the patient room the current plan: history is visible to
// patients only from their join, so the summary posted before is not theirs to see. A fresh summary is posted
// (once per join event), pinned in place of the old one, and recorded as the one to edit from now on.
func repostPlanSummary(ctx context.Context, turn *bot.Turn, c *store.Case) error {
	b := turn.Bot
	old, err := b.Store.Plans.Summary(ctx, c.ID)
	if err != nil || old == nil {
		return err
	}
	items, err := b.Store.Plans.Items(ctx, c.ID)
	if err != nil {
		return err
	}
	call := &Call{Turn: turn}
	summary, _, err := postPlanSummaryFor(ctx, b, c, turn.Event.ID, renderPatientPlan(items, call.When))
	if err != nil {
		return err
	}
	if err = unpinEvent(ctx, b, c.PatientRoomID, old.EventID); err != nil {
		return err
	}
	turn.Write(func(ctx context.Context) error { return b.Store.Plans.PutSummary(ctx, summary) })
	return nil
}

// unpinEvent removes an event from a room's pinned events, if it is there.
func unpinEvent(ctx context.Context, b *bot.Bot, roomID id.RoomID, eventID id.EventID) error {
	var pinned event.PinnedEventsEventContent
	if err := b.AS.BotIntent().StateEvent(ctx, roomID, event.StatePinnedEvents, "", &pinned); err != nil {
		if errors.Is(err, mautrix.MNotFound) {
			return nil
		}
		return fmt.Errorf("failed to get pinned events: %w", err)
	}
	i := slices.Index(pinned.Pinned, eventID)
	if i < 0 {
		return nil
	}
	pinned.Pinned = slices.Delete(pinned.Pinned, i, i+1)
	if _, err := b.AS.BotIntent().SendStateEvent(ctx, roomID, event.StatePinnedEvents, "", &pinned); err != nil {
		return fmt.Errorf("failed to unpin event: %w", err)
	}
	return nil
}
