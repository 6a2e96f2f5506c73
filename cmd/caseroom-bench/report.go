package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Report is everything one run measured; it is printed as Markdown and written as JSON.
type Report struct {
	Machine Machine         `json:"machine"`
	Command string          `json:"command"`
	Options options         `json:"options"`
	Targets Targets         `json:"targets"`
	Engines []*EngineResult `json:"engines"`
}

// Machine describes where the run happened.
type Machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	GoVersion string `json:"go_version"`
	Kernel    string `json:"kernel"`
	Date      string `json:"date"`
	// Homeserver is the homeserver software caseroom ran on (dendrite, synapse), HomeserverVersion its release.
	Homeserver        string `json:"homeserver"`
	HomeserverVersion string `json:"homeserver_version"`
	BuildTags         string `json:"caseroom_build_tags"`
	BuildNote         string `json:"caseroom_build_note,omitempty"`
	GOMAXPROCS        int    `json:"gomaxprocs"`
	// LoadAvg is /proc/loadavg when the run started: other work on the machine skews every number.
	LoadAvg string `json:"load_avg"`
}

// Targets are the goals of the issue that are not per scenario (latency targets are in latencyScenarios, ingest
// targets in ingestScenarios).
type Targets struct {
	IdleRSSMB    float64 `json:"idle_rss_mb"`
	PeakRSSMB    float64 `json:"peak_rss_mb"`
	StartupMs    float64 `json:"startup_ms"`
	IngestEngine string  `json:"ingest_engine"` // the engine the ingest target is set for
}

var benchTargets = Targets{IdleRSSMB: 40, PeakRSSMB: 150, StartupMs: 500, IngestEngine: string(engineSQLite)}

// EngineResult is the measurements on one database engine.
type EngineResult struct {
	Engine           string          `json:"engine"`
	Latency          []LatencyResult `json:"latency"`
	Ingest           []IngestResult  `json:"ingest"`
	Memory           MemoryResult    `json:"memory"`
	Startup          StartupResult   `json:"startup"`
	Drain            *DrainResult    `json:"outbox_drain,omitempty"`
	FloorReplyErrors int64           `json:"floor_reply_errors"`
	SyncErrors       int64           `json:"sync_errors"`
	// Error is why the engine's run stopped early; what it measured until then is kept.
	Error string `json:"error,omitempty"`
}

// LatencyResult is one responder in one scenario and mode.
type LatencyResult struct {
	Scenario  string `json:"scenario"`
	Command   string `json:"command"`
	Mode      string `json:"mode"`
	Rooms     int    `json:"rooms"`
	Responder string `json:"responder"` // F0, F1 or caseroom
	Label     string `json:"label"`
	Count     int    `json:"count"`
	Lost      int    `json:"lost"`
	Stats
	P50VsF0       float64 `json:"p50_vs_f0,omitempty"`
	P99VsF0       float64 `json:"p99_vs_f0,omitempty"`
	P50VsF1       float64 `json:"p50_vs_f1,omitempty"`
	P99VsF1       float64 `json:"p99_vs_f1,omitempty"`
	TargetP50VsF1 float64 `json:"target_p50_vs_f1,omitempty"`
	TargetP99VsF1 float64 `json:"target_p99_vs_f1,omitempty"`
	Met           *bool   `json:"met,omitempty"`
	Pending       string  `json:"pending,omitempty"`
}

// IngestResult is one ingest scenario.
type IngestResult struct {
	Scenario           string  `json:"scenario"`
	Conns              int     `json:"connections,omitempty"`
	Events             int     `json:"events,omitempty"`
	Transactions       int     `json:"transactions,omitempty"`
	CheckinShaped      int     `json:"checkin_shaped,omitempty"`
	TemplateRecorded   bool    `json:"template_recorded,omitempty"` // events copied from one the homeserver delivered
	Seconds            float64 `json:"seconds,omitempty"`
	EventsPerSec       float64 `json:"acked_events_per_sec,omitempty"`
	Ack                Stats   `json:"ack_latency"`
	ProcessedSeconds   float64 `json:"processed_seconds,omitempty"` // first post to empty inbox backlog
	ProcessedPerSec    float64 `json:"processed_events_per_sec,omitempty"`
	DrainFinished      bool    `json:"drain_finished"`
	TargetEventsPerSec float64 `json:"target_events_per_sec,omitempty"`
	// Check-ins stored as records (checkins rows) per second from the first post, replies excluded.
	CheckinsStored       int     `json:"checkins_stored"`
	OutboxRows           int     `json:"outbox_rows"`
	CheckinsFinished     bool    `json:"checkins_finished"`
	CheckinsSeconds      float64 `json:"checkins_seconds,omitempty"`
	CheckinsPerSec       float64 `json:"checkins_per_sec,omitempty"`
	TargetCheckinsPerSec float64 `json:"target_checkins_per_sec,omitempty"`
	Pending              string  `json:"pending,omitempty"`
}

// MemoryResult is caseroom's resident memory in KiB from /proc/<pid>/status.
type MemoryResult struct {
	IdleRSSKiB         int64   `json:"idle_rss_kib"`
	AfterLatencyRSSKiB int64   `json:"after_latency_rss_kib"`
	EndRSSKiB          int64   `json:"end_rss_kib"`
	PeakRSSKiB         int64   `json:"peak_rss_kib"` // VmHWM of the process that ran every load
	IdleRSSMB          float64 `json:"idle_rss_mb"`
	PeakRSSMB          float64 `json:"peak_rss_mb"`
}

func (m *MemoryResult) summarize() {
	m.IdleRSSMB, m.PeakRSSMB = kibToMB(m.IdleRSSKiB), kibToMB(m.PeakRSSKiB)
}

// kibToMB converts KiB to megabytes (10^6 bytes), the stricter reading of the targets.
func kibToMB(kib int64) float64 {
	return float64(kib) * 1024 / 1e6
}

// StartupResult is process start to the first 200 from /_matrix/mau/ready.
type StartupResult struct {
	FirstStartMs float64   `json:"first_start_ms"` // on the fresh database, migrations included
	RunsMs       []float64 `json:"runs_ms"`        // on the migrated database
	MedianMs     float64   `json:"median_ms"`
	MaxMs        float64   `json:"max_ms"`
}

func (s *StartupResult) summarize() {
	if len(s.RunsMs) == 0 {
		return
	}
	sorted := slices.Clone(s.RunsMs)
	slices.Sort(sorted)
	s.MedianMs = sorted[(len(sorted)-1)/2]
	s.MaxMs = sorted[len(sorted)-1]
}

func describeMachine(build buildResult, hs installedHomeserver) Machine {
	m := Machine{
		CPU: cpuModel(), Cores: runtime.NumCPU(), GoVersion: build.GoVersion, GOMAXPROCS: runtime.GOMAXPROCS(0),
		Date: time.Now().UTC().Format(time.RFC3339), Homeserver: hs.Name, HomeserverVersion: hs.Version,
		BuildTags: build.Tags, BuildNote: build.TagsNote,
	}
	if m.GoVersion == "" {
		m.GoVersion = runtime.Version()
	}
	if m.BuildTags == "" {
		m.BuildTags = "none"
	}
	if raw, err := os.ReadFile("/proc/loadavg"); err == nil {
		if fields := strings.Fields(string(raw)); len(fields) >= 3 {
			m.LoadAvg = strings.Join(fields[:3], " ")
		}
	}
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(raw))
	}
	return m
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if key, value, ok := strings.Cut(scanner.Text(), ":"); ok && strings.TrimSpace(key) == "model name" {
			return strings.TrimSpace(value)
		}
	}
	return "unknown"
}

func writeJSON(path string, report *Report) error {
	out, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		return err
	}
	if err = os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}

// printMarkdown writes the report: the machine, then per engine a latency table and a table of ingest, memory
// and start-up with the targets beside them.
func printMarkdown(w io.Writer, r *Report) {
	m := r.Machine
	hs := homeserverTitle(m.Homeserver, m.HomeserverVersion)
	fmt.Fprintf(w, "## caseroom benchmark on %s\n\n", hs)
	fmt.Fprintf(w, "- Machine: %s, %d cores, %s, %s\n", m.CPU, m.Cores, m.GoVersion, m.Kernel)
	fmt.Fprintf(w, "- Date: %s; load average at start: %s; homeserver: %s; caseroom built with tags: %s\n",
		m.Date, m.LoadAvg, hs, m.BuildTags)
	if m.BuildNote != "" {
		fmt.Fprintf(w, "- Note: %s\n", m.BuildNote)
	}
	fmt.Fprintf(w, "- Command: `%s` (n=%d, warm-up=%d, rooms=%d, ingest events=%d, start-ups=%d)\n",
		r.Command, r.Options.N, r.Options.Warmup, r.Options.Rooms, r.Options.IngestEvents, r.Options.StartupRuns)
	fmt.Fprintf(w, "- Latency: from the start of a client's send to the answer in its /sync. F0 is the homeserver's own echo "+
		"latency (the message in another client's /sync), F1 a do-nothing appservice's reply. Targets are goals, not assertions.\n")

	for _, e := range r.Engines {
		fmt.Fprintf(w, "\n### %s on %s\n\n", engine(e.Engine).title(), hs)
		fmt.Fprintln(w, "| scenario | responder | n | lost | p50 ms | p99 ms | p50 ×F1 | p99 ×F1 | p50 ×F0 | p99 ×F0 | target | |")
		fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|")
		for _, l := range e.Latency {
			name := fmt.Sprintf("%s, %s", l.Scenario, l.Mode)
			if l.Pending != "" {
				if l.Responder == "caseroom" {
					fmt.Fprintf(w, "| %s | %s | | | | | | | | | | pending: %s |\n", name, l.Label, l.Pending)
				}
				continue
			}
			target, verdict := "", ""
			if l.TargetP50VsF1 > 0 {
				target = fmt.Sprintf("p50 ≤ %.2f×F1", l.TargetP50VsF1)
				if l.TargetP99VsF1 > 0 {
					target += fmt.Sprintf(", p99 ≤ %.2f×F1", l.TargetP99VsF1)
				}
			}
			if l.Met != nil {
				verdict = metWord(*l.Met)
			}
			fmt.Fprintf(w, "| %s | %s | %d | %d | %.1f | %.1f | %s | %s | %s | %s | %s | %s |\n", name, l.Label,
				l.Count, l.Lost, l.P50Ms, l.P99Ms, ratioText(l.P50VsF1), ratioText(l.P99VsF1),
				ratioText(l.P50VsF0), ratioText(l.P99VsF0), target, verdict)
		}

		fmt.Fprintln(w)
		fmt.Fprintln(w, "| measure | result | target | |")
		fmt.Fprintln(w, "|---|--:|---|---|")
		for _, in := range e.Ingest {
			if in.Pending != "" {
				fmt.Fprintf(w, "| %s | | | pending: %s |\n", in.Scenario, in.Pending)
				continue
			}
			target, verdict := "", ""
			if in.TargetEventsPerSec > 0 {
				if e.Engine == r.Targets.IngestEngine {
					target = fmt.Sprintf("≥ %s", thousands(in.TargetEventsPerSec))
					verdict = metWord(in.EventsPerSec >= in.TargetEventsPerSec)
				} else {
					target = fmt.Sprintf("(≥ %s set for %s)", thousands(in.TargetEventsPerSec), engine(r.Targets.IngestEngine).title())
				}
			}
			fmt.Fprintf(w, "| %s: acknowledged events/s (%d events, %d%% check-in-shaped) | %s | %s | %s |\n",
				in.Scenario, in.Events, percentOf(in.CheckinShaped, in.Events), thousands(in.EventsPerSec), target, verdict)
			fmt.Fprintf(w, "| %s: ack latency p50 / p99 per %d-event transaction | %.2f / %.2f ms | | |\n",
				in.Scenario, txnSize, in.Ack.P50Ms, in.Ack.P99Ms)
			processed := fmt.Sprintf("not finished after %.0f s", in.ProcessedSeconds)
			if in.DrainFinished {
				processed = fmt.Sprintf("%s (all done %.1f s after the first post)", thousands(in.ProcessedPerSec), in.ProcessedSeconds)
			}
			fmt.Fprintf(w, "| %s: processed events/s (note) | %s | | |\n", in.Scenario, processed)
			checkins := fmt.Sprintf("not all stored after %.0f s (%d of %d)", in.ProcessedSeconds, in.CheckinsStored, in.CheckinShaped)
			ciTarget, ciVerdict := "", ""
			if in.CheckinsFinished {
				checkins = fmt.Sprintf("%s (%d records, %d outbox rows in %.2f s)", thousands(in.CheckinsPerSec), in.CheckinsStored, in.OutboxRows, in.CheckinsSeconds)
			}
			if in.TargetCheckinsPerSec > 0 {
				ciTarget = fmt.Sprintf("≥ %s", thousands(in.TargetCheckinsPerSec))
				ciVerdict = metWord(in.CheckinsFinished && in.CheckinsPerSec >= in.TargetCheckinsPerSec)
			}
			fmt.Fprintf(w, "| %s: check-ins processed to records + outbox /s (replies excluded) | %s | %s | %s |\n",
				in.Scenario, checkins, ciTarget, ciVerdict)
		}
		if d := e.Drain; d != nil {
			if d.Error != "" {
				fmt.Fprintf(w, "| outbox drain | not measured (waited %.0f s for earlier check-ins to be filed) | ≥ %.1f× server create rate, 0 duplicates | %s |\n",
					d.PreviousBacklogSecs, d.TargetRatio, d.Error)
			}
			if d.ServerCreates > 0 {
				fmt.Fprintf(w, "| outbox drain: FHIR server's own sequential creates/s (%d Observations) | %s | | |\n",
					d.ServerCreates, thousands(d.ServerCreatesPerSec))
			}
			if d.BacklogRecordsPerSec > 0 || d.BacklogPending > 0 {
				fmt.Fprintf(w, "| outbox drain (fallback): earlier check-ins filed/s over %.0f s (%d still pending; 2 Observations each) | %.1f | | |\n",
					d.PreviousBacklogSecs, d.BacklogPending, d.BacklogRecordsPerSec)
				fmt.Fprintf(w, "| outbox drain (fallback) ÷ server create rate (server rate measured while the outbox also used it) | %.2f× | ≥ %.1f× | %s |\n",
					d.BacklogRatio, d.TargetRatio, metWord(d.BacklogRatio >= d.TargetRatio))
			}
			if d.Finished {
				fmt.Fprintf(w, "| outbox drain: Observations/s from all %d check-ins stored (%.2f s after the first post, %d pending) to outbox empty (%.2f s) | %s | | |\n",
					d.Checkins, d.StoredSeconds, d.PendingAtStored, d.TailSeconds, thousands(d.DrainPerSec))
				fmt.Fprintf(w, "| outbox drain: first post to outbox empty (%.2f s) | %s /s | | |\n", d.TotalSeconds, thousands(d.OverallPerSec))
				fmt.Fprintf(w, "| outbox drain ÷ server create rate | %.2f× | ≥ %.1f× | %s |\n", d.Ratio, d.TargetRatio, metWord(d.Ratio >= d.TargetRatio))
				fmt.Fprintf(w, "| outbox drain: duplicate / missing Observations, dead outbox rows | %d / %d / %d | 0 duplicates | %s |\n",
					d.Duplicates, d.Missing, d.Dead, metWord(d.Duplicates == 0 && d.Missing == 0))
			}
		}
		if e.Error != "" {
			fmt.Fprintf(w, "\n**Incomplete:** %s\n", e.Error)
			continue
		}
		mem := e.Memory
		fmt.Fprintf(w, "| RSS idle (VmRSS, %s after start-up) | %.1f MB | ≤ %.0f MB | %s |\n",
			idleSettle, mem.IdleRSSMB, r.Targets.IdleRSSMB, metWord(mem.IdleRSSMB <= r.Targets.IdleRSSMB))
		fmt.Fprintf(w, "| RSS peak under the loads (VmHWM) | %.1f MB | ≤ %.0f MB | %s |\n",
			mem.PeakRSSMB, r.Targets.PeakRSSMB, metWord(mem.PeakRSSMB <= r.Targets.PeakRSSMB))
		fmt.Fprintf(w, "| RSS after the latency runs / at the end | %.1f / %.1f MB | | |\n",
			kibToMB(mem.AfterLatencyRSSKiB), kibToMB(mem.EndRSSKiB))
		st := e.Startup
		fmt.Fprintf(w, "| start to /_matrix/mau/ready, migrated database (median / max of %d) | %.0f / %.0f ms | ≤ %.0f ms | %s |\n",
			len(st.RunsMs), st.MedianMs, st.MaxMs, r.Targets.StartupMs, metWord(st.MaxMs <= r.Targets.StartupMs))
		fmt.Fprintf(w, "| first start, fresh database (migrations included) | %.0f ms | | |\n", st.FirstStartMs)
		if e.FloorReplyErrors > 0 || e.SyncErrors > 0 {
			fmt.Fprintf(w, "\nFailed client API calls: %d of the floor appservice, %d /sync requests.\n",
				e.FloorReplyErrors, e.SyncErrors)
		}
	}
	fmt.Fprintf(w, "\nIngest posts recorded transactions (a message event as %s delivered it, copied with new IDs; %d "+
		"events a transaction, which Dendrite sends at most, Synapse up to 100) straight to caseroom's transaction endpoint with the durable inbox on. Chat goes to made-up rooms; check-ins go to "+
		"the real patient rooms of the cases, sent by their patients, and count as processed once their records are stored "+
		"(the outbox row is written in the same transaction); the rate does not wait for the replies, which separate "+
		"per-room senders deliver meanwhile. The outbox drain waits for earlier check-ins to be filed, times the FHIR server's own "+
		"sequential creates, then posts a burst of one-vital check-ins (one transaction Bundle each) and times the outbox "+
		"from all stored to empty; duplicates are counted per check-in by the Observation identifier.\n", hs, txnSize)
}

func metWord(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func ratioText(r float64) string {
	if r == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f", r)
}

func percentOf(part, whole int) int {
	if whole == 0 {
		return 0
	}
	return int(float64(part)*100/float64(whole) + 0.5)
}

// thousands formats a rate as an integer with thousands separators.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
