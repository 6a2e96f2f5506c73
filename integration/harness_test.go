//go:build goolm

package integration

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/dendrite"
	"github.com/caseroom/caseroom/internal/homeserver"
	"github.com/caseroom/caseroom/internal/testclient"
	"github.com/caseroom/caseroom/internal/testdb"

	_ "github.com/mattn/go-sqlite3" // inspect the bot database
)

// world is what every test of the package shares: the caseroom binary, two federating Dendrites (the bot lives on
// A; B is another clinic's server that is not allowed by default) and the bot's registration on A.
type world struct {
	binary   string
	dir      string
	hsA, hsB *dendrite.Server
	botPort  int
	reg      *appservice.Registration
	baseCfg  []byte // config with the generated secrets
}

var (
	theWorld    *world
	theWorldErr error
	worldOnce   sync.Once
	worldDir    string
)

func TestMain(m *testing.M) {
	var err error
	worldDir, err = os.MkdirTemp("", "caseroom-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if theWorld != nil {
		theWorld.hsA.Stop()
		theWorld.hsB.Stop()
	}
	if theSynapse != nil {
		theSynapse.hs.Stop()
	}
	if code == 0 {
		_ = os.RemoveAll(worldDir)
	} else {
		fmt.Fprintf(os.Stderr, "integration test files kept in %s\n", worldDir)
	}
	os.Exit(code)
}

// getWorld starts the shared components once.
func getWorld(t *testing.T) *world {
	t.Helper()
	worldOnce.Do(func() {
		theWorld, theWorldErr = startWorld(worldDir)
	})
	if theWorldErr != nil {
		testdb.Unavailable(t, theWorldErr)
	}
	return theWorld
}

func startWorld(dir string) (*world, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	w := &world{dir: dir, binary: filepath.Join(dir, "caseroom")}
	// goolm: end-to-end encryption in pure Go (mautrix's default needs libolm through cgo).
	build := exec.CommandContext(ctx, "go", "build", "-tags", "goolm,caseroomtest", "-o", w.binary, "../cmd/caseroom")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("failed to build caseroom: %v\n%s", err, out)
	}
	bins, err := dendrite.EnsureBinaries(ctx, mustToolsDir())
	if err != nil {
		return nil, err
	}
	portA, err := dendrite.FreePort()
	if err != nil {
		return nil, err
	}
	if w.botPort, err = dendrite.FreePort(); err != nil {
		return nil, err
	}
	domainA := fmt.Sprintf("localhost:%d", portA)

	regPath := filepath.Join(dir, "registration.yaml")
	if w.reg, w.baseCfg, err = generateRegistration(ctx, w.binary, dir, domainA, w.botPort); err != nil {
		return nil, err
	}

	var wg sync.WaitGroup
	var errA, errB error
	wg.Add(2)
	go func() {
		defer wg.Done()
		w.hsA, errA = dendrite.Start(ctx, dendrite.Options{
			Dir: filepath.Join(dir, "hs-a"), Federation: true, HTTPSAddr: fmt.Sprintf("127.0.0.1:%d", portA),
			AppServiceRegistrations: []string{regPath}, PersistentJetStream: true, Binaries: bins,
		})
	}()
	go func() {
		defer wg.Done()
		w.hsB, errB = dendrite.Start(ctx, dendrite.Options{Dir: filepath.Join(dir, "hs-b"), Federation: true, Binaries: bins})
	}()
	wg.Wait()
	if errA != nil || errB != nil {
		if w.hsA != nil {
			w.hsA.Stop()
		}
		if w.hsB != nil {
			w.hsB.Stop()
		}
		return nil, fmt.Errorf("failed to start homeservers: %v %v", errA, errB)
	}
	if w.hsA.ServerName != domainA {
		return nil, fmt.Errorf("homeserver A is %s, expected %s", w.hsA.ServerName, domainA)
	}
	return w, nil
}

// generateRegistration makes caseroom's config and registration the way an operator makes them (edit the example,
// run caseroom -g): dir/base-config.yaml and dir/registration.yaml for a homeserver of domain, with the appservice
// listening on port.
func generateRegistration(ctx context.Context, binary, dir, domain string, port int) (*appservice.Registration, []byte, error) {
	cfgPath := filepath.Join(dir, "base-config.yaml")
	regPath := filepath.Join(dir, "registration.yaml")
	if err := os.WriteFile(cfgPath, botConfig(domain, "http://unused", port, dir, nil), 0o600); err != nil {
		return nil, nil, err
	}
	if out, err := exec.CommandContext(ctx, binary, "-g", "-c", cfgPath, "-r", regPath).CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("caseroom -g failed: %v\n%s", err, out)
	}
	reg, err := appservice.LoadRegistration(regPath)
	if err != nil {
		return nil, nil, err
	}
	baseCfg, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	return reg, baseCfg, nil
}

func mustToolsDir() string {
	dir, err := dendrite.DefaultToolsDir()
	if err != nil {
		panic(err)
	}
	return dir
}

// botConfig is a caseroom config for the test homeserver; extra keys are merged over it.
func botConfig(domain, hsURL string, port int, dataDir string, extra map[string]any) []byte {
	cfg := map[string]any{
		"homeserver": map[string]any{"url": hsURL, "domain": domain},
		"appservice": map[string]any{
			"address": fmt.Sprintf("http://127.0.0.1:%d", port), "listen": fmt.Sprintf("127.0.0.1:%d", port),
			"as_token": "generate", "hs_token": "generate",
		},
		"database": map[string]any{"type": "sqlite3-fk-wal", "uri": "file:caseroom.db?_txlock=immediate"},
		"data_dir": dataDir,
		"admins":   []string{"@admin:" + domain},
		"logging":  map[string]any{"level": "debug", "format": "json"},
		"encryption": map[string]any{
			"pickle_key": "generate",
		},
	}
	for k, v := range extra {
		if sub, ok := v.(map[string]any); ok {
			if base, ok := cfg[k].(map[string]any); ok {
				for sk, sv := range sub {
					base[sk] = sv
				}
				continue
			}
		}
		cfg[k] = v
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		panic(err)
	}
	return out
}

// botProcess is one run of the caseroom binary.
type botProcess struct {
	t       *testing.T
	w       *world
	regPath string                   // the appservice registration it runs with
	reg     *appservice.Registration // its contents
	port    int                      // its appservice listener's port
	hs      homeserver.Server        // the homeserver it runs against
	botID   id.UserID                // the bot user
	metrics int                      // the port of its /metrics listener (metrics.listen)
	dir     string
	cfgPath string
	env     []string
	cmd     *exec.Cmd
	done    chan struct{}
	log     *bytes.Buffer
	logMu   *sync.Mutex
}

// botTarget is a homeserver with caseroom's appservice registered on it: what a bot process needs to run there.
type botTarget struct {
	hs      homeserver.Server
	port    int    // the appservice listener's port, as the registration says
	regPath string // the registration file
	reg     *appservice.Registration
	baseCfg []byte // config with the generated secrets
}

// dendriteTarget is homeserver A of the shared world.
func (w *world) dendriteTarget() *botTarget {
	return &botTarget{hs: w.hsA, port: w.botPort,
		regPath: filepath.Join(w.dir, "registration.yaml"), reg: w.reg, baseCfg: w.baseCfg}
}

// startBot runs caseroom against homeserver A with a fresh database in its own directory. extra config keys are
// merged over the defaults; env adds environment variables (fault injection).
func startBot(t *testing.T, extra map[string]any, env ...string) *botProcess {
	t.Helper()
	return startBotOn(t, getWorld(t).dendriteTarget(), extra, env...)
}

// startBotOn is startBot against any homeserver with caseroom registered.
func startBotOn(t *testing.T, target *botTarget, extra map[string]any, env ...string) *botProcess {
	t.Helper()
	// A subtest of forEachHomeserver runs its bot on the homeserver it is named after; a helper that starts one
	// elsewhere would make a test claim a homeserver it never ran on.
	for _, name := range []string{"dendrite", "synapse"} {
		if strings.Contains(t.Name()+"/", "/"+name+"/") && target.hs.Implementation() != name {
			t.Fatalf("test %s starts its bot on %s", t.Name(), target.hs.Implementation())
		}
	}
	w := getWorld(t)
	dir := t.TempDir()
	var base map[string]any
	if err := yaml.Unmarshal(target.baseCfg, &base); err != nil {
		t.Fatal(err)
	}
	metricsPort, err := homeserver.FreePort() // its own: a test may run more than one bot
	if err != nil {
		t.Fatal(err)
	}
	merged := map[string]any{
		"appservice": map[string]any{"as_token": target.reg.AppToken, "hs_token": target.reg.ServerToken},
		"encryption": map[string]any{"pickle_key": base["encryption"].(map[string]any)["pickle_key"]},
		"metrics":    map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", metricsPort)},
	}
	for k, v := range extra {
		if sub, ok := v.(map[string]any); ok {
			if m, ok := merged[k].(map[string]any); ok {
				for sk, sv := range sub {
					m[sk] = sv
				}
				continue
			}
		}
		merged[k] = v
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, botConfig(target.hs.Domain(), target.hs.HomeserverURL(), target.port, dir, merged), 0o600); err != nil {
		t.Fatal(err)
	}
	b := &botProcess{t: t, w: w, regPath: target.regPath, reg: target.reg, port: target.port, dir: dir,
		hs: target.hs, botID: target.hs.UserID(target.reg.SenderLocalpart), metrics: metricsPort,
		cfgPath: cfgPath, log: &bytes.Buffer{}, logMu: &sync.Mutex{}}
	b.start(env...)
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			t.Logf("caseroom log:\n%s", b.Log())
		}
	})
	return b
}

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// start runs the binary and waits until it is ready.
func (b *botProcess) start(env ...string) {
	b.t.Helper()
	b.env = env
	b.cmd = exec.Command(b.w.binary, "-c", b.cfgPath, "-r", b.regPath)
	b.cmd.Env = append(os.Environ(), env...)
	b.cmd.Stdout = lockedWriter{b.logMu, b.log}
	b.cmd.Stderr = lockedWriter{b.logMu, b.log}
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.cmd.Start(); err != nil {
		b.t.Fatalf("failed to start caseroom: %v", err)
	}
	b.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(b.cmd, b.done)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-b.done:
			b.t.Fatalf("caseroom exited during start-up (code %d):\n%s", b.cmd.ProcessState.ExitCode(), b.Log())
		default:
		}
		resp, err := http.Get(b.URL() + "/_matrix/mau/ready")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.t.Fatalf("caseroom did not become ready within 30 s:\n%s", b.Log())
}

// URL is the bot's appservice endpoint.
func (b *botProcess) URL() string {
	return fmt.Sprintf("http://127.0.0.1:%d", b.port)
}

// MetricsURL is where the bot serves /metrics.
func (b *botProcess) MetricsURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d", b.metrics)
}

// stop sends SIGTERM and waits for a clean exit.
func (b *botProcess) stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(15 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
		b.t.Errorf("caseroom did not stop within 15 s of SIGTERM")
	}
}

// kill sends SIGKILL: no chance to clean up.
func (b *botProcess) kill() {
	_ = b.cmd.Process.Kill()
	<-b.done
}

// Log is everything the process printed so far.
func (b *botProcess) Log() string {
	b.logMu.Lock()
	defer b.logMu.Unlock()
	return b.log.String()
}

// db opens the bot's SQLite database for inspection.
func (b *botProcess) db() *sql.DB {
	b.t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(b.dir, "caseroom.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { _ = db.Close() })
	return db
}

// user is a real Matrix client with its own end-to-end encryption (a fresh device, crypto state in a temporary
// SQLite file), syncing in the background and recording every room event it sees, decrypted ones included.
type user struct {
	*testclient.User
}

// newUser registers a fresh account on hs with a cross-signed device (the bot's default encryption.min_trust asks
// for it) and starts syncing.
func newUser(t *testing.T, hs homeserver.Server, name string) *user {
	t.Helper()
	return newUserDevice(t, hs, name, true)
}

// newUserDevice is newUser; crossSign false leaves the device without cross-signing (an unverified session).
func newUserDevice(t *testing.T, hs homeserver.Server, name string, crossSign bool) *user {
	t.Helper()
	return &user{testclient.New(t, hs, name, crossSign)}
}

// replyTo matches the bot's notices that reply to eventID; botMembership the bot's own membership in a room.
var (
	replyTo       = testclient.ReplyTo
	botMembership = testclient.BotMembership
)

// roomWithBot creates a room, invites the bot and waits until it has joined.
func roomWithBot(t *testing.T, u *user, bot id.UserID) id.RoomID {
	t.Helper()
	resp, err := u.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bot}})
	if err != nil {
		t.Fatal(err)
	}
	u.WaitFor(30*time.Second, "the bot join", botMembership(bot, resp.RoomID, event.MembershipJoin))
	return resp.RoomID
}
