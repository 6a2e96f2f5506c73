package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

func open(t *testing.T, cfg store.Config) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), cfg, zerolog.Nop())
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func inboxEvent(evtID, roomID string, ts int64) *store.InboxEvent {
	return &store.InboxEvent{
		EventID: id.EventID(evtID), RoomID: id.RoomID(roomID), Sender: "@a:hs", Type: "m.room.message",
		OriginTS: ts, Raw: []byte(`{"event_id":"` + evtID + `"}`), ReceivedAt: time.Now(),
	}
}

func TestInbox(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)

		rooms, err := st.Inbox.Add(ctx, []*store.InboxEvent{
			inboxEvent("$1", "!a:hs", 1), inboxEvent("$2", "!b:hs", 2), inboxEvent("$3", "!a:hs", 3),
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(rooms) != 2 {
			t.Fatalf("new rooms = %v, want !a and !b", rooms)
		}
		// The same events again (a replayed or re-formed transaction) plus one new one.
		rooms, err = st.Inbox.Add(ctx, []*store.InboxEvent{inboxEvent("$3", "!a:hs", 3), inboxEvent("$1", "!a:hs", 1),
			inboxEvent("$4", "!b:hs", 4), inboxEvent("$4", "!b:hs", 4)})
		if err != nil {
			t.Fatal(err)
		}
		if len(rooms) != 1 || rooms[0] != "!b:hs" {
			t.Fatalf("rooms with new events = %v, want only !b:hs", rooms)
		}

		pending, err := st.Inbox.Pending(ctx, "!a:hs", 10)
		if err != nil {
			t.Fatal(err)
		}
		if pendingB, _ := st.Inbox.Pending(ctx, "!b:hs", 10); len(pendingB) != 2 {
			t.Fatalf("pending in !b = %d events, want $2 and $4 once each", len(pendingB))
		}
		if len(pending) != 2 || pending[0].EventID != "$1" || pending[1].EventID != "$3" {
			t.Fatalf("pending in !a = %+v, want $1 then $3 exactly once", pending)
		}
		if string(pending[0].Raw) != `{"event_id":"$1"}` {
			t.Fatalf("raw = %s", pending[0].Raw)
		}

		var first, second bool
		err = st.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
			first, err = st.Inbox.MarkProcessed(ctx, pending[0].Seq, "replied")
			return err
		})
		if err != nil || !first {
			t.Fatalf("first mark = %v, %v", first, err)
		}
		second, err = st.Inbox.MarkProcessed(ctx, pending[0].Seq, "again")
		if err != nil || second {
			t.Fatalf("second mark = %v, %v; want false: an event is processed once", second, err)
		}
		if outcome, _ := st.Inbox.Outcome(ctx, "$1"); outcome != "replied" {
			t.Fatalf("outcome = %q", outcome)
		}
		count, oldest, err := st.Inbox.Backlog(ctx)
		if err != nil || count != 3 || oldest.IsZero() {
			t.Fatalf("backlog = %d %v %v, want 3", count, oldest, err)
		}
		pendingRooms, err := st.Inbox.PendingRooms(ctx)
		if err != nil || len(pendingRooms) != 2 {
			t.Fatalf("pending rooms = %v %v", pendingRooms, err)
		}
	})
}

func TestInboxRollbackKeepsEventPending(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		if _, err := st.Inbox.Add(ctx, []*store.InboxEvent{inboxEvent("$x", "!r:hs", 1)}); err != nil {
			t.Fatal(err)
		}
		pending, _ := st.Inbox.Pending(ctx, "!r:hs", 10)
		_ = st.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
			if _, err := st.Outgoing.Add(ctx, "!r:hs", event.EventMessage, map[string]string{"body": "x"}, "$x"); err != nil {
				return err
			}
			if _, err := st.Inbox.MarkProcessed(ctx, pending[0].Seq, "replied"); err != nil {
				return err
			}
			return context.Canceled // the handler failed after writing: nothing may stay
		})
		if again, _ := st.Inbox.Pending(ctx, "!r:hs", 10); len(again) != 1 {
			t.Fatalf("event not pending after rollback: %v", again)
		}
		if out, _ := st.Outgoing.Pending(ctx, "!r:hs", 10); len(out) != 0 {
			t.Fatalf("outgoing kept after rollback: %v", out)
		}
	})
}

func TestOutgoing(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		s1, err := st.Outgoing.Add(ctx, "!r:hs", event.EventMessage, map[string]string{"body": "one"}, "$c")
		if err != nil {
			t.Fatal(err)
		}
		s2, err := st.Outgoing.Add(ctx, "!r:hs", event.EventReaction, map[string]string{"body": "two"}, "")
		if err != nil || s2 <= s1 {
			t.Fatalf("seqs %d %d %v", s1, s2, err)
		}
		pending, err := st.Outgoing.Pending(ctx, "!r:hs", 10)
		if err != nil || len(pending) != 2 || pending[0].Seq != s1 || pending[1].Type != event.EventReaction ||
			pending[0].CauseEventID != "$c" || string(pending[0].Content) != `{"body":"one"}` {
			t.Fatalf("pending = %+v %v", pending, err)
		}
		if err = st.Outgoing.MarkAttempt(ctx, s1, "timeout"); err != nil {
			t.Fatal(err)
		}
		if err = st.Outgoing.MarkSent(ctx, s1, "$sent"); err != nil {
			t.Fatal(err)
		}
		if err = st.Outgoing.MarkFailed(ctx, s2, "M_FORBIDDEN"); err != nil {
			t.Fatal(err)
		}
		if pending, _ = st.Outgoing.Pending(ctx, "!r:hs", 10); len(pending) != 0 {
			t.Fatalf("still pending: %+v", pending)
		}
		if evtID, _ := st.Outgoing.SentEventID(ctx, s1); evtID != "$sent" {
			t.Fatalf("sent event id = %q", evtID)
		}
	})
}

func TestInstanceIDSurvivesReopen(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		st := open(t, cfg)
		first := st.InstanceID
		_ = st.Close()
		again := open(t, cfg)
		if first == "" || again.InstanceID != first {
			t.Fatalf("instance id %q then %q", first, again.InstanceID)
		}
	})
}

func idRoom(s string) id.RoomID { return id.RoomID(s) }
