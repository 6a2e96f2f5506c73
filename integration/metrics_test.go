//go:build goolm

package integration

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

// scrape reads the bot's /metrics and returns the value of the first sample matching name{labels}.
func scrape(t *testing.T, bot *botProcess, sample string) float64 {
	t.Helper()
	resp, err := http.Get(bot.MetricsURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` ([0-9.e+-]+)$`)
	m := re.FindSubmatch(body)
	if m == nil {
		t.Fatalf("metric %s not found in:\n%s", sample, body)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMetricsAndHealth(t *testing.T) {
	bot := startBot(t, nil)
	alice := newUser(t, bot.w.hsA, "alice")
	botMXID := id.NewUserID(bot.w.reg.SenderLocalpart, bot.w.hsA.ServerName)
	room := roomWithBot(t, alice, botMXID)
	for range 3 {
		evtID := alice.Send(room, "!ping")
		alice.WaitFor(20*time.Second, "the pong", replyTo(botMXID, evtID))
	}
	if n := scrape(t, bot, `caseroom_commands_total{command="ping",outcome="ok"}`); n != 3 {
		t.Errorf("ping commands counted %v, want 3", n)
	}
	if n := scrape(t, bot, "caseroom_events_received_total"); n < 3 {
		t.Errorf("events received %v, want at least 3", n)
	}
	if n := scrape(t, bot, "caseroom_reply_latency_seconds_count"); n < 3 {
		t.Errorf("reply latency observed %v times, want at least 3", n)
	}
	if n := scrape(t, bot, `caseroom_messages_sent_total{outcome="sent"}`); n < 3 {
		t.Errorf("messages sent %v", n)
	}
	if n := scrape(t, bot, "caseroom_database_up"); n != 1 {
		t.Errorf("database_up = %v", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for scrape(t, bot, "caseroom_inbox_backlog") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("inbox backlog does not drain")
		}
		time.Sleep(100 * time.Millisecond)
	}
	scrape(t, bot, "caseroom_ehr_outbox_pending")

	resp, err := http.Get(bot.URL() + "/_matrix/mau/ready")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"ready":true`) {
		t.Fatalf("ready = %d %s", resp.StatusCode, body)
	}
	// With the homeserver gone, readiness says so (the live check stays up).
	bot.w.hsA.Stop()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := bot.w.hsA.Restart(ctx); err != nil {
			t.Errorf("failed to restart the homeserver: %v", err)
		}
	})
	deadline = time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(bot.URL() + "/_matrix/mau/ready")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "homeserver") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ready still %d %s with the homeserver down", resp.StatusCode, body)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if live, err := http.Get(bot.URL() + "/_matrix/mau/live"); err != nil || live.StatusCode != 200 {
		t.Fatalf("live = %v %v", live, err)
	}
}
