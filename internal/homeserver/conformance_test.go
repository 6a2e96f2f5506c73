package homeserver_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/dendrite"
	"github.com/caseroom/caseroom/internal/homeserver"
	"github.com/caseroom/caseroom/internal/synapse"
	"github.com/caseroom/caseroom/internal/testdb"
)

// options are what the tests here ask of every homeserver.
type options struct {
	dir           string
	registrations []string
	federation    bool
}

// implementations start each homeserver the tests run on; an error means it is not available here.
var implementations = []struct {
	name  string
	start func(ctx context.Context, opts options) (homeserver.Server, error)
}{
	{"dendrite", func(ctx context.Context, opts options) (homeserver.Server, error) {
		return dendrite.Start(ctx, dendrite.Options{Dir: opts.dir, AppServiceRegistrations: opts.registrations, PersistentJetStream: true,
			Federation: opts.federation})
	}},
	{"synapse", func(ctx context.Context, opts options) (homeserver.Server, error) {
		return synapse.Start(ctx, synapse.Options{Dir: opts.dir, AppServiceRegistrations: opts.registrations, Federation: opts.federation})
	}},
}

// forEachHomeserver runs fn as a subtest per homeserver implementation, the way testdb.ForEach runs per database.
// A homeserver that cannot be installed or started fails the subtest when CI is set and skips it otherwise.
func forEachHomeserver(t *testing.T, fn func(t *testing.T, start func(opts options) homeserver.Server)) {
	for _, impl := range implementations {
		t.Run(impl.name, func(t *testing.T) {
			fn(t, func(opts options) homeserver.Server {
				t.Helper()
				if opts.dir == "" {
					opts.dir = t.TempDir()
				}
				// The first start may install the homeserver (a Dendrite build or a Synapse pip install).
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				defer cancel()
				srv, err := impl.start(ctx, opts)
				if err != nil {
					testdb.Unavailable(t, err)
				}
				t.Cleanup(srv.Stop)
				return srv
			})
		})
	}
}

func testContext(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

func mustRegister(ctx context.Context, t *testing.T, srv homeserver.Server, localpart string, admin bool) *mautrix.Client {
	t.Helper()
	cli, err := srv.RegisterUser(ctx, localpart, localpart+"-password", admin)
	if err != nil {
		t.Fatalf("RegisterUser(%s): %v", localpart, err)
	}
	if cli.UserID != srv.UserID(localpart) || cli.AccessToken == "" || cli.DeviceID == "" {
		t.Fatalf("RegisterUser(%s) gave user %q, device %q, token set %v", localpart, cli.UserID, cli.DeviceID, cli.AccessToken != "")
	}
	return cli
}

// waitForMessage syncs cli until a message with body shows up in roomID, and returns it.
func waitForMessage(ctx context.Context, t *testing.T, cli *mautrix.Client, roomID id.RoomID, body string) *event.Event {
	t.Helper()
	var since string
	for {
		resp, err := cli.SyncRequest(ctx, 1000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("sync as %s while waiting for %q: %v", cli.UserID, body, err)
		}
		since = resp.NextBatch
		if room, ok := resp.Rooms.Join[roomID]; ok {
			for _, evt := range room.Timeline.Events {
				if evt.Type == event.EventMessage && evt.Content.Raw["body"] == body {
					return evt
				}
			}
		}
	}
}

// sendAndReceive has sender create a room, invite receiver, and checks that receiver joins and sees a message. The
// room is of version 10, the newest Dendrite v0.13.8 supports (Synapse's default, 12, is refused by Dendrite).
func sendAndReceive(ctx context.Context, t *testing.T, sender, receiver *mautrix.Client) {
	t.Helper()
	room, err := sender.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{receiver.UserID}, RoomVersion: "10"})
	if err != nil {
		t.Fatalf("CreateRoom: %v", err)
	}
	// Over federation Dendrite joins through the inviter's server (it ignores ?via=, reading only ?server_name=).
	if _, err = receiver.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatalf("join %s as %s: %v", room.RoomID, receiver.UserID, err)
	}
	const body = "hello from caseroom"
	sent, err := sender.SendText(ctx, room.RoomID, body)
	if err != nil {
		t.Fatalf("SendText: %v", err)
	}
	got := waitForMessage(ctx, t, receiver, room.RoomID, body)
	if got.ID != sent.EventID || got.Sender != sender.UserID {
		t.Fatalf("received event %s from %s, want %s from %s", got.ID, got.Sender, sent.EventID, sender.UserID)
	}
}

func TestMessageRoundTrip(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, start func(options) homeserver.Server) {
		srv := start(options{})
		ctx := testContext(t, 30*time.Second)
		url := srv.HomeserverURL()
		if !strings.HasPrefix(url, "http://127.0.0.1:") || srv.Domain() != "localhost:"+url[len("http://127.0.0.1:"):] {
			t.Fatalf("URL %q and server name %q do not match the defaults", url, srv.Domain())
		}
		alice := mustRegister(ctx, t, srv, "alice", false)
		bob := mustRegister(ctx, t, srv, "bob", false)
		sendAndReceive(ctx, t, alice, bob)
	})
}

func TestRestartKeepsData(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, start func(options) homeserver.Server) {
		dir := t.TempDir()
		srv := start(options{dir: dir})
		ctx := testContext(t, 90*time.Second)
		admin := mustRegister(ctx, t, srv, "admin", true)
		mustRegister(ctx, t, srv, "carol", false)
		url := srv.HomeserverURL()

		if err := srv.Restart(ctx); err != nil {
			t.Fatalf("Restart: %v", err)
		}
		if srv.HomeserverURL() != url {
			t.Fatalf("URL changed across restart: %s -> %s", url, srv.HomeserverURL())
		}
		if _, err := srv.Login(ctx, "carol", "carol-password"); err != nil {
			t.Fatalf("login after restart: %v", err)
		}
		if resp, err := admin.Whoami(ctx); err != nil || resp.UserID != admin.UserID {
			t.Fatalf("access token from before the restart: whoami = %+v, %v", resp, err)
		}

		// Stop and Kill are idempotent, and a start on the same directory reuses the config and data.
		srv.Stop()
		srv.Kill()
		srv.Stop()
		again := start(options{dir: dir})
		if again.Domain() != srv.Domain() {
			t.Fatalf("server %q after a start on the same directory, want %q", again.Domain(), srv.Domain())
		}
		if _, err := again.Login(ctx, "carol", "carol-password"); err != nil {
			t.Fatalf("login after a start on the same directory: %v", err)
		}
	})
}

// transactionRecorder is a minimal appservice endpoint that records the events pushed to it.
type transactionRecorder struct {
	hsToken string
	mu      sync.Mutex
	events  []*event.Event
	got     chan struct{}
	// failFirst answers that many transactions with 500 before accepting any; every attempt is kept in attempts.
	failFirst int
	attempts  []attempt
}

// attempt is one transaction the homeserver pushed: its ID and the IDs of its events.
type attempt struct {
	txnID    string
	eventIDs []id.EventID
	accepted bool
}

func (rec *transactionRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+rec.hsToken {
		http.Error(w, `{"errcode":"M_FORBIDDEN"}`, http.StatusForbidden)
		return
	}
	var txn struct {
		Events []*event.Event `json:"events"`
	}
	if err := json.NewDecoder(r.Body).Decode(&txn); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rec.mu.Lock()
	a := attempt{txnID: strings.TrimPrefix(r.URL.Path, "/_matrix/app/v1/transactions/"), accepted: rec.failFirst <= 0}
	for _, evt := range txn.Events {
		a.eventIDs = append(a.eventIDs, evt.ID)
	}
	rec.attempts = append(rec.attempts, a)
	if !a.accepted {
		rec.failFirst--
		rec.mu.Unlock()
		http.Error(w, `{"errcode":"M_UNKNOWN","error":"failing on purpose"}`, http.StatusInternalServerError)
		return
	}
	rec.events = append(rec.events, txn.Events...)
	rec.mu.Unlock()
	select {
	case rec.got <- struct{}{}:
	default:
	}
	_, _ = w.Write([]byte("{}"))
}

func (rec *transactionRecorder) find(match func(*event.Event) bool) bool {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, evt := range rec.events {
		if match(evt) {
			return true
		}
	}
	return false
}

// startWithAppService starts a homeserver with an appservice registered whose endpoint is rec, and returns the
// homeserver and a client of the appservice's bot user (caseroom_bot).
func startWithAppService(t *testing.T, start func(options) homeserver.Server, rec *transactionRecorder, opts options) (homeserver.Server, *mautrix.Client) {
	t.Helper()
	const asToken = "as-token-for-test"
	listener := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/transactions/") && r.Method == http.MethodPut {
			rec.ServeHTTP(w, r)
			return
		}
		http.Error(w, `{"errcode":"M_UNRECOGNIZED"}`, http.StatusNotFound)
	}))
	t.Cleanup(listener.Close)

	registration := "id: caseroom\nurl: " + listener.URL + "\nas_token: " + asToken + "\nhs_token: " + rec.hsToken + `
sender_localpart: caseroom_bot
rate_limited: false
namespaces:
  users:
  - regex: '^@caseroom_.*:.*$'
    exclusive: true
  aliases: []
  rooms: []
`
	regPath := filepath.Join(t.TempDir(), "registration.yaml")
	if err := os.WriteFile(regPath, []byte(registration), 0o600); err != nil {
		t.Fatal(err)
	}
	opts.registrations = []string{regPath}
	srv := start(opts)
	bot, err := mautrix.NewClient(srv.HomeserverURL(), srv.UserID("caseroom_bot"), asToken)
	if err != nil {
		t.Fatal(err)
	}
	return srv, bot
}

// waitPushed waits until the appservice was pushed an event that matches.
func (rec *transactionRecorder) waitPushed(ctx context.Context, t *testing.T, what string, match func(*event.Event) bool) {
	t.Helper()
	for !rec.find(match) {
		select {
		case <-rec.got:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			t.Fatalf("the appservice was not sent %s: %v", what, ctx.Err())
		}
	}
}

func TestAppServiceRegistration(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, start func(options) homeserver.Server) {
		rec := &transactionRecorder{hsToken: "hs-token-for-test", got: make(chan struct{}, 1)}
		srv, bot := startWithAppService(t, start, rec, options{})
		ctx := testContext(t, 30*time.Second)

		// The homeserver knows the sender's account, with the as_token as its access token.
		if resp, err := bot.Whoami(ctx); err != nil || resp.UserID != srv.UserID("caseroom_bot") {
			t.Fatalf("whoami with the as_token = %+v, %v", resp, err)
		}
		alice := mustRegister(ctx, t, srv, "alice", false)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bot.UserID}})
		if err != nil {
			t.Fatalf("CreateRoom: %v", err)
		}
		rec.waitPushed(ctx, t, "the invite of "+bot.UserID.String(), func(evt *event.Event) bool {
			return evt.RoomID == room.RoomID && evt.Type == event.StateMember &&
				evt.GetStateKey() == bot.UserID.String() && evt.Content.Raw["membership"] == "invite"
		})
	})
}

// TestAppServiceRetriesAndRedactions pins down what the homeservers do that caseroom depends on (README, homeserver
// notes): how a transaction the appservice refused is sent again, and whether redactions are pushed.
func TestAppServiceRetriesAndRedactions(t *testing.T) {
	// Both send the refused transaction again as it was, under the same ID (Dendrite was also seen re-forming a
	// batch under a new ID after longer outages, which caseroom's dedupe by event ID covers).
	sameTxnIDOnRetry := map[string]bool{"dendrite": true, "synapse": true}
	pushesRedactions := map[string]bool{"dendrite": false, "synapse": true}
	forEachHomeserver(t, func(t *testing.T, start func(options) homeserver.Server) {
		impl := t.Name()[strings.LastIndex(t.Name(), "/")+1:]
		rec := &transactionRecorder{hsToken: "hs-token-for-test", got: make(chan struct{}, 1), failFirst: 1}
		srv, bot := startWithAppService(t, start, rec, options{})
		ctx := testContext(t, 90*time.Second)
		alice := mustRegister(ctx, t, srv, "alice", false)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bot.UserID}})
		if err != nil {
			t.Fatalf("CreateRoom: %v", err)
		}
		// The first transaction is refused; while the homeserver waits to send it again, another event happens.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			rec.mu.Lock()
			n := len(rec.attempts)
			rec.mu.Unlock()
			if n > 0 {
				break
			} else if time.Now().After(deadline) {
				t.Fatal("the homeserver pushed no transaction")
			}
		}
		if _, err = alice.SendStateEvent(ctx, room.RoomID, event.StateTopic, "", &event.TopicEventContent{Topic: "meanwhile"}); err != nil {
			t.Fatal(err)
		}
		rec.waitPushed(ctx, t, "the invite after the refused transaction", func(evt *event.Event) bool {
			return evt.RoomID == room.RoomID && evt.Type == event.StateMember && evt.GetStateKey() == bot.UserID.String()
		})
		rec.mu.Lock()
		refused, retry := rec.attempts[0], rec.attempts[1]
		rec.mu.Unlock()
		if refused.accepted || !retry.accepted {
			t.Fatalf("attempts: %+v", rec.attempts)
		}
		if got := refused.txnID == retry.txnID && slices.Equal(refused.eventIDs, retry.eventIDs); got != sameTxnIDOnRetry[impl] {
			t.Errorf("%s: the transaction sent again after a refusal has the same ID: %v (refused %s %v, next %s %v)",
				impl, got, refused.txnID, refused.eventIDs, retry.txnID, retry.eventIDs)
		}

		if _, err = bot.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatalf("the bot could not join: %v", err)
		}
		first, err := alice.SendText(ctx, room.RoomID, "to be deleted")
		if err != nil {
			t.Fatal(err)
		}
		redaction, err := alice.RedactEvent(ctx, room.RoomID, first.EventID)
		if err != nil {
			t.Fatal(err)
		}
		marker, err := alice.SendText(ctx, room.RoomID, "after the deletion")
		if err != nil {
			t.Fatal(err)
		}
		rec.waitPushed(ctx, t, "the message after the deletion", func(evt *event.Event) bool { return evt.ID == marker.EventID })
		if got := rec.find(func(evt *event.Event) bool { return evt.ID == redaction.EventID }); got != pushesRedactions[impl] {
			t.Errorf("%s: the redaction was pushed: %v", impl, got)
		}
	})
}

// TestDendriteFederation: two Dendrites federate over loopback TLS.
func TestDendriteFederation(t *testing.T) {
	ctx := testContext(t, 10*time.Minute)
	toolsDir, err := homeserver.DefaultToolsDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err = dendrite.EnsureBinaries(ctx, toolsDir); err != nil {
		testdb.Unavailable(t, err)
	}
	a, b, err := dendrite.StartPair(ctx, t.TempDir(), t.TempDir(), nil, nil)
	if err != nil {
		testdb.Unavailable(t, err)
	}
	t.Cleanup(a.Stop)
	t.Cleanup(b.Stop)
	alice := mustRegister(ctx, t, a, "alice", false)
	bob := mustRegister(ctx, t, b, "bob", false)
	if bob.UserID != id.UserID("@bob:"+b.ServerName) || !strings.HasPrefix(b.ServerName, "localhost:") {
		t.Fatalf("unexpected user ID %s on server %s", bob.UserID, b.ServerName)
	}
	sendAndReceive(ctx, t, alice, bob)
	if t.Failed() {
		t.Logf("server A log:\n%s\nserver B log:\n%s", a.LogTail(40), b.LogTail(40))
	}
}

// TestSynapseDendriteFederation: a Synapse and a Dendrite federate over loopback TLS, both ways, and Synapse pushes
// an invite that arrives over federation to its appservice (Dendrite does not: see the integration tests).
func TestSynapseDendriteFederation(t *testing.T) {
	ctx := testContext(t, 10*time.Minute)
	den, err := dendrite.Start(ctx, dendrite.Options{Dir: t.TempDir(), Federation: true})
	if err != nil {
		testdb.Unavailable(t, err)
	}
	t.Cleanup(den.Stop)
	rec := &transactionRecorder{hsToken: "hs-token-for-test", got: make(chan struct{}, 1)}
	var syn homeserver.Server
	var asBot *mautrix.Client
	for _, impl := range implementations {
		if impl.name == "synapse" {
			syn, asBot = startWithAppService(t, func(opts options) homeserver.Server {
				srv, err := impl.start(ctx, opts)
				if err != nil {
					testdb.Unavailable(t, err)
				}
				t.Cleanup(srv.Stop)
				return srv
			}, rec, options{dir: t.TempDir(), federation: true})
		}
	}
	if s := syn.(*synapse.Server); !strings.HasPrefix(s.ServerName, "localhost:") || s.FederationURL == "" ||
		!strings.HasSuffix(s.FederationURL, s.ServerName[len("localhost"):]) {
		t.Fatalf("synapse server name %q, federation URL %s", s.ServerName, s.FederationURL)
	}
	alice := mustRegister(ctx, t, syn, "alice", false)
	bob := mustRegister(ctx, t, den, "bob", false)
	sendAndReceive(ctx, t, alice, bob) // a Synapse room, joined over federation from Dendrite
	sendAndReceive(ctx, t, bob, alice) // and a Dendrite room joined from Synapse

	room, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{asBot.UserID}, RoomVersion: "10"})
	if err != nil {
		t.Fatalf("CreateRoom inviting the appservice's bot over federation: %v", err)
	}
	rec.waitPushed(ctx, t, "the invite that came over federation", func(evt *event.Event) bool {
		return evt.RoomID == room.RoomID && evt.Type == event.StateMember && evt.GetStateKey() == asBot.UserID.String() &&
			evt.Content.Raw["membership"] == "invite"
	})
	if t.Failed() {
		t.Logf("synapse log:\n%s\ndendrite log:\n%s", syn.LogTail(60), den.LogTail(40))
	}
}
