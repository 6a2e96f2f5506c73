//go:build goolm

package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/fhirtest"
	"github.com/caseroom/caseroom/internal/fhirtest/fhirtesting"
	"github.com/caseroom/caseroom/internal/homeserver"
)

// The fault tests run a stream of commands through the real homeserver and the real caseroom binary while
// something breaks underneath: caseroom is killed, the EHR goes away, the homeserver restarts, the database is
// locked. Afterwards every command must have been answered exactly once and every check-in filed exactly once.

// messageStream sends messages from a goroutine at a steady pace and records which sends succeeded.
type messageStream struct {
	t    *testing.T
	done chan struct{}

	mu        sync.Mutex
	attempted int // messages sent or tried so far
	sent      []sentMessage
	failed    []error
}

type sentMessage struct {
	index  int
	id     id.EventID
	sentAt time.Time
}

// startStream sends n messages text(i) to room, one every pace, the first at once. A send that fails is recorded
// (the homeserver may be down on purpose) and the stream carries on.
func startStream(t *testing.T, u *user, room id.RoomID, n int, pace time.Duration, text func(i int) string) *messageStream {
	t.Helper()
	s := &messageStream{t: t, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(s.done)
		next := time.Now()
		for i := range n {
			sendCtx, sendCancel := context.WithTimeout(ctx, 10*time.Second)
			resp, err := u.SendMessageEvent(sendCtx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: text(i)})
			sendCancel()
			s.mu.Lock()
			s.attempted = i + 1
			if err != nil {
				s.failed = append(s.failed, fmt.Errorf("message %d: %w", i, err))
			} else {
				s.sent = append(s.sent, sentMessage{index: i, id: resp.EventID, sentAt: time.Now()})
			}
			s.mu.Unlock()
			next = next.Add(pace)
			select {
			case <-time.After(time.Until(next)):
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	return s
}

// tried is how many messages were sent or tried so far.
func (s *messageStream) tried() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempted
}

// waitAttempted waits until at least k messages were sent or tried.
func (s *messageStream) waitAttempted(k int, timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := s.tried()
		if n >= k {
			return
		}
		select {
		case <-s.done:
			s.t.Fatalf("the stream ended after %d messages, before %d", n, k)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("only %d messages sent within %s, waiting for %d", n, timeout, k)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wait waits for the stream to end and returns the messages that were sent and the errors of those that were not.
func (s *messageStream) wait(timeout time.Duration) ([]sentMessage, []error) {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(timeout):
		s.t.Fatalf("the stream did not end within %s", timeout)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sentMessage(nil), s.sent...), append([]error(nil), s.failed...)
}

// sentSoFar returns the messages sent so far.
func (s *messageStream) sentSoFar() []sentMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sentMessage(nil), s.sent...)
}

// requireAllSent fails the test unless every message of the stream was sent.
func (s *messageStream) requireAllSent(n int, timeout time.Duration) []sentMessage {
	s.t.Helper()
	sent, failed := s.wait(timeout)
	if len(failed) > 0 || len(sent) != n {
		s.t.Fatalf("%d of %d messages sent; errors: %v", len(sent), n, failed)
	}
	return sent
}

// waitAnsweredOnce waits until every message has a reply of the bot, then sends a marker command and waits for its
// reply. The bot handles a room's events and sends its queued messages in order, so by the time the marker is
// answered any second reply to an earlier message would have been sent: then each message must have exactly one.
// killed, when set, adds what the homeserver logged about the bot's sends of a message answered more than once.
// events lists what the user has seen of the room so far (synced, or read from the room's history).
func waitAnsweredOnce(t *testing.T, u *user, botID id.UserID, room id.RoomID, msgs []sentMessage, timeout time.Duration,
	events func() []*event.Event, killed *killedSends) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		seen := events()
		var missing []int
		for _, m := range msgs {
			if len(filterEvents(seen, replyTo(botID, m.id))) == 0 {
				missing = append(missing, m.index)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, %d of %d messages have no reply: %v", timeout, len(missing), len(msgs), missing)
		}
		time.Sleep(250 * time.Millisecond)
	}
	marker := u.Send(room, "!ping")
	for len(filterEvents(events(), replyTo(botID, marker))) == 0 {
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatal("no reply to the marker")
		}
		time.Sleep(100 * time.Millisecond)
	}
	all := events()
	for _, m := range msgs {
		if seen := filterEvents(all, replyTo(botID, m.id)); len(seen) != 1 {
			t.Errorf("message %d (%s) has %d replies, want exactly 1: %s%s", m.index, m.id, len(seen), eventIDs(seen),
				killed.diagnose(m.id, seen))
		}
	}
}

// synced lists the events the user's sync delivered.
func synced(u *user) func() []*event.Event {
	return func() []*event.Event { return u.Matching(func(*event.Event) bool { return true }) }
}

// history reads a room's whole timeline with /messages. Unlike the sync, which skips to the latest events when it
// falls behind (e.g. after waiting out a homeserver restart), it misses nothing. Unencrypted rooms only.
func history(t *testing.T, u *user, room id.RoomID) func() []*event.Event {
	return func() []*event.Event {
		t.Helper()
		var out []*event.Event
		from := ""
		for range 20 {
			resp, err := u.Messages(context.Background(), room, from, "", mautrix.DirectionBackward, nil, 100)
			if err != nil {
				t.Fatalf("failed to read the room's history: %v", err)
			}
			for _, evt := range resp.Chunk {
				if evt.StateKey != nil {
					evt.Type.Class = event.StateEventType
				} else {
					evt.Type.Class = event.MessageEventType
				}
				_ = evt.Content.ParseRaw(evt.Type)
				evt.RoomID = room
				out = append(out, evt)
			}
			if resp.End == "" || len(resp.Chunk) == 0 {
				return out
			}
			from = resp.End
		}
		t.Fatal("the room's history is longer than expected")
		return nil
	}
}

func filterEvents(evts []*event.Event, match func(*event.Event) bool) []*event.Event {
	var out []*event.Event
	for _, evt := range evts {
		if match(evt) {
			out = append(out, evt)
		}
	}
	return out
}

func eventIDs(evts []*event.Event) string {
	ids := make([]string, len(evts))
	for i, evt := range evts {
		ids[i] = evt.ID.String()
	}
	return strings.Join(ids, " ")
}

// outgoingFor lists the bot's queued messages caused by an event, for the log of a failed test.
func outgoingFor(t *testing.T, bot *botProcess, cause id.EventID) string {
	t.Helper()
	rows, err := bot.db().Query(`SELECT seq, event_type, attempts, COALESCE(last_error, ''), COALESCE(sent_event_id, ''),
		COALESCE(sent_at, 0) FROM outgoing WHERE cause_event_id = $1 ORDER BY seq`, cause)
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	var sb strings.Builder
	for rows.Next() {
		var seq, attempts, sentAt int64
		var evtType, lastErr, sentID string
		if err = rows.Scan(&seq, &evtType, &attempts, &lastErr, &sentID, &sentAt); err != nil {
			return err.Error()
		}
		fmt.Fprintf(&sb, "outgoing %d %s attempts=%d error=%q sent=%s at %d\n", seq, evtType, attempts, lastErr, sentID, sentAt)
	}
	return sb.String()
}

// killedSends diagnoses a message the bot sent more than once while it was being killed. On Dendrite v0.13.8 a kill
// in the middle of a send can leave the event sent but the request failed ("SendEvents failed ... context
// canceled"), with the transaction ID forgotten; the restarted bot must then find the event in the room instead of
// sending the message again (see the bot's resend.go). diagnose lists what Dendrite logged about the bot's
// transaction IDs of the copies, and the bot's queued messages caused by the event, for the message of the failed
// test. A nil *killedSends diagnoses nothing.
type killedSends struct {
	t   *testing.T
	bot *botProcess
	hs  homeserver.Server
}

func (k *killedSends) diagnose(cause id.EventID, seen []*event.Event) string {
	if k == nil || len(seen) == 1 {
		return ""
	}
	k.t.Helper()
	db := k.bot.db()
	var instance string
	if err := db.QueryRow("SELECT id FROM instance").Scan(&instance); err != nil {
		return "\n" + err.Error()
	}
	hsLog, err := os.ReadFile(k.hs.LogFile())
	if err != nil {
		return "\n" + err.Error()
	}
	var sb strings.Builder
	sb.WriteString("\n" + outgoingFor(k.t, k.bot, cause))
	for _, evt := range seen {
		var seq int64
		err := db.QueryRow("SELECT seq FROM outgoing WHERE cause_event_id = $1 AND sent_event_id = $2", cause, evt.ID).Scan(&seq)
		if errors.Is(err, sql.ErrNoRows) {
			fmt.Fprintf(&sb, "%s is not recorded as a sent message\n", evt.ID)
			continue
		} else if err != nil {
			return "\n" + err.Error()
		}
		txnID := fmt.Sprintf("caseroom.%s.%d", instance, seq)
		fmt.Fprintf(&sb, "%s is outgoing %d; the homeserver's log for transaction %s:\n", evt.ID, seq, txnID)
		for _, line := range strings.Split(string(hsLog), "\n") {
			if strings.Contains(line, "/"+txnID+`"`) {
				sb.WriteString(line + "\n")
			}
		}
	}
	return sb.String()
}

// filedReaction matches the bot's 📋 reaction to a check-in, sent once the check-in is in the EHR.
func filedReaction(botID id.UserID, checkin id.EventID) func(*event.Event) bool {
	return func(evt *event.Event) bool {
		if evt.Type != event.EventReaction || evt.Sender != botID {
			return false
		}
		rel := evt.Content.AsReaction().RelatesTo
		return rel.EventID == checkin && rel.Key == "📋"
	}
}

// hrValue is the heart rate check-in i of a stream reports.
func hrValue(i int) int { return 60 + i }

func hrCheckIn(i int) string { return fmt.Sprintf("!checkin hr=%d", hrValue(i)) }

// countByIdentifier counts the Observations carrying the identifier value, as the bot searches for them.
func countByIdentifier(t *testing.T, srv *fhirtest.Server, value string) int {
	t.Helper()
	n, err := srv.Count(context.Background(), "Observation", ehr.IdentifierQuery(ehr.ObservationIdentifierSystem, value))
	if err != nil {
		t.Fatalf("failed to count Observations %s: %v", value, err)
	}
	return n
}

// countForPatient counts all Observations of a patient.
func countForPatient(t *testing.T, srv *fhirtest.Server, patientRef string) int {
	t.Helper()
	n, err := srv.Count(context.Background(), "Observation", map[string][]string{"subject": {patientRef}})
	if err != nil {
		t.Fatalf("failed to count Observations of %s: %v", patientRef, err)
	}
	return n
}

// requireCheckInsStored checks that the bot's database holds one check-in per message, each with one delivered
// EHR outbox item.
func requireCheckInsStored(t *testing.T, c *clinic, msgs []sentMessage) {
	t.Helper()
	for _, m := range msgs {
		if n := c.countRows("SELECT COUNT(*) FROM checkins WHERE event_id = $1", m.id); n != 1 {
			t.Errorf("check-in %d (%s) has %d rows in checkins, want 1", m.index, m.id, n)
		}
	}
	if n := c.countRows("SELECT COUNT(*) FROM checkins"); n != len(msgs) {
		t.Errorf("%d rows in checkins, want %d", n, len(msgs))
	}
	if n := c.countRows("SELECT COUNT(*) FROM ehr_outbox WHERE delivered_at IS NOT NULL"); n != len(msgs) {
		t.Errorf("%d EHR outbox items delivered, want %d", n, len(msgs))
	}
	if n := c.countRows("SELECT COUNT(*) FROM ehr_outbox WHERE delivered_at IS NULL"); n != 0 {
		t.Errorf("%d EHR outbox items not delivered", n)
	}
}

// TestFaultSIGKILLDuringCheckInStream kills caseroom (SIGKILL) three times while a patient sends a stream of
// check-ins, restarting it at once each time: every check-in is answered once, stored once and filed in the EHR
// once.
func TestFaultSIGKILLDuringCheckInStream(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		const checkIns = 24
		srv := fhirtesting.Start(t)
		c, _, pat, _, patientRoom, patientRef := ehrCase(t, on, srv)

		seed := time.Now().UnixNano()
		t.Logf("random seed %d", seed)
		rng := rand.New(rand.NewPCG(uint64(seed), 0))
		stream := startStream(t, pat, patientRoom, checkIns, 400*time.Millisecond, hrCheckIn)
		// Three kills spread over the stream: after a random message of each third, plus up to 200 ms (while that
		// message is being stored, processed, answered or filed).
		for k := range 3 {
			stream.waitAttempted(k*checkIns/3+1+rng.IntN(checkIns/3-2), 30*time.Second)
			time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
			began := time.Now()
			c.bot.kill()
			c.bot.start()
			t.Logf("kill %d after %d messages: down %s", k+1, stream.tried(), time.Since(began).Round(time.Millisecond))
		}
		sent := stream.requireAllSent(checkIns, 60*time.Second)
		streamEnd := time.Now()

		// The homeserver pushes again after its backoff (up to 64 s after repeated failures): allow for it.
		killed := &killedSends{t: t, bot: c.bot, hs: c.hs}
		waitAnsweredOnce(t, pat, c.botID, patientRoom, sent, 90*time.Second, synced(pat), killed)
		deadline := time.Now().Add(60 * time.Second)
		for countForPatient(t, srv, patientRef) < checkIns || c.countRows("SELECT COUNT(*) FROM ehr_outbox WHERE delivered_at IS NULL") > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d check-ins in the EHR 60 s after all were answered", countForPatient(t, srv, patientRef), checkIns)
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Logf("all answered and filed %s after the stream ended; %d of 3 restarts resumed unfinished events or replies; "+
			"%d messages queued before a restart were found already sent", time.Since(streamEnd).Round(time.Millisecond),
			strings.Count(c.bot.Log(), "Resuming pending work"), strings.Count(c.bot.Log(), "already in the room"))

		requireFiledOnce(t, srv, pat, c, patientRoom, patientRef, sent, killed)
		requireCheckInsStored(t, c, sent)
	})
}

// requireFiledOnce checks that each check-in is in the EHR exactly once with its value, that the EHR holds nothing
// else for the patient, and that the patient got one 📋 reaction per check-in.
func requireFiledOnce(t *testing.T, srv *fhirtest.Server, pat *user, c *clinic, patientRoom id.RoomID, patientRef string, msgs []sentMessage, killed *killedSends) {
	t.Helper()
	for _, m := range msgs {
		if n := countByIdentifier(t, srv, string(m.id)+"/hr"); n != 1 {
			t.Errorf("check-in %d (%s) is in the EHR %d times, want exactly 1", m.index, m.id, n)
		}
	}
	if n := countForPatient(t, srv, patientRef); n != len(msgs) {
		t.Errorf("%d Observations in the EHR, want %d", n, len(msgs))
	}
	obs := observations(t, ehrClient(t, srv), patientRef)
	for _, m := range msgs {
		o, ok := obs[string(m.id)+"/hr"]
		if !ok || o.ValueQuantity == nil || o.ValueQuantity.Value != float64(hrValue(m.index)) {
			t.Errorf("check-in %d: Observation %+v, want hr %d", m.index, o, hrValue(m.index))
		}
	}
	// The 📋 reaction is queued with the delivery's record: once per check-in, even when a delivery was repeated.
	deadline := time.Now().Add(30 * time.Second)
	for _, m := range msgs {
		for len(pat.Matching(filedReaction(c.botID, m.id))) == 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
	}
	marker := pat.Send(patientRoom, "!ping")
	pat.WaitFor(30*time.Second, "the marker reply", replyTo(c.botID, marker))
	for _, m := range msgs {
		if seen := pat.Matching(filedReaction(c.botID, m.id)); len(seen) != 1 {
			t.Errorf("check-in %d (%s) has %d 📋 reactions, want exactly 1: %s%s", m.index, m.id, len(seen), eventIDs(seen),
				killed.diagnose(m.id, seen))
		}
	}
}

// TestFaultEHRDownDuringStream takes the EHR away while check-ins keep coming, then brings back an empty server
// on the same address: nothing is lost, everything queued is filed within a minute of the recovery, each check-in
// exactly once (in the server that was up when it was filed).
func TestFaultEHRDownDuringStream(t *testing.T) {
	const checkIns = 16
	const outage = 8 * time.Second
	ctx := context.Background()
	srv := fhirtesting.Start(t)
	c, _, pat, _, patientRoom, patientRef := ehrCase(t, onDendrite(t), srv)

	stream := startStream(t, pat, patientRoom, checkIns, 400*time.Millisecond, hrCheckIn)
	stream.waitAttempted(4, 30*time.Second)
	// The EHR fails first (every FHIR request answers 503), so that what it holds can be counted without racing
	// the bot (counting bypasses the injected failures); then it goes away altogether.
	if err := srv.Fail(ctx, 503, 1_000_000, 0); err != nil {
		t.Fatal(err)
	}
	downAt := time.Now()
	time.Sleep(500 * time.Millisecond) // requests the server was handling complete; sends under way return
	oldFiled := filedOn(t, srv, stream.sentSoFar())
	if n := countForPatient(t, srv, patientRef); n != sum(oldFiled) {
		t.Fatalf("the EHR holds %d Observations of the patient, %d of them of the check-ins sent", n, sum(oldFiled))
	}
	port, err := strconv.Atoi(strings.TrimPrefix(srv.Root, "http://127.0.0.1:"))
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()

	stream.waitAttempted(checkIns*3/4, 30*time.Second)
	time.Sleep(time.Until(downAt.Add(outage)))
	again, err := fhirtest.StartOnPort(ctx, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(again.Stop)
	seedPatientWithID(t, ehrClient(t, again), patientRef)
	recovered := time.Now()
	t.Logf("EHR down for %s; %d check-ins filed before", recovered.Sub(downAt).Round(time.Millisecond), sum(oldFiled))

	sent := stream.requireAllSent(checkIns, 30*time.Second)
	deadline := recovered.Add(60 * time.Second)
	for {
		filed := sum(oldFiled) + countForPatient(t, again, patientRef)
		if filed >= checkIns && c.countRows("SELECT COUNT(*) FROM ehr_outbox WHERE delivered_at IS NULL") == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("60 s after the EHR recovered, %d of %d check-ins filed", filed, checkIns)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("everything filed %s after the EHR recovered", time.Since(recovered).Round(time.Millisecond))

	// Each check-in is in exactly one of the two servers, exactly once, with its value.
	newFiled := filedOn(t, again, sent)
	for _, m := range sent {
		if old, now := oldFiled[m.id], newFiled[m.id]; old+now != 1 {
			t.Errorf("check-in %d (%s) filed %d times before the outage and %d times after, want once in all", m.index, m.id, old, now)
		}
	}
	if n := countForPatient(t, again, patientRef); n != sum(newFiled) || sum(oldFiled)+n != checkIns {
		t.Errorf("%d Observations before the outage and %d after, want %d in all", sum(oldFiled), n, checkIns)
	}
	obs := observations(t, ehrClient(t, again), patientRef)
	for _, m := range sent {
		if o, ok := obs[string(m.id)+"/hr"]; ok && (o.ValueQuantity == nil || o.ValueQuantity.Value != float64(hrValue(m.index))) {
			t.Errorf("check-in %d: Observation %+v, want hr %d", m.index, o, hrValue(m.index))
		}
	}
	waitAnsweredOnce(t, pat, c.botID, patientRoom, sent, 30*time.Second, synced(pat), nil)
	requireCheckInsStored(t, c, sent)
}

// filedOn counts, per check-in, the Observations a server holds with the check-in's heart rate identifier.
func filedOn(t *testing.T, srv *fhirtest.Server, msgs []sentMessage) map[id.EventID]int {
	t.Helper()
	out := make(map[id.EventID]int)
	for _, m := range msgs {
		out[m.id] = countByIdentifier(t, srv, string(m.id)+"/hr")
	}
	return out
}

func sum(counts map[id.EventID]int) int {
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

// TestFaultDendriteRestartDuringStream restarts the homeserver (its JetStream is persistent, so events queued for
// the appservice survive) during a stream of commands: caseroom, not restarted, answers every command that was sent
// exactly once.
func TestFaultDendriteRestartDuringStream(t *testing.T) {
	const pings = 40
	bot := startBot(t, nil)
	w := bot.w
	alice := newUser(t, w.hsA, "alice")
	botID := id.NewUserID(w.reg.SenderLocalpart, w.hsA.ServerName)
	room := roomWithBot(t, alice, botID)
	pid := bot.cmd.Process.Pid

	stream := startStream(t, alice, room, pings, 200*time.Millisecond, func(i int) string { return "!ping" })
	stream.waitAttempted(8, 30*time.Second)
	// caseroom's database is held for a moment, so that the next pings are still queued at the homeserver (their
	// transaction cannot be stored and acknowledged) when it restarts.
	release := lockDatabase(t, bot)
	time.Sleep(time.Second)
	var queued int
	for _, m := range stream.sentSoFar() {
		if countInbox(t, bot, m.id) == 0 {
			queued++
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	began := time.Now()
	if err := w.hsA.Restart(ctx); err != nil {
		// Other tests need the homeserver: try once more before failing.
		if err2 := w.hsA.Restart(ctx); err2 != nil {
			t.Fatalf("homeserver did not restart: %v; again: %v", err, err2)
		}
	}
	restarted := time.Now()
	release()
	t.Logf("homeserver restarted in %s after %d messages, %d of them not yet delivered to caseroom",
		restarted.Sub(began).Round(time.Millisecond), stream.tried(), queued)
	if queued == 0 {
		t.Fatal("no ping was waiting for delivery to caseroom when the homeserver restarted")
	}

	sent, failed := stream.wait(60 * time.Second)
	t.Logf("%d pings sent, %d failed while the homeserver was down", len(sent), len(failed))
	var after int
	for _, m := range sent {
		if m.sentAt.After(restarted) {
			after++
		}
	}
	if after == 0 || len(sent) < pings/2 {
		t.Fatalf("%d pings sent, %d after the restart: the stream did not carry on (%v)", len(sent), after, failed)
	}
	// Dendrite's appservice backoff may have grown while the bot could not reach the restarting homeserver.
	// Read the room's history: Alice's own sync may skip replies while it waits out the restart.
	waitAnsweredOnce(t, alice, botID, room, sent, 90*time.Second, history(t, alice, room), nil)

	select {
	case <-bot.done:
		t.Fatal("caseroom exited during the homeserver restart")
	default:
	}
	if bot.cmd.Process.Pid != pid {
		t.Fatal("caseroom was restarted")
	}
	for _, m := range sent {
		if n := countInbox(t, bot, m.id); n != 1 {
			t.Errorf("ping %d has %d inbox rows, want 1", m.index, n)
		}
	}
}

func countInbox(t *testing.T, bot *botProcess, eventID id.EventID) int {
	t.Helper()
	var n int
	if err := bot.db().QueryRow("SELECT COUNT(*) FROM inbox WHERE event_id = $1", eventID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFaultSQLiteContention holds the write lock of caseroom's SQLite database for longer than its busy timeout
// (5 s) while commands arrive: transactions that could not be stored are refused with 5xx so the homeserver sends
// them again, and every command is answered exactly once after the lock is released.
func TestFaultSQLiteContention(t *testing.T) {
	const pings = 10
	const hold = 7 * time.Second
	bot := startBot(t, nil)
	w := bot.w
	alice := newUser(t, w.hsA, "alice")
	botID := id.NewUserID(w.reg.SenderLocalpart, w.hsA.ServerName)
	room := roomWithBot(t, alice, botID)
	warm := alice.Send(room, "!ping")
	alice.WaitFor(20*time.Second, "the first reply", replyTo(botID, warm))

	release := lockDatabase(t, bot)
	locked := time.Now()
	stream := startStream(t, alice, room, pings, 250*time.Millisecond, func(i int) string { return "!ping" })
	sent := stream.requireAllSent(pings, 30*time.Second)
	time.Sleep(time.Until(locked.Add(hold)))
	var early int
	for _, m := range sent {
		early += len(alice.Matching(replyTo(botID, m.id)))
	}
	release()
	released := time.Now()
	if early != 0 {
		t.Fatalf("%d replies while the database was locked: the lock did not hold", early)
	}

	waitAnsweredOnce(t, alice, botID, room, sent, 60*time.Second, synced(alice), nil)
	t.Logf("all answered %s after the lock was released", time.Since(released).Round(time.Millisecond))
	if !strings.Contains(bot.Log(), "Failed to store transaction") {
		t.Error("no transaction was refused while the database was locked: the 5xx path was not exercised")
	}
	for _, m := range sent {
		if n := countInbox(t, bot, m.id); n != 1 {
			t.Errorf("ping %d has %d inbox rows, want 1", m.index, n)
		}
	}
	if n := countInboxUnprocessed(t, bot); n != 0 {
		t.Errorf("%d inbox events left unprocessed", n)
	}
}

// lockDatabase takes the write lock of caseroom's SQLite database from another connection (BEGIN IMMEDIATE), as a
// second writer would, and returns the function that releases it.
func lockDatabase(t *testing.T, bot *botProcess) (release func()) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(bot.dir, "caseroom.db")+"?_txlock=immediate&_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	tx, err := db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatalf("failed to take the database's write lock: %v", err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			if err := tx.Rollback(); err != nil {
				t.Errorf("failed to release the database's write lock: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

func countInboxUnprocessed(t *testing.T, bot *botProcess) int {
	t.Helper()
	var n int
	if err := bot.db().QueryRow("SELECT COUNT(*) FROM inbox WHERE processed_at IS NULL").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
