package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/crypto/utils"
	"maunium.net/go/mautrix/id"
)

var (
	testAS     = strings.Repeat("a", 40)
	testHS     = strings.Repeat("h", 40)
	testPickle = strings.Repeat("p", 40)
)

// minimalYAML is the smallest valid configuration: everything else defaults.
var minimalYAML = `
homeserver:
    url: https://matrix.hospital.test
    domain: hospital.test
appservice:
    as_token: ` + testAS + `
    hs_token: ` + testHS + `
admins: ["@alice:hospital.test"]
encryption:
    pickle_key: ` + testPickle + `
`

// realExample is the example with its non-secret placeholders replaced.
func realExample(t *testing.T) []byte {
	t.Helper()
	data := Example()
	for _, r := range [][2]string{
		{"domain: example.org", "domain: hospital.test"},
		{`"@admin:example.org"`, `"@alice:hospital.test"`},
	} {
		if !bytes.Contains(data, []byte(r[0])) {
			t.Fatalf("example does not contain %q", r[0])
		}
		data = bytes.Replace(data, []byte(r[0]), []byte(r[1]), 1)
	}
	return data
}

func writeTemp(t *testing.T, data []byte, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
	return path
}

func validConfig(t *testing.T) *Config {
	t.Helper()
	cfg, err := Parse([]byte(minimalYAML))
	if err != nil {
		t.Fatalf("minimal config does not validate: %v", err)
	}
	return cfg
}

func errorLines(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}

func TestExampleFilesIdentical(t *testing.T) {
	root, err := os.ReadFile(filepath.Join("..", "config.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(root, Example()) {
		t.Fatal("config.example.yaml differs from config/example.yaml; run `go generate ./config/` (cp config/example.yaml config.example.yaml)")
	}
}

func TestExampleEveryKeyCommented(t *testing.T) {
	lines := strings.Split(string(Example()), "\n")
	keyLine := regexp.MustCompile(`^\s*[a-z_]+:`)
	for i, line := range lines {
		if !keyLine.MatchString(line) {
			continue
		}
		if i == 0 || !strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#") {
			t.Errorf("line %d %q has no comment above it", i+1, line)
		}
	}
}

func TestDefault(t *testing.T) {
	cfg := Default()
	if cfg.Appservice.ASToken != PlaceholderSecret || cfg.Appservice.HSToken != PlaceholderSecret || cfg.Encryption.PickleKey != PlaceholderSecret {
		t.Error("default secrets must be the placeholder")
	}
	if cfg.Appservice.MaxBodyBytes != 10<<20 || cfg.EHR.Timeout.Duration != 15*time.Second || cfg.Timezone != "UTC" ||
		cfg.Database.Type != DBTypeSQLite || !cfg.Encryption.Require || cfg.EHR.Auth.Mode != EHRAuthNone {
		t.Errorf("unexpected defaults: %+v", cfg.Appservice.Bot)
	}
	if cfg.Encryption.MinTrust != MinTrustCrossSigned || cfg.Encryption.MinTrustState() != id.TrustStateCrossSignedTOFU {
		t.Errorf("default encryption.min_trust = %q, want %s", cfg.Encryption.MinTrust, MinTrustCrossSigned)
	}
	if (EncryptionConfig{MinTrust: MinTrustUnverified}).MinTrustState() != id.TrustStateUnset {
		t.Error("min_trust unverified must accept devices without cross-signing")
	}
}

func TestLoadAppliesDefaults(t *testing.T) {
	cfg, err := Load(writeTemp(t, []byte(minimalYAML), 0o600))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Appservice.ID != "caseroom" || cfg.Appservice.Listen != "127.0.0.1:29350" || cfg.DataDir != "./data" ||
		cfg.Logging.Level != "info" || cfg.EHR.Timeout.Duration != 15*time.Second || len(cfg.AllowedServers) != 0 {
		t.Errorf("defaults not applied: %+v", cfg.Appservice)
	}
	if cfg.Location() != time.UTC && cfg.Location().String() != "UTC" {
		t.Errorf("Location() = %v", cfg.Location())
	}
}

func TestExampleValidatesAfterGenerate(t *testing.T) {
	path := writeTemp(t, realExample(t), 0o644)
	cfg, err := GenerateSecrets(path, false)
	if err != nil {
		t.Fatalf("example with generated secrets does not validate: %v", err)
	}
	if cfg.BotMXID() != "@caseroom:hospital.test" {
		t.Errorf("BotMXID() = %s", cfg.BotMXID())
	}
}

func TestRawExampleOnlyPlaceholdersRefused(t *testing.T) {
	path := writeTemp(t, Example(), 0o644)
	_, err := GenerateSecrets(path, false)
	lines := errorLines(err)
	if len(lines) != 2 || !strings.HasPrefix(lines[0], `homeserver.domain: `) || !strings.HasPrefix(lines[1], `admins[0]: `) {
		t.Fatalf("want exactly the domain and admin placeholder errors, got:\n%v", err)
	}
}

func TestPlaceholdersRefused(t *testing.T) {
	_, err := Parse(Example())
	if err == nil {
		t.Fatal("raw example must not validate")
	}
	for _, want := range []string{
		`appservice.as_token: must be a generated secret, got "generate"; run ` + "`caseroom -g -c <config> -r <registration>`" + ` to generate it`,
		`appservice.hs_token: `,
		`encryption.pickle_key: `,
		`homeserver.domain: is the example placeholder`,
		`admins[0]: is the example placeholder`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}
	if n := len(errorLines(err)); n != 5 {
		t.Errorf("want 5 problems, got %d:\n%v", n, err)
	}
}

func TestValidateBadValues(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Config)
		key    string
		value  string // must appear quoted in the error; "" = don't check
	}{
		{"homeserver url not http", func(c *Config) { c.Homeserver.URL = "foo" }, "homeserver.url", "foo"},
		{"homeserver url no host", func(c *Config) { c.Homeserver.URL = "https://" }, "homeserver.url", "https://"},
		{"homeserver url ftp", func(c *Config) { c.Homeserver.URL = "ftp://matrix.hospital.test" }, "homeserver.url", "ftp://matrix.hospital.test"},
		{"domain empty", func(c *Config) { c.Homeserver.Domain = "" }, "homeserver.domain", ""},
		{"domain invalid", func(c *Config) { c.Homeserver.Domain = "bad domain" }, "homeserver.domain", "bad domain"},
		{"domain placeholder", func(c *Config) { c.Homeserver.Domain = "matrix.example.org" }, "homeserver.domain", "matrix.example.org"},
		{"room version unknown", func(c *Config) { c.Homeserver.RoomVersion = "99" }, "homeserver.room_version", "99"},
		{"appservice id empty", func(c *Config) { c.Appservice.ID = "" }, "appservice.id", ""},
		{"address not url", func(c *Config) { c.Appservice.Address = "127.0.0.1:29350" }, "appservice.address", "127.0.0.1:29350"},
		{"listen no port", func(c *Config) { c.Appservice.Listen = "localhost" }, "appservice.listen", "localhost"},
		{"listen port not numeric", func(c *Config) { c.Appservice.Listen = "localhost:http" }, "appservice.listen", "localhost:http"},
		{"listen port out of range", func(c *Config) { c.Appservice.Listen = ":70000" }, "appservice.listen", ":70000"},
		{"as_token placeholder", func(c *Config) { c.Appservice.ASToken = "generate" }, "appservice.as_token", "generate"},
		{"hs_token empty", func(c *Config) { c.Appservice.HSToken = "" }, "appservice.hs_token", ""},
		{"as_token short", func(c *Config) { c.Appservice.ASToken = "short-secret" }, "appservice.as_token", ""},
		{"tokens equal", func(c *Config) { c.Appservice.HSToken = c.Appservice.ASToken }, "appservice.hs_token", ""},
		{"pickle_key placeholder", func(c *Config) { c.Encryption.PickleKey = "generate" }, "encryption.pickle_key", "generate"},
		{"pickle_key with space", func(c *Config) { c.Encryption.PickleKey = strings.Repeat("x ", 20) }, "encryption.pickle_key", ""},
		{"recovery_key malformed", func(c *Config) { c.Encryption.RecoveryKey = "EsTc notarecoverykey" }, "encryption.recovery_key", ""},
		{"recovery_key bad parity", func(c *Config) {
			key := []byte(utils.EncodeBase58RecoveryKey(bytes.Repeat([]byte{7}, 32)))
			key[len(key)-1] ^= 1
			c.Encryption.RecoveryKey = string(key)
		}, "encryption.recovery_key", ""},
		{"bot_password blank", func(c *Config) { c.Encryption.BotPassword = "   " }, "encryption.bot_password", ""},
		{"min_trust unknown", func(c *Config) { c.Encryption.MinTrust = "tofu" }, "encryption.min_trust", "tofu"},
		{"bot username uppercase", func(c *Config) { c.Appservice.Bot.Username = "CaseRoom" }, "appservice.bot.username", "CaseRoom"},
		{"bot username empty", func(c *Config) { c.Appservice.Bot.Username = "" }, "appservice.bot.username", ""},
		{"max body zero", func(c *Config) { c.Appservice.MaxBodyBytes = 0 }, "appservice.max_body_bytes", "0"},
		{"db type", func(c *Config) { c.Database.Type = "mysql" }, "database.type", "mysql"},
		{"db uri empty", func(c *Config) { c.Database.URI = "" }, "database.uri", ""},
		{"db postgres uri", func(c *Config) {
			c.Database.Type = DBTypePostgres
			c.Database.URI = "mysql://u@host/db"
		}, "database.uri", "mysql://u@host/db"},
		{"db max open", func(c *Config) { c.Database.MaxOpenConns = -1 }, "database.max_open_conns", "-1"},
		{"db max idle", func(c *Config) { c.Database.MaxIdleConns = -1 }, "database.max_idle_conns", "-1"},
		{"data_dir empty", func(c *Config) { c.DataDir = "" }, "data_dir", ""},
		{"admin not mxid", func(c *Config) { c.Admins = []id.UserID{"@alice:hospital.test", "alice"} }, "admins[1]", "alice"},
		{"admin no localpart", func(c *Config) { c.Admins = []id.UserID{"@:hospital.test"} }, "admins[0]", "@:hospital.test"},
		{"admin placeholder", func(c *Config) { c.Admins = []id.UserID{"@admin:example.org"} }, "admins[0]", "@admin:example.org"},
		{"allowed server invalid", func(c *Config) { c.AllowedServers = []string{"ok.test", "not ok"} }, "allowed_servers[1]", "not ok"},
		{"timezone unknown", func(c *Config) { c.Timezone = "Mars/Olympus" }, "timezone", "Mars/Olympus"},
		{"timezone empty", func(c *Config) { c.Timezone = "" }, "timezone", ""},
		{"log level", func(c *Config) { c.Logging.Level = "verbose" }, "logging.level", "verbose"},
		{"log format", func(c *Config) { c.Logging.Format = "xml" }, "logging.format", "xml"},
		{"ehr url", func(c *Config) { c.EHR.URL = "fhir.hospital.test" }, "ehr.url", "fhir.hospital.test"},
		{"ehr timeout zero", func(c *Config) { c.EHR.Timeout = Duration{} }, "ehr.timeout", "0s"},
		{"ehr auth mode", func(c *Config) { c.EHR.Auth.Mode = "basic" }, "ehr.auth.mode", "basic"},
		{"ehr bearer no token", func(c *Config) { c.EHR.Auth.Mode = EHRAuthBearer }, "ehr.auth.token", ""},
		{"ehr smart no client", func(c *Config) { c.EHR.Auth.Mode = EHRAuthSmart }, "ehr.auth.client_id", ""},
		{"ehr smart no token url", func(c *Config) { c.EHR.Auth.Mode = EHRAuthSmart }, "ehr.auth.token_url", ""},
		{"ehr smart bad token url", func(c *Config) {
			c.EHR.Auth.Mode = EHRAuthSmart
			c.EHR.Auth.TokenURL = "token"
		}, "ehr.auth.token_url", "token"},
		{"ehr smart no key", func(c *Config) { c.EHR.Auth.Mode = EHRAuthSmart }, "ehr.auth.private_key_file", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig(t)
			tt.mutate(cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatal("Validate() = nil")
			}
			var line string
			for _, l := range errorLines(err) {
				if strings.HasPrefix(l, tt.key+": ") {
					line = l
				}
			}
			if line == "" {
				t.Fatalf("no error for %s in:\n%v", tt.key, err)
			}
			if tt.value != "" && !strings.Contains(line, `got "`+tt.value+`"`) {
				t.Errorf("error %q does not show the value %q", line, tt.value)
			}
			for _, secret := range []string{cfg.Appservice.ASToken, cfg.Appservice.HSToken, cfg.Encryption.PickleKey,
				cfg.Encryption.RecoveryKey, cfg.Encryption.BotPassword} {
				if len(secret) >= 8 && secret != PlaceholderSecret && strings.Contains(err.Error(), secret) {
					t.Errorf("error leaks a secret")
				}
			}
		})
	}
}

func TestValidateAcceptsEncryptionSecrets(t *testing.T) {
	cfg := validConfig(t)
	cfg.Encryption.RecoveryKey = utils.EncodeBase58RecoveryKey(bytes.Repeat([]byte{7}, 32))
	cfg.Encryption.BotPassword = "correct horse battery staple"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	cfg.Encryption.RecoveryKey = strings.ReplaceAll(cfg.Encryption.RecoveryKey, " ", "")
	if err := cfg.Validate(); err != nil {
		t.Fatalf("recovery key without spaces: Validate() = %v", err)
	}
}

func TestValidateReportsAll(t *testing.T) {
	cfg := validConfig(t)
	cfg.Homeserver.URL = "foo"
	cfg.Logging.Level = "loud"
	cfg.Database.Type = "oracle"
	err := cfg.Validate()
	if got := errorLines(err); len(got) != 3 {
		t.Fatalf("want 3 problems, got %d:\n%v", len(got), err)
	}
	if !strings.Contains(err.Error(), `homeserver.url: must be an http(s) URL, got "foo"`) {
		t.Errorf("unexpected message:\n%v", err)
	}
}

func TestValidateDoesNotLeakPasswords(t *testing.T) {
	cfg := validConfig(t)
	cfg.Database.Type = DBTypePostgres
	cfg.Database.URI = "mysql://user:hunter2@db/caseroom"
	cfg.EHR.URL = "ftp://user:hunter2@fhir"
	err := cfg.Validate()
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error must exist and hide the password:\n%v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown top-level key", minimalYAML + "bogus_key: 1\n", []string{"bogus_key", "line 11"}},
		{"unknown nested key", strings.Replace(minimalYAML, "    domain:", "    domian: x\n    domain:", 1), []string{"domian", "line 4"}},
		{"bad duration", minimalYAML + "ehr:\n    timeout: soon\n", []string{`ehr.timeout: must be a duration such as "15s" or "1m", got "soon"`}},
		{"duration without unit", minimalYAML + "ehr:\n    timeout: 15\n", []string{`ehr.timeout:`, `got "15"`}},
		{"empty file", "# nothing\n", []string{"empty"}},
		{"two documents", minimalYAML + "---\nfoo: 1\n", []string{"single YAML document"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(writeTemp(t, []byte(tt.yaml), 0o600))
			if err == nil {
				t.Fatal("Load() = nil error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestGenerateSecrets(t *testing.T) {
	orig := realExample(t)
	path := writeTemp(t, orig, 0o644)
	cfg, err := GenerateSecrets(path, false)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{cfg.Appservice.ASToken, cfg.Appservice.HSToken, cfg.Encryption.PickleKey}
	for _, s := range secrets {
		if len(s) != secretLength {
			t.Errorf("secret has length %d, want %d", len(s), secretLength)
		}
	}
	if secrets[0] == secrets[1] || secrets[1] == secrets[2] || secrets[0] == secrets[2] {
		t.Error("secrets are not distinct")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte("    # Client-server API URL the bot talks to. Must be http:// or https://.\n")) {
		t.Error("comment did not survive")
	}
	// Only the three values changed: everything else is byte-for-byte the same.
	want := orig
	for _, s := range secrets {
		want = bytes.Replace(want, []byte(": generate\n"), []byte(": "+s+"\n"), 1)
	}
	if !bytes.Equal(data, want) {
		t.Error("file changed beyond the three secrets")
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, %v; want 0600", info.Mode().Perm(), err)
	}
	if matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*")); len(matches) != 0 {
		t.Errorf("temporary files left behind: %v", matches)
	}

	t.Run("idempotent without force", func(t *testing.T) {
		cfg2, err := GenerateSecrets(path, false)
		if err != nil {
			t.Fatal(err)
		}
		if cfg2.Appservice.ASToken != secrets[0] || cfg2.Appservice.HSToken != secrets[1] || cfg2.Encryption.PickleKey != secrets[2] {
			t.Error("secrets changed on second call without force")
		}
		data2, _ := os.ReadFile(path)
		if !bytes.Equal(data, data2) {
			t.Error("file changed on second call without force")
		}
	})
	t.Run("force replaces", func(t *testing.T) {
		cfg3, err := GenerateSecrets(path, true)
		if err != nil {
			t.Fatal(err)
		}
		if cfg3.Appservice.ASToken == secrets[0] || cfg3.Appservice.HSToken == secrets[1] || cfg3.Encryption.PickleKey == secrets[2] {
			t.Error("force did not replace every secret")
		}
	})
}

func TestGenerateSecretsEdgeCases(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		comment string // must survive
		check   func(t *testing.T, data []byte)
	}{
		{
			name: "missing keys are added, 2-space indent kept",
			yaml: `# my caseroom
homeserver:
  # where synapse lives
  url: https://matrix.hospital.test
  domain: hospital.test
admins: ["@alice:hospital.test"]
`,
			comment: "# where synapse lives",
			check: func(t *testing.T, data []byte) {
				t.Helper()
				if !bytes.Contains(data, []byte("\n  url: https://matrix.hospital.test")) {
					t.Errorf("indentation changed:\n%s", data)
				}
			},
		},
		{
			name:    "quoted and null values",
			yaml:    strings.Replace(strings.Replace(strings.Replace(minimalYAML, testAS, `"generate"`, 1), testHS, `''`, 1), testPickle, "", 1) + "# trailing comment\n",
			comment: "# trailing comment",
		},
		{
			name: "only one secret missing",
			yaml: strings.Replace(minimalYAML, testHS, "generate # fill me", 1),
			check: func(t *testing.T, data []byte) {
				t.Helper()
				if !bytes.Contains(data, []byte("as_token: "+testAS+"\n")) || !bytes.Contains(data, []byte(" # fill me\n")) {
					t.Errorf("unexpected result")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeTemp(t, []byte(tt.yaml), 0o640)
			cfg, err := GenerateSecrets(path, false)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Appservice.HSToken) != secretLength || len(cfg.Encryption.PickleKey) < MinSecretLength {
				t.Error("secrets not filled in")
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if tt.comment != "" && !bytes.Contains(data, []byte(tt.comment)) {
				t.Errorf("comment %q did not survive", tt.comment)
			}
			if info, _ := os.Stat(path); info.Mode().Perm() != 0o600 {
				t.Errorf("mode = %v, want 0600", info.Mode().Perm())
			}
			if tt.check != nil {
				tt.check(t, data)
			}
		})
	}
}

func TestGenerateSecretsRefusesBrokenFile(t *testing.T) {
	orig := []byte(minimalYAML + "unknown: 1\n")
	path := writeTemp(t, orig, 0o600)
	if _, err := GenerateSecrets(path, true); err == nil || !strings.Contains(err.Error(), "unknown") {
		t.Fatalf("want unknown-key error, got %v", err)
	}
	if data, _ := os.ReadFile(path); !bytes.Equal(data, orig) {
		t.Error("broken file was modified")
	}
}

func TestRegistration(t *testing.T) {
	cfg := validConfig(t)
	reg := cfg.Registration()
	if reg.ID != "caseroom" || reg.URL != "http://127.0.0.1:29350" || reg.AppToken != testAS || reg.ServerToken != testHS ||
		reg.SenderLocalpart != "caseroom" || reg.RateLimited == nil || *reg.RateLimited {
		t.Errorf("unexpected registration fields")
	}
	if len(reg.Namespaces.UserIDs) != 2 {
		t.Fatalf("want 2 user namespaces, got %d", len(reg.Namespaces.UserIDs))
	}
	var res []*regexp.Regexp
	for _, ns := range reg.Namespaces.UserIDs {
		if !ns.Exclusive {
			t.Errorf("namespace %s not exclusive", ns.Regex)
		}
		res = append(res, regexp.MustCompile(ns.Regex))
	}
	matches := func(user string) bool {
		for _, re := range res {
			if re.MatchString(user) {
				return true
			}
		}
		return false
	}
	tests := []struct {
		name string
		user string
		want bool
	}{
		{"bot", "@caseroom:hospital.test", true},
		{"ghost", "@caseroom_patient42:hospital.test", true},
		{"ghost empty suffix", "@caseroom_:hospital.test", true},
		{"other user", "@alice:hospital.test", false},
		{"prefix without underscore", "@caseroomx:hospital.test", false},
		{"bot on other server", "@caseroom:other.test", false},
		{"ghost on other server", "@caseroom_x:other.test", false},
		{"dot is escaped", "@caseroom:hospitalXtest", false},
		{"suffix after domain", "@caseroom:hospital.test.evil", false},
		{"prefix before sigil", "x@caseroom:hospital.test", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := matches(tt.user); got != tt.want {
				t.Errorf("namespace match %s = %v, want %v", tt.user, got, tt.want)
			}
		})
	}
	if got := cfg.Registration().Namespaces.UserIDs[0].Regex; got != `^@caseroom:hospital\.test$` {
		t.Errorf("bot regex = %s", got)
	}
}

func TestDatabaseURI(t *testing.T) {
	tests := []struct {
		name    string
		dbType  string
		uri     string
		dataDir string
		want    string
	}{
		{"example", DBTypeSQLite, "file:caseroom.db?_txlock=immediate", "./data", "file:data/caseroom.db?_txlock=immediate"},
		{"file uri without query", DBTypeSQLite, "file:caseroom.db", "/var/lib/caseroom", "file:/var/lib/caseroom/caseroom.db"},
		{"file uri absolute", DBTypeSQLite, "file:/srv/x.db?_txlock=immediate", "./data", "file:/srv/x.db?_txlock=immediate"},
		{"file uri triple slash", DBTypeSQLite, "file:///srv/x.db", "./data", "file:///srv/x.db"},
		{"file uri subdir", DBTypeSQLite, "file:db/x.db?a=b", "/d", "file:/d/db/x.db?a=b"},
		{"file uri special chars in data_dir", DBTypeSQLite, "file:x.db", "/d?#%", "file:/d%3F%23%25/x.db"},
		{"memory", DBTypeSQLite, "file::memory:?cache=shared", "./data", "file::memory:?cache=shared"},
		{"memory mode", DBTypeSQLite, "file:x?mode=memory", "./data", "file:x?mode=memory"},
		{"plain relative", DBTypeSQLite, "caseroom.db", "/var/lib/caseroom", "/var/lib/caseroom/caseroom.db"},
		{"plain relative with query", DBTypeSQLite, "caseroom.db?_txlock=immediate", "data", "data/caseroom.db?_txlock=immediate"},
		{"plain absolute", DBTypeSQLite, "/srv/caseroom.db", "./data", "/srv/caseroom.db"},
		{"plain memory", DBTypeSQLite, ":memory:", "./data", ":memory:"},
		{"postgres unchanged", DBTypePostgres, "postgres://u@h/db", "./data", "postgres://u@h/db"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &Config{Database: DatabaseConfig{Type: tt.dbType, URI: tt.uri}, DataDir: tt.dataDir}
			if got := cfg.DatabaseURI(); got != tt.want {
				t.Errorf("DatabaseURI() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAllowedServer(t *testing.T) {
	tests := []struct {
		name    string
		allowed []string
		server  string
		want    bool
	}{
		{"empty list own domain", nil, "hospital.test", true},
		{"empty list other", nil, "other.test", false},
		{"empty server", nil, "", false},
		{"listed", []string{"other.test"}, "other.test", true},
		{"own domain always", []string{"other.test"}, "hospital.test", true},
		{"unlisted", []string{"other.test"}, "third.test", false},
		{"exact match only", []string{"other.test"}, "OTHER.test", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig(t)
			cfg.AllowedServers = tt.allowed
			if got := cfg.AllowedServer(tt.server); got != tt.want {
				t.Errorf("AllowedServer(%q) = %v, want %v", tt.server, got, tt.want)
			}
		})
	}
}

func TestLocation(t *testing.T) {
	cfg := validConfig(t)
	cfg.Timezone = "Europe/Berlin"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Location().String() != "Europe/Berlin" {
		t.Errorf("Location() = %v", cfg.Location())
	}
	bad := &Config{Timezone: "Nowhere/Land"}
	if bad.Location() != time.UTC {
		t.Error("invalid timezone must fall back to UTC")
	}
}

func TestWriteExample(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := WriteExample(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(data, Example()) {
		t.Fatalf("written example differs (%v)", err)
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", info.Mode().Perm())
	}
	err = WriteExample(path)
	if err == nil || !strings.Contains(err.Error(), "refusing to overwrite existing file") {
		t.Errorf("second WriteExample() = %v, want refusal", err)
	}
}

func TestEnsureDataDir(t *testing.T) {
	cfg := validConfig(t)
	cfg.DataDir = filepath.Join(t.TempDir(), "a", "data")
	if err := cfg.EnsureDataDir(); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(cfg.DataDir); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("data_dir mode = %v, %v", info.Mode().Perm(), err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}
