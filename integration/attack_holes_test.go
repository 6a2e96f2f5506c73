//go:build goolm

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/dendrite"
)

// holesForgedEvent encrypts content as u's device would for room (with the room's current outbound session, which
// the bot already has) and hands it to the bot as a raw appservice transaction with an origin_server_ts of the
// sender's choosing: what a homeserver that lies about the time (over federation, any server) delivers.
func holesForgedEvent(t *testing.T, bot *botProcess, u *user, room id.RoomID, content *event.MessageEventContent, ts time.Time) id.EventID {
	t.Helper()
	ctx := context.Background()
	encrypted, err := u.CryptoHelper.Machine().EncryptMegolmEvent(ctx, room, event.EventMessage, content)
	if err != nil {
		t.Fatalf("failed to encrypt the forged event: %v", err)
	}
	evtID := id.EventID("$holes" + random.String(37))
	raw, err := json.Marshal(map[string]any{
		"event_id": evtID, "room_id": room, "sender": u.UserID, "type": event.EventEncrypted.Type,
		"origin_server_ts": ts.UnixMilli(), "content": encrypted,
	})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"events": []json.RawMessage{raw}})
	status, resp, err := sendTransaction(bot, "holes-"+random.String(8), bot.reg.ServerToken, body)
	if err != nil || status != http.StatusOK {
		t.Fatalf("transaction with the forged event: %d %s %v", status, resp, err)
	}
	return evtID
}

// TestHolesCheckInTimeNotSenderControlled: a check-in's effective time is the time the bot received it when the
// sender's server claims a time in the future or long past; the claimed time is kept beside it.
func TestHolesCheckInTimeNotSenderControlled(t *testing.T) {
	c := newClinic(t, nil)
	_, pat, _, patientRoom := patientCase(t, c)
	// A real check-in first: it shares the patient's room key with the bot.
	c.mustSucceed(pat, patientRoom, "!checkin hr=80")

	for _, tt := range []struct {
		name   string
		claim  time.Duration
		honest bool // within checkins.max_clock_skew: the claimed time stands
	}{
		{"future", 365 * 24 * time.Hour, false},
		{"long past", -30 * 24 * time.Hour, false},
		{"slightly late", -time.Minute, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			claimed := before.Add(tt.claim)
			evtID := holesForgedEvent(t, c.bot, pat, patientRoom, &event.MessageEventContent{MsgType: event.MsgText, Body: "!checkin hr=91"}, claimed)
			reply := pat.WaitFor(30*time.Second, "the confirmation of the forged check-in", replyTo(c.botID, evtID)).Content.AsMessage().Body
			after := time.Now()
			if !strings.Contains(reply, "Recorded") {
				t.Fatalf("reply to the check-in: %s", reply)
			}
			var effective, claimedAt, receivedAt int64
			if err := c.bot.db().QueryRow("SELECT effective_at FROM checkins WHERE event_id = $1", evtID).Scan(&effective); err != nil {
				t.Fatalf("check-in not stored: %v", err)
			}
			if !tt.honest && (effective < before.UnixMilli()-1000 || effective > after.UnixMilli()+1000) {
				t.Errorf("check-in recorded at %s, the time its sender claimed, not when it arrived (between %s and %s)",
					time.UnixMilli(effective).UTC(), before.UTC(), after.UTC())
			}
			err := c.bot.db().QueryRow("SELECT t.claimed_at, t.received_at FROM checkin_times t JOIN checkins c ON c.id = t.checkin_id "+
				"WHERE c.event_id = $1", evtID).Scan(&claimedAt, &receivedAt)
			if err != nil {
				t.Fatalf("check-in times: %v", err)
			}
			if claimedAt != claimed.UnixMilli() {
				t.Errorf("claimed time stored as %d, want the sender's %d", claimedAt, claimed.UnixMilli())
			}
			if receivedAt < before.UnixMilli()-1000 || receivedAt > after.UnixMilli()+1000 {
				t.Errorf("receive time %s is not between %s and %s", time.UnixMilli(receivedAt), before, after)
			}
			want := receivedAt
			if tt.honest {
				want = claimedAt
			}
			if effective != want {
				t.Errorf("effective time %s, want %s (claimed %s, received %s)", time.UnixMilli(effective).UTC(),
					time.UnixMilli(want).UTC(), claimed.UTC(), time.UnixMilli(receivedAt).UTC())
			}
			if !tt.honest && strings.Contains(reply, claimed.UTC().Format("2006-01-02")) && claimed.UTC().Format("2006-01-02") != time.Now().UTC().Format("2006-01-02") {
				t.Errorf("the confirmation shows the claimed date: %s", reply)
			}
		})
	}
}

// holesMetricsURL is where a bot started with holesMetricsConfig serves /metrics.
func holesMetricsConfig(t *testing.T) (map[string]any, string) {
	t.Helper()
	port, err := dendrite.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	return map[string]any{"metrics": map[string]any{"listen": addr}}, "http://" + addr
}

func holesGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestHolesMetricsOnOwnListener: /metrics is served on its own listener (metrics.listen) and no longer on the
// appservice listener, which the homeserver (and whoever can reach it) talks to.
func TestHolesMetricsOnOwnListener(t *testing.T) {
	extra, metricsURL := holesMetricsConfig(t)
	bot := startBot(t, extra)
	status, body := holesGet(t, metricsURL+"/metrics")
	if status != http.StatusOK || !strings.Contains(body, "caseroom_inbox_backlog") || !strings.Contains(body, "caseroom_database_up 1") {
		t.Fatalf("metrics listener: %d\n%s", status, body)
	}
	if status, body = holesGet(t, bot.URL()+"/metrics"); status != http.StatusNotFound || strings.Contains(body, "caseroom_") {
		t.Fatalf("the appservice listener still serves metrics: %d\n%s", status, body)
	}
	// The metrics listener serves nothing else.
	if status, _ = holesGet(t, metricsURL+"/_matrix/mau/ready"); status != http.StatusNotFound {
		t.Fatalf("the metrics listener answers other paths: %d", status)
	}

	// Configured to share the appservice listener, metrics are served there (and only there).
	bot.stop()
	port := strings.TrimPrefix(bot.URL(), "http://127.0.0.1:")
	bot2 := startBot(t, map[string]any{"metrics": map[string]any{"listen": "127.0.0.1:" + port}})
	if status, body = holesGet(t, bot2.URL()+"/metrics"); status != http.StatusOK || !strings.Contains(body, "caseroom_inbox_backlog") {
		t.Fatalf("metrics on the appservice listener when configured so: %d\n%s", status, body)
	}
}

// holesUndecryptable sends an m.room.encrypted event of a megolm session nobody shared: the bot never gets its key.
func holesUndecryptable(t *testing.T, u *user, room id.RoomID) id.EventID {
	t.Helper()
	own := u.CryptoHelper.Machine().OwnIdentity()
	resp, err := u.SendMessageEvent(context.Background(), room, event.EventEncrypted, &event.EncryptedEventContent{
		Algorithm:        id.AlgorithmMegolmV1,
		SenderKey:        own.IdentityKey,
		DeviceID:         own.DeviceID,
		SessionID:        id.SessionID(random.String(43)),
		MegolmCiphertext: []byte(strings.Repeat("A", 120)),
	}, mautrix.ReqSendEvent{DontEncrypt: true})
	if err != nil {
		t.Fatal(err)
	}
	return resp.EventID
}

// TestHolesUndecryptableFloodDoesNotStallOtherRooms: undecryptable events in as many rooms as the bot has
// processing slots, each waiting for a room key that never comes, must not keep a ping in another room from being
// answered; every undecryptable event still gets its notice, in order.
func TestHolesUndecryptableFloodDoesNotStallOtherRooms(t *testing.T) {
	bot := startBot(t, nil)
	w := bot.w
	botMXID := id.NewUserID(w.reg.SenderLocalpart, w.hsA.ServerName)
	alice := newUser(t, w.hsA, "alice")
	const floodRooms, perRoom = 16, 2
	rooms := make([]id.RoomID, floodRooms)
	for i := range rooms {
		rooms[i] = roomWithBot(t, alice, botMXID)
	}
	pingRoom := roomWithBot(t, alice, botMXID)

	var flood []id.EventID
	for range perRoom {
		for _, room := range rooms {
			flood = append(flood, holesUndecryptable(t, alice, room))
		}
	}
	// Let the flood reach the bot and occupy its workers before the ping.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int
		if err := bot.db().QueryRow("SELECT COUNT(*) FROM inbox WHERE event_type = 'm.room.encrypted'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == len(flood) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d flood events reached the bot", n, len(flood))
		}
		time.Sleep(50 * time.Millisecond)
	}
	ping := alice.Send(pingRoom, "!ping")
	alice.WaitFor(60*time.Second, "the pong", replyTo(botMXID, ping))
	isFloodNotice := func(evt *event.Event) bool {
		if evt.Sender != botMXID || evt.Type != event.EventMessage {
			return false
		}
		target := evt.Content.AsMessage().RelatesTo.GetReplyTo()
		for _, f := range flood {
			if target == f {
				return true
			}
		}
		return false
	}
	if n := len(alice.Matching(isFloodNotice)); n > 0 {
		t.Fatalf("the ping was answered only after %d of %d notices to the undecryptable flood", n, len(flood))
	}
	// The flood is not dropped: every undecryptable event gets its notice, and in each room in order.
	for _, f := range flood {
		notice := alice.WaitFor(120*time.Second, "the notice to "+f.String(), replyTo(botMXID, f))
		if body := notice.Content.AsMessage().Body; !strings.Contains(body, "couldn't decrypt") {
			t.Fatalf("notice to an undecryptable event: %s", body)
		}
	}
	for _, room := range rooms {
		var order []id.EventID
		for _, evt := range alice.Matching(isFloodNotice) {
			if evt.RoomID == room {
				order = append(order, evt.Content.AsMessage().RelatesTo.GetReplyTo())
			}
		}
		var want []id.EventID
		for i, f := range flood {
			if rooms[i%floodRooms] == room {
				want = append(want, f)
			}
		}
		if fmt.Sprint(order) != fmt.Sprint(want) {
			t.Errorf("notices in room %s answer %v, want %v in that order", room, order, want)
		}
	}
}
