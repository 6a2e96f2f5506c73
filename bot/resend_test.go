package bot

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/config"
	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

func TestOutgoingSeqOf(t *testing.T) {
	for _, tt := range []struct {
		txnID string
		seq   int64
		ok    bool
	}{
		{"caseroom.abc.1", 1, true},
		{"caseroom.abc.123456", 123456, true},
		{"caseroom.abc.now.0011aabb", 0, false}, // SendNow
		{"caseroom.other.5", 0, false},          // another database
		{"caseroom.abc.", 0, false},
		{"caseroom.abc.0", 0, false},
		{"caseroom.abc.-3", 0, false},
		{"caseroom.abc.007", 0, false},
		{"caseroom.abc.5.1", 0, false},
		{"mautrix-go_1700000000_1", 0, false},
		{"", 0, false},
	} {
		seq, ok := outgoingSeqOf("abc", tt.txnID)
		if seq != tt.seq || ok != tt.ok {
			t.Errorf("outgoingSeqOf(%q) = %d, %t; want %d, %t", tt.txnID, seq, ok, tt.seq, tt.ok)
		}
	}
	if _, ok := outgoingSeqOf("", "caseroom..1"); ok {
		t.Error("an empty instance ID matched")
	}
}

func TestSentLookupFilter(t *testing.T) {
	var f struct {
		Presence    struct{ Types *[]string } `json:"presence"`
		AccountData struct{ Types *[]string } `json:"account_data"`
		Room        struct {
			Rooms    []id.RoomID `json:"rooms"`
			Timeline struct {
				Senders []id.UserID `json:"senders"`
				Limit   int         `json:"limit"`
			} `json:"timeline"`
			State       struct{ Types *[]string } `json:"state"`
			Ephemeral   struct{ Types *[]string } `json:"ephemeral"`
			AccountData struct{ Types *[]string } `json:"account_data"`
		} `json:"room"`
	}
	if err := json.Unmarshal([]byte(sentLookupFilter("@bot:hs", []id.RoomID{"!a:hs", "!b:hs"})), &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Room.Rooms) != 2 || f.Room.Rooms[0] != "!a:hs" || len(f.Room.Timeline.Senders) != 1 ||
		f.Room.Timeline.Senders[0] != "@bot:hs" || f.Room.Timeline.Limit != sentLookupLimit {
		t.Errorf("filter = %+v", f)
	}
	for name, types := range map[string]*[]string{"presence": f.Presence.Types, "account_data": f.AccountData.Types,
		"room.state": f.Room.State.Types, "room.ephemeral": f.Room.Ephemeral.Types, "room.account_data": f.Room.AccountData.Types} {
		if types == nil || len(*types) != 0 {
			t.Errorf("%s types = %v, want an empty list (nothing)", name, types)
		}
	}
}

// fakeSync is a homeserver that answers /sync with the bot's timeline events it is given.
type fakeSync struct {
	t      *testing.T
	asTok  string
	botID  id.UserID
	mu     sync.Mutex
	calls  int
	status int // answer with this error status instead, when set
	events map[id.RoomID][]map[string]any
	later  map[id.RoomID][]map[string]any // added to events after the first answer
}

func (f *fakeSync) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path != "/_matrix/client/v3/sync" || r.Method != http.MethodGet {
		f.t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
		return
	}
	f.calls++
	q := r.URL.Query()
	// Without encryption the bot sends with the appservice token as itself: the lookup must be the same session.
	if r.Header.Get("Authorization") != "Bearer "+f.asTok || q.Get("user_id") != f.botID.String() {
		f.t.Errorf("lookup not made as the appservice bot: user_id=%q", q.Get("user_id"))
	}
	// An incremental sync would acknowledge the encryption device's to-device events.
	if q.Get("since") != "" || q.Get("timeout") != "0" || q.Get("filter") == "" {
		f.t.Errorf("lookup is not an immediate initial sync with a filter: %v", q)
	}
	w.Header().Set("Content-Type", "application/json")
	if f.status != 0 {
		w.WriteHeader(f.status)
		_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN","error":"failing on purpose"}`))
		return
	}
	join := map[id.RoomID]any{}
	for roomID, evts := range f.events {
		join[roomID] = map[string]any{"timeline": map[string]any{"events": evts}}
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"next_batch": "s1", "rooms": map[string]any{"join": join}})
	for roomID, evts := range f.later {
		f.events[roomID] = append(f.events[roomID], evts...)
	}
	f.later = nil
}

func (f *fakeSync) set(status int, events, later map[id.RoomID][]map[string]any) {
	f.mu.Lock()
	f.status, f.events, f.later = status, events, later
	f.mu.Unlock()
}

func (f *fakeSync) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func botEvent(evtID string, sender id.UserID, txnID string) map[string]any {
	evt := map[string]any{"event_id": evtID, "sender": sender, "type": "m.room.message", "content": map[string]any{}}
	if txnID != "" {
		evt["unsigned"] = map[string]any{"transaction_id": txnID}
	}
	return evt
}

// TestSettleUnsent runs the look-up of messages queued before a restart against a fake homeserver: a message whose
// transaction ID the bot's event in the room carries is recorded as sent with that event, also when the event shows
// up only a little later; the others stay queued; one lookup serves all rooms, rooms are checked once, rooms with
// only new messages cause no lookup, a transient failure is retried and a permanent one gives up the lookup.
func TestSettleUnsent(t *testing.T) {
	grace := sentLookupGrace
	sentLookupGrace = time.Second
	t.Cleanup(func() { sentLookupGrace = grace })
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := zerolog.Nop().WithContext(context.Background())
		st := openStore(t, cfg)
		fake := &fakeSync{t: t, asTok: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}
		hs := httptest.NewServer(fake)
		t.Cleanup(hs.Close)
		conf, err := config.Parse(fmt.Appendf(nil, `
homeserver: {url: %q, domain: hospital.test}
appservice: {as_token: %q, hs_token: "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh"}
admins: ["@alice:hospital.test"]
encryption: {pickle_key: "pppppppppppppppppppppppppppppppppppppppp"}
`, hs.URL, fake.asTok))
		if err != nil {
			t.Fatal(err)
		}
		b, err := New(conf, st, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		fake.botID = b.BotID()

		queue := func(roomID id.RoomID) int64 {
			seq, err := st.Outgoing.Add(ctx, roomID, event.EventMessage, map[string]string{"body": "x"}, "")
			if err != nil {
				t.Fatal(err)
			}
			return seq
		}
		txn := func(seq int64) string { return fmt.Sprintf("caseroom.%s.%d", st.InstanceID, seq) }
		sentID := func(seq int64) id.EventID {
			evtID, err := st.Outgoing.SentEventID(ctx, seq)
			if err != nil {
				t.Fatal(err)
			}
			return evtID
		}

		inFlight, after := queue("!a:hs"), queue("!a:hs")
		other := queue("!b:hs")
		time.Sleep(5 * time.Millisecond)
		b.Started = time.Now()
		time.Sleep(5 * time.Millisecond)
		newer := queue("!a:hs")
		onlyNew := queue("!c:hs")

		fake.set(http.StatusBadGateway, nil, nil)
		if err = b.settleUnsent(ctx, "!a:hs"); err == nil || !IsTransient(err) {
			t.Fatalf("settle with the homeserver failing = %v, want a transient error", err)
		}
		// The message being sent when the previous run stopped shows up only in the second answer.
		fake.set(0, map[id.RoomID][]map[string]any{
			"!a:hs": {
				botEvent("$old", b.BotID(), ""),
				botEvent("$someone", "@mallory:hospital.test", txn(after)),
				botEvent("$now", b.BotID(), "caseroom."+st.InstanceID+".now.00ff"),
			},
			"!c:hs": {botEvent("$unasked", b.BotID(), txn(onlyNew))},
		}, map[id.RoomID][]map[string]any{
			"!a:hs": {botEvent("$first", b.BotID(), txn(inFlight)), botEvent("$copy", b.BotID(), txn(inFlight))},
		})
		if err = b.settleUnsent(ctx, "!a:hs"); err != nil {
			t.Fatal(err)
		}
		if got := sentID(inFlight); got != "$first" {
			t.Errorf("message sent before the restart recorded as %q, want $first", got)
		}
		for _, seq := range []int64{after, newer} {
			if got := sentID(seq); got != "" {
				t.Errorf("message %d recorded as sent (%s), want it still queued", seq, got)
			}
		}
		// !b's first message never shows up: the lookup is repeated until the grace period after the start ends.
		calls := fake.count()
		if calls < 4 {
			t.Errorf("%d lookups, want one failed, then repeated ones", calls)
		}
		if time.Since(b.Started) < sentLookupGrace {
			t.Errorf("the lookup gave up %s after the start, before the grace period ended", time.Since(b.Started))
		}
		pending, err := st.Outgoing.Pending(ctx, "!a:hs", 10)
		if err != nil || len(pending) != 2 || pending[0].Seq != after || pending[1].Seq != newer {
			t.Fatalf("pending in !a after settling = %v (%v), want %d and %d", pending, err, after, newer)
		}

		// Other rooms use the same lookup; a room is checked once; new messages never cause a lookup.
		for _, roomID := range []id.RoomID{"!b:hs", "!a:hs", "!c:hs", "!b:hs"} {
			if err = b.settleUnsent(ctx, roomID); err != nil {
				t.Fatal(err)
			}
		}
		if n := fake.count(); n != calls {
			t.Errorf("%d more lookups, want none", n-calls)
		}
		if got := sentID(other); got != "" {
			t.Errorf("message not found in its room recorded as sent (%s)", got)
		}
		if got := sentID(onlyNew); got != "" {
			t.Errorf("message queued after the start recorded as sent (%s)", got)
		}

		// A permanent failure gives up the lookup: the messages are sent as they are.
		b2, err := New(conf, st, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		b2.Started = time.Now().Add(time.Second)
		fake.set(http.StatusForbidden, nil, nil)
		if err = b2.settleUnsent(ctx, "!b:hs"); err != nil {
			t.Fatalf("settle with the lookup refused = %v, want no error", err)
		}
		if got := sentID(other); got != "" {
			t.Errorf("message recorded as sent (%s) although the lookup was refused", got)
		}
	})
}
