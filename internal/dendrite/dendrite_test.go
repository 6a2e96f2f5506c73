package dendrite

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// requireOrSkip fails the test on err when CI is set, and skips it otherwise: Dendrite is required in CI, while
// a developer without the binaries (or a network to build them) can still run the other tests.
func requireOrSkip(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("Dendrite is required in CI: %v", err)
	}
	t.Skipf("Dendrite unavailable (set CI to make this fail): %v", err)
}

// testBinaries installs (or finds) the Dendrite binaries.
func testBinaries(t *testing.T) Binaries {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	toolsDir, err := DefaultToolsDir()
	requireOrSkip(t, err)
	bins, err := EnsureBinaries(ctx, toolsDir)
	requireOrSkip(t, err)
	return bins
}

// startServer starts a Dendrite in a temporary directory and stops it when the test ends.
func startServer(t *testing.T, opts Options) *Server {
	t.Helper()
	opts.Binaries = testBinaries(t)
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := Start(ctx, opts)
	requireOrSkip(t, err)
	t.Cleanup(srv.Stop)
	return srv
}

func testContext(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

func mustRegister(ctx context.Context, t *testing.T, srv *Server, localpart string, admin bool) *mautrix.Client {
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

// sendAndReceive has sender create a room, invite receiver, and checks that receiver joins and sees a message.
func sendAndReceive(ctx context.Context, t *testing.T, sender, receiver *mautrix.Client) {
	t.Helper()
	room, err := sender.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{receiver.UserID}})
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
	srv := startServer(t, Options{})
	ctx := testContext(t, 20*time.Second)
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") || srv.ServerName != "localhost:"+srv.URL[len("http://127.0.0.1:"):] {
		t.Fatalf("URL %q and server name %q do not match the defaults", srv.URL, srv.ServerName)
	}
	alice := mustRegister(ctx, t, srv, "alice", false)
	bob := mustRegister(ctx, t, srv, "bob", false)
	sendAndReceive(ctx, t, alice, bob)
}

func TestRestartKeepsData(t *testing.T) {
	srv := startServer(t, Options{PersistentJetStream: true})
	ctx := testContext(t, 30*time.Second)
	admin := mustRegister(ctx, t, srv, "admin", true)
	mustRegister(ctx, t, srv, "carol", false)
	url := srv.URL

	if err := srv.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if srv.URL != url {
		t.Fatalf("URL changed across restart: %s -> %s", url, srv.URL)
	}
	if _, err := srv.Login(ctx, "carol", "carol-password"); err != nil {
		t.Fatalf("login after restart: %v", err)
	}
	if resp, err := admin.Whoami(ctx); err != nil || resp.UserID != admin.UserID {
		t.Fatalf("access token from before the restart: whoami = %+v, %v", resp, err)
	}

	if err := ResetPassword(ctx, admin, srv.UserID("carol"), "carol-new-password"); err != nil {
		t.Fatalf("ResetPassword: %v", err)
	}
	if _, err := srv.Login(ctx, "carol", "carol-new-password"); err != nil {
		t.Fatalf("login with the reset password: %v", err)
	}
	if _, err := srv.Login(ctx, "carol", "carol-password"); err == nil {
		t.Fatal("login with the old password worked after ResetPassword")
	}

	// Stop and Kill are idempotent, and Start on the same directory reuses the config and data.
	srv.Stop()
	srv.Kill()
	srv.Stop()
	again, err := Start(ctx, Options{Dir: srv.Dir, Binaries: srv.bins})
	if err != nil {
		t.Fatalf("Start on an existing directory: %v", err)
	}
	t.Cleanup(again.Stop)
	if again.ServerName != srv.ServerName {
		t.Fatalf("server name %q after Start on the same directory, want %q", again.ServerName, srv.ServerName)
	}
	if _, err := again.Login(ctx, "carol", "carol-new-password"); err != nil {
		t.Fatalf("login after Start on the same directory: %v", err)
	}
}

// transactionRecorder is a minimal appservice endpoint that records the events pushed to it.
type transactionRecorder struct {
	hsToken string
	mu      sync.Mutex
	events  []*event.Event
	got     chan struct{}
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

func TestAppServiceRegistration(t *testing.T) {
	const asToken, hsToken = "as-token-for-test", "hs-token-for-test"
	rec := &transactionRecorder{hsToken: hsToken, got: make(chan struct{}, 1)}
	listener := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/transactions/") && r.Method == http.MethodPut {
			rec.ServeHTTP(w, r)
			return
		}
		http.Error(w, `{"errcode":"M_UNRECOGNIZED"}`, http.StatusNotFound)
	}))
	t.Cleanup(listener.Close)

	registration := "id: caseroom\nurl: " + listener.URL + "\nas_token: " + asToken + "\nhs_token: " + hsToken + `
sender_localpart: caseroom_bot
rate_limited: false
namespaces:
  users:
  - regex: '^@caseroom_.*:.*$'
    exclusive: true
`
	regPath := filepath.Join(t.TempDir(), "registration.yaml")
	if err := os.WriteFile(regPath, []byte(registration), 0o600); err != nil {
		t.Fatal(err)
	}

	srv := startServer(t, Options{AppServiceRegistrations: []string{regPath}})
	ctx := testContext(t, 20*time.Second)

	// Dendrite creates the sender's account at start-up, with the as_token as its access token.
	bot, err := mautrix.NewClient(srv.URL, srv.UserID("caseroom_bot"), asToken)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := bot.Whoami(ctx); err != nil || resp.UserID != srv.UserID("caseroom_bot") {
		t.Fatalf("whoami with the as_token = %+v, %v", resp, err)
	}

	alice := mustRegister(ctx, t, srv, "alice", false)
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bot.UserID}})
	if err != nil {
		t.Fatalf("CreateRoom: %v", err)
	}
	invited := func(evt *event.Event) bool {
		return evt.RoomID == room.RoomID && evt.Type == event.StateMember &&
			evt.GetStateKey() == bot.UserID.String() && evt.Content.Raw["membership"] == "invite"
	}
	for !rec.find(invited) {
		select {
		case <-rec.got:
		case <-ctx.Done():
			t.Fatalf("the appservice was not sent the invite of %s: %v", bot.UserID, ctx.Err())
		}
	}
}

func TestFederation(t *testing.T) {
	testBinaries(t)
	ctx := testContext(t, 40*time.Second)
	a, b, err := StartPair(ctx, t.TempDir(), t.TempDir(), nil, nil)
	requireOrSkip(t, err)
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
