package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/store"
)

// txnSize is the number of events per ingest and drain transaction: Dendrite's maximum, and within Synapse's
// (100). caseroom takes transactions of any number of events up to appservice.max_body_bytes.
const txnSize = 50

// ingestScenario is a load of transactions posted straight to caseroom's transaction endpoint. The outbox drain
// (check-ins sent on to the FHIR server) becomes a row here once it exists.
type ingestScenario struct {
	Name string
	// Conns is how many transactions are in flight at once; a homeserver sends one at a time per appservice.
	Conns int
	// CheckinShare is the share of messages shaped like check-ins; the rest is chat.
	CheckinShare float64
	// TargetEventsPerSec is the goal for acknowledged events per second on SQLite (0: none).
	TargetEventsPerSec float64
	// TargetCheckinsPerSec is the goal for check-ins stored as records with their outbox rows per second.
	TargetCheckinsPerSec float64
	Pending              string
}

var ingestScenarios = []ingestScenario{
	{Name: "ingest, 1 connection (as a homeserver sends)", Conns: 1, CheckinShare: 0.10, TargetEventsPerSec: 20_000, TargetCheckinsPerSec: 3_000, Pending: pendingEncryptedClients},
	{Name: "ingest, 4 connections", Conns: 4, CheckinShare: 0.10, TargetEventsPerSec: 20_000, TargetCheckinsPerSec: 3_000, Pending: pendingEncryptedClients},
}

// chatLines are the bodies of the chat messages, numbered to make each unique.
var chatLines = []string{
	"Good morning, slept better last night",
	"Took the evening dose at 8 as agreed",
	"A bit dizzy after lunch, better now",
	"Thanks! See you at Thursday's appointment",
	"Walked 20 minutes today without pain",
	"Can we move the call to the afternoon?",
}

// checkinLine is the check-in of the ingest scenarios: two vitals, one record and one outbox row.
const checkinLine = "!checkin bp=120/80 hr=70"

// ingestRun is one ingest measurement.
type ingestRun struct {
	scenario ingestScenario
	events   int
	botURL   string
	hsToken  string
	domain   string
	senders  []id.UserID
	template json.RawMessage // a message event as the homeserver delivered it; nil makes one up
	inbox    *store.InboxQuery
	st       *store.Store
	patients []patientRoom // real patient rooms: the check-ins go there, sent by their patient
}

// runIngest posts the transactions, then waits until caseroom has processed what it acknowledged.
func runIngest(ctx context.Context, r ingestRun) (IngestResult, error) {
	sc := r.scenario
	res := IngestResult{Scenario: sc.Name, Conns: sc.Conns, TargetEventsPerSec: sc.TargetEventsPerSec, TargetCheckinsPerSec: sc.TargetCheckinsPerSec}
	bodies, checkins, err := r.transactions()
	if err != nil {
		return res, err
	}
	res.Transactions, res.Events, res.CheckinShaped = len(bodies), len(bodies)*txnSize, checkins
	res.TemplateRecorded = r.template != nil

	checkinsBefore, err := countRows(ctx, r.st, "SELECT COUNT(*) FROM checkins")
	if err != nil {
		return res, err
	}
	outboxBefore, err := countRows(ctx, r.st, "SELECT COUNT(*) FROM ehr_outbox")
	if err != nil {
		return res, err
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: newTransport(sc.Conns)}
	defer client.CloseIdleConnections()
	runID := random.String(8)
	latencies := make([]time.Duration, len(bodies))
	var (
		next     atomic.Int64
		failures atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for w := 0; w < sc.Conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(bodies) {
					return
				}
				url := fmt.Sprintf("%s/_matrix/app/v1/transactions/bench.%s.%d", r.botURL, runID, i)
				began := time.Now()
				err := putTransaction(ctx, client, url, r.hsToken, bodies[i])
				latencies[i] = time.Since(began)
				if err != nil {
					failures.Add(1)
					errOnce.Do(func() { firstErr = err })
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return res, context.Cause(ctx)
	}
	if n := failures.Load(); n > 0 {
		return res, fmt.Errorf("%d of %d transactions were not acknowledged, first: %w", n, len(bodies), firstErr)
	}
	res.Seconds = elapsed.Seconds()
	res.EventsPerSec = float64(res.Events) / elapsed.Seconds()
	res.Ack = summarize(latencies)

	// Processing goes on after the acknowledgement; the next measurement should not compete with it.
	drainCtx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	for {
		if !res.CheckinsFinished {
			stored, err := countRows(drainCtx, r.st, "SELECT COUNT(*) FROM checkins")
			if err == nil && stored-checkinsBefore >= checkins {
				res.CheckinsFinished = true
				res.CheckinsSeconds = time.Since(start).Seconds()
				res.CheckinsPerSec = float64(checkins) / res.CheckinsSeconds
			}
		}
		backlog, _, err := r.inbox.Backlog(drainCtx)
		if err == nil && backlog == 0 && res.CheckinsFinished {
			res.DrainFinished = true
			break
		}
		if err != nil && drainCtx.Err() == nil {
			return res, fmt.Errorf("failed to read the inbox backlog: %w", err)
		}
		if drainCtx.Err() != nil {
			if ctx.Err() != nil {
				return res, context.Cause(ctx)
			}
			break // reported as unfinished
		}
		time.Sleep(50 * time.Millisecond)
	}
	res.ProcessedSeconds = time.Since(start).Seconds()
	if n, err := countRows(ctx, r.st, "SELECT COUNT(*) FROM checkins"); err == nil {
		res.CheckinsStored = n - checkinsBefore
	}
	if n, err := countRows(ctx, r.st, "SELECT COUNT(*) FROM ehr_outbox"); err == nil {
		res.OutboxRows = n - outboxBefore
	}
	if res.DrainFinished {
		res.ProcessedPerSec = float64(res.Events) / res.ProcessedSeconds
	}
	return res, nil
}

func putTransaction(ctx context.Context, client *http.Client, url, hsToken string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+hsToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("transaction answered %s: %s", resp.Status, answer)
	}
	return nil
}

// transactions builds the request bodies before the clock starts: events copied from the template with new event
// IDs, bodies and timestamps, with exactly CheckinShare of them check-ins at shuffled positions. Check-ins go to the
// real patient rooms of the cases, sent by their patients, so caseroom stores them and queues them for the EHR;
// chat goes to 16 made-up rooms from the bench's senders.
func (r ingestRun) transactions() (bodies [][]byte, checkins int, err error) {
	template := map[string]any{}
	if r.template != nil {
		if err = json.Unmarshal(r.template, &template); err != nil {
			return nil, 0, fmt.Errorf("the recorded event is not a JSON object: %w", err)
		}
	}
	template["type"] = "m.room.message"
	delete(template, "state_key")
	senders := r.senders
	if len(senders) == 0 {
		senders = []id.UserID{id.NewUserID("bench_user00", r.domain)}
	}
	rooms := make([]id.RoomID, 16)
	for i := range rooms {
		rooms[i] = id.RoomID("!" + random.String(18) + ":" + r.domain)
	}
	if len(r.patients) == 0 {
		return nil, 0, errors.New("no patient rooms to send check-ins to")
	}

	total := ceilDiv(r.events, txnSize) * txnSize
	checkins = int(float64(total)*r.scenario.CheckinShare + 0.5)
	isCheckin := make([]bool, total)
	for i := 0; i < checkins; i++ {
		isCheckin[i] = true
	}
	rng := mathrand.New(mathrand.NewPCG(1, 2))
	rng.Shuffle(total, func(i, j int) { isCheckin[i], isCheckin[j] = isCheckin[j], isCheckin[i] })

	baseTS := time.Now().UnixMilli()
	bodies = make([][]byte, 0, total/txnSize)
	events := make([]json.RawMessage, 0, txnSize)
	for i := 0; i < total; i++ {
		body := checkinLine
		if !isCheckin[i] {
			body = fmt.Sprintf("%s (%d)", chatLines[i%len(chatLines)], i)
		}
		evt := make(map[string]any, len(template))
		for k, v := range template {
			evt[k] = v
		}
		evt["event_id"] = newEventID()
		evt["room_id"] = rooms[i%len(rooms)]
		evt["sender"] = senders[i%len(senders)]
		if isCheckin[i] {
			p := r.patients[i%len(r.patients)]
			evt["room_id"], evt["sender"] = p.Room, p.Patient
		}
		evt["origin_server_ts"] = baseTS + int64(i)
		evt["content"] = map[string]any{"msgtype": "m.text", "body": body}
		evt["unsigned"] = map[string]any{"age": 12}
		raw, err := json.Marshal(evt)
		if err != nil {
			return nil, 0, err
		}
		events = append(events, raw)
		if len(events) == txnSize {
			txn, err := json.Marshal(map[string]any{"events": events})
			if err != nil {
				return nil, 0, err
			}
			bodies = append(bodies, txn)
			events = events[:0]
		}
	}
	if len(bodies) == 0 {
		return nil, 0, errors.New("no transactions to send")
	}
	return bodies, checkins, nil
}

// newEventID makes an event ID shaped like those of room versions 4 and later: $ and 43 URL-safe base64 characters.
func newEventID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return "$" + base64.RawURLEncoding.EncodeToString(b[:])
}

// countRows runs a SELECT COUNT(*) on caseroom's database.
func countRows(ctx context.Context, st *store.Store, query string) (int, error) {
	var n int
	if err := st.DB.QueryRow(ctx, query).Scan(&n); err != nil {
		return 0, fmt.Errorf("%s: %w", query, err)
	}
	return n, nil
}
