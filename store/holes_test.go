package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

// TestAppendOnlyTablesRefuseTruncate: TRUNCATE skips row triggers on PostgreSQL; the append-only tables refuse it
// too. (SQLite has no TRUNCATE; its "DELETE FROM t" shortcut is disabled by the delete triggers.)
func TestAppendOnlyTablesRefuseTruncate(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		if err := st.Audit.Add(ctx, &store.AuditEntry{Actor: "@a:hs", Action: "read:case", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
		cs := &store.Case{Title: "x", CaseRoomID: "!c:hs", PatientRoomID: "!p:hs", CreatedBy: "@doc:hs"}
		if err := st.Cases.Create(ctx, cs, "$case"); err != nil {
			t.Fatal(err)
		}
		c := &store.CheckIn{CaseID: cs.ID, EventID: "$e", RoomID: "!p:hs", PatientID: "@pat:hs", RecordedBy: "@pat:hs",
			Source: store.SourcePatient, EffectiveAt: time.Now(), ClaimedAt: time.UnixMilli(1e12), ReceivedAt: time.UnixMilli(2e12)}
		if err := st.CheckIns.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		if claimed, received, err := st.CheckIns.Times(ctx, c.ID); err != nil || claimed.UnixMilli() != 1e12 || received.UnixMilli() != 2e12 {
			t.Fatalf("check-in times: %s %s %v", claimed, received, err)
		}
		stmts := []string{"DELETE FROM audit", "DELETE FROM checkin_versions", "DELETE FROM checkin_times",
			"UPDATE checkin_times SET claimed_at = 0"}
		if cfg.Type == "postgres" {
			stmts = append(stmts, "TRUNCATE audit", "TRUNCATE checkin_versions", "TRUNCATE checkins CASCADE",
				"TRUNCATE checkin_times", "TRUNCATE audit, cases CASCADE")
		}
		for _, stmt := range stmts {
			_, err := st.DB.Exec(ctx, stmt)
			if err == nil || !strings.Contains(err.Error(), "append-only") {
				t.Errorf("%q: %v, want it refused as append-only", stmt, err)
			}
		}
		var audits, checkins, versions int
		_ = st.DB.QueryRow(ctx, "SELECT (SELECT COUNT(*) FROM audit), (SELECT COUNT(*) FROM checkins), (SELECT COUNT(*) FROM checkin_versions)").
			Scan(&audits, &checkins, &versions)
		if audits != 1 || checkins != 1 || versions != 1 {
			t.Fatalf("after the refused statements: %d audit rows, %d check-ins, %d versions; want 1 each", audits, checkins, versions)
		}
	})
}

// TestPruneMessages: the text of processed inbox events and of sent (or given up) outgoing messages is removed
// after the retention window; what exactly-once processing and sending need stays: a replayed event is still
// recognised, pending events and unsent messages keep their text.
func TestPruneMessages(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		if _, err := st.Inbox.Add(ctx, []*store.InboxEvent{inboxEvent("$old", "!a:hs", 1), inboxEvent("$new", "!a:hs", 2),
			inboxEvent("$pending", "!a:hs", 3)}); err != nil {
			t.Fatal(err)
		}
		pending, err := st.Inbox.Pending(ctx, "!a:hs", 10)
		if err != nil || len(pending) != 3 {
			t.Fatalf("pending: %v %v", pending, err)
		}
		text := &event.MessageEventContent{MsgType: event.MsgNotice, Body: "BP 142/91 dizzy"}
		var sentOld, sentNew, failedOld, unsent int64
		for _, seq := range []*int64{&sentOld, &sentNew, &failedOld, &unsent} {
			if *seq, err = st.Outgoing.Add(ctx, "!a:hs", event.EventMessage, text, "$old"); err != nil {
				t.Fatal(err)
			}
		}
		// Processed and sent "long ago" and just now: rows are stamped with the current time, so the old ones are
		// made old by a cutoff in the future of the first marks.
		for _, seq := range []int64{pending[0].Seq} {
			if _, err = st.Inbox.MarkProcessed(ctx, seq, "ok"); err != nil {
				t.Fatal(err)
			}
		}
		if err = st.Outgoing.MarkSent(ctx, sentOld, "$sentold"); err != nil {
			t.Fatal(err)
		}
		if err = st.Outgoing.MarkFailed(ctx, failedOld, "M_TOO_LARGE"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		cutoff := time.Now()
		time.Sleep(20 * time.Millisecond)
		if _, err = st.Inbox.MarkProcessed(ctx, pending[1].Seq, "ok"); err != nil {
			t.Fatal(err)
		}
		if err = st.Outgoing.MarkSent(ctx, sentNew, "$sentnew"); err != nil {
			t.Fatal(err)
		}

		inboxN, outN, err := st.PruneMessages(ctx, cutoff, 1)
		if err != nil {
			t.Fatal(err)
		}
		if inboxN != 1 || outN != 2 {
			t.Fatalf("pruned %d inbox and %d outgoing rows, want 1 and 2", inboxN, outN)
		}
		if inboxN, outN, err = st.PruneMessages(ctx, cutoff, 100); err != nil || inboxN != 0 || outN != 0 {
			t.Fatalf("second prune: %d, %d, %v; want nothing left to prune", inboxN, outN, err)
		}
		rawOf := func(evtID string) string {
			var raw string
			if err := st.DB.QueryRow(ctx, "SELECT raw FROM inbox WHERE event_id = $1", evtID).Scan(&raw); err != nil {
				t.Fatalf("inbox row %s: %v", evtID, err)
			}
			return raw
		}
		if raw := rawOf("$old"); raw != "" {
			t.Errorf("old processed event kept its content: %s", raw)
		}
		if rawOf("$new") == "" || rawOf("$pending") == "" {
			t.Error("a recent or pending event lost its content")
		}
		contentOf := func(seq int64) string {
			var content string
			if err := st.DB.QueryRow(ctx, "SELECT content FROM outgoing WHERE seq = $1", seq).Scan(&content); err != nil {
				t.Fatalf("outgoing row %d: %v", seq, err)
			}
			return content
		}
		for _, seq := range []int64{sentOld, failedOld} {
			if c := contentOf(seq); strings.Contains(c, "dizzy") {
				t.Errorf("outgoing %d kept its text after the retention window: %s", seq, c)
			}
		}
		for _, seq := range []int64{sentNew, unsent} {
			if c := contentOf(seq); !strings.Contains(c, "dizzy") {
				t.Errorf("outgoing %d lost its text too early: %s", seq, c)
			}
		}
		// Exactly once still holds: the pruned event is not taken again, and the bot's sent message is still known.
		rooms, err := st.Inbox.Add(ctx, []*store.InboxEvent{inboxEvent("$old", "!a:hs", 1)})
		if err != nil || len(rooms) != 0 {
			t.Fatalf("replayed pruned event: rooms %v, %v; want it recognised as already stored", rooms, err)
		}
		if left, _ := st.Inbox.Pending(ctx, "!a:hs", 10); len(left) != 1 || left[0].EventID != "$pending" {
			t.Fatalf("pending after replay: %+v", left)
		}
		if outcome, _ := st.Inbox.Outcome(ctx, "$old"); outcome != "ok" {
			t.Fatalf("outcome of the pruned event = %q", outcome)
		}
		if seq, _ := st.Outgoing.BySentEvent(ctx, "$sentold"); seq != sentOld {
			t.Fatalf("pruned sent message no longer found by its event ID: %d", seq)
		}
		if out, _ := st.Outgoing.Pending(ctx, "!a:hs", 10); len(out) != 1 || out[0].Seq != unsent || !strings.Contains(string(out[0].Content), "dizzy") {
			t.Fatalf("unsent after prune: %+v", out)
		}
	})
}
