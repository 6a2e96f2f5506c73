// Command caseroom-bench measures caseroom against a real homeserver (the pinned Dendrite or Synapse, -homeserver)
// in one run: command reply latency as a client sees it, next to two floors measured in the same run (F0: the
// homeserver's own echo latency, one client's message seen by another client; F1: a do-nothing appservice inside
// this tool answering the same command), transaction ingest, memory and start-up time, on SQLite and PostgreSQL.
// It prints a Markdown report that names the homeserver and its version, and can write the results as JSON. The
// targets it shows are goals for the benchmark, not assertions: it fails only when it cannot measure.
//
// Everything it starts (the homeserver, the FHIR test server, caseroom, its own appservice) listens on loopback only
// and is stopped when the run ends, on Ctrl-C and when -timeout passes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Defaults of the flags; -quick replaces those marked as such unless the flag is given.
const (
	defaultN            = 1000
	defaultWarmup       = 50
	defaultRooms        = 16
	defaultIngestEvents = 50_000
	defaultStartupRuns  = 5
	quickN              = 200
	quickWarmup         = 20
	quickIngestEvents   = 10_000
	quickStartupRuns    = 3
)

// defaultPostgres is the maintenance database the per-run databases are created from.
const defaultPostgres = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// options are the parsed flags.
type options struct {
	// Homeserver is the homeserver software caseroom runs on: hsDendrite or hsSynapse.
	Homeserver   string        `json:"homeserver"`
	N            int           `json:"n"`
	Warmup       int           `json:"warmup"`
	Rooms        int           `json:"rooms"`
	Engines      []engine      `json:"engines"`
	JSONPath     string        `json:"-"`
	Quick        bool          `json:"quick"`
	Timeout      time.Duration `json:"-"`
	IngestEvents int           `json:"ingest_events"`
	StartupRuns  int           `json:"startup_runs"`
	Postgres     string        `json:"-"` // may hold a password
	Keep         bool          `json:"-"`
	// ServerCreates and DrainCheckins size the outbox drain scenario.
	ServerCreates int `json:"server_creates"`
	DrainCheckins int `json:"drain_checkins"`
	// Skip names the scenarios left out of this run (latency, ingest, drain).
	Skip map[string]bool `json:"skip,omitempty"`
	// CPUProfileDir, when set, builds caseroom with profiling and writes its CPU profile per engine there.
	CPUProfileDir string `json:"-"`
}

// scenarioNames are the parts of a run that -skip can leave out.
var scenarioNames = []string{"latency", "ingest", "drain"}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	opts, code := parseFlags(args, stderr)
	if code >= 0 {
		return code
	}
	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithTimeoutCause(ctx, opts.Timeout, fmt.Errorf("overall -timeout %s passed", opts.Timeout))
	defer cancel()

	report, err := runBenchmark(ctx, opts, append([]string{"caseroom-bench"}, args...), stderr)
	if report != nil && len(report.Engines) > 0 {
		printMarkdown(stdout, report)
		if opts.JSONPath != "" {
			if werr := writeJSON(opts.JSONPath, report); werr != nil {
				fmt.Fprintf(stderr, "caseroom-bench: %v\n", werr)
				return 1
			}
			fmt.Fprintf(stderr, "Wrote %s\n", opts.JSONPath)
		}
	}
	if err != nil {
		if cause := context.Cause(ctx); ctx.Err() != nil && !strings.Contains(err.Error(), cause.Error()) {
			err = fmt.Errorf("%w (%v)", err, cause)
		}
		fmt.Fprintf(stderr, "caseroom-bench: %v\n", err)
		return 1
	}
	return 0
}

// parseFlags returns the options, or an exit code >= 0 when the program should stop.
func parseFlags(args []string, stderr io.Writer) (options, int) {
	flags := flag.NewFlagSet("caseroom-bench", flag.ContinueOnError)
	flags.SetOutput(stderr)
	var opts options
	flags.StringVar(&opts.Homeserver, "homeserver", hsDendrite, "homeserver to run caseroom on: "+strings.Join(homeserverNames, " or ")+
		" (the pinned release, installed into the tools directory if missing)")
	flags.IntVar(&opts.N, "n", defaultN, "commands measured per latency scenario (after warm-up); across -rooms rooms the total is at least n")
	flags.IntVar(&opts.Warmup, "warmup", defaultWarmup, "unmeasured commands per latency scenario before measuring")
	flags.IntVar(&opts.Rooms, "rooms", defaultRooms, "rooms (one client each) of the concurrent latency scenarios")
	dbList := flags.String("db", "sqlite,postgres", "database engines to measure caseroom on, comma-separated: sqlite, postgres")
	flags.StringVar(&opts.JSONPath, "json", "", "also write the results as JSON to this file")
	flags.BoolVar(&opts.Quick, "quick", false, fmt.Sprintf("smoke run: n=%d, warmup=%d, ingest-events=%d, startup-runs=%d, server-creates=%d, drain-checkins=%d unless given",
		quickN, quickWarmup, quickIngestEvents, quickStartupRuns, quickServerCreates, quickDrainCheckins))
	flags.DurationVar(&opts.Timeout, "timeout", time.Hour, "stop everything and fail after this long")
	flags.IntVar(&opts.IngestEvents, "ingest-events", defaultIngestEvents, "events posted per ingest scenario (in transactions of 50)")
	flags.IntVar(&opts.StartupRuns, "startup-runs", defaultStartupRuns, "start-ups of caseroom on the migrated database to time")
	flags.StringVar(&opts.Postgres, "postgres", envOr("CASEROOM_TEST_POSTGRES", defaultPostgres),
		"PostgreSQL maintenance database URL; each run creates and drops its own database next to it")
	flags.IntVar(&opts.ServerCreates, "server-creates", defaultServerCreates, "sequential Observation creates that time the FHIR server's own rate")
	flags.IntVar(&opts.DrainCheckins, "drain-checkins", defaultDrainCheckins, "check-ins of the outbox drain burst")
	skipList := flags.String("skip", "", "scenarios to leave out, comma-separated: "+strings.Join(scenarioNames, ", ")+" (start-up and memory always run)")
	flags.StringVar(&opts.CPUProfileDir, "cpuprofile", "", "build caseroom with CPU profiling and write caseroom-<db>.pprof into this directory (for `go tool pprof`)")
	flags.BoolVar(&opts.Keep, "keep", false, "keep the working directory (logs, configs, SQLite database) after the run")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "Usage: caseroom-bench [-quick] [-homeserver dendrite|synapse] [-n 1000] [-warmup 50] [-rooms 16] [-db sqlite,postgres] [-json out.json]")
		fmt.Fprintln(stderr, "Starts a homeserver and caseroom on loopback, measures latency, ingest, memory and start-up, prints a Markdown report.")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return opts, 0
		}
		return opts, 2
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "caseroom-bench: unexpected argument %q\n", flags.Arg(0))
		flags.Usage()
		return opts, 2
	}
	if opts.Quick {
		given := map[string]bool{}
		flags.Visit(func(f *flag.Flag) { given[f.Name] = true })
		quick := []struct {
			name  string
			value *int
			quick int
		}{
			{"n", &opts.N, quickN},
			{"warmup", &opts.Warmup, quickWarmup},
			{"ingest-events", &opts.IngestEvents, quickIngestEvents},
			{"startup-runs", &opts.StartupRuns, quickStartupRuns},
			{"server-creates", &opts.ServerCreates, quickServerCreates},
			{"drain-checkins", &opts.DrainCheckins, quickDrainCheckins},
		}
		for _, q := range quick {
			if !given[q.name] {
				*q.value = q.quick
			}
		}
	}
	var problems []string
	opts.Homeserver = strings.TrimSpace(strings.ToLower(opts.Homeserver))
	if !slices.Contains(homeserverNames, opts.Homeserver) {
		problems = append(problems, fmt.Sprintf("-homeserver: unknown homeserver %q (want %s)", opts.Homeserver, strings.Join(homeserverNames, " or ")))
	}
	if opts.N < 1 {
		problems = append(problems, "-n must be at least 1")
	}
	if opts.Warmup < 0 {
		problems = append(problems, "-warmup must not be negative")
	}
	if opts.Rooms < 1 {
		problems = append(problems, "-rooms must be at least 1")
	}
	if opts.IngestEvents < txnSize {
		problems = append(problems, fmt.Sprintf("-ingest-events must be at least %d", txnSize))
	}
	if opts.ServerCreates < 1 || opts.DrainCheckins < 1 {
		problems = append(problems, "-server-creates and -drain-checkins must be at least 1")
	}
	if opts.StartupRuns < 1 {
		problems = append(problems, "-startup-runs must be at least 1")
	}
	if opts.Timeout <= 0 {
		problems = append(problems, "-timeout must be positive")
	}
	seen := map[engine]bool{}
	for _, name := range strings.Split(*dbList, ",") {
		eng := engine(strings.TrimSpace(strings.ToLower(name)))
		switch {
		case eng != engineSQLite && eng != enginePostgres:
			problems = append(problems, fmt.Sprintf("-db: unknown engine %q (want sqlite or postgres)", name))
		case !seen[eng]:
			seen[eng] = true
			opts.Engines = append(opts.Engines, eng)
		}
	}
	for _, name := range strings.Split(*skipList, ",") {
		name = strings.TrimSpace(strings.ToLower(name))
		switch {
		case name == "":
		case !slices.Contains(scenarioNames, name):
			problems = append(problems, fmt.Sprintf("-skip: unknown scenario %q (want %s)", name, strings.Join(scenarioNames, ", ")))
		default:
			if opts.Skip == nil {
				opts.Skip = map[string]bool{}
			}
			opts.Skip[name] = true
		}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintf(stderr, "caseroom-bench: %s\n", p)
		}
		return opts, 2
	}
	return opts, -1
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
