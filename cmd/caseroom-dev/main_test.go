package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/dendrite"
	"github.com/caseroom/caseroom/internal/synapse"
	"github.com/caseroom/caseroom/internal/testdb"
)

// lockedBuffer collects the output of a run, which caseroom-dev and caseroom write concurrently.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// followWalkthrough follows the printed walkthrough with encrypting clients (walkthrough_test.go); nil in a build
// without the goolm tag, whose crypto the clients need.
var followWalkthrough func(t *testing.T, s *setup, printed string)

// startDev runs the development setup in dir until the test ends (or the returned stop is called) and returns it
// once it is ready, with what it printed so far.
func startDev(t *testing.T, dir, software string) (s *setup, out *lockedBuffer, stop func()) {
	t.Helper()
	root, err := findProjectRoot()
	if err != nil {
		t.Fatal(err)
	}
	out = &lockedBuffer{}
	ready := make(chan *setup, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, options{
			Dir:         dir,
			Port:        0, // a free port: 8008 may be taken by a developer's own `make run`
			Homeserver:  software,
			ProjectRoot: root,
			Stdout:      out,
			Stderr:      out,
			Ready:       func(s *setup) { ready <- s },
		})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("run returned %v after cancel; output:\n%s", err, out.String())
				}
			case <-time.After(20 * time.Second):
				t.Errorf("run did not return within 20 s of cancel; output:\n%s", out.String())
			}
		})
	}
	t.Cleanup(stop)

	select {
	case s = <-ready:
	case err := <-done:
		t.Fatalf("run returned before ready: %v; output:\n%s", err, out.String())
	case <-time.After(90 * time.Second):
		t.Fatalf("not ready within 90 s; output:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "type !ping") || !strings.Contains(out.String(), "--mrn "+demoMRN) {
		t.Errorf("the welcome message with Element instructions was not printed; output:\n%s", out.String())
	}
	return s, out, stop
}

// loginAs logs in as the demo account localpart with the password the setup reports, and checks whoami.
func loginAs(t *testing.T, s *setup, localpart string) (password string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, a := range s.Accounts {
		if a.Localpart != localpart {
			continue
		}
		cli, err := s.Homeserver.Login(ctx, a.Localpart, a.Password)
		if err != nil {
			t.Fatalf("login with the printed password: %v", err)
		}
		resp, err := cli.Whoami(ctx)
		if err != nil || resp.UserID != a.UserID || a.UserID != s.Homeserver.UserID(localpart) {
			t.Fatalf("whoami = %+v, %v; want %s", resp, err, s.Homeserver.UserID(localpart))
		}
		return a.Password
	}
	t.Fatalf("no demo account %s in %+v", localpart, s.Accounts)
	return ""
}

func TestRunTwiceReusesEverything(t *testing.T) {
	for _, software := range []string{hsDendrite, hsSynapse} {
		t.Run(software, func(t *testing.T) { testRunTwice(t, software) })
	}
}

// testRunTwice runs the setup on a homeserver twice in one directory: the second run reuses the ports, accounts,
// config and registration of the first, and refuses to switch to the other homeserver.
func testRunTwice(t *testing.T, software string) {
	// The homeserver is shared with the other packages' tests; installing it is the one thing allowed to be slow.
	installCtx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	toolsDir, err := dendrite.DefaultToolsDir()
	if err == nil && software == hsDendrite {
		_, err = dendrite.EnsureBinaries(installCtx, toolsDir)
	} else if err == nil {
		_, err = synapse.EnsureInstalled(installCtx, toolsDir)
	}
	if err != nil {
		testdb.Unavailable(t, err)
	}
	dir := t.TempDir()

	first, printed, stop := startDev(t, dir, software)
	if first.Homeserver.Implementation() != software {
		t.Fatalf("ran %s, asked for %s", first.Homeserver.Implementation(), software)
	}
	checkDemoEHR(t, first)
	checkBotCrossSigned(t, first)
	if software == hsSynapse { // Element X needs sliding sync
		cli, err := mautrix.NewClient(first.HomeserverURL, "", "")
		if err != nil {
			t.Fatal(err)
		}
		versions, err := cli.Versions(context.Background())
		if err != nil || !versions.UnstableFeatures["org.matrix.simplified_msc3575"] {
			t.Fatalf("the Synapse setup does not serve sliding sync: %v %+v", err, versions)
		}
	}
	if !strings.HasPrefix(first.Homeserver.Domain(), "localhost:") ||
		first.HomeserverURL != "http://"+first.Homeserver.Domain() {
		t.Fatalf("server name %q and client URL %q do not match", first.Homeserver.Domain(), first.HomeserverURL)
	}
	if first.Bot != first.Homeserver.UserID("caseroom") {
		t.Fatalf("bot = %s", first.Bot)
	}
	if len(first.Accounts) != 3 {
		t.Fatalf("accounts = %+v, want admin, dr.demo and pat.demo", first.Accounts)
	}
	password := loginAs(t, first, "dr.demo")
	loginAs(t, first, "admin")
	info, err := os.Stat(filepath.Join(dir, accountsFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, mode %v; want mode 0600", accountsFile, err, info.Mode().Perm())
	}
	keep := map[string][]byte{}
	for _, name := range []string{portsFile, accountsFile, configFile, registrationFile} {
		if keep[name], err = os.ReadFile(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	var p ports
	if err = json.Unmarshal(keep[portsFile], &p); err != nil || first.HomeserverURL != "http://localhost:"+strconv.Itoa(p.Homeserver) {
		t.Fatalf("%s = %s (%v), but the homeserver is %s", portsFile, keep[portsFile], err, first.HomeserverURL)
	}
	switch {
	case followWalkthrough != nil:
		followWalkthrough(t, first, printed.String())
	case os.Getenv("CI") != "":
		t.Error("the printed walkthrough was not followed: the test was built without the goolm tag")
	default:
		t.Log("the printed walkthrough was not followed: the test was built without the goolm tag")
	}
	stop()

	second, _, stop := startDev(t, dir, "")
	if second.HomeserverURL != first.HomeserverURL || second.Homeserver.Domain() != first.Homeserver.Domain() {
		t.Fatalf("second run serves %s (%s), first served %s (%s)", second.HomeserverURL, second.Homeserver.Domain(),
			first.HomeserverURL, first.Homeserver.Domain())
	}
	if got := loginAs(t, second, "dr.demo"); got != password {
		t.Fatalf("dr.demo's password changed between runs")
	}
	loginAs(t, second, "pat.demo")
	for name, before := range keep {
		after, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(before, after) {
			t.Errorf("%s changed on the second run (%v)", name, err)
		}
	}
	stop()

	// The directory's data belongs to its homeserver: asking for the other one is refused, naming both.
	other := hsSynapse
	if software == hsSynapse {
		other = hsDendrite
	}
	root, err := findProjectRoot()
	if err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), options{Dir: dir, Homeserver: other, ProjectRoot: root})
	if err == nil || !strings.Contains(err.Error(), "was set up with "+software) || !strings.Contains(err.Error(), other) {
		t.Fatalf("a run with -homeserver %s in a %s directory: %v", other, software, err)
	}
}

func TestFirstConfigIsTheExampleWithDevValues(t *testing.T) {
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "dev data", caseroomDataDir) // a space must survive the YAML edit
	p := ports{Homeserver: 8448, Appservice: 29351}
	cfg, err := ensureConfig(dir, p, "localhost:8448", func(string, ...any) {})
	if err != nil {
		t.Fatalf("ensureConfig: %v", err)
	}
	// ensureConfig puts the data under dir; check the edit with an awkward path directly as well.
	if _, err = devConfig(p, "localhost:8448", dataDir); err != nil {
		t.Fatalf("devConfig with data_dir %q: %v", dataDir, err)
	}
	var admins []string
	for _, admin := range cfg.Admins {
		admins = append(admins, admin.String())
	}
	tests := []struct {
		name, got, want string
	}{
		{"homeserver.url", cfg.Homeserver.URL, "http://127.0.0.1:8448"},
		{"homeserver.domain", cfg.Homeserver.Domain, "localhost:8448"},
		{"appservice.address", cfg.Appservice.Address, "http://127.0.0.1:29351"},
		{"appservice.listen", cfg.Appservice.Listen, "127.0.0.1:29351"},
		{"data_dir", cfg.DataDir, filepath.Join(dir, caseroomDataDir)},
		{"admins", strings.Join(admins, ","), "@admin:localhost:8448"},
		{"logging.format", cfg.Logging.Format, "pretty"},
		{"logging.level", cfg.Logging.Level, "info"},
		{"database.type", cfg.Database.Type, "sqlite3-fk-wal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("%s = %q, want %q", tt.name, tt.got, tt.want)
			}
		})
	}
	data, err := os.ReadFile(filepath.Join(dir, configFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "# Full Matrix user IDs (@user:server) of the bot administrators.") {
		t.Errorf("the example's comments were lost:\n%s", data)
	}
	reg, err := os.ReadFile(filepath.Join(dir, registrationFile))
	if err != nil || !strings.Contains(string(reg), cfg.Appservice.HSToken) || !strings.Contains(string(reg), "url: http://127.0.0.1:29351") {
		t.Errorf("registration does not match the config (%v):\n%s", err, reg)
	}

	// A later call keeps both files as they are.
	again, err := ensureConfig(dir, p, "localhost:8448", func(string, ...any) {})
	if err != nil || again.Appservice.ASToken != cfg.Appservice.ASToken {
		t.Fatalf("second ensureConfig: %v, tokens kept: %v", err, err == nil && again.Appservice.ASToken == cfg.Appservice.ASToken)
	}
	// A config for another homeserver is refused with a message naming the file.
	if _, err = ensureConfig(dir, ports{Homeserver: 9999, Appservice: 29351}, "localhost:9999", func(string, ...any) {}); err == nil ||
		!strings.Contains(err.Error(), configFile) {
		t.Fatalf("ensureConfig for another homeserver = %v, want an error naming %s", err, configFile)
	}
}

// checkDemoEHR checks that the setup runs the FHIR test server with the demo patient (found by its MRN, as
// `case new --mrn` finds it) and that its welcome walks through to a record there.
func checkDemoEHR(t *testing.T, s *setup) {
	t.Helper()
	if s.EHR == nil {
		t.Fatal("the setup started no EHR")
	}
	resp, err := http.Get(s.EHR.URL + "/Patient?identifier=" + demoMRN)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var bundle struct {
		Entry []struct {
			Resource struct {
				ID string `json:"id"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err = json.NewDecoder(resp.Body).Decode(&bundle); err != nil || len(bundle.Entry) != 1 ||
		"Patient/"+bundle.Entry[0].Resource.ID != s.EHR.PatientRef {
		t.Fatalf("the EHR's patients with MRN %s: %+v (%v), want %s", demoMRN, bundle, err, s.EHR.PatientRef)
	}
	if !strings.HasPrefix(s.EHR.PractitionerRef, "Practitioner/") {
		t.Fatalf("demo practitioner = %q", s.EHR.PractitionerRef)
	}
}

// checkBotCrossSigned checks that the bot's device is signed by the bot's self-signing key, as another user's
// /keys/query shows it (what makes Element show the bot's messages without a warning).
func checkBotCrossSigned(t *testing.T, s *setup) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cli *mautrix.Client
	for _, a := range s.Accounts {
		if a.Localpart == "pat.demo" {
			var err error
			if cli, err = s.Homeserver.Login(ctx, a.Localpart, a.Password); err != nil {
				t.Fatal(err)
			}
		}
	}
	resp, err := cli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{s.Bot: {}}})
	if err != nil {
		t.Fatal(err)
	}
	ssk, ok := resp.SelfSigningKeys[s.Bot]
	if _, hasMaster := resp.MasterKeys[s.Bot]; !ok || !hasMaster || ssk.FirstKey() == "" {
		t.Fatalf("the bot has no cross-signing keys on %s", s.Homeserver.Implementation())
	}
	sskID := id.NewKeyID(id.KeyAlgorithmEd25519, ssk.FirstKey().String())
	signed := 0
	for _, device := range resp.DeviceKeys[s.Bot] {
		if device.Signatures[s.Bot][sskID] != "" {
			signed++
		}
	}
	if signed == 0 {
		t.Fatalf("no device of the bot is signed by its self-signing key on %s", s.Homeserver.Implementation())
	}
}
