package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"go.mau.fi/util/random"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/fhirtest"
	"github.com/caseroom/caseroom/store"
)

// Sizes of the outbox drain scenario.
const (
	defaultServerCreates = 500
	quickServerCreates   = 200
	defaultDrainCheckins = 1000
	quickDrainCheckins   = 400
	drainTargetRatio     = 1.0
	drainCheckinLine     = "!checkin hr=72" // one Observation per check-in, one transaction Bundle each
	// pendingDrain says why the drain is not measured ("" measures it): its check-ins are posted in clear text.
	pendingDrain = pendingEncryptedClients
)

// DrainResult compares caseroom's outbox drain with the FHIR server's own sequential create rate.
type DrainResult struct {
	ServerCreates       int     `json:"server_creates"`
	ServerSeconds       float64 `json:"server_seconds"`
	ServerCreatesPerSec float64 `json:"server_creates_per_sec"`
	Checkins            int     `json:"checkins"`
	StoredSeconds       float64 `json:"stored_seconds"`    // first post to all check-ins stored
	PendingAtStored     int     `json:"pending_at_stored"` // outbox rows undelivered at that moment
	TailSeconds         float64 `json:"tail_seconds"`      // all stored to outbox empty
	TotalSeconds        float64 `json:"total_seconds"`     // first post to outbox empty
	DrainPerSec         float64 `json:"drain_per_sec"`     // PendingAtStored / TailSeconds (Observations/s)
	OverallPerSec       float64 `json:"overall_per_sec"`   // Checkins / TotalSeconds
	Ratio               float64 `json:"ratio"`             // DrainPerSec / ServerCreatesPerSec
	Finished            bool    `json:"finished"`
	Duplicates          int     `json:"duplicates"`               // check-ins with more than one Observation
	Missing             int     `json:"missing"`                  // check-ins with no Observation
	Dead                int     `json:"dead"`                     // outbox rows given up on
	PreviousBacklogSecs float64 `json:"previous_backlog_seconds"` // waiting for earlier check-ins to drain first
	TargetRatio         float64 `json:"target_ratio"`
	// When earlier check-ins were still being filed: their delivery rate (records/s) over the wait, what was left,
	// and BacklogRecordsPerSec × 2 Observations ÷ the server rate.
	BacklogRecordsPerSec float64 `json:"backlog_records_per_sec,omitempty"`
	BacklogPending       int     `json:"backlog_pending,omitempty"`
	BacklogRatio         float64 `json:"backlog_ratio,omitempty"`
	// Error is why the scenario stopped early (the rest of the run goes on).
	Error string `json:"error,omitempty"`
}

type drainRun struct {
	creates, checkins int
	botURL, hsToken   string
	st                *store.Store
	fhir              *fhirtest.Server
	patients          []patientRoom
}

const (
	pendingQuery   = "SELECT COUNT(*) FROM ehr_outbox WHERE delivered_at IS NULL AND dead_at IS NULL"
	deliveredQuery = "SELECT COUNT(*) FROM ehr_outbox WHERE delivered_at IS NOT NULL"
	// backlogWait bounds the wait for earlier check-ins to be filed before the burst.
	backlogWait = 90 * time.Second
	// ingestObservationsPerCheckin is what checkinLine files: a blood pressure panel and a heart rate.
	ingestObservationsPerCheckin = 2
)

// runDrain waits for the outbox to be empty, times the FHIR server's own sequential creates, then posts a burst of
// check-ins into the patient rooms and times how fast caseroom files them.
func runDrain(ctx context.Context, r drainRun) (*DrainResult, error) {
	res := &DrainResult{TargetRatio: drainTargetRatio}
	began := time.Now()
	deliveredBefore, err := countRows(ctx, r.st, deliveredQuery)
	if err != nil {
		return res, err
	}
	err = waitPending(ctx, r.st, backlogWait)
	res.PreviousBacklogSecs = time.Since(began).Seconds()
	if err != nil {
		// The earlier check-ins (latency and ingest) are still being filed: their delivery rate over the wait is
		// the fallback drain rate, compared with the server's create rate measured next (while caseroom's outbox
		// also uses the server, so the server rate is understated).
		deliveredAfter, _ := countRows(ctx, r.st, deliveredQuery)
		res.BacklogPending, _ = countRows(ctx, r.st, pendingQuery)
		res.BacklogRecordsPerSec = float64(deliveredAfter-deliveredBefore) / res.PreviousBacklogSecs
		if serr := r.serverRate(ctx, res); serr != nil {
			return res, serr
		}
		res.BacklogRatio = ratio(res.BacklogRecordsPerSec*ingestObservationsPerCheckin, res.ServerCreatesPerSec)
		return res, fmt.Errorf("the outbox still held %d undelivered rows of earlier check-ins after %s; "+
			"the burst was not posted (fallback: the earlier rows' delivery rate)", res.BacklogPending, backlogWait)
	}
	if err = r.serverRate(ctx, res); err != nil {
		return res, err
	}

	// (b) A burst of check-ins into the patient rooms, one 50-event transaction at a time.
	total := ceilDiv(r.checkins, txnSize) * txnSize
	res.Checkins = total
	eventIDs := make([]string, 0, total)
	var bodies [][]byte
	events := make([]map[string]any, 0, txnSize)
	baseTS := time.Now().UnixMilli()
	for i := 0; i < total; i++ {
		p := r.patients[i%len(r.patients)]
		evID := newEventID()
		eventIDs = append(eventIDs, evID)
		events = append(events, map[string]any{
			"type": "m.room.message", "event_id": evID, "room_id": p.Room, "sender": p.Patient,
			"origin_server_ts": baseTS + int64(i), "content": map[string]any{"msgtype": "m.text", "body": drainCheckinLine},
			"unsigned": map[string]any{"age": 12},
		})
		if len(events) == txnSize {
			b, err := json.Marshal(map[string]any{"events": events})
			if err != nil {
				return res, err
			}
			bodies = append(bodies, b)
			events = events[:0]
		}
	}
	var before int
	before, err = countRows(ctx, r.st, "SELECT COUNT(*) FROM checkins")
	if err != nil {
		return res, err
	}
	botClient := &http.Client{Timeout: 30 * time.Second, Transport: newTransport(1)}
	defer botClient.CloseIdleConnections()
	runID := random.String(8)
	start := time.Now()
	for i, b := range bodies {
		if err = putTransaction(ctx, botClient, fmt.Sprintf("%s/_matrix/app/v1/transactions/drain.%s.%d", r.botURL, runID, i), r.hsToken, b); err != nil {
			return res, err
		}
	}
	waitCtx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	if err = waitUntil(waitCtx, "the burst of check-ins to be stored", func() (bool, error) {
		n, err := countRows(waitCtx, r.st, "SELECT COUNT(*) FROM checkins")
		if err != nil {
			return false, err
		}
		if n-before < total {
			return false, nil
		}
		res.StoredSeconds = time.Since(start).Seconds()
		res.PendingAtStored, err = countRows(waitCtx, r.st, pendingQuery)
		return true, err
	}); err != nil {
		return res, err
	}
	stored := time.Now()
	if err = waitPendingFast(waitCtx, r.st); err != nil {
		return res, fmt.Errorf("the outbox did not drain: %w", err)
	}
	res.Finished = true
	res.TailSeconds = time.Since(stored).Seconds()
	res.TotalSeconds = time.Since(start).Seconds()
	res.OverallPerSec = float64(total) / res.TotalSeconds
	if res.PendingAtStored > 0 && res.TailSeconds > 0 {
		res.DrainPerSec = float64(res.PendingAtStored) / res.TailSeconds
	} else {
		res.DrainPerSec = res.OverallPerSec
	}
	res.Ratio = ratio(res.DrainPerSec, res.ServerCreatesPerSec)
	if res.Dead, err = countRows(ctx, r.st, "SELECT COUNT(*) FROM ehr_outbox WHERE dead_at IS NOT NULL"); err != nil {
		return res, err
	}

	// Exactly one Observation per check-in, by the identifier caseroom gives it.
	for _, evID := range eventIDs {
		n, err := r.fhir.Count(ctx, "Observation", url.Values{"identifier": {ehr.ObservationIdentifierSystem + "|" + evID + "/hr"}})
		if err != nil {
			return res, fmt.Errorf("failed to count Observations: %w", err)
		}
		switch {
		case n == 0:
			res.Missing++
		case n > 1:
			res.Duplicates++
		}
	}
	return res, nil
}

// waitPending waits until the outbox has no undelivered rows, polling every 200 ms.
func waitPending(ctx context.Context, st *store.Store, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return waitPendingFast(ctx, st)
}

func waitPendingFast(ctx context.Context, st *store.Store) error {
	return waitUntil(ctx, "the EHR outbox to empty", func() (bool, error) {
		n, err := countRows(ctx, st, pendingQuery)
		return n == 0 && err == nil, err
	})
}

// serverRate times the FHIR server's own sequential Observation creates over one keep-alive connection.
func (r drainRun) serverRate(ctx context.Context, res *DrainResult) error {
	client := &http.Client{Timeout: 30 * time.Second, Transport: newTransport(1)}
	defer client.CloseIdleConnections()
	obs, _ := json.Marshal(ehr.Observation{
		ResourceType: "Observation", Status: "final",
		Code:          ehr.CodeableConcept{Coding: []ehr.Coding{{System: "http://loinc.org", Code: "8867-4"}}},
		Subject:       &ehr.Reference{Reference: r.patients[0].PatientRef},
		ValueQuantity: &ehr.Quantity{Value: 72, Unit: "/min", System: "http://unitsofmeasure.org", Code: "/min"},
	})
	start := time.Now()
	for i := 0; i < r.creates; i++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.fhir.URL+"/Observation", bytes.NewReader(obs))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/fhir+json")
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("FHIR server create: %w", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
			return fmt.Errorf("FHIR server create answered %s", resp.Status)
		}
	}
	res.ServerCreates = r.creates
	res.ServerSeconds = time.Since(start).Seconds()
	res.ServerCreatesPerSec = float64(r.creates) / res.ServerSeconds

	return nil
}
