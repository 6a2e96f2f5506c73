// Command caseroom-dev starts a local development setup of caseroom: a Dendrite homeserver with the appservice
// registered, caseroom on SQLite, and demo accounts. `make run` calls it. Everything it makes lives in ./dev (git
// ignored) and is reused by later runs, so the homeserver URL, the accounts and their passwords stay the same.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.mau.fi/util/random"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/config"
	"github.com/caseroom/caseroom/internal/childproc"
	"github.com/caseroom/caseroom/internal/dendrite"
	"github.com/caseroom/caseroom/internal/homeserver"
	"github.com/caseroom/caseroom/internal/synapse"
)

// Files and directories kept in the working directory (options.Dir).
const (
	portsFile        = "ports.json"
	accountsFile     = "accounts.json"
	configFile       = "config.yaml"
	registrationFile = "registration.yaml"
	lockFile         = ".lock"
	dendriteDir      = "dendrite"
	synapseDir       = "synapse"
	caseroomDataDir  = "caseroom-data"
	binDir           = "bin"
)

// Timeouts for the children.
const (
	caseroomReadyTimeout = 60 * time.Second
	caseroomStopTimeout  = 15 * time.Second
	healthInterval       = 2 * time.Second
	healthFailures       = 3 // consecutive failed checks before Dendrite counts as dead
)

// demoAccounts are the accounts every development setup has.
var demoAccounts = []struct {
	Localpart string
	Admin     bool // server admin (the /_dendrite/admin API); also listed in the caseroom config's admins
	Role      string
}{
	{"admin", true, "server admin, caseroom admin"},
	{"dr.demo", false, "clinician"},
	{"pat.demo", false, "patient"},
}

func main() {
	flags := flag.NewFlagSet("caseroom-dev", flag.ContinueOnError)
	dir := flags.String("dir", "", "working directory for the development setup (default: dev under the project root)")
	port := flags.Int("port", 8008, "homeserver client port on the first run; 0 picks a free one (later runs reuse the stored port)")
	ehrMode := flags.String("ehr", "test", "EHR to run: test (the project's FHIR test server, in memory, with demo records) or none")
	hsName := flags.String("homeserver", "", "homeserver to run: dendrite or synapse (default: synapse when Python 3.10+ is installed, else dendrite; a directory keeps the one it was set up with)")
	installTools := flags.Bool("install-tools", false, "only install the pinned homeservers (Dendrite binaries, Synapse virtualenv), then exit")
	flags.Usage = func() {
		fmt.Fprintln(os.Stderr, "Usage: caseroom-dev [-dir dev] [-port 8008] [-homeserver dendrite|synapse] [-install-tools]")
		fmt.Fprintln(os.Stderr, "Starts a homeserver, caseroom and demo accounts for local development; Ctrl-C stops them.")
		flags.PrintDefaults()
	}
	if err := flags.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "caseroom-dev: unexpected argument %q\n", flags.Arg(0))
		os.Exit(2)
	}
	if *ehrMode != "test" && *ehrMode != "none" {
		fmt.Fprintf(os.Stderr, "caseroom-dev: -ehr must be test or none, got %q\n", *ehrMode)
		os.Exit(2)
	}
	if *hsName != "" && *hsName != hsDendrite && *hsName != hsSynapse {
		fmt.Fprintf(os.Stderr, "caseroom-dev: -homeserver must be dendrite or synapse, got %q\n", *hsName)
		os.Exit(2)
	}
	portSet := false
	flags.Visit(func(f *flag.Flag) { portSet = portSet || f.Name == "port" })

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, restore the default handling: a second Ctrl-C ends this process at once, and the
		// children with it (they are started with a parent-death signal).
		<-ctx.Done()
		stop()
	}()

	if *installTools {
		if err := installDendrite(ctx, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "caseroom-dev: %v\n", err)
			os.Exit(1)
		}
		if err := installSynapse(ctx, os.Stdout, true); err != nil {
			fmt.Fprintf(os.Stderr, "caseroom-dev: %v\n", err)
			os.Exit(1)
		}
		return
	}

	root, err := findProjectRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "caseroom-dev: %v\n", err)
		os.Exit(1)
	}
	opts := options{
		Dir:          *dir,
		Port:         *port,
		PortExplicit: portSet,
		Homeserver:   *hsName,
		NoEHR:        *ehrMode == "none",
		ProjectRoot:  root,
		Stdout:       os.Stdout,
		Stderr:       os.Stderr,
	}
	if opts.Dir == "" {
		opts.Dir = filepath.Join(root, "dev")
	}
	if err = run(ctx, opts); err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "caseroom-dev: interrupted during start-up")
		} else {
			fmt.Fprintf(os.Stderr, "caseroom-dev: %v\n", err)
		}
		os.Exit(1)
	}
}

// installDendrite makes sure the pinned Dendrite binaries are in the project's tools directory.
func installDendrite(ctx context.Context, out io.Writer) error {
	bins, err := ensureDendrite(ctx, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Dendrite %s is installed in %s\n", dendrite.Version, relPath(filepath.Dir(bins.Dendrite)))
	return nil
}

// installSynapse makes sure the pinned Synapse is in a virtualenv in the project's tools directory, saying so when
// that takes more than a moment (and always with announce).
func installSynapse(ctx context.Context, out io.Writer, announce bool) error {
	toolsDir, err := dendrite.DefaultToolsDir()
	if err != nil {
		return fmt.Errorf("failed to find the tools directory: %w", err)
	}
	slow := time.AfterFunc(2*time.Second, func() {
		fmt.Fprintf(out, "Installing Synapse %s into %s with pip (the first install takes a minute or two)...\n",
			synapse.Version, relPath(synapse.VenvDir(toolsDir)))
	})
	_, err = synapse.EnsureInstalled(ctx, toolsDir)
	slow.Stop()
	if err != nil {
		return fmt.Errorf("failed to install Synapse: %w", err)
	}
	if announce {
		fmt.Fprintf(out, "Synapse %s is installed in %s\n", synapse.Version, relPath(synapse.VenvDir(toolsDir)))
	}
	return nil
}

// ensureDendrite installs the Dendrite binaries if needed, saying so when that takes more than a moment.
func ensureDendrite(ctx context.Context, out io.Writer) (dendrite.Binaries, error) {
	toolsDir, err := dendrite.DefaultToolsDir()
	if err != nil {
		return dendrite.Binaries{}, fmt.Errorf("failed to find the tools directory: %w", err)
	}
	slow := time.AfterFunc(2*time.Second, func() {
		fmt.Fprintf(out, "Installing Dendrite %s into %s (the first build takes a few minutes)...\n",
			dendrite.Version, relPath(filepath.Join(toolsDir, "bin")))
	})
	bins, err := dendrite.EnsureBinaries(ctx, toolsDir)
	slow.Stop()
	if err != nil {
		return dendrite.Binaries{}, fmt.Errorf("failed to install the Dendrite binaries: %w", err)
	}
	return bins, nil
}

// options configures run.
type options struct {
	// Dir is the working directory that holds everything the setup makes.
	Dir string
	// Port is the homeserver's client port on the first run (0: a free port). If it is busy, a free one is used.
	Port int
	// PortExplicit makes a Port that differs from the stored one an error instead of being ignored.
	PortExplicit bool
	// Homeserver is the homeserver to run, hsDendrite or hsSynapse; "" keeps the one the directory was set up with,
	// or on a first run picks Synapse when Python 3.10+ is there and Dendrite otherwise.
	Homeserver string
	// NoEHR leaves the FHIR test server off (EHR=none).
	NoEHR bool
	// ProjectRoot is the directory of caseroom's go.mod, where caseroom is built.
	ProjectRoot string
	// Stdout receives the messages of caseroom-dev and caseroom's output; Stderr receives caseroom's log.
	Stdout, Stderr io.Writer
	// Ready, if set, is called once everything is up.
	Ready func(*setup)
}

// setup describes a running development setup.
type setup struct {
	// Homeserver is the running homeserver.
	Homeserver homeserver.Server
	// HomeserverURL is the URL to give Matrix clients.
	HomeserverURL string
	// Bot is the caseroom bot's user ID.
	Bot id.UserID
	// Accounts are the demo accounts with their passwords.
	Accounts []account
	// EHR is the FHIR test server with the demo records; nil without one.
	EHR *demoEHR
}

// ports are the ports chosen on the first run, kept in ports.json.
type ports struct {
	Homeserver int `json:"homeserver"`
	Appservice int `json:"appservice"`
	// Software is the homeserver the directory was set up with (hsDendrite or hsSynapse; empty means Dendrite,
	// from before Synapse could be chosen): its accounts and rooms live in that server's data.
	Software string `json:"software,omitempty"`
	// EHR is the port of the FHIR test server (ehr.url in the config points at it).
	EHR int `json:"ehr,omitempty"`
}

// The homeservers caseroom-dev can run.
const (
	hsDendrite = "dendrite"
	hsSynapse  = "synapse"
)

// account is a demo account as kept in accounts.json.
type account struct {
	Localpart string    `json:"localpart"`
	UserID    id.UserID `json:"user_id"`
	Password  string    `json:"password"`
	Role      string    `json:"role"`
	admin     bool
}

// run starts the development setup in opts.Dir and keeps it running until ctx is cancelled (nil error) or one of
// its parts fails. Dendrite and caseroom are always stopped before it returns, caseroom first.
func run(ctx context.Context, opts options) (err error) {
	if opts.Stdout == nil {
		opts.Stdout = io.Discard
	}
	if opts.Stderr == nil {
		opts.Stderr = io.Discard
	}
	say := func(format string, args ...any) { fmt.Fprintf(opts.Stdout, format+"\n", args...) }
	if opts.Dir, err = filepath.Abs(opts.Dir); err != nil {
		return err
	}
	if err = os.MkdirAll(opts.Dir, 0o700); err != nil {
		return fmt.Errorf("failed to create the working directory: %w", err)
	}
	unlock, err := lockDir(opts.Dir)
	if err != nil {
		return err
	}
	defer unlock()

	p, err := loadOrPickPorts(ctx, opts, say)
	if err != nil {
		return err
	}
	caseroomBin, err := buildCaseroom(ctx, opts.ProjectRoot, filepath.Join(opts.Dir, binDir))
	if err != nil {
		return err
	}
	serverName := "localhost:" + strconv.Itoa(p.Homeserver)
	cfg, err := ensureConfig(opts.Dir, p, serverName, say)
	if err != nil {
		return err
	}
	accounts, err := loadOrCreateAccounts(opts.Dir, serverName)
	if err != nil {
		return err
	}

	srv, err := startHomeserver(ctx, opts, p, serverName, say)
	if err != nil {
		return err
	}
	defer func() {
		say("Stopping %s...", p.Software)
		srv.Stop()
	}()
	if err = ensureAccounts(ctx, srv, accounts, say); err != nil {
		return err
	}
	if err = crossSignableBot(ctx, srv, cfg, accounts); err != nil {
		return err
	}
	var ehr *demoEHR
	if opts.NoEHR {
		say("No EHR (EHR=none): caseroom keeps the records in its outbox until one answers at %s.", cfg.EHR.URL)
	} else if ehr, err = startEHR(ctx, p, cfg, accounts, say); err != nil {
		return err
	} else if ehr != nil {
		defer ehr.server.Stop()
	}

	say("Starting caseroom (listening on %s)", cfg.Appservice.Listen)
	cr, err := startCaseroom(caseroomBin, opts)
	if err != nil {
		return err
	}
	defer func() {
		if cr.Stop(caseroomStopTimeout) {
			say("caseroom did not stop within %s and was killed", caseroomStopTimeout)
		}
	}()
	if err = waitReady(ctx, "http://"+cfg.Appservice.Listen+"/_matrix/mau/ready", cr); err != nil {
		return err
	}

	s := &setup{
		Homeserver:    srv,
		HomeserverURL: "http://localhost:" + strconv.Itoa(p.Homeserver),
		Bot:           cfg.BotMXID(),
		Accounts:      accounts,
		EHR:           ehr,
	}
	printWelcome(opts.Stdout, s, opts.Dir)
	if opts.Ready != nil {
		opts.Ready(s)
	}

	homeserverDown := watchHealth(ctx, srv.HomeserverURL()+"/_matrix/client/versions")
	select {
	case <-ctx.Done():
		say("Stopping caseroom...")
		return nil
	case <-cr.Done():
		return fmt.Errorf("caseroom exited unexpectedly (%v); see its log above", exitError(cr))
	case err = <-homeserverDown:
		return fmt.Errorf("the %s homeserver died or hangs (%w); see %s. Its last lines:\n%s",
			p.Software, err, relPath(srv.LogFile()), srv.LogTail(10))
	}
}

// startHomeserver installs (if needed) and starts the homeserver p.Software names, with caseroom registered.
func startHomeserver(ctx context.Context, opts options, p ports, serverName string, say func(string, ...any)) (homeserver.Server, error) {
	registration := filepath.Join(opts.Dir, registrationFile)
	httpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Homeserver))
	if p.Software == hsSynapse {
		if err := installSynapse(ctx, opts.Stdout, false); err != nil {
			return nil, err
		}
		dir := filepath.Join(opts.Dir, synapseDir)
		say("Starting Synapse %s on %s (log: %s)", synapse.Version, serverName, relPath(filepath.Join(dir, "synapse.log")))
		srv, err := synapse.Start(ctx, synapse.Options{Dir: dir, ServerName: serverName, HTTPAddr: httpAddr,
			AppServiceRegistrations: []string{registration}})
		if err != nil {
			return nil, fmt.Errorf("failed to start Synapse: %w", err)
		}
		return srv, nil
	}
	bins, err := ensureDendrite(ctx, opts.Stdout)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(opts.Dir, dendriteDir)
	say("Starting Dendrite %s on %s (log: %s)", dendrite.Version, serverName, relPath(filepath.Join(dir, "dendrite.log")))
	srv, err := dendrite.Start(ctx, dendrite.Options{
		Dir:                     dir,
		ServerName:              serverName,
		HTTPAddr:                httpAddr,
		AppServiceRegistrations: []string{registration},
		PersistentJetStream:     true,
		Binaries:                bins,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to start Dendrite: %w", err)
	}
	return srv, nil
}

// chooseSoftware is the homeserver of a first run: the one asked for, else Synapse when Python 3.10+ is there (what
// hospitals run, and what the newest Element apps need), else Dendrite.
func chooseSoftware(ctx context.Context, asked string, say func(string, ...any)) string {
	if asked != "" {
		return asked
	}
	if _, err := synapse.SystemPython(ctx); err != nil {
		say("Using Dendrite: %v (install Python 3.10+ with venv to get Synapse, or pass -homeserver dendrite).", err)
		return hsDendrite
	}
	return hsSynapse
}

// lockDir takes an exclusive lock on the working directory so that two runs cannot share it.
func lockDir(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("failed to open lock file: %w", err)
	}
	if err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another caseroom-dev is already running in %s", relPath(dir))
		}
		return nil, fmt.Errorf("failed to lock %s: %w", path, err)
	}
	return func() { _ = f.Close() }, nil
}

// loadOrPickPorts returns the ports stored in ports.json, or on the first run picks them and stores them.
func loadOrPickPorts(ctx context.Context, opts options, say func(string, ...any)) (ports, error) {
	path := filepath.Join(opts.Dir, portsFile)
	var p ports
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err = json.Unmarshal(raw, &p); err != nil || p.Homeserver <= 0 || p.Appservice <= 0 {
			return ports{}, fmt.Errorf("%s is damaged (%v); delete %s to start over", relPath(path), err, relPath(opts.Dir))
		}
		if opts.PortExplicit && opts.Port != p.Homeserver {
			return ports{}, fmt.Errorf("-port %d differs from port %d stored in %s, which the homeserver's server name "+
				"(localhost:%d) depends on; drop -port, or delete %s to start over", opts.Port, p.Homeserver,
				relPath(path), p.Homeserver, relPath(opts.Dir))
		}
		if p.Software == "" {
			p.Software = hsDendrite
		}
		if opts.Homeserver != "" && opts.Homeserver != p.Software {
			return ports{}, fmt.Errorf("%s was set up with %s, whose data holds its accounts and rooms; drop -homeserver "+
				"(or pass -homeserver %s), use another -dir, or delete %s to start over with %s", relPath(opts.Dir),
				p.Software, p.Software, relPath(opts.Dir), opts.Homeserver)
		}
		if p.EHR == 0 { // a directory from before the development EHR
			if p.EHR, err = freePortExcept(p.Homeserver, p.Appservice); err != nil {
				return ports{}, err
			}
			if err = writeJSON(path, p); err != nil {
				return ports{}, err
			}
		}
		for _, port := range []int{p.Homeserver, p.Appservice, p.EHR} {
			if !portFree(port) {
				return ports{}, fmt.Errorf("port %d (kept in %s so that Matrix clients keep working) is in use: "+
					"stop what uses it, or delete %s to start over with new ports", port, relPath(path), relPath(opts.Dir))
			}
		}
		return p, nil
	case !errors.Is(err, os.ErrNotExist):
		return ports{}, fmt.Errorf("failed to read %s: %w", relPath(path), err)
	}

	p.Software = chooseSoftware(ctx, opts.Homeserver, say)
	p.Homeserver = opts.Port
	if p.Homeserver != 0 && !portFree(p.Homeserver) {
		say("Port %d is busy; the homeserver gets a free port instead.", p.Homeserver)
		p.Homeserver = 0
	}
	if p.Homeserver == 0 {
		if p.Homeserver, err = dendrite.FreePort(); err != nil {
			return ports{}, err
		}
	}
	if p.Appservice, err = freePortExcept(p.Homeserver); err != nil {
		return ports{}, err
	}
	if p.EHR, err = freePortExcept(p.Homeserver, p.Appservice); err != nil {
		return ports{}, err
	}
	if err = writeJSON(path, p); err != nil {
		return ports{}, err
	}
	say("Homeserver port %d, caseroom port %d and EHR port %d chosen and kept in %s.", p.Homeserver, p.Appservice, p.EHR, relPath(path))
	return p, nil
}

// freePortExcept returns a free port on 127.0.0.1 that is none of taken.
func freePortExcept(taken ...int) (int, error) {
	for {
		port, err := dendrite.FreePort()
		if err != nil || !slices.Contains(taken, port) {
			return port, err
		}
	}
}

// portFree reports whether a TCP port on 127.0.0.1 can be bound right now.
func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// buildCaseroom builds the caseroom binary into binDir and returns its path.
func buildCaseroom(ctx context.Context, projectRoot, binDir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("failed to find the go command to build caseroom: %w", err)
	}
	out := filepath.Join(binDir, "caseroom")
	// goolm: end-to-end encryption in pure Go, without libolm (see the Makefile's build target).
	cmd := exec.CommandContext(ctx, goBin, "build", "-tags", "goolm", "-o", out, "./cmd/caseroom")
	cmd.Dir = projectRoot
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("failed to build caseroom (go build ./cmd/caseroom in %s): %w\n%s", projectRoot, err, output)
	}
	return out, nil
}

// ensureConfig writes the caseroom config and registration if they are missing and returns the loaded config.
func ensureConfig(dir string, p ports, serverName string, say func(string, ...any)) (*config.Config, error) {
	configPath := filepath.Join(dir, configFile)
	registrationPath := filepath.Join(dir, registrationFile)
	_, statErr := os.Stat(configPath)
	newConfig := errors.Is(statErr, os.ErrNotExist)
	if newConfig {
		data, err := devConfig(p, serverName, filepath.Join(dir, caseroomDataDir))
		if err != nil {
			return nil, fmt.Errorf("failed to make the development config: %w", err)
		}
		if err = os.WriteFile(configPath, data, 0o600); err != nil {
			return nil, fmt.Errorf("failed to write the caseroom config: %w", err)
		}
		if _, err = os.Stat(filepath.Join(dir, caseroomDataDir)); err == nil {
			say("Wrote a fresh %s; %s is from an earlier config (other tokens and pickle key): "+
				"if caseroom cannot use it, delete it.", relPath(configPath), relPath(filepath.Join(dir, caseroomDataDir)))
		}
	} else if statErr != nil {
		return nil, fmt.Errorf("failed to read the caseroom config: %w", statErr)
	}

	var cfg *config.Config
	var err error
	_, statErr = os.Stat(registrationPath)
	if newConfig || errors.Is(statErr, os.ErrNotExist) {
		// A new config has new tokens, so it needs a new registration too.
		if cfg, err = config.GenerateSecrets(configPath, false); err != nil {
			return nil, fmt.Errorf("failed to generate the secrets of %s: %w", relPath(configPath), err)
		}
		if err = cfg.Registration().Save(registrationPath); err != nil {
			return nil, fmt.Errorf("failed to write the appservice registration %s: %w", relPath(registrationPath), err)
		}
	} else if cfg, err = config.Load(configPath); err != nil {
		return nil, fmt.Errorf("%s is not a valid caseroom config (fix it, or delete it to get a fresh one):\n%w", relPath(configPath), err)
	}
	if cfg.Homeserver.Domain != serverName {
		return nil, fmt.Errorf("%s is for homeserver %s, but the development homeserver is %s; "+
			"fix homeserver.domain, or delete %s to start over", relPath(configPath), cfg.Homeserver.Domain, serverName, relPath(dir))
	}
	return cfg, nil
}

// devConfig is the example config with the development homeserver, appservice address, data directory, admin and
// logging filled in. Only the values change: the example's comments and layout are kept.
func devConfig(p ports, serverName, dataDir string) ([]byte, error) {
	appservice := "127.0.0.1:" + strconv.Itoa(p.Appservice)
	values := []struct {
		keys  []string
		value any
	}{
		{[]string{"homeserver", "url"}, "http://127.0.0.1:" + strconv.Itoa(p.Homeserver)},
		{[]string{"homeserver", "domain"}, serverName},
		{[]string{"appservice", "address"}, "http://" + appservice},
		{[]string{"appservice", "listen"}, appservice},
		{[]string{"data_dir"}, dataDir},
		{[]string{"admins"}, []string{id.NewUserID("admin", serverName).String()}},
		{[]string{"logging", "level"}, "info"},
		{[]string{"logging", "format"}, "pretty"},
		{[]string{"ehr", "url"}, ehrURL(p.EHR)},
		// The bot account's password, which Dendrite asks for before the bot may upload its cross-signing keys;
		// caseroom-dev sets it on the homeserver (see crossSignableBot), so that Element shows no warning.
		{[]string{"encryption", "bot_password"}, random.String(24)},
		// On the appservice listener: a second development setup (or a test's) would collide on a fixed port.
		{[]string{"metrics", "listen"}, appservice},
	}
	example := config.Example()
	var doc yaml.Node
	if err := yaml.Unmarshal(example, &doc); err != nil || len(doc.Content) != 1 {
		return nil, fmt.Errorf("failed to parse the example config: %v", err)
	}
	lines := strings.Split(string(example), "\n")
	for _, v := range values {
		node := yamlValue(doc.Content[0], v.keys...)
		if node == nil || node.Line < 1 || node.Line > len(lines) || node.Column < 1 || node.Column > len(lines[node.Line-1]) {
			return nil, fmt.Errorf("the example config has no value for %s", strings.Join(v.keys, "."))
		}
		// Each value sits at the end of its own line; JSON is YAML, and keeps a list in flow style like the example.
		encoded, err := json.Marshal(v.value)
		if s, ok := v.value.(string); ok {
			encoded, err = yaml.Marshal(s)
		}
		if err != nil {
			return nil, err
		}
		line := lines[node.Line-1]
		lines[node.Line-1] = line[:node.Column-1] + strings.TrimSpace(string(encoded))
	}
	out := "# Development config written by caseroom-dev (make run). Later runs keep it as it is:\n" +
		"# edit it freely, or delete it to get a fresh one (with new tokens and registration).\n\n" +
		strings.Join(lines, "\n")

	// Check that every edit landed where it should.
	var check yaml.Node
	if err := yaml.Unmarshal([]byte(out), &check); err != nil || len(check.Content) != 1 {
		return nil, fmt.Errorf("the edited example config does not parse: %v", err)
	}
	for _, v := range values {
		var got any
		if node := yamlValue(check.Content[0], v.keys...); node != nil {
			if err := node.Decode(&got); err != nil {
				return nil, err
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(v.value) {
			return nil, fmt.Errorf("editing the example config set %s to %v, not %v", strings.Join(v.keys, "."), got, v.value)
		}
	}
	return []byte(out), nil
}

// yamlValue returns the value node at the path of keys in nested YAML mappings, or nil.
func yamlValue(node *yaml.Node, keys ...string) *yaml.Node {
	for _, key := range keys {
		if node.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(node.Content); i += 2 {
			if node.Content[i].Value == key {
				next = node.Content[i+1]
				break
			}
		}
		if next == nil {
			return nil
		}
		node = next
	}
	return node
}

// loadOrCreateAccounts returns the demo accounts from accounts.json, giving any account it lacks a new random
// password and saving the file before the accounts are registered (so a password is never lost).
func loadOrCreateAccounts(dir, serverName string) ([]account, error) {
	path := filepath.Join(dir, accountsFile)
	var stored []account
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("failed to read %s: %w", relPath(path), err)
	default:
		if err = json.Unmarshal(raw, &stored); err != nil {
			return nil, fmt.Errorf("%s is damaged (%v); delete %s to start over", relPath(path), err, relPath(dir))
		}
	}
	passwords := make(map[string]string, len(stored))
	for _, a := range stored {
		passwords[a.Localpart] = a.Password
	}
	accounts := make([]account, 0, len(demoAccounts))
	changed := len(stored) != len(demoAccounts)
	for _, demo := range demoAccounts {
		pw := passwords[demo.Localpart]
		if pw == "" {
			pw, changed = rand.Text(), true
		}
		accounts = append(accounts, account{
			Localpart: demo.Localpart, UserID: id.NewUserID(demo.Localpart, serverName),
			Password: pw, Role: demo.Role, admin: demo.Admin,
		})
	}
	if changed {
		if err = writeJSON(path, accounts); err != nil {
			return nil, err
		}
	}
	return accounts, nil
}

// ensureAccounts registers the demo accounts that do not exist yet and checks that existing ones still have the
// stored password (resetting it through the admin account if not).
func ensureAccounts(ctx context.Context, srv homeserver.Server, accounts []account, say func(string, ...any)) error {
	var admin account
	for _, a := range accounts {
		if a.admin {
			admin = a
		}
	}
	for _, a := range accounts {
		_, err := srv.RegisterUser(ctx, a.Localpart, a.Password, a.admin)
		if err == nil {
			say("Created account %s (%s).", a.UserID, a.Role)
			continue
		}
		if !errors.Is(err, mautrix.MUserInUse) {
			return fmt.Errorf("failed to create demo account %s: %w", a.UserID, err)
		}
		cli, err := srv.Login(ctx, a.Localpart, a.Password)
		if err == nil {
			_, _ = cli.Logout(ctx)
			continue
		}
		_, isDendrite := srv.(*dendrite.Server) // only Dendrite's admin API is used to reset a password
		if !errors.Is(err, mautrix.MForbidden) || a.admin || admin.Localpart == "" || !isDendrite {
			return fmt.Errorf("demo account %s exists but its password in %s does not work (%w); delete the "+
				"working directory to start over", a.UserID, accountsFile, err)
		}
		adminCli, err := srv.Login(ctx, admin.Localpart, admin.Password)
		if err != nil {
			return fmt.Errorf("failed to log in as %s to reset the password of %s: %w", admin.UserID, a.UserID, err)
		}
		err = dendrite.ResetPassword(ctx, adminCli, a.UserID, a.Password)
		_, _ = adminCli.Logout(ctx)
		if err != nil {
			return err
		}
		say("Reset the password of %s to the one in %s.", a.UserID, accountsFile)
	}
	return nil
}

// crossSignableBot gives the bot account on Dendrite the password in encryption.bot_password (through Dendrite's
// admin API, as the demo admin), which Dendrite v0.13.8 asks for before the bot may upload its cross-signing keys.
// Synapse asks for nothing on a first upload, so there is nothing to do.
func crossSignableBot(ctx context.Context, srv homeserver.Server, cfg *config.Config, accounts []account) error {
	den, ok := srv.(*dendrite.Server)
	if !ok || cfg.Encryption.BotPassword == "" {
		return nil
	}
	for _, a := range accounts {
		if !a.admin {
			continue
		}
		adminCli, err := den.Login(ctx, a.Localpart, a.Password)
		if err != nil {
			return fmt.Errorf("failed to log in as %s to set the bot's password: %w", a.UserID, err)
		}
		defer func() { _, _ = adminCli.Logout(ctx) }()
		return dendrite.ResetPassword(ctx, adminCli, cfg.BotMXID(), cfg.Encryption.BotPassword)
	}
	return nil
}

// startCaseroom starts the caseroom binary on the config and registration in opts.Dir, with its output passed
// through, in a process group of its own: a terminal's Ctrl-C reaches only caseroom-dev, which stops caseroom
// before the homeserver.
func startCaseroom(bin string, opts options) (*childproc.Process, error) {
	cmd := exec.Command(bin, "-c", filepath.Join(opts.Dir, configFile), "-r", filepath.Join(opts.Dir, registrationFile))
	cmd.Dir = opts.Dir
	cmd.Stdout, cmd.Stderr = opts.Stdout, opts.Stderr
	return childproc.Start(cmd, nil)
}

// exitError describes how a process that has exited ended.
func exitError(p *childproc.Process) error {
	if p.Err() == nil {
		return errors.New("exit status 0")
	}
	return p.Err()
}

// waitReady polls caseroom's readiness endpoint until it answers 200.
func waitReady(ctx context.Context, url string, c *childproc.Process) error {
	ctx, cancel := context.WithTimeout(ctx, caseroomReadyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	err := childproc.WaitReady(ctx, client, url, 100*time.Millisecond, c.Done())
	switch {
	case errors.Is(err, childproc.ErrExited):
		return fmt.Errorf("caseroom exited during start-up (%v); see its log above", exitError(c))
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("caseroom did not become ready at %s within %s", url, caseroomReadyTimeout)
	}
	return err
}

// watchHealth checks url every healthInterval until ctx ends, and sends an error once it has failed
// healthFailures times in a row. dendrite.Server offers no exit notification, so this is how a Dendrite that died
// or hangs is noticed.
func watchHealth(ctx context.Context, url string) <-chan error {
	down := make(chan error, 1)
	go func() {
		client := &http.Client{Timeout: healthInterval}
		defer client.CloseIdleConnections()
		failures := 0
		ticker := time.NewTicker(healthInterval)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			if childproc.AnswersOK(ctx, client, url) {
				failures = 0
				continue
			}
			if ctx.Err() != nil {
				return
			}
			if failures++; failures >= healthFailures {
				down <- fmt.Errorf("%s failed %d checks in a row", url, failures)
				return
			}
		}
	}()
	return down
}

// printWelcome tells how to use the running setup.
func printWelcome(out io.Writer, s *setup, dir string) {
	var b strings.Builder
	fmt.Fprintf(&b, "\ncaseroom development setup is running. Ctrl-C stops it.\n\n")
	fmt.Fprintf(&b, "  Homeserver: %s (%s, server name %s, open registration)\n", s.HomeserverURL,
		s.Homeserver.Implementation(), s.Homeserver.Domain())
	fmt.Fprintf(&b, "  Bot:        %s\n", s.Bot)
	fmt.Fprintf(&b, "  Accounts (kept in %s):\n", relPath(filepath.Join(dir, accountsFile)))
	width := 0
	for _, a := range s.Accounts {
		width = max(width, len(a.UserID))
	}
	for _, a := range s.Accounts {
		fmt.Fprintf(&b, "    %-*s  password %s  (%s)\n", width, a.UserID, a.Password, a.Role)
	}
	fmt.Fprintf(&b, "\nConnect with Element (Desktop, or Web at https://app.element.io):\n")
	fmt.Fprintf(&b, "  1. Sign in, click \"Edit\" next to the homeserver and enter %s\n", s.HomeserverURL)
	fmt.Fprintf(&b, "  2. Sign in with a username and password from the list above. When Element offers to set up Secure\n")
	fmt.Fprintf(&b, "     Backup, do it: that cross-signs your session, and caseroom takes commands with patient data only\n")
	fmt.Fprintf(&b, "     from cross-signed sessions (encryption.min_trust).\n")
	fmt.Fprintf(&b, "  3. Start a chat with %s and type !ping\n", s.Bot)
	fmt.Fprintf(&b, "     (commands also work as /ping, but Element asks before sending unknown /commands; ! avoids that).\n\n")
	if s.EHR != nil {
		var clinician, patient id.UserID
		for _, a := range s.Accounts {
			switch a.Localpart {
			case demoPractitionerCode:
				clinician = a.UserID
			case "pat.demo":
				patient = a.UserID
			}
		}
		fmt.Fprintf(&b, "EHR: the FHIR test server at %s (in memory: it starts empty on each run) holds\n", s.EHR.URL)
		fmt.Fprintf(&b, "  the demo patient %s (MRN %s) and the Practitioner %s of %s.\n\n", s.EHR.PatientRef, demoMRN, s.EHR.PractitionerRef, clinician)
		fmt.Fprintf(&b, "A first case, from the chat to the chart:\n")
		fmt.Fprintf(&b, "  1. As %s, in an encrypted direct chat with %s:  !case new \"Knee follow-up\" --mrn %s\n", clinician, s.Bot, demoMRN)
		fmt.Fprintf(&b, "     Accept the invites to the case room and the patient room.\n")
		fmt.Fprintf(&b, "  2. In the case room:  !patient invite %s\n", patient)
		fmt.Fprintf(&b, "  3. As %s, join the patient room and send:  !checkin bp=128/82 hr=72 pain=3 knee a bit swollen\n", patient)
		fmt.Fprintf(&b, "  4. As %s, in the case room:  !plan goal Walk 500 m without pain by the end of the month\n", clinician)
		fmt.Fprintf(&b, "  5. Reply to a message in the case room with  !file  to put it in the chart.\n")
		fmt.Fprintf(&b, "  6. See the records in the EHR:\n")
		fmt.Fprintf(&b, "       curl '%s/Observation?subject=%s'\n", s.EHR.URL, s.EHR.PatientRef)
		fmt.Fprintf(&b, "       curl '%s/CarePlan?subject=%s'\n", s.EHR.URL, s.EHR.PatientRef)
		fmt.Fprintf(&b, "       curl '%s/Communication?subject=%s'\n\n", s.EHR.URL, s.EHR.PatientRef)
	}
	fmt.Fprintf(&b, "caseroom logs here; the homeserver logs to %s.\n\n", relPath(s.Homeserver.LogFile()))
	_, _ = io.WriteString(out, b.String())
}

// writeJSON writes v as indented JSON to path with mode 0600, atomically.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err = os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("failed to write %s: %w", relPath(path), err)
	}
	if err = os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("failed to write %s: %w", relPath(path), err)
	}
	return nil
}

// findProjectRoot returns the nearest directory at or above the working directory that holds go.mod.
func findProjectRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("failed to get the working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run caseroom-dev inside the caseroom project: no go.mod at or above the working directory")
		}
		dir = parent
	}
}

// relPath shortens path to be relative to the working directory when it is inside it, for messages.
func relPath(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	if rel, err := filepath.Rel(wd, path); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
		return rel
	}
	return path
}
