package store_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

func TestPlans(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		caseA := &store.Case{Title: "A", CaseRoomID: "!a:hs", PatientRoomID: "!pa:hs", CreatedBy: "@doc:hs"}
		caseB := &store.Case{Title: "B", CaseRoomID: "!b:hs", PatientRoomID: "!pb:hs", CreatedBy: "@doc:hs"}
		for i, c := range []*store.Case{caseA, caseB} {
			if err := st.Cases.Create(ctx, c, id.EventID("$case"+string(rune('0'+i)))); err != nil {
				t.Fatal(err)
			}
		}
		at := time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)
		add := func(caseID int64, kind store.PlanKind, text, due, evt string) *store.PlanItem {
			t.Helper()
			item, err := st.Plans.AddItem(ctx, &store.NewPlanItem{
				CaseID: caseID, Kind: kind, Text: text, Due: due, Author: "@doc:hs", EventID: id.EventID(evt), At: at,
			})
			if err != nil {
				t.Fatalf("add %s: %v", text, err)
			}
			return item
		}
		goal := add(caseA.ID, store.PlanGoal, "Walk 500 m", "", "$g")
		task := add(caseA.ID, store.PlanTask, "Change dressing", "2026-12-01", "$t")
		other := add(caseB.ID, store.PlanNote, "Other case", "", "$o")
		if goal.Number != 1 || task.Number != 2 || other.Number != 1 {
			t.Fatalf("numbers = %d, %d, %d; want 1, 2 and 1 (per case)", goal.Number, task.Number, other.Number)
		}
		if v := task.Current; v.Version != 1 || v.Change != store.PlanCreated || v.Due != "2026-12-01" || v.Status != store.PlanActive ||
			v.EventID != "$t" || !v.At.Equal(at) || task.CreatedEvent != "$t" || task.Kind != store.PlanTask {
			t.Fatalf("task = %+v, current %+v", task, v)
		}
		if _, err := st.Plans.AddItem(ctx, &store.NewPlanItem{CaseID: caseA.ID, Kind: store.PlanGoal, Text: "again", Author: "@doc:hs", EventID: "$g", At: at}); err == nil {
			t.Fatal("a second item from the same event was stored")
		}
		if _, err := st.Plans.AddItem(ctx, &store.NewPlanItem{CaseID: caseA.ID, Kind: "wish", Text: "x", Author: "@doc:hs", EventID: "$w", At: at}); err == nil {
			t.Fatal("an item of an unknown kind was stored")
		}

		later := at.Add(time.Hour)
		version, err := st.Plans.AddVersion(ctx, task.ID, &store.PlanVersion{
			Change: store.PlanAmended, Text: "Change dressing twice a day", Due: "2026-12-01", Status: store.PlanActive,
			EventID: "$amend", Author: "@nurse:hs", At: later,
		})
		if err != nil || version != 2 {
			t.Fatalf("amend = %d, %v", version, err)
		}
		if version, err = st.Plans.AddVersion(ctx, task.ID, &store.PlanVersion{
			Change: store.PlanMarked, Text: "Change dressing twice a day", Due: "2026-12-01", Status: store.PlanDone,
			EventID: "$done", Author: "@doc:hs", At: later.Add(time.Minute),
		}); err != nil || version != 3 {
			t.Fatalf("done = %d, %v", version, err)
		}
		if _, err = st.Plans.AddVersion(ctx, task.ID, &store.PlanVersion{
			Change: store.PlanAmended, Text: "x", Status: store.PlanActive, EventID: "$done", Author: "@doc:hs", At: later,
		}); err == nil {
			t.Fatal("a second version from the same event was stored")
		}
		if _, err = st.Plans.AddVersion(ctx, task.ID, &store.PlanVersion{
			Change: store.PlanAmended, Text: "x", Due: "1.12.2026", Status: store.PlanActive, EventID: "$bad", Author: "@doc:hs", At: later,
		}); err == nil {
			t.Fatal("a malformed due date was stored")
		}

		items, err := st.Plans.Items(ctx, caseA.ID)
		if err != nil || len(items) != 2 {
			t.Fatalf("items = %+v, %v", items, err)
		}
		if cur := items[1].Current; cur.Version != 3 || cur.Status != store.PlanDone || cur.Text != "Change dressing twice a day" {
			t.Fatalf("current task = %+v", cur)
		}
		if item, _ := st.Plans.Item(ctx, caseA.ID, 2); item == nil || item.ID != task.ID || item.Current.Version != 3 {
			t.Fatalf("item 2 = %+v", item)
		}
		if item, err := st.Plans.Item(ctx, caseA.ID, 3); item != nil || err != nil {
			t.Fatalf("item 3 = %+v, %v; want none", item, err)
		}

		all, err := st.Plans.History(ctx, caseA.ID, 0)
		if err != nil || len(all) != 4 {
			t.Fatalf("history = %+v, %v", all, err)
		}
		one, _ := st.Plans.History(ctx, caseA.ID, 2)
		if len(one) != 3 || one[0].Text != "Change dressing" || one[1].Author != "@nurse:hs" || one[2].Change != store.PlanMarked {
			t.Fatalf("history of item 2 = %+v", one)
		}

		// Append-only: the database itself refuses to change or delete plan records.
		for _, query := range []string{
			"UPDATE plan_item_versions SET text = 'rewritten'",
			"DELETE FROM plan_item_versions",
			"UPDATE plan_items SET kind = 'goal'",
			"DELETE FROM plan_items",
		} {
			if _, err = st.DB.Exec(ctx, query); err == nil {
				t.Errorf("%s succeeded", query)
			}
		}
		if one, _ = st.Plans.History(ctx, caseA.ID, 2); len(one) != 3 || one[0].Text != "Change dressing" {
			t.Fatalf("history changed: %+v", one)
		}

		if s, err := st.Plans.Summary(ctx, caseA.ID); s != nil || err != nil {
			t.Fatalf("summary before posting = %+v, %v", s, err)
		}
		summary := &store.PlanSummary{CaseID: caseA.ID, RoomID: "!pa:hs", EventID: "$summary", CauseEvent: "$g", PostedAt: at}
		if err = st.Plans.PutSummary(ctx, summary); err != nil {
			t.Fatal(err)
		}
		if err = st.Plans.PutSummary(ctx, summary); err != nil {
			t.Fatalf("recording the same summary again: %v", err)
		}
		if s, _ := st.Plans.Summary(ctx, caseA.ID); s == nil || s.EventID != "$summary" || s.RoomID != "!pa:hs" {
			t.Fatalf("summary = %+v", s)
		}
		if s, _ := st.Plans.Summary(ctx, caseB.ID); s != nil {
			t.Fatalf("summary of case B = %+v", s)
		}
	})
}
