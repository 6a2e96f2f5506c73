package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/dendrite"
	"github.com/caseroom/caseroom/internal/fhirtest"
	"github.com/caseroom/caseroom/internal/homeserver"
	"github.com/caseroom/caseroom/internal/synapse"
	"github.com/caseroom/caseroom/store"
)

// engine is a database engine caseroom runs on.
type engine string

const (
	engineSQLite   engine = "sqlite"
	enginePostgres engine = "postgres"
)

func (e engine) title() string {
	if e == enginePostgres {
		return "PostgreSQL"
	}
	return "SQLite"
}

// Pauses and bounds of the measurement phases.
const (
	idleSettle     = 2 * time.Second  // quiet time after start-up before idle RSS is read
	replyTimeout   = 15 * time.Second // a command without a reply by then counts as lost
	readyTimeout   = 60 * time.Second // caseroom start to /_matrix/mau/ready
	drainTimeout   = 5 * time.Minute  // ingested events processed by then, or the drain is reported unfinished
	setupTimeout   = 3 * time.Minute  // users and rooms
	caseroomStopIn = 15 * time.Second // SIGTERM to exit before SIGKILL
)

// The homeservers the bench runs on (-homeserver).
const (
	hsDendrite = "dendrite"
	hsSynapse  = "synapse"
)

var homeserverNames = []string{hsDendrite, hsSynapse}

// homeserverLogLevel keeps the homeserver's log to warnings and errors: at info both log every request, which
// costs them time the bench would count.
const homeserverLogLevel = "warn"

// installedHomeserver is the homeserver software of a run, installed: Dendrite's binaries or Synapse's virtualenv.
type installedHomeserver struct {
	Name     string // hsDendrite or hsSynapse
	Version  string // the pinned release
	dendrite dendrite.Binaries
	python   string // Synapse's interpreter
}

// pinnedVersion is the release of a homeserver that caseroom is tested against.
func pinnedVersion(name string) string {
	if name == hsSynapse {
		return synapse.Version
	}
	return dendrite.Version
}

// title is the software and version as the report shows them, such as "Synapse 1.163.2".
func (h installedHomeserver) title() string {
	return homeserverTitle(h.Name, h.Version)
}

func homeserverTitle(name, version string) string {
	switch name {
	case hsDendrite:
		return "Dendrite " + version
	case hsSynapse:
		return "Synapse " + version
	}
	return strings.TrimSpace(name + " " + version)
}

// installHomeserver finds the pinned homeserver in the tools directory ($CASEROOM_TOOLS_DIR or .tools), installing
// it first if it is missing.
func installHomeserver(ctx context.Context, name string) (installedHomeserver, error) {
	toolsDir, err := homeserver.DefaultToolsDir()
	if err != nil {
		return installedHomeserver{}, err
	}
	switch name {
	case hsDendrite:
		bins, err := dendrite.EnsureBinaries(ctx, toolsDir)
		return installedHomeserver{Name: name, Version: pinnedVersion(name), dendrite: bins}, err
	case hsSynapse:
		python, err := synapse.EnsureInstalled(ctx, toolsDir)
		return installedHomeserver{Name: name, Version: pinnedVersion(name), python: python}, err
	}
	return installedHomeserver{}, fmt.Errorf("unknown homeserver %q", name)
}

// start starts a fresh homeserver in dir, serving the client API on httpAddr as serverName, with the appservice
// registrations.
func (h installedHomeserver) start(ctx context.Context, dir, serverName, httpAddr string, registrations []string) (homeserver.Server, error) {
	switch h.Name {
	case hsDendrite:
		return dendrite.Start(ctx, dendrite.Options{
			Dir: dir, ServerName: serverName, HTTPAddr: httpAddr, AppServiceRegistrations: registrations,
			LogLevel: homeserverLogLevel, Binaries: h.dendrite,
		})
	case hsSynapse:
		return synapse.Start(ctx, synapse.Options{
			Dir: dir, ServerName: serverName, HTTPAddr: httpAddr, AppServiceRegistrations: registrations,
			LogLevel: homeserverLogLevel, Python: h.python,
		})
	}
	return nil, fmt.Errorf("unknown homeserver %q", h.Name)
}

// runBenchmark builds caseroom, then measures each engine on a fresh homeserver. It returns what was measured even
// when a later engine fails.
func runBenchmark(ctx context.Context, opts options, command []string, progress io.Writer) (*Report, error) {
	say := func(format string, args ...any) {
		fmt.Fprintf(progress, "» "+format+"\n", args...)
	}
	root, err := projectRoot()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "caseroom-bench-")
	if err != nil {
		return nil, err
	}
	failed := true
	defer func() {
		if opts.Keep || failed {
			say("working directory kept: %s", work)
			return
		}
		_ = os.RemoveAll(work)
	}()

	say("building caseroom")
	build, err := buildCaseroom(ctx, root, filepath.Join(work, "caseroom"), opts.CPUProfileDir != "")
	if err != nil {
		return nil, err
	}
	if build.TagsNote != "" {
		say("%s", build.TagsNote)
	}
	say("installing or finding %s", homeserverTitle(opts.Homeserver, pinnedVersion(opts.Homeserver)))
	hs, err := installHomeserver(ctx, opts.Homeserver)
	if err != nil {
		return nil, err
	}

	report := &Report{
		Machine: describeMachine(build, hs),
		Command: strings.Join(command, " "),
		Options: opts,
		Targets: benchTargets,
	}
	for _, eng := range opts.Engines {
		say("%s: starting", eng.title())
		res, err := runEngine(ctx, engineRun{
			opts: opts, engine: eng, dir: filepath.Join(work, string(eng)), caseroom: build.Path, homeserver: hs, say: say,
		})
		if err != nil {
			err = fmt.Errorf("%s: %w", eng.title(), err)
		}
		if res != nil {
			if err != nil {
				res.Error = err.Error()
			}
			report.Engines = append(report.Engines, res)
		}
		if err != nil {
			return report, err
		}
	}
	failed = false
	return report, nil
}

// engineRun is everything one engine's measurement needs.
type engineRun struct {
	opts       options
	engine     engine
	dir        string
	caseroom   string // binary
	homeserver installedHomeserver
	say        func(format string, args ...any)
}

// runEngine starts a fresh homeserver with caseroom's and the floor appservice's registrations, a fresh database and
// caseroom, and runs every measurement. Whatever it started is stopped before it returns.
func runEngine(ctx context.Context, r engineRun) (res *EngineResult, err error) {
	if err = os.MkdirAll(r.dir, 0o700); err != nil {
		return nil, err
	}
	db, err := createDatabase(ctx, r.engine, r.dir, r.opts.Postgres)
	if err != nil {
		return nil, err
	}
	defer db.drop()

	hsPort, err := homeserver.FreePort()
	if err != nil {
		return nil, err
	}
	hsURL := fmt.Sprintf("http://127.0.0.1:%d", hsPort)
	domain := fmt.Sprintf("localhost:%d", hsPort)

	r.say("%s: starting the FHIR test server", r.engine.title())
	fhir, err := fhirtest.Start(ctx)
	if err != nil {
		return nil, err
	}
	defer fhir.Stop()
	setup, err := writeCaseroomConfig(r.dir, hsURL, domain, db, fhir.URL)
	if err != nil {
		return nil, err
	}
	if r.opts.CPUProfileDir != "" {
		// Each start overwrites the profile: the one kept is that of the last start, which runs the scenarios.
		profile, err := filepath.Abs(filepath.Join(r.opts.CPUProfileDir, "caseroom-"+string(r.engine)+".pprof"))
		if err != nil {
			return nil, err
		}
		setup.Env = append(setup.Env, "CASEROOM_CPUPROFILE="+profile)
	}
	floor, err := startFloor(hsURL, domain)
	if err != nil {
		return nil, err
	}
	defer floor.stop()
	floorReg := filepath.Join(r.dir, "floor-registration.yaml")
	if err = floor.reg.Save(floorReg); err != nil {
		return nil, fmt.Errorf("failed to write the floor appservice registration: %w", err)
	}

	r.say("%s: starting %s", r.engine.title(), r.homeserver.title())
	hs, err := r.homeserver.start(ctx, filepath.Join(r.dir, r.homeserver.Name), domain, fmt.Sprintf("127.0.0.1:%d", hsPort),
		[]string{setup.RegistrationPath, floorReg})
	if err != nil {
		return nil, fmt.Errorf("failed to start %s: %w", r.homeserver.title(), err)
	}
	defer hs.Stop()

	res = &EngineResult{Engine: string(r.engine)}

	// Start-up: the first start migrates the fresh database; the later ones start on the migrated database.
	r.say("%s: timing caseroom start-up (%d runs on the migrated database)", r.engine.title(), r.opts.StartupRuns)
	bot, err := setup.start(ctx, r.caseroom)
	if err != nil {
		return res, err
	}
	res.Startup.FirstStartMs = ms(bot.readyAfter)
	for i := 0; i < r.opts.StartupRuns; i++ {
		if err = bot.stop(); err != nil {
			return res, err
		}
		if bot, err = setup.start(ctx, r.caseroom); err != nil {
			return res, err
		}
		res.Startup.RunsMs = append(res.Startup.RunsMs, ms(bot.readyAfter))
	}
	defer func() {
		if stopErr := bot.stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	res.Startup.summarize()

	if err = sleep(ctx, idleSettle); err != nil {
		return res, err
	}
	if res.Memory.IdleRSSKiB, _, err = bot.memory(); err != nil {
		return res, err
	}

	r.say("%s: registering users and creating rooms", r.engine.title())
	botID := id.NewUserID(setup.Config.Appservice.Bot.Username, domain)
	world, err := setUp(ctx, hs, r.opts.Rooms, botID, floor.botID)
	if err != nil {
		return res, fmt.Errorf("setup failed: %w", err)
	}
	defer world.close()

	// The bench reads caseroom's database to follow the set-up, check-ins, the inbox and the outbox; it is
	// migrated by now.
	st, err := store.Open(ctx, store.Config{Type: db.Type, URI: db.URI, MaxOpenConns: 1}, zerolog.Nop())
	if err != nil {
		return res, fmt.Errorf("failed to open caseroom's database: %w", err)
	}
	defer st.Close()
	r.say("%s: opening a case with a FHIR patient per room", r.engine.title())
	if err = setUpCases(ctx, hs, world, st, botID, fhir); err != nil {
		return res, fmt.Errorf("case set-up failed: %w", err)
	}

	latency, ingest := latencyScenarios, ingestScenarios
	if r.opts.Skip["latency"] {
		latency = nil
	}
	if r.opts.Skip["ingest"] {
		ingest = nil
	}
	for _, sc := range latency {
		for _, mode := range latencyModes(r.opts) {
			if sc.Pending != "" {
				res.Latency = append(res.Latency, pendingLatency(sc, mode)...)
				continue
			}
			r.say("%s: latency of %s, %s", r.engine.title(), sc.Name, mode.Name)
			rows, err := runLatency(ctx, world, sc, mode, r.opts)
			res.Latency = append(res.Latency, rows...)
			if err != nil {
				return res, err
			}
		}
	}
	if res.Memory.AfterLatencyRSSKiB, _, err = bot.memory(); err != nil {
		return res, err
	}

	template := floor.recordedMessage()
	for _, sc := range ingest {
		if sc.Pending != "" {
			res.Ingest = append(res.Ingest, IngestResult{Scenario: sc.Name, Pending: sc.Pending})
			continue
		}
		r.say("%s: %s", r.engine.title(), sc.Name)
		row, err := runIngest(ctx, ingestRun{
			scenario: sc, events: r.opts.IngestEvents, botURL: setup.BotURL, hsToken: setup.Config.Appservice.HSToken,
			domain: domain, senders: world.userIDs(), template: template, inbox: st.Inbox, st: st,
			patients: world.patientRooms(),
		})
		res.Ingest = append(res.Ingest, row)
		if err != nil {
			return res, err
		}
	}
	switch {
	case r.opts.Skip["drain"]:
	case pendingDrain != "":
		r.say("%s: outbox drain not measured: %s", r.engine.title(), pendingDrain)
	default:
		r.say("%s: outbox drain to the FHIR server (%d server creates, %d check-ins)", r.engine.title(), r.opts.ServerCreates, r.opts.DrainCheckins)
		res.Drain, err = runDrain(ctx, drainRun{
			creates: r.opts.ServerCreates, checkins: r.opts.DrainCheckins, botURL: setup.BotURL,
			hsToken: setup.Config.Appservice.HSToken, st: st, fhir: fhir, patients: world.patientRooms(),
		})
		if err != nil {
			if ctx.Err() != nil {
				return res, fmt.Errorf("outbox drain: %w", err)
			}
			res.Drain.Error = err.Error() // reported; memory is still measured
		}
	}
	if res.Memory.EndRSSKiB, res.Memory.PeakRSSKiB, err = bot.memory(); err != nil {
		return res, err
	}
	res.Memory.summarize()
	res.FloorReplyErrors = floor.replyErrors.Load()
	res.SyncErrors = world.syncErrors()
	return res, nil
}

// latencyModes are the two shapes of the latency scenarios: one client in one room, and -rooms clients at once.
func latencyModes(opts options) []latencyMode {
	return []latencyMode{
		{Name: "sequential", Lanes: 1, Total: opts.N, Warmup: opts.Warmup},
		{Name: fmt.Sprintf("%d rooms", opts.Rooms), Lanes: opts.Rooms, Total: opts.N, Warmup: opts.Warmup},
	}
}

// buildResult is the caseroom binary and how it was built.
type buildResult struct {
	Path      string
	Tags      string
	TagsNote  string // why the goolm tag was dropped, if it was
	GoVersion string
}

// buildCaseroom builds ./cmd/caseroom with -tags goolm (pure-Go end-to-end encryption, as `make build` does) and
// falls back to no tags if that fails.
func buildCaseroom(ctx context.Context, root, out string, profiling bool) (buildResult, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return buildResult{}, fmt.Errorf("failed to find the go command to build caseroom: %w", err)
	}
	res := buildResult{Path: out, Tags: "goolm"}
	if profiling {
		res.Tags = "goolm,caseroomprofile"
	}
	goBuild := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, goBin, append(append([]string{"build"}, args...), "-o", out, "./cmd/caseroom")...)
		cmd.Dir = root
		return cmd.CombinedOutput()
	}
	if output, err := goBuild("-tags", res.Tags); err != nil {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		res.Tags = ""
		res.TagsNote = "building with -tags goolm failed, built without tags: " + firstLine(string(output))
		if output, err = goBuild(); err != nil {
			return res, fmt.Errorf("failed to build caseroom (go build ./cmd/caseroom in %s): %w\n%s", root, err, output)
		}
	}
	if v, err := exec.CommandContext(ctx, goBin, "env", "GOVERSION").Output(); err == nil {
		res.GoVersion = strings.TrimSpace(string(v))
	}
	return res, nil
}

// projectRoot is the nearest directory at or above the working directory that holds go.mod.
func projectRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory: run caseroom-bench inside the caseroom project")
		}
		dir = parent
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// ms converts a duration to fractional milliseconds.
func ms(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}
