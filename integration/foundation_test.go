//go:build goolm

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func TestInviteJoinAndPing(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		startBotOn(t, on.target, nil)
		alice := newUser(t, on.hs, "alice")
		botID := on.target.reg.SenderLocalpart
		botMXID := on.hs.UserID(botID)
		room := roomWithBot(t, alice, botMXID)

		for _, cmd := range []string{"/ping", "!ping"} {
			evtID := alice.Send(room, cmd)
			reply := alice.WaitFor(20*time.Second, "a reply to "+cmd, replyTo(botMXID, evtID))
			if body := reply.Content.AsMessage().Body; !strings.Contains(body, "Pong") {
				t.Errorf("reply to %s = %q, want a pong", cmd, body)
			}
		}
		// Help lists the commands; an unknown command gets a suggestion; plain chat gets nothing.
		helpID := alice.Send(room, "!help")
		help := alice.WaitFor(20*time.Second, "help", replyTo(botMXID, helpID)).Content.AsMessage()
		if !strings.Contains(help.Body, "/ping") || !strings.Contains(help.Body, "/help [<command>]") || strings.Contains(help.Body, "/admin") {
			t.Errorf("help = %q / %q", help.Body, help.FormattedBody)
		}
		chatID := alice.Send(room, "just chatting, no command")
		typoID := alice.Send(room, "!pnig")
		typo := alice.WaitFor(20*time.Second, "typo answer", replyTo(botMXID, typoID)).Content.AsMessage()
		if !strings.Contains(typo.Body, "Did you mean") || !strings.Contains(typo.Body, "/ping") {
			t.Errorf("typo answer = %q", typo.Body)
		}
		if got := alice.Matching(replyTo(botMXID, chatID)); len(got) != 0 {
			t.Errorf("bot answered plain chat: %v", got)
		}
	})
}

// deliverRemoteInvite has a user of homeserver B invite the bot on A and hands the invite to the bot.
//
// NOTSPEC: Dendrite v0.13.8 stores an invite that arrives over federation but never pushes it to appservices (its
// appservice consumer drops OutputTypeNewInviteEvent), so the test delivers that one event itself, exactly as the
// homeserver would have: the event as the inviting server serves it, in a transaction with the hs_token. Everything
// after that — the bot's join or its rejection — goes through the real homeservers and federation.
func deliverRemoteInvite(t *testing.T, bot *botProcess, inviter *user, botMXID id.UserID) id.RoomID {
	t.Helper()
	resp, err := inviter.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{botMXID}})
	if err != nil {
		t.Fatal(err)
	}
	invite := inviter.WaitFor(20*time.Second, "the invite", botMembership(botMXID, resp.RoomID, event.MembershipInvite))
	raw := rawEvent(t, inviter, resp.RoomID, invite.ID)
	body, _ := json.Marshal(map[string]any{"events": []json.RawMessage{raw}})
	if status, out := putTransaction(t, bot, "remote-invite-"+string(invite.ID), bot.reg.ServerToken, body); status != 200 {
		t.Fatalf("delivering the invite: %d %s", status, out)
	}
	return resp.RoomID
}

func TestInviteFromServerNotAllowedIsDeclined(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		bot := startBotOn(t, on.target, nil)
		botMXID := on.hs.UserID(on.target.reg.SenderLocalpart)
		outsider := newUser(t, getWorld(t).hsB, "outsider")
		room := deliverRemoteInvite(t, bot, outsider, botMXID)
		// The rejection carries a reason, but Dendrite's federated rejection does not pass it on to the inviting server.
		outsider.WaitFor(30*time.Second, "the bot declining", botMembership(botMXID, room, event.MembershipLeave))
		if joined := outsider.Matching(botMembership(botMXID, room, event.MembershipJoin)); len(joined) != 0 {
			t.Fatalf("bot joined a room of a server that is not allowed")
		}
	})
}

func TestInviteFromAllowedSecondServerIsAccepted(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		w := getWorld(t)
		bot := startBotOn(t, on.target, map[string]any{"allowed_servers": []string{on.hs.Domain(), w.hsB.ServerName}})
		botMXID := on.hs.UserID(on.target.reg.SenderLocalpart)
		remote := newUser(t, getWorld(t).hsB, "remote")
		room := deliverRemoteInvite(t, bot, remote, botMXID)
		remote.WaitFor(30*time.Second, "the bot joining over federation", botMembership(botMXID, room, event.MembershipJoin))
		evtID := remote.Send(room, "!ping")
		remote.WaitFor(30*time.Second, "a reply over federation", replyTo(botMXID, evtID))
	})
}

// putTransaction sends a transaction to the bot as the homeserver would.
func putTransaction(t *testing.T, bot *botProcess, txnID, token string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, bot.URL()+"/_matrix/app/v1/transactions/"+txnID, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.String()
}

// rawEvent fetches an event from the homeserver in the shape the bot receives it.
func rawEvent(t *testing.T, u *user, roomID id.RoomID, eventID id.EventID) json.RawMessage {
	t.Helper()
	var raw json.RawMessage
	_, err := u.MakeRequest(context.Background(), http.MethodGet, u.BuildClientURL("v3", "rooms", roomID, "event", eventID), nil, &raw)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestTransactionEndpointRejectsBadRequests(t *testing.T) {
	bot := startBot(t, map[string]any{"appservice": map[string]any{"max_body_bytes": 4096}})
	body := []byte(`{"events":[]}`)
	tests := []struct {
		name   string
		token  string
		body   []byte
		status int
		code   string
	}{
		{name: "no token", token: "", body: body, status: 401, code: "M_UNAUTHORIZED"},
		{name: "wrong token", token: "wrong-" + bot.reg.ServerToken, body: body, status: 403, code: "M_FORBIDDEN"},
		{name: "as_token instead of hs_token", token: bot.reg.AppToken, body: body, status: 403, code: "M_FORBIDDEN"},
		{name: "malformed JSON", token: bot.reg.ServerToken, body: []byte(`{"events":[`), status: 400, code: "M_NOT_JSON"},
		{name: "oversized", token: bot.reg.ServerToken, body: []byte(`{"events":[],"pad":"` + strings.Repeat("x", 5000) + `"}`), status: 413, code: "M_TOO_LARGE"},
		{name: "valid empty", token: bot.reg.ServerToken, body: body, status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, resp := putTransaction(t, bot, "bad-"+strings.ReplaceAll(tt.name, " ", "-"), tt.token, tt.body)
			if status != tt.status || (tt.code != "" && !strings.Contains(resp, tt.code)) {
				t.Fatalf("status %d body %s; want %d %s", status, resp, tt.status, tt.code)
			}
		})
	}
	// Valid traffic still flows after the bad requests.
	alice := newUser(t, bot.w.hsA, "alice")
	botMXID := id.NewUserID(bot.reg.SenderLocalpart, bot.w.hsA.ServerName)
	room := roomWithBot(t, alice, botMXID)
	evtID := alice.Send(room, "!ping")
	alice.WaitFor(20*time.Second, "a reply after bad requests", replyTo(botMXID, evtID))
}

func TestReplayedAndReformedTransactionsReplyOnce(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		bot := startBotOn(t, on.target, nil)
		alice := newUser(t, on.hs, "alice")
		botMXID := on.hs.UserID(on.target.reg.SenderLocalpart)
		room := roomWithBot(t, alice, botMXID)
		pingID := alice.Send(room, "!ping")
		alice.WaitFor(20*time.Second, "the first reply", replyTo(botMXID, pingID))

		raw := rawEvent(t, alice, room, pingID)
		other := alice.Send(room, "just chat")
		rawOther := rawEvent(t, alice, room, other)
		txn := func(events ...json.RawMessage) []byte {
			data, _ := json.Marshal(map[string]any{"events": events})
			return data
		}
		for i, attempt := range []struct {
			txnID string
			body  []byte
		}{
			{"replay-1", txn(raw)},
			{"replay-1", txn(raw)},             // the same transaction again
			{"reformed-2", txn(rawOther, raw)}, // re-formed: new txnId, other order, another event
			{"reformed-3", txn(raw, raw, raw)}, // duplicates within one transaction
		} {
			if status, resp := putTransaction(t, bot, attempt.txnID, bot.reg.ServerToken, attempt.body); status != 200 {
				t.Fatalf("attempt %d: status %d %s", i, status, resp)
			}
		}
		// Events of a room are processed in order: once a later command is answered, any duplicate answer to the
		// replayed ping would have been sent already.
		marker := alice.Send(room, "!ping")
		alice.WaitFor(20*time.Second, "the marker reply", replyTo(botMXID, marker))
		if replies := alice.Matching(replyTo(botMXID, pingID)); len(replies) != 1 {
			t.Fatalf("%d replies to the replayed ping, want exactly 1", len(replies))
		}
	})
}

// TestKilledAfterAcknowledgingRepliesOnceAfterRestart kills caseroom (SIGKILL) at the two points where a crash
// could lose or double a reply: after the transaction was acknowledged but before it was processed, and after the
// reply was stored but before it was sent.
func TestKilledAfterAcknowledgingRepliesOnceAfterRestart(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		for _, fault := range []string{"CASEROOM_FAULT_HOLD_PROCESSING=1", "CASEROOM_FAULT_HOLD_SENDING=1"} {
			t.Run(strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(fault, "CASEROOM_FAULT_"), "=1")), func(t *testing.T) {
				bot := startBotOn(t, on.target, nil)
				alice := newUser(t, on.hs, "alice")
				botMXID := on.hs.UserID(on.target.reg.SenderLocalpart)
				room := roomWithBot(t, alice, botMXID)
				bot.stop()
				bot.start(fault)

				pingID := alice.Send(room, "!ping")
				db := bot.db()
				query := "SELECT COUNT(*) FROM inbox WHERE event_id = $1"
				if strings.Contains(fault, "SENDING") {
					query = "SELECT COUNT(*) FROM outgoing WHERE cause_event_id = $1 AND sent_at IS NULL"
				}
				deadline := time.Now().Add(20 * time.Second)
				for {
					var n int
					if err := db.QueryRow(query, pingID).Scan(&n); err == nil && n == 1 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("the ping never reached the crash point (%s)", fault)
					}
					time.Sleep(20 * time.Millisecond)
				}
				bot.kill()
				if replies := alice.Matching(replyTo(botMXID, pingID)); len(replies) != 0 {
					t.Fatalf("reply sent before the crash point")
				}
				bot.start()
				alice.WaitFor(20*time.Second, "the reply after restart", replyTo(botMXID, pingID))
				marker := alice.Send(room, "!ping")
				alice.WaitFor(20*time.Second, "the marker reply", replyTo(botMXID, marker))
				if replies := alice.Matching(replyTo(botMXID, pingID)); len(replies) != 1 {
					t.Fatalf("%d replies to the ping across the crash, want exactly 1", len(replies))
				}
			})
		}
	})
}

func TestBotLeavesCleanlyWhenKicked(t *testing.T) {
	// Dendrite only for now: on Synapse 1.163.2 the bot, invited back after the kick, rejoins, but Synapse then pushes
	// none of the room's new events to it (seen every time; not understood yet, so not claimed to work there).
	on := onDendrite(t)
	func() {
		bot := startBotOn(t, on.target, nil)
		alice := newUser(t, on.hs, "alice")
		botMXID := on.hs.UserID(on.target.reg.SenderLocalpart)
		room := roomWithBot(t, alice, botMXID)
		if _, err := alice.KickUser(context.Background(), room, &mautrix.ReqKickUser{UserID: botMXID, Reason: "testing"}); err != nil {
			t.Fatal(err)
		}
		kick, err := alice.SendText(context.Background(), room, "!ping")
		if err != nil {
			t.Fatal(err)
		}
		// The bot is no longer in the room: it receives nothing from it, and records the removal.
		db := bot.db()
		deadline := time.Now().Add(20 * time.Second)
		for {
			var outcome string
			err := db.QueryRow(`SELECT outcome FROM inbox WHERE room_id = $1 AND event_type = 'm.room.member' AND outcome = 'removed'`, room).Scan(&outcome)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("kick not recorded: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		// Inviting it again works: the bot rejoins and answers.
		if _, err := alice.InviteUser(context.Background(), room, &mautrix.ReqInviteUser{UserID: botMXID}); err != nil {
			t.Fatal(err)
		}
		evtID := waitForRejoinAndPing(t, alice, room, botMXID)
		if replies := alice.Matching(replyTo(botMXID, kick.EventID)); len(replies) != 0 {
			t.Errorf("bot answered a command sent while it was not in the room")
		}
		_ = evtID
	}()
}

func waitForRejoinAndPing(t *testing.T, u *user, room id.RoomID, botMXID id.UserID) id.EventID {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		joins := u.Matching(botMembership(botMXID, room, event.MembershipJoin))
		if len(joins) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bot did not rejoin (%d joins seen)", len(joins))
		}
		time.Sleep(50 * time.Millisecond)
	}
	evtID := u.Send(room, "!ping")
	u.WaitFor(20*time.Second, fmt.Sprintf("reply to %s after rejoin", evtID), replyTo(botMXID, evtID))
	return evtID
}
