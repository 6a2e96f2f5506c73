package commands

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/caseroom/caseroom/store"
)

var planToday0 = time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)

func TestParsePlanText(t *testing.T) {
	long := strings.Repeat("ä", MaxPlanTextLength+1)
	tests := []struct {
		name     string
		raw      string
		dueFlag  string
		kind     store.PlanKind
		wantText string
		wantDue  string
		wantErr  string
	}{
		{name: "goal", raw: "Walk 500 m", kind: store.PlanGoal, wantText: "Walk 500 m"},
		{name: "white space collapsed", raw: "  Walk \n 500\tm ", kind: store.PlanGoal, wantText: "Walk 500 m"},
		{name: "task with trailing due", raw: "Change dressing due 2026-12-01", kind: store.PlanTask, wantText: "Change dressing", wantDue: "2026-12-01"},
		{name: "trailing due is case-insensitive", raw: "Change dressing Due 2026-12-01", kind: store.PlanTask, wantText: "Change dressing", wantDue: "2026-12-01"},
		{name: "task with due flag", raw: "Change dressing", dueFlag: "2026-12-01", kind: store.PlanTask, wantText: "Change dressing", wantDue: "2026-12-01"},
		{name: "task without due", raw: "Ask what is due", kind: store.PlanTask, wantText: "Ask what is due"},
		{name: "due followed by a plain word stays text", raw: "Pay what is due soon", kind: store.PlanTask, wantText: "Pay what is due soon"},
		{name: "due inside the text stays text", raw: "Due 2026-12-01 is the visit", kind: store.PlanTask, wantText: "Due 2026-12-01 is the visit"},
		{name: "goal keeps a trailing due as text", raw: "Heal due 2026-12-01", kind: store.PlanGoal, wantText: "Heal due 2026-12-01"},
		{name: "yesterday is allowed", raw: "x due 2026-03-09", kind: store.PlanTask, wantText: "x", wantDue: "2026-03-09"},
		{name: "bad date names value and format", raw: "Change dressing due 2026-13-01", kind: store.PlanTask, wantErr: "the due date must be a date written as `YYYY-MM-DD` (for example `2026-03-17`), got `2026-13-01`"},
		{name: "day-first date", raw: "x due 01.12.2026", kind: store.PlanTask, wantErr: "got `01.12.2026`"},
		{name: "single-digit month", raw: "x due 2026-1-05", kind: store.PlanTask, wantErr: "got `2026-1-05`"},
		{name: "relative word", raw: "Call pharmacy due tomorrow", kind: store.PlanTask, wantErr: "got `tomorrow`"},
		{name: "bad due flag", raw: "x", dueFlag: "soon", kind: store.PlanTask, wantErr: "got `soon`"},
		{name: "too far in the past", raw: "x due 2026-03-08", kind: store.PlanTask, wantErr: "`2026-03-08` is more than a day in the past (today is 2026-03-10)"},
		{name: "too far ahead", raw: "x due 2226-03-08", kind: store.PlanTask, wantErr: "more than 10 years ahead"},
		{name: "due given twice", raw: "x due 2026-12-01", dueFlag: "2026-12-02", kind: store.PlanTask, wantErr: "give the due date once"},
		{name: "due flag on a goal", raw: "x", dueFlag: "2026-12-01", kind: store.PlanGoal, wantErr: "only tasks have a due date"},
		{name: "due flag on a note", raw: "x", dueFlag: "2026-12-01", kind: store.PlanNote, wantErr: "only tasks have a due date"},
		{name: "only a due date", raw: "due 2026-12-01", kind: store.PlanTask, wantErr: "the text of the task is missing"},
		{name: "empty", raw: "   ", kind: store.PlanNote, wantErr: "the text of the note is missing"},
		{name: "too long counts characters", raw: long, kind: store.PlanNote, wantErr: "the text is 1001 characters long; at most 1000 are allowed"},
		{name: "longest allowed", raw: long[len("ä"):], kind: store.PlanNote, wantText: long[len("ä"):]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text, due, err := parsePlanText(tt.raw, tt.dueFlag, tt.kind, planToday0)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || text != tt.wantText || due != tt.wantDue {
				t.Fatalf("= %q, %q, %v; want %q, %q", text, due, err, tt.wantText, tt.wantDue)
			}
		})
	}
}

func TestPlanCommandArgs(t *testing.T) {
	p := New()
	tests := []struct {
		name    string
		line    string
		want    map[string]any
		wantErr string
	}{
		{name: "task with due flag", line: "plan task Change dressing --due 2026-12-01", want: map[string]any{"text": "Change dressing", "due": "2026-12-01"}},
		{name: "task with trailing due", line: "plan task Change dressing due 2026-12-01", want: map[string]any{"text": "Change dressing due 2026-12-01"}},
		{name: "amend", line: "plan amend 2 Change dressing daily", want: map[string]any{"n": int64(2), "text": "Change dressing daily"}},
		{name: "amend without text", line: "plan amend 2", wantErr: "`<text>` is missing"},
		{name: "done needs a number", line: "plan done two", wantErr: "`<number>` must be a whole number, got `two`"},
		{name: "history of all", line: "plan history", want: map[string]any{}},
		{name: "history of one", line: "plan history 3", want: map[string]any{"n": int64(3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			words := strings.Fields(tt.line)
			cmd, consumed := p.lookup(words[0], words[1:])
			if cmd == nil || consumed != 1 || cmd.Run == nil {
				t.Fatalf("lookup(%q) = %v, %d", tt.line, cmd, consumed)
			}
			args, err := ParseArgs(cmd.Params, strings.Join(words[2:], " "))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(args) != len(tt.want) {
				t.Fatalf("args = %#v, %v; want %#v", args, err, tt.want)
			}
			for k, v := range tt.want {
				if args[k] != v {
					t.Fatalf("args[%s] = %#v, want %#v", k, args[k], v)
				}
			}
		})
	}
	plan, _ := p.lookup("plan", nil)
	if plan.Access != CaseMember || plan.Category != "Treatment plan" {
		t.Fatalf("plan: access %v, category %q", plan.Access, plan.Category)
	}
	for _, sub := range plan.Subcommands {
		if sub.Access != CareTeam || sub.Category != "Treatment plan" {
			t.Errorf("plan %s: access %v, category %q; want the care team only", sub.Name, sub.Access, sub.Category)
		}
	}
	task, _ := p.lookup("plan", []string{"task"})
	if got := task.UsageLine(); got != "/plan task <text> [--due <YYYY-MM-DD>]" {
		t.Errorf("usage = %q", got)
	}
}

func planItem(n int, kind store.PlanKind, text, due string, status store.PlanStatus, version int, at time.Time) *store.PlanItem {
	return &store.PlanItem{Number: n, Kind: kind, Current: &store.PlanVersion{
		Number: n, Kind: kind, Version: version, Text: text, Due: due, Status: status, Author: "@doc:hs", At: at,
	}}
}

func planWhen(t time.Time) string { return t.UTC().Format("2006-01-02 15:04") }

func TestRenderPatientPlan(t *testing.T) {
	at := time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)
	items := []*store.PlanItem{
		planItem(1, store.PlanGoal, "Walk *500 m* <b>pain-free</b>", "", store.PlanActive, 1, at),
		planItem(2, store.PlanTask, "Change dressing", "2026-12-01", store.PlanDone, 3, at.Add(2*time.Hour)),
		planItem(3, store.PlanNote, "SECRET anxious about the wound", "", store.PlanActive, 1, at.Add(5*time.Hour)),
		planItem(4, store.PlanTask, "Book follow-up", "", store.PlanActive, 1, at.Add(time.Hour)),
	}
	got := renderPatientPlan(items, planWhen)
	for _, want := range []string{
		"**Your treatment plan**", "**Goals**", `Walk \*500 m\* \<b\>pain\-free\<\/b\>`, "**Tasks**",
		"* Book follow\\-up\n* ✅ Change dressing — due 2026-12-01 (done)", "_Last updated 2026-03-10 11:00 by your care team._",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "SECRET") || strings.Contains(got, "1.") {
		t.Errorf("summary shows a note or item numbers:\n%s", got)
	}
	// The note's later time is not the summary's: notes are invisible to the patient in every way.
	if strings.Contains(got, "14:00") {
		t.Errorf("summary reveals when a note was written:\n%s", got)
	}
	content := notice(got)
	if strings.Contains(content.FormattedBody, "<b>pain-free") || !strings.Contains(content.Body, "<b>pain-free</b>") {
		t.Errorf("user text must show as text, not HTML: %+v", content)
	}
	if onlyNotes := renderPatientPlan(items[2:3], planWhen); strings.Contains(onlyNotes, "SECRET") || !strings.Contains(onlyNotes, "not written") {
		t.Errorf("plan with only notes = %q", onlyNotes)
	}

	var many []*store.PlanItem
	for i := 1; i <= 40; i++ {
		many = append(many, planItem(i, store.PlanGoal, strings.Repeat("x", 900), "", store.PlanActive, 1, at))
	}
	if big := renderPatientPlan(many, planWhen); len(big) > maxPlanSummaryBytes+200 || !strings.Contains(big, "more, too many to show") {
		t.Errorf("a long summary is not cut: %d bytes", len(big))
	}
}

func TestRenderCasePlanAndHistory(t *testing.T) {
	at := time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)
	c := &store.Case{ID: 7}
	items := []*store.PlanItem{
		planItem(1, store.PlanGoal, "Walk", "", store.PlanActive, 1, at),
		planItem(2, store.PlanTask, "Dressing", "2026-12-01", store.PlanDone, 3, at),
		planItem(3, store.PlanNote, "Anxious", "", store.PlanActive, 1, at),
	}
	got := renderCasePlan(c, items, planWhen)
	for _, want := range []string{"case #7", "**1.** Walk", "**2.** Dressing — due 2026-12-01 — ✅ done _(v3, `@doc:hs`", "**Notes** (care team only)", "**3.** Anxious"} {
		if !strings.Contains(got, want) {
			t.Errorf("case plan lacks %q:\n%s", want, got)
		}
	}
	if empty := renderCasePlan(c, nil, planWhen); !strings.Contains(empty, "is empty") {
		t.Errorf("empty plan = %q", empty)
	}

	versions := []*store.PlanVersion{
		{Number: 2, Kind: store.PlanTask, Version: 1, Change: store.PlanCreated, Text: "Dressing", Due: "2026-12-01", Status: store.PlanActive, Author: "@doc:hs", At: at},
		{Number: 2, Kind: store.PlanTask, Version: 2, Change: store.PlanMarked, Text: "Dressing", Due: "2026-12-01", Status: store.PlanDone, Author: "@nurse:hs", At: at.Add(time.Hour)},
		{Number: 2, Kind: store.PlanTask, Version: 3, Change: store.PlanAmended, Text: "Dressing daily", Due: "2026-12-01", Status: store.PlanDone, Author: "@doc:hs", At: at.Add(2 * time.Hour)},
	}
	hist := renderPlanHistory(c, 2, versions, planWhen)
	for _, want := range []string{
		"History of item 2 of case #7** (3 versions",
		"2026-03-10 09:00 — `@doc:hs`: Task 2 added (v1): Dressing, due 2026-12-01",
		"2026-03-10 10:00 — `@nurse:hs`: Task 2 marked done (v2)",
		"`@doc:hs`: Task 2 amended (still done) (v3): Dressing daily",
	} {
		if !strings.Contains(hist, want) {
			t.Errorf("history lacks %q:\n%s", want, hist)
		}
	}
	var many []*store.PlanVersion
	for i := 1; i <= 60; i++ {
		many = append(many, &store.PlanVersion{Number: 1, Kind: store.PlanNote, Version: i, Change: store.PlanAmended,
			Text: strings.Repeat("y", 500), Status: store.PlanActive, Author: "@doc:hs", At: at})
	}
	if big := renderPlanHistory(c, 0, many, planWhen); len(big) > maxPlanReplyBytes+500 || !strings.Contains(big, "oldest versions are not shown") ||
		!strings.Contains(big, "(v60)") {
		t.Errorf("a long history is not cut to the newest versions: %d bytes", len(big))
	}
}

func TestPlanSummaryEdit(t *testing.T) {
	text := "**Your treatment plan**\n\n**Goals**\n\n* Wälk " + strings.Repeat("é", 80)
	edit := planSummaryEdit("$summary", text)
	raw, err := json.Marshal(edit)
	if err != nil {
		t.Fatal(err)
	}
	var parsed event.MessageEventContent
	if err = json.Unmarshal(raw, &parsed); err != nil {
		t.Fatal(err)
	}
	if parsed.RelatesTo.GetReplaceID() != "$summary" || parsed.NewContent == nil || parsed.MsgType != event.MsgNotice {
		t.Fatalf("edit = %s", raw)
	}
	if !strings.HasPrefix(parsed.Body, "* ") || !strings.Contains(parsed.NewContent.Body, "Wälk") ||
		parsed.NewContent.MsgType != event.MsgNotice || parsed.NewContent.FormattedBody == "" {
		t.Fatalf("edit = %s", raw)
	}
	if strings.ContainsRune(parsed.Body, '\uFFFD') {
		t.Fatalf("edit fallback is not valid UTF-8: %q", parsed.Body)
	}
}
