package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

func TestEHRReads(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		linked := &store.Case{Title: "Linked", PatientRef: "Patient/p1", CaseRoomID: "!c1:hs", PatientRoomID: "!p1:hs", CreatedBy: "@doc:hs"}
		unlinked := &store.Case{Title: "Unlinked", MRN: "42", CaseRoomID: "!c2:hs", PatientRoomID: "!p2:hs", CreatedBy: "@doc:hs"}
		closed := &store.Case{Title: "Closed", PatientRef: "Patient/p1", CaseRoomID: "!c3:hs", PatientRoomID: "!p3:hs", CreatedBy: "@doc:hs"}
		for i, c := range []*store.Case{linked, unlinked, closed} {
			if err := st.Cases.Create(ctx, c, id.EventID(fmt.Sprintf("$cmd%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.Cases.Close(ctx, closed.ID, "@doc:hs"); err != nil {
			t.Fatal(err)
		}
		targets, err := st.EHRReads.PollTargets(ctx)
		if err != nil || len(targets) != 1 || targets[0].ID != linked.ID {
			t.Fatalf("poll targets = %+v, %v", targets, err)
		}
		if cases, err := st.EHRReads.OpenCasesOf(ctx, "Patient/p1"); err != nil || len(cases) != 1 || cases[0].ID != linked.ID {
			t.Fatalf("open cases of Patient/p1 = %+v, %v", cases, err)
		}
		if cases, _ := st.EHRReads.OpenCasesOf(ctx, "Patient/nobody"); len(cases) != 0 {
			t.Fatalf("open cases of an unknown patient = %+v", cases)
		}

		// The cursor starts empty and only moves forward.
		if c, err := st.EHRReads.Cursor(ctx, linked.ID, "Observation"); err != nil || !c.IsZero() {
			t.Fatalf("new cursor = %v, %v", c, err)
		}
		t1 := time.UnixMilli(1_700_000_000_123)
		for _, at := range []time.Time{t1, t1.Add(-time.Hour)} {
			if err := st.EHRReads.AdvanceCursor(ctx, linked.ID, "Observation", at); err != nil {
				t.Fatal(err)
			}
		}
		if c, _ := st.EHRReads.Cursor(ctx, linked.ID, "Observation"); !c.Equal(t1) {
			t.Fatalf("cursor = %v, want %v (never back)", c, t1)
		}
		if c, _ := st.EHRReads.Cursor(ctx, linked.ID, "DiagnosticReport"); !c.IsZero() {
			t.Fatalf("the DiagnosticReport cursor moved with the Observation one: %v", c)
		}
		_ = st.EHRReads.AdvanceCursor(ctx, linked.ID, "Observation", t1.Add(time.Second))
		if c, _ := st.EHRReads.Cursor(ctx, linked.ID, "Observation"); !c.Equal(t1.Add(time.Second)) {
			t.Fatalf("cursor = %v after moving forward", c)
		}

		// A result is marked seen once per case, whichever path sees it first.
		first := &store.EHRResult{CaseID: linked.ID, Key: "Observation/o1", VersionID: "v1", LastUpdated: t1, Source: store.EHRSourcePoll}
		if fresh, err := st.EHRReads.MarkSeen(ctx, first); err != nil || !fresh {
			t.Fatalf("first mark = %v, %v", fresh, err)
		}
		again := &store.EHRResult{CaseID: linked.ID, Key: "Observation/o1", VersionID: "v2", LastUpdated: t1, Source: store.EHRSourceSubscription}
		if fresh, err := st.EHRReads.MarkSeen(ctx, again); err != nil || fresh {
			t.Fatalf("second mark = %v, %v", fresh, err)
		}
		if fresh, _ := st.EHRReads.MarkSeen(ctx, &store.EHRResult{CaseID: closed.ID, Key: "Observation/o1", Source: store.EHRSourcePoll}); !fresh {
			t.Fatal("a result seen for one case counted as seen for another")
		}
		if seen, _ := st.EHRReads.Seen(ctx, linked.ID, "Observation/o1"); !seen {
			t.Fatal("not seen")
		}
		if seen, _ := st.EHRReads.Seen(ctx, linked.ID, "Observation/o2"); seen {
			t.Fatal("an unknown result counted as seen")
		}
		if err := st.EHRReads.SetNotice(ctx, linked.ID, "Observation/o1", 77); err != nil {
			t.Fatal(err)
		}
		results, err := st.EHRReads.Results(ctx, linked.ID)
		if err != nil || len(results) != 1 || results[0].VersionID != "v1" || results[0].Source != store.EHRSourcePoll ||
			results[0].OutgoingSeq != 77 || !results[0].LastUpdated.Equal(t1) {
			t.Fatalf("results = %+v, %v", results, err)
		}
	})
}

// TestEHRSeenConcurrent: two transactions that see the same result at once (the poller and the subscription
// endpoint) queue one notice between them.
func TestEHRSeenConcurrent(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		c := &store.Case{Title: "x", PatientRef: "Patient/p1", CaseRoomID: "!c:hs", PatientRoomID: "!p:hs", CreatedBy: "@doc:hs"}
		if err := st.Cases.Create(ctx, c, "$cmd"); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				source := store.EHRSourcePoll
				if i%2 == 1 {
					source = store.EHRSourceSubscription
				}
				err := st.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
					fresh, err := st.EHRReads.MarkSeen(ctx, &store.EHRResult{CaseID: c.ID, Key: "Observation/o1", Source: source})
					if err != nil || !fresh {
						return err
					}
					_, err = st.Outgoing.Add(ctx, c.CaseRoomID, event.EventMessage, map[string]string{"body": "result"}, "")
					return err
				})
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		pending, err := st.Outgoing.Pending(ctx, c.CaseRoomID, 100)
		if err != nil || len(pending) != 1 {
			t.Fatalf("%d notices queued, want 1 (%v)", len(pending), err)
		}
	})
}

// TestEHRReadsUpgradeStartsCursors: cases opened before the v9 upgrade get cursors at the upgrade, so their
// earlier results are not posted as new.
func TestEHRReadsUpgradeStartsCursors(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		c := &store.Case{Title: "x", PatientRef: "Patient/p1", CaseRoomID: "!c:hs", PatientRoomID: "!p:hs", CreatedBy: "@doc:hs"}
		if err := st.Cases.Create(ctx, c, "$cmd"); err != nil {
			t.Fatal(err)
		}
		other := &store.Case{Title: "y", CaseRoomID: "!c2:hs", PatientRoomID: "!p2:hs", CreatedBy: "@doc:hs"}
		if err := st.Cases.Create(ctx, other, "$cmd2"); err != nil {
			t.Fatal(err)
		}
		// Back to v8, as a database made before this version.
		for _, q := range []string{"DROP TABLE ehr_seen", "DROP TABLE ehr_read_cursors", "UPDATE version SET version = 8, compat = 8"} {
			if _, err := st.DB.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		_ = st.Close()
		before := time.Now().Add(-time.Second)
		st = open(t, cfg)
		for _, typ := range []string{"Observation", "DiagnosticReport"} {
			cursor, err := st.EHRReads.Cursor(ctx, c.ID, typ)
			if err != nil || cursor.Before(before) || cursor.After(time.Now().Add(time.Second)) {
				t.Fatalf("%s cursor after the upgrade = %v, %v; want about now", typ, cursor, err)
			}
			if cursor, _ := st.EHRReads.Cursor(ctx, other.ID, typ); !cursor.IsZero() {
				t.Fatalf("a case without a patient got a cursor: %v", cursor)
			}
		}
	})
}
