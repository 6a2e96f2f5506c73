package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/homeserver"
)

// latencyScenario is a command whose reply latency is measured for caseroom and against the floors. New commands
// (check-ins, once the FHIR server is part of the run) are new rows of latencyScenarios.
type latencyScenario struct {
	Name    string
	Command string // the message body a client sends
	// Targets for caseroom as multiples of F1 (0: none).
	TargetP50VsF1 float64
	TargetP99VsF1 float64
	// PatientRoom sends caseroom's command into the lane's patient room (a real case) instead of a plain room.
	PatientRoom bool
	// Pending says why the scenario is not measured yet; it is reported as such.
	Pending string
}

var latencyScenarios = []latencyScenario{
	{Name: "ping", Command: "!ping", TargetP50VsF1: 1.10, TargetP99VsF1: 1.25},
	{Name: "checkin", Command: "!checkin hr=72", TargetP50VsF1: 1.20, PatientRoom: true, Pending: pendingEncryptedClients},
}

// pendingEncryptedClients is why the check-in scenarios are not measured: the bench's clients send in clear text,
// and caseroom refuses (and redacts) clear-text patient data in its encrypted patient rooms. They come back once the
// bench's clients encrypt and cross-sign their devices, as users' apps do.
const pendingEncryptedClients = "the bench's clients do not encrypt yet, and caseroom refuses clear-text check-ins in encrypted rooms"

// latencyMode is how many clients send at once: one (sequential) or one per room.
type latencyMode struct {
	Name   string
	Lanes  int // clients, each sequential in its own room
	Total  int // measured commands over all lanes (at least)
	Warmup int // unmeasured commands over all lanes (at least)
}

// latencyRounds splits the measured commands into rounds that alternate between F0, F1 and caseroom, so that a
// drift of the machine over the run (other load, thermal, caches) affects all three alike.
const latencyRounds = 5

// responder is who answers a command: the two floors and caseroom.
type responder struct {
	Key   string // F0, F1, caseroom
	Label string
	// room is where the lane's client sends; observer is the client whose /sync shows the answer.
	room     func(*lane) id.RoomID
	observer func(*lane) *benchClient
}

var responders = []responder{
	{Key: "F0", Label: "F0: client → client",
		room: func(l *lane) id.RoomID { return l.peerRoom }, observer: func(l *lane) *benchClient { return l.peer }},
	{Key: "F1", Label: "F1: do-nothing appservice",
		room: func(l *lane) id.RoomID { return l.floorRoom }, observer: func(l *lane) *benchClient { return l.user }},
	{Key: "caseroom", Label: "caseroom",
		room: func(l *lane) id.RoomID { return l.caseroomRoom }, observer: func(l *lane) *benchClient { return l.user }},
}

// runLatency measures one scenario in one mode: warm-up for every responder, then the measured commands in rounds.
func runLatency(ctx context.Context, w *world, sc latencyScenario, mode latencyMode, opts options) ([]LatencyResult, error) {
	lanes := w.lanes[:mode.Lanes]
	perLane := ceilDiv(mode.Total, mode.Lanes)
	warmPerLane := ceilDiv(mode.Warmup, mode.Lanes)
	samples := make(map[string][]time.Duration, len(responders))
	lost := make(map[string]int, len(responders))
	responders := respondersFor(sc)
	for _, resp := range responders {
		if _, _, err := runRound(ctx, lanes, resp, sc.Command, warmPerLane); err != nil {
			return nil, fmt.Errorf("%s warm-up of %s: %w", resp.Key, sc.Name, err)
		}
	}
	rounds := min(latencyRounds, perLane)
	for r := 0; r < rounds; r++ {
		count := perLane / rounds
		if r < perLane%rounds {
			count++
		}
		for _, resp := range responders {
			got, missing, err := runRound(ctx, lanes, resp, sc.Command, count)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", resp.Key, sc.Name, err)
			}
			samples[resp.Key] = append(samples[resp.Key], got...)
			lost[resp.Key] += missing
		}
	}

	rows := make([]LatencyResult, 0, len(responders))
	byKey := map[string]*LatencyResult{}
	for _, resp := range responders {
		st := summarize(samples[resp.Key])
		rows = append(rows, LatencyResult{
			Scenario: sc.Name, Command: sc.Command, Mode: mode.Name, Rooms: mode.Lanes, Responder: resp.Key,
			Label: resp.Label, Count: len(samples[resp.Key]), Lost: lost[resp.Key], Stats: st,
		})
	}
	for i := range rows {
		byKey[rows[i].Responder] = &rows[i]
	}
	f0, f1 := byKey["F0"], byKey["F1"]
	for i := range rows {
		row := &rows[i]
		if row.Responder != "F0" {
			row.P50VsF0, row.P99VsF0 = ratio(row.P50Ms, f0.P50Ms), ratio(row.P99Ms, f0.P99Ms)
		}
		if row.Responder == "caseroom" {
			row.P50VsF1, row.P99VsF1 = ratio(row.P50Ms, f1.P50Ms), ratio(row.P99Ms, f1.P99Ms)
			row.TargetP50VsF1, row.TargetP99VsF1 = sc.TargetP50VsF1, sc.TargetP99VsF1
			if sc.TargetP50VsF1 > 0 && row.Count > 0 {
				met := row.Lost == 0 && row.P50VsF1 <= sc.TargetP50VsF1 && (sc.TargetP99VsF1 == 0 || row.P99VsF1 <= sc.TargetP99VsF1)
				row.Met = &met
			}
		}
	}
	return rows, nil
}

// respondersFor is responders, with caseroom answering in the patient room when the scenario needs a case.
func respondersFor(sc latencyScenario) []responder {
	out := slices.Clone(responders)
	if sc.PatientRoom {
		for i := range out {
			if out[i].Key == "caseroom" {
				out[i].room = func(l *lane) id.RoomID { return l.patient.Room }
			}
		}
	}
	return out
}

// pendingLatency is the report of a scenario that cannot be measured yet.
func pendingLatency(sc latencyScenario, mode latencyMode) []LatencyResult {
	rows := make([]LatencyResult, 0, len(responders))
	for _, resp := range responders {
		rows = append(rows, LatencyResult{
			Scenario: sc.Name, Command: sc.Command, Mode: mode.Name, Rooms: mode.Lanes, Responder: resp.Key,
			Label: resp.Label, Pending: sc.Pending,
		})
	}
	return rows
}

// runRound has every lane send count commands to resp, one at a time, and returns the latencies from the start of
// each send to the answer in the observer's /sync, and how many answers did not come within replyTimeout.
func runRound(ctx context.Context, lanes []*lane, resp responder, command string, count int) ([]time.Duration, int, error) {
	var (
		mu      sync.Mutex
		all     []time.Duration
		lost    int
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, l := range lanes {
		wg.Add(1)
		go func(l *lane) {
			defer wg.Done()
			room, observer := resp.room(l), resp.observer(l)
			got := make([]time.Duration, 0, count)
			missing := 0
			for i := 0; i < count; i++ {
				start := time.Now()
				sent, err := l.user.SendMessageEvent(ctx, room, event.EventMessage,
					&event.MessageEventContent{MsgType: event.MsgText, Body: command})
				if err != nil {
					errOnce.Do(func() { first = fmt.Errorf("%s failed to send: %w", l.user.UserID, err); cancel() })
					return
				}
				arrived, err := observer.wait(ctx, sent.EventID, replyTimeout)
				if errors.Is(err, errNoReply) {
					missing++
					continue
				} else if err != nil {
					errOnce.Do(func() { first = err; cancel() })
					return
				}
				got = append(got, arrived.Sub(start))
			}
			mu.Lock()
			all = append(all, got...)
			lost += missing
			mu.Unlock()
		}(l)
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = context.Cause(ctx)
	}
	return all, lost, first
}

// world is the users and rooms of the latency scenarios, with a /sync loop per client.
type world struct {
	lanes  []*lane
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// lane is one client (user) with its three rooms: with caseroom, with the floor appservice, and with a second
// client (peer) that observes F0.
type lane struct {
	user, peer                        *benchClient
	caseroomRoom, floorRoom, peerRoom id.RoomID
	patient                           patientRoom // the user's patient room in a real case (setUpCases)
}

// setUp registers 2×rooms users, creates their rooms, waits for the bots to join, and starts the /sync loops.
func setUp(ctx context.Context, hs homeserver.Server, rooms int, caseroomBot, floorBot id.UserID) (*world, error) {
	setupCtx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	lanes := make([]*lane, rooms)
	errs := make([]error, rooms)
	sem := make(chan struct{}, 4) // registration hashes passwords: a few at a time is as fast as many
	var wg sync.WaitGroup
	for i := range lanes {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			lanes[i], errs[i] = setUpLane(setupCtx, hs, i, caseroomBot, floorBot)
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	syncCtx, stopSync := context.WithCancel(ctx)
	w := &world{lanes: lanes, cancel: stopSync}
	for _, l := range lanes {
		for _, c := range []*benchClient{l.user, l.peer} {
			if err := c.startSync(setupCtx, syncCtx, &w.wg); err != nil {
				w.close()
				return nil, err
			}
		}
	}
	return w, nil
}

func setUpLane(ctx context.Context, hs homeserver.Server, i int, caseroomBot, floorBot id.UserID) (*lane, error) {
	user, err := newBenchClient(ctx, hs, fmt.Sprintf("bench_user%02d", i))
	if err != nil {
		return nil, err
	}
	peer, err := newBenchClient(ctx, hs, fmt.Sprintf("bench_peer%02d", i))
	if err != nil {
		return nil, err
	}
	l := &lane{user: user, peer: peer}
	if l.caseroomRoom, err = roomWith(ctx, user, caseroomBot, nil, false); err != nil {
		return nil, err
	}
	if l.floorRoom, err = roomWith(ctx, user, floorBot, nil, false); err != nil {
		return nil, err
	}
	if l.peerRoom, err = roomWith(ctx, user, peer.UserID, peer, false); err != nil {
		return nil, err
	}
	return l, nil
}

// roomWith creates a private room, invites member and waits until it has joined; a member given as joiner is
// made to join, a bot joins by itself. An encrypted room is a direct chat with encryption on from the start.
func roomWith(ctx context.Context, creator *benchClient, member id.UserID, joiner *benchClient, encrypted bool) (id.RoomID, error) {
	req := &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{member}}
	if encrypted {
		req.IsDirect = true
		req.InitialState = []*event.Event{{Type: event.StateEncryption, Content: event.Content{
			Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1},
		}}}
	}
	resp, err := creator.CreateRoom(ctx, req)
	if err != nil {
		return "", fmt.Errorf("%s failed to create a room: %w", creator.UserID, err)
	}
	if joiner != nil {
		if _, err = joiner.JoinRoomByID(ctx, resp.RoomID); err != nil {
			return "", fmt.Errorf("%s failed to join %s: %w", joiner.UserID, resp.RoomID, err)
		}
	}
	for {
		members, err := creator.JoinedMembers(ctx, resp.RoomID)
		if err != nil {
			return "", fmt.Errorf("failed to list the members of %s: %w", resp.RoomID, err)
		}
		if _, ok := members.Joined[member]; ok {
			return resp.RoomID, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%s did not join the room of %s: %w", member, creator.UserID, context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (w *world) userIDs() []id.UserID {
	ids := make([]id.UserID, len(w.lanes))
	for i, l := range w.lanes {
		ids[i] = l.user.UserID
	}
	return ids
}

// syncErrors counts the failed /sync requests of all clients.
func (w *world) syncErrors() int64 {
	var n int64
	for _, l := range w.lanes {
		n += l.user.syncErrors.Load() + l.peer.syncErrors.Load()
	}
	return n
}

// close stops the /sync loops.
func (w *world) close() {
	w.cancel()
	w.wg.Wait()
	for _, l := range w.lanes {
		l.user.Client.Client.CloseIdleConnections()
		l.peer.Client.Client.CloseIdleConnections()
	}
}

// benchClient is a registered user with a /sync loop that notes when answers arrive. An answer's key is the event
// it replies to (m.relates_to.m.in_reply_to), or for a plain message from someone else, its own event ID.
type benchClient struct {
	*mautrix.Client
	filterID string

	mu      sync.Mutex
	arrived map[id.EventID]time.Time      // answers nobody waits for yet (they can beat the send's response)
	waiters map[id.EventID]chan time.Time // sends waiting for their answer

	syncErrors atomic.Int64
}

// maxUnclaimed bounds the answers kept that nobody waited for (lost replies arriving late, welcome messages).
const maxUnclaimed = 10_000

var errNoReply = errors.New("no reply")

func newBenchClient(ctx context.Context, hs homeserver.Server, localpart string) (*benchClient, error) {
	cli, err := hs.RegisterUser(ctx, localpart, random.String(24), false)
	if err != nil {
		return nil, err
	}
	// Its own connections: a /sync long-poll and a send at a time, without sharing a pool with other clients.
	cli.Client = &http.Client{Timeout: 60 * time.Second, Transport: newTransport(4)}
	return &benchClient{
		Client:  cli,
		arrived: make(map[id.EventID]time.Time),
		waiters: make(map[id.EventID]chan time.Time),
	}, nil
}

// syncFilter keeps /sync to the room messages the benchmark looks at.
var syncFilter = &mautrix.Filter{
	AccountData: &mautrix.FilterPart{Types: []event.Type{{Type: "org.caseroom.bench.none"}}},
	Presence:    &mautrix.FilterPart{Types: []event.Type{{Type: "org.caseroom.bench.none"}}},
	Room: &mautrix.RoomFilter{
		AccountData: &mautrix.FilterPart{Types: []event.Type{{Type: "org.caseroom.bench.none"}}},
		Ephemeral:   &mautrix.FilterPart{Types: []event.Type{{Type: "org.caseroom.bench.none"}}},
		Timeline:    &mautrix.FilterPart{Types: []event.Type{event.EventMessage, event.EventEncrypted}, Limit: 50},
	},
}

// startSync uploads the filter, makes an initial sync (what came before is not an answer) and starts the loop.
func (c *benchClient) startSync(setupCtx, loopCtx context.Context, wg *sync.WaitGroup) error {
	filter, err := c.CreateFilter(setupCtx, syncFilter)
	if err != nil {
		return fmt.Errorf("%s failed to create a sync filter: %w", c.UserID, err)
	}
	c.filterID = filter.FilterID
	resp, err := c.SyncRequest(setupCtx, 0, "", c.filterID, false, event.PresenceOffline)
	if err != nil {
		return fmt.Errorf("initial sync of %s failed: %w", c.UserID, err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.syncLoop(loopCtx, resp.NextBatch)
	}()
	return nil
}

// syncLoop long-polls /sync (30 s) and delivers every message from someone else to its waiter.
func (c *benchClient) syncLoop(ctx context.Context, since string) {
	for ctx.Err() == nil {
		resp, err := c.SyncRequest(ctx, 30_000, since, c.filterID, false, event.PresenceOffline)
		if err != nil {
			c.syncErrors.Add(1)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		now := time.Now()
		since = resp.NextBatch
		for _, room := range resp.Rooms.Join {
			for _, evt := range room.Timeline.Events {
				if (evt.Type.Type != event.EventMessage.Type && evt.Type.Type != event.EventEncrypted.Type) || evt.Sender == c.UserID {
					continue
				}
				// caseroom's replies in encrypted rooms are m.room.encrypted events that keep m.relates_to in
				// cleartext, so a reply is matched the same way whether it is encrypted or not.
				key := evt.ID
				if replyTo := replyTarget(evt.Content.VeryRaw); replyTo != "" {
					key = replyTo
				}
				c.deliver(key, now)
			}
		}
	}
}

// replyTarget is m.relates_to.m.in_reply_to.event_id of an event's content, or "".
func replyTarget(raw json.RawMessage) id.EventID {
	var content struct {
		RelatesTo struct {
			InReplyTo struct {
				EventID id.EventID `json:"event_id"`
			} `json:"m.in_reply_to"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(raw, &content) != nil {
		return ""
	}
	return content.RelatesTo.InReplyTo.EventID
}

func (c *benchClient) deliver(key id.EventID, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch, ok := c.waiters[key]; ok {
		ch <- at
		delete(c.waiters, key)
		return
	}
	if len(c.arrived) >= maxUnclaimed {
		clear(c.arrived)
	}
	c.arrived[key] = at
}

// wait returns when the answer to eventID arrived, or errNoReply after timeout.
func (c *benchClient) wait(ctx context.Context, eventID id.EventID, timeout time.Duration) (time.Time, error) {
	c.mu.Lock()
	if at, ok := c.arrived[eventID]; ok {
		delete(c.arrived, eventID)
		c.mu.Unlock()
		return at, nil
	}
	ch := make(chan time.Time, 1)
	c.waiters[eventID] = ch
	c.mu.Unlock()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case at := <-ch:
		return at, nil
	case <-timer.C:
	case <-ctx.Done():
	}
	c.mu.Lock()
	delete(c.waiters, eventID)
	c.mu.Unlock()
	select {
	case at := <-ch: // delivered while giving up
		return at, nil
	default:
	}
	if ctx.Err() != nil {
		return time.Time{}, context.Cause(ctx)
	}
	return time.Time{}, errNoReply
}

// newTransport is an HTTP transport for loopback: no proxy from the environment, a few idle connections per host.
func newTransport(idlePerHost int) *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        max(100, idlePerHost),
		MaxIdleConnsPerHost: idlePerHost,
		IdleConnTimeout:     90 * time.Second,
	}
}

// Stats are latency percentiles in milliseconds.
type Stats struct {
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MeanMs float64 `json:"mean_ms"`
	MaxMs  float64 `json:"max_ms"`
}

func summarize(samples []time.Duration) Stats {
	if len(samples) == 0 {
		return Stats{}
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	var sum time.Duration
	for _, d := range sorted {
		sum += d
	}
	return Stats{
		P50Ms:  ms(percentile(sorted, 0.50)),
		P90Ms:  ms(percentile(sorted, 0.90)),
		P99Ms:  ms(percentile(sorted, 0.99)),
		MeanMs: ms(sum / time.Duration(len(sorted))),
		MaxMs:  ms(sorted[len(sorted)-1]),
	}
}

// percentile is the nearest-rank percentile of sorted samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func ceilDiv(a, b int) int {
	return (a + b - 1) / b
}
