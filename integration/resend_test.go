//go:build goolm

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/homeserver"
)

// sendCutter is a loopback proxy between caseroom and the homeserver. It forwards every request, except that, once
// armed, it takes the bot's next send of a queued message (transaction ID caseroom.<instance>.<seq>) and puts it into
// the homeserver the way a crash of the bot does: the request reaches Dendrite's SendEvents and the client's
// connection goes away before Dendrite answers. Dendrite then sends the event but fails the request ("SendEvents
// failed ... context canceled") and does not remember the transaction ID. The bot's own request is held unanswered,
// so that the test can kill the bot while it waits.
type sendCutter struct {
	t     *testing.T
	hs    homeserver.Server
	URL   string
	proxy *httputil.ReverseProxy

	mu    sync.Mutex
	armed bool
	sent  func() bool
	cuts  chan cutSend
}

// cutSend is what became of an armed send: reached is set when Dendrite's log shows the send failed inside
// SendEvents because the client went away and the message arrived in the room all the same (the event was sent, the
// transaction ID forgotten).
type cutSend struct {
	txnID   string
	reached bool
	outcome string
}

func startSendCutter(t *testing.T, hs homeserver.Server) *sendCutter {
	t.Helper()
	target, err := url.Parse(hs.HomeserverURL())
	if err != nil {
		t.Fatal(err)
	}
	c := &sendCutter{t: t, hs: hs, proxy: httputil.NewSingleHostReverseProxy(target), cuts: make(chan cutSend, 1)}
	c.proxy.FlushInterval = -1
	srv := httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(srv.Close)
	c.URL = srv.URL
	return c
}

// arm makes the cutter take the bot's next queued-message send. sent tells whether the message has arrived in the
// room (as another member sees it): a request cut too early in SendEvents fails without sending anything.
func (c *sendCutter) arm(sent func() bool) {
	c.mu.Lock()
	c.armed, c.sent = true, sent
	c.mu.Unlock()
}

func (c *sendCutter) serve(w http.ResponseWriter, r *http.Request) {
	txnID := ""
	if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/send/") {
		last := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		if strings.HasPrefix(last, "caseroom.") && !strings.Contains(last, ".now.") {
			txnID = last
		}
	}
	c.mu.Lock()
	take, sent := c.armed && txnID != "", c.sent
	if take {
		c.armed = false
	}
	c.mu.Unlock()
	if !take {
		c.proxy.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	cut := c.cut(r, body, txnID, sent)
	c.cuts <- cut
	if cut.reached {
		// The bot waits for an answer that never comes; the test kills it.
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
		return
	}
	// Not cut where intended: forward the request as it is, so that the bot carries on.
	r.Body = io.NopCloser(bytes.NewReader(body))
	c.proxy.ServeHTTP(w, r)
}

// cut sends the request to the homeserver again and again, each time dropping the connection a little later, until
// one attempt fails inside Dendrite's SendEvents and the message arrives in the room anyway. Attempts dropped
// earlier send nothing (and Dendrite remembers nothing of them). An attempt that completes means the window was
// missed.
func (c *sendCutter) cut(r *http.Request, body []byte, txnID string, sent func() bool) cutSend {
	if c.hs.Implementation() == "synapse" {
		// Synapse finishes a request whose client went away and remembers its transaction ID either way: the
		// send happens, and only the answer is lost, as when the bot dies while it waits for it.
		req, err := http.NewRequestWithContext(r.Context(), r.Method, c.hs.HomeserverURL()+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			return cutSend{txnID: txnID, outcome: err.Error()}
		}
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return cutSend{txnID: txnID, outcome: err.Error()}
		}
		_ = resp.Body.Close()
		return cutSend{txnID: txnID, reached: resp.StatusCode == http.StatusOK,
			outcome: fmt.Sprintf("Synapse sent the message (%d); its answer was withheld from the bot", resp.StatusCode)}
	}
	failures := 0 // lines of the homeserver's log saying a send with the transaction ID failed in SendEvents
	for delay := 500 * time.Microsecond; delay <= 30*time.Millisecond; delay += 500 * time.Microsecond {
		ctx, cancel := context.WithTimeout(context.Background(), delay)
		req, err := http.NewRequestWithContext(ctx, r.Method, c.hs.HomeserverURL()+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			cancel()
			return cutSend{txnID: txnID, outcome: err.Error()}
		}
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			_ = resp.Body.Close()
			return cutSend{txnID: txnID, outcome: fmt.Sprintf("the send completed (%d) within %s", resp.StatusCode, delay)}
		}
		// Dendrite carries on with a request whose client went away until it notices: give it time to log.
		time.Sleep(300 * time.Millisecond)
		n := 0
		for _, line := range c.hsLogFor(txnID) {
			switch {
			case strings.Contains(line, `msg="SendEvents failed"`) && strings.Contains(line, "context canceled"):
				n++
			case strings.Contains(line, `msg="Sent event to roomserver"`):
				return cutSend{txnID: txnID, outcome: fmt.Sprintf("the send completed inside Dendrite within %s", delay)}
			}
		}
		if n == failures {
			continue // dropped before SendEvents: nothing was sent
		}
		failures = n
		// Failed inside SendEvents: the event was queued, or the publishing was cut before it went out.
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if sent() {
				return cutSend{txnID: txnID, reached: true,
					outcome: fmt.Sprintf("cut inside SendEvents after %s; the message was sent", delay)}
			}
		}
	}
	return cutSend{txnID: txnID, outcome: "no attempt reached SendEvents"}
}

// hsLogFor returns the lines of the homeserver's log about requests with the transaction ID.
func (c *sendCutter) hsLogFor(txnID string) []string {
	hsLog, err := os.ReadFile(c.hs.LogFile())
	if err != nil {
		c.t.Errorf("failed to read the homeserver's log: %v", err)
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(hsLog), "\n") {
		if strings.Contains(line, "/"+txnID+`"`) {
			out = append(out, line)
		}
	}
	return out
}

// TestResendAfterKillInsideSendIsNotDuplicated kills caseroom while its send of a reply is inside Dendrite, past the
// point where Dendrite sends the event but before it answers (and remembers the transaction ID). The restarted bot
// must find the reply in the room and record it instead of sending a second copy, in a plain and in an encrypted
// room.
func TestResendAfterKillInsideSendIsNotDuplicated(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		for _, encrypted := range []bool{false, true} {
			name := "plain"
			if encrypted {
				name = "encrypted"
			}
			t.Run(name, func(t *testing.T) {
				cutter := startSendCutter(t, on.hs)
				bot := startBotOn(t, on.target, map[string]any{"homeserver": map[string]any{"url": cutter.URL}})
				alice := newUser(t, on.hs, "alice")
				botID := bot.botID
				var room id.RoomID
				if encrypted {
					room = alice.EncryptedRoomWithBot(botID)
				} else {
					room = roomWithBot(t, alice, botID)
				}
				warm := alice.Send(room, "!ping")
				alice.WaitFor(30*time.Second, "the first reply", replyTo(botID, warm))

				var ping id.EventID
				var cut cutSend
				for try := 1; ; try++ {
					before := len(alice.Matching(botReply(botID)))
					cutter.arm(func() bool { return len(alice.Matching(botReply(botID))) > before })
					ping = alice.Send(room, "!ping")
					select {
					case cut = <-cutter.cuts:
					case <-time.After(30 * time.Second):
						t.Fatal("the bot did not send the reply to the ping")
					}
					if cut.reached {
						t.Logf("try %d: %s", try, cut.outcome)
						break
					}
					t.Logf("try %d missed: %s", try, cut.outcome)
					if try == 3 {
						t.Fatalf("could not cut a send inside Dendrite in %d tries", try)
					}
					alice.WaitFor(30*time.Second, "the reply to a ping whose send was not cut", replyTo(botID, ping))
				}
				bot.kill()
				bot.start()

				// The reply Dendrite sent for the cut request is the one the bot records; no second copy is sent.
				db := bot.db()
				var sentID id.EventID
				deadline := time.Now().Add(30 * time.Second)
				for {
					err := db.QueryRow(`SELECT COALESCE(sent_event_id, '') FROM outgoing WHERE cause_event_id = $1`, ping).Scan(&sentID)
					if err == nil && sentID != "" {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("the reply to the ping was not recorded as sent after the restart (%v)\n%s", err, outgoingFor(t, bot, ping))
					}
					time.Sleep(50 * time.Millisecond)
				}
				marker := alice.Send(room, "!ping")
				alice.WaitFor(30*time.Second, "the marker reply", replyTo(botID, marker))
				replies := alice.Matching(replyTo(botID, ping))
				if len(replies) != 1 || replies[0].ID != sentID {
					t.Fatalf("replies to the ping: %s, want exactly the recorded %s\n%s\nDendrite on %s:\n%s", eventIDs(replies), sentID,
						outgoingFor(t, bot, ping), cut.txnID, strings.Join(cutter.hsLogFor(cut.txnID), "\n"))
				}
				// Dendrite forgot the transaction ID, so the bot must find the reply itself; Synapse answers the
				// resend with the same transaction ID with the event it already sent.
				if on.hs.Implementation() == "dendrite" && !strings.Contains(bot.Log(), "already in the room") {
					t.Error("the bot's log does not say it found the reply already in the room")
				}
			})
		}
	})
}

// botReply matches the bot's notices that reply to something.
func botReply(bot id.UserID) func(*event.Event) bool {
	return func(evt *event.Event) bool {
		if evt.Sender != bot || evt.Type != event.EventMessage {
			return false
		}
		content := evt.Content.AsMessage()
		return content.MsgType == event.MsgNotice && content.RelatesTo.GetReplyTo() != ""
	}
}

// TestDendriteTransactionIDOnlyInSendersSync pins down the homeserver behaviour the bot relies on after a restart:
// Dendrite v0.13.8 returns an event's unsigned.transaction_id in /sync to the session that sent it — a logged-in
// device, or the appservice token (one session for all its requests) — and to nobody else, and never in /messages.
func TestDendriteTransactionIDOnlyInSendersSync(t *testing.T) {
	bot := startBot(t, nil)
	w := bot.w
	ctx := context.Background()
	alice := newUser(t, w.hsA, "alice")
	botID := id.NewUserID(w.reg.SenderLocalpart, w.hsA.ServerName)
	room := roomWithBot(t, alice, botID)
	asClient, err := mautrix.NewClient(w.hsA.URL, botID, w.reg.AppToken)
	if err != nil {
		t.Fatal(err)
	}
	asClient.SetAppServiceUserID = true

	send := func(cli *mautrix.Client, txnID string) id.EventID {
		resp, err := cli.SendMessageEvent(ctx, room, event.EventMessage,
			&event.MessageEventContent{MsgType: event.MsgNotice, Body: "transaction ID probe"}, mautrix.ReqSendEvent{TransactionID: txnID})
		if err != nil {
			t.Fatal(err)
		}
		return resp.EventID
	}
	byAS := send(asClient, "probe.as")
	byAlice := send(alice.Client, "probe.alice")
	time.Sleep(500 * time.Millisecond)

	for _, c := range []struct {
		name string
		cli  *mautrix.Client
		want map[id.EventID]string
	}{
		{"appservice token", asClient, map[id.EventID]string{byAS: "probe.as", byAlice: ""}},
		{"alice's device", alice.Client, map[id.EventID]string{byAS: "", byAlice: "probe.alice"}},
	} {
		synced := transactionIDs(t, c.cli, mautrix.ClientURLPath{"v3", "sync"}, map[string]string{"timeout": "0",
			"filter": `{"room":{"timeline":{"limit":20},"state":{"types":[]}}}`}, room)
		fromMessages := transactionIDs(t, c.cli, mautrix.ClientURLPath{"v3", "rooms", room, "messages"},
			map[string]string{"dir": "b", "limit": "20"}, room)
		for evtID, want := range c.want {
			if got, ok := synced[evtID]; !ok || got != want {
				t.Errorf("%s: /sync gives %s transaction ID %q (in timeline: %t), want %q", c.name, evtID, got, ok, want)
			}
			if got, ok := fromMessages[evtID]; !ok || got != "" {
				t.Errorf("%s: /messages gives %s transaction ID %q (in chunk: %t), want none", c.name, evtID, got, ok)
			}
		}
	}
}

// transactionIDs reads the unsigned transaction IDs of a room's events from a /sync or /messages response.
func transactionIDs(t *testing.T, cli *mautrix.Client, path mautrix.ClientURLPath, query map[string]string, room id.RoomID) map[id.EventID]string {
	t.Helper()
	type evt struct {
		ID       id.EventID `json:"event_id"`
		Unsigned struct {
			TransactionID string `json:"transaction_id"`
		} `json:"unsigned"`
	}
	var resp struct {
		Chunk []evt `json:"chunk"`
		Rooms struct {
			Join map[id.RoomID]struct {
				Timeline struct {
					Events []evt `json:"events"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	var raw json.RawMessage
	if _, err := cli.MakeRequest(context.Background(), http.MethodGet, cli.BuildURLWithQuery(path, query), nil, &raw); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatal(err)
	}
	out := make(map[id.EventID]string)
	for _, e := range append(resp.Chunk, resp.Rooms.Join[room].Timeline.Events...) {
		out[e.ID] = e.Unsigned.TransactionID
	}
	return out
}
