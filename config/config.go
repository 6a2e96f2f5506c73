// Package config is the configuration of caseroom: the YAML struct, the
// embedded commented example, and validation.
//
// The canonical example lives in config/example.yaml (embedded, see [Example])
// and is copied byte-for-byte to config.example.yaml at the repository root.
package config

//go:generate cp example.yaml ../config.example.yaml

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	_ "time/tzdata" // timezone must load even on hosts without a zoneinfo database

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/care"
)

//go:embed example.yaml
var example []byte

// Example returns the fully commented example configuration.
func Example() []byte {
	return bytes.Clone(example)
}

// PlaceholderSecret is the value of as_token, hs_token and pickle_key in the
// example; `caseroom -g` replaces it with a random secret.
const PlaceholderSecret = "generate"

// Allowed values of database.type.
const (
	DBTypeSQLite   = "sqlite3-fk-wal"
	DBTypePostgres = "postgres"
)

// Allowed values of ehr.auth.mode.
const (
	EHRAuthNone   = "none"
	EHRAuthBearer = "bearer"
	EHRAuthSmart  = "smart"
)

// Config is the whole caseroom configuration file.
type Config struct {
	Homeserver     HomeserverConfig `yaml:"homeserver"`
	Appservice     AppserviceConfig `yaml:"appservice"`
	Database       DatabaseConfig   `yaml:"database"`
	DataDir        string           `yaml:"data_dir"`
	Admins         []id.UserID      `yaml:"admins"`
	AllowedServers []string         `yaml:"allowed_servers"`
	Timezone       string           `yaml:"timezone"`
	Logging        LoggingConfig    `yaml:"logging"`
	Encryption     EncryptionConfig `yaml:"encryption"`
	CheckIns       CheckInConfig    `yaml:"checkins"`
	Reminders      RemindersConfig  `yaml:"reminders"`
	Alerts         AlertsConfig     `yaml:"alerts"`
	EHR            EHRConfig        `yaml:"ehr"`
	Metrics        MetricsConfig    `yaml:"metrics"`

	loc *time.Location // set by Validate
}

// HomeserverConfig is the homeserver section.
type HomeserverConfig struct {
	// URL is the client-server API base URL.
	URL string `yaml:"url"`
	// Domain is the server_name.
	Domain string `yaml:"domain"`
	// RoomVersion is the version of the rooms caseroom creates; "" means the homeserver's default.
	RoomVersion string `yaml:"room_version"`
}

// AppserviceConfig is the appservice section.
type AppserviceConfig struct {
	ID string `yaml:"id"`
	// Address is the URL the homeserver uses to reach the bot (registration "url").
	Address string `yaml:"address"`
	// Listen is the host:port the bot's HTTP server binds.
	Listen  string    `yaml:"listen"`
	ASToken string    `yaml:"as_token"`
	HSToken string    `yaml:"hs_token"`
	Bot     BotConfig `yaml:"bot"`
	// MaxBodyBytes limits the size of transaction request bodies.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
}

// BotConfig is the appservice.bot section.
type BotConfig struct {
	Username    string `yaml:"username"`
	Displayname string `yaml:"displayname"`
}

// DatabaseConfig is the database section.
type DatabaseConfig struct {
	// Type is DBTypeSQLite or DBTypePostgres.
	Type string `yaml:"type"`
	// URI as written in the file; use Config.DatabaseURI to open the database.
	URI          string `yaml:"uri"`
	MaxOpenConns int    `yaml:"max_open_conns"`
	MaxIdleConns int    `yaml:"max_idle_conns"`
	// MessageRetention is how long the text of processed inbox events and of sent messages is kept.
	MessageRetention Duration `yaml:"message_retention"`
}

// LoggingConfig is the logging section.
type LoggingConfig struct {
	// Level is trace, debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is pretty or json.
	Format string `yaml:"format"`
	// File is the log file path; empty means stderr.
	File string `yaml:"file"`
}

// EncryptionConfig is the encryption section.
// CheckInConfig holds the plausibility ranges and default alert thresholds of check-ins, and the questionnaire of
// guided check-ins.
type CheckInConfig struct {
	Ranges          map[string]RangeConfig `yaml:"ranges"`
	AlertThresholds []string               `yaml:"alert_thresholds"`
	Questionnaire   QuestionnaireConfig    `yaml:"questionnaire"`
	// MaxClockSkew is how far before its arrival a check-in's claimed time (origin_server_ts) may lie and still be
	// its effective time; a claimed time in the future or further back is replaced by the receive time.
	MaxClockSkew Duration `yaml:"max_clock_skew"`
}

// RemindersConfig is the reminders section.
type RemindersConfig struct {
	// Grace is how long after a check-in prompt a check-in may come before the care team is told it was missed.
	Grace Duration `yaml:"grace"`
}

// AlertsConfig is the alerts section.
type AlertsConfig struct {
	// AckTimeout is how long an alert waits for an acknowledgement before it escalates (once).
	AckTimeout Duration `yaml:"ack_timeout"`
}

// RangeConfig is one plausibility range.
type RangeConfig struct {
	Min  float64 `yaml:"min"`
	Max  float64 `yaml:"max"`
	Unit string  `yaml:"unit"`
}

// CheckInRanges are the configured plausibility ranges over the built-in ones.
func (c *Config) CheckInRanges() care.Ranges {
	ranges := care.DefaultRanges()
	for key, rg := range c.CheckIns.Ranges {
		ranges[care.Kind(key)] = care.Range{Min: rg.Min, Max: rg.Max, Unit: rg.Unit}
	}
	return ranges
}

// AlertThresholds are the configured default thresholds, or the built-in ones when none are configured.
func (c *Config) AlertThresholds() []care.Threshold {
	if len(c.CheckIns.AlertThresholds) == 0 {
		return care.DefaultThresholds()
	}
	out := make([]care.Threshold, 0, len(c.CheckIns.AlertThresholds))
	for _, text := range c.CheckIns.AlertThresholds {
		if th, err := care.ParseThreshold(text); err == nil {
			out = append(out, th)
		}
	}
	return out
}

type EncryptionConfig struct {
	// Require refuses PHI commands in unencrypted rooms.
	Require   bool   `yaml:"require"`
	PickleKey string `yaml:"pickle_key"`
	// RecoveryKey is the recovery key of the bot's existing cross-signing keys, used to verify a new device of the
	// bot (e.g. after moving to a new database). Optional.
	RecoveryKey string `yaml:"recovery_key"`
	// BotPassword is the bot account's password, used only to answer the password prompt of the first upload of
	// cross-signing keys. Optional.
	BotPassword string `yaml:"bot_password"`
	// MinTrust is how trusted the sender's device of an encrypted event must be for the bot to act on it when the
	// event changes a record or runs a command: one of the MinTrust* values (empty means MinTrustCrossSigned).
	MinTrust string `yaml:"min_trust"`
}

// Values of encryption.min_trust.
const (
	MinTrustUnverified  = "unverified"            // any device whose keys match its session
	MinTrustCrossSigned = "cross-signed-tofu"     // cross-signed by its owner, owner's keys trusted on first use
	MinTrustXSVerified  = "cross-signed-verified" // cross-signed by its owner, whom the bot has verified
	MinTrustVerified    = "verified"              // the bot has verified the device itself
)

// MinTrustStates maps the values of encryption.min_trust to the lowest mautrix trust state each accepts.
var MinTrustStates = map[string]id.TrustState{
	MinTrustUnverified:  id.TrustStateUnset,
	MinTrustCrossSigned: id.TrustStateCrossSignedTOFU,
	MinTrustXSVerified:  id.TrustStateCrossSignedVerified,
	MinTrustVerified:    id.TrustStateVerified,
}

// MinTrustName is encryption.min_trust as set, or its default.
func (e EncryptionConfig) MinTrustName() string {
	if _, ok := MinTrustStates[e.MinTrust]; ok {
		return e.MinTrust
	}
	return MinTrustCrossSigned
}

// MinTrustState is the lowest trust state of a sender's device that encryption.min_trust accepts.
func (e EncryptionConfig) MinTrustState() id.TrustState {
	if state, ok := MinTrustStates[e.MinTrust]; ok {
		return state
	}
	return id.TrustStateCrossSignedTOFU
}

// MetricsConfig is the metrics section.
type MetricsConfig struct {
	// Listen is the host:port of the /metrics listener; the same value as appservice.listen serves /metrics on the
	// appservice listener; empty serves no metrics.
	Listen string `yaml:"listen"`
}

// EHRConfig is the ehr section.
type EHRConfig struct {
	// URL is the FHIR R4 base URL; empty means no EHR.
	URL     string        `yaml:"url"`
	Timeout Duration      `yaml:"timeout"`
	Auth    EHRAuthConfig `yaml:"auth"`
	// MRNSystem is the identifier system of medical record numbers (`case new --mrn`); empty matches any system.
	MRNSystem string `yaml:"mrn_system"`
	// PollInterval is how often new results are looked for in the EHR.
	PollInterval Duration `yaml:"poll_interval"`
	// SubscriptionSecret is the bearer token the EHR must send to the subscription endpoint; empty turns the
	// endpoint off.
	SubscriptionSecret string `yaml:"subscription_secret"`
}

// EHRAuthConfig is the ehr.auth section.
type EHRAuthConfig struct {
	// Mode is EHRAuthNone, EHRAuthBearer or EHRAuthSmart.
	Mode string `yaml:"mode"`
	// Token is the bearer token (mode bearer).
	Token string `yaml:"token"`
	// ClientID, TokenURL and PrivateKeyFile are for mode smart.
	ClientID       string `yaml:"client_id"`
	TokenURL       string `yaml:"token_url"`
	PrivateKeyFile string `yaml:"private_key_file"`
}

// Default returns the configuration described by the example, which is what
// Load uses for keys missing from the file. Its secrets are
// PlaceholderSecret, and its homeserver.domain and admins are placeholders,
// so it does not pass Validate as is.
func Default() *Config {
	cfg := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(example))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		panic(fmt.Errorf("config: embedded example is invalid: %w", err))
	}
	return cfg
}

// Load reads the YAML file at path, applies defaults for missing keys and
// validates the result. Unknown keys are errors. Validation problems are
// returned all at once (see Validate).
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("config: parsing %s: %w", path, err)
	}
	if err = cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Parse is Load for a configuration already in memory.
func Parse(data []byte) (*Config, error) {
	cfg, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("config: parsing: %w", err)
	}
	if err = cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// decode strictly decodes data over the defaults without validating.
func decode(data []byte) (*Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("file is empty")
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("file must contain a single YAML document")
	}
	return cfg, nil
}

// AllowedServer reports whether users of the given server name may use the
// bot: homeserver.domain always, plus allowed_servers. Comparison is exact.
func (c *Config) AllowedServer(server string) bool {
	if server == "" {
		return false
	}
	if server == c.Homeserver.Domain {
		return true
	}
	for _, s := range c.AllowedServers {
		if s == server {
			return true
		}
	}
	return false
}

// BotMXID is the bot's user ID, @<appservice.bot.username>:<homeserver.domain>.
func (c *Config) BotMXID() id.UserID {
	return id.NewUserID(c.Appservice.Bot.Username, c.Homeserver.Domain)
}

// Location is the default time zone (timezone). It falls back to UTC if
// timezone does not load; Validate reports that case.
func (c *Config) Location() *time.Location {
	if c.loc != nil {
		return c.loc
	}
	if c.Timezone != "" {
		if loc, err := time.LoadLocation(c.Timezone); err == nil {
			return loc
		}
	}
	return time.UTC
}

// EnsureDataDir creates data_dir with mode 0700 if it does not exist.
func (c *Config) EnsureDataDir() error {
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("config: creating data_dir: %w", err)
	}
	return nil
}

// DatabaseURI is the URI to open the database with. For postgres it is
// database.uri unchanged. For SQLite a relative file path, plain
// ("caseroom.db?x=y") or URI form ("file:caseroom.db?x=y"), is resolved
// under data_dir; absolute paths, "file://" URIs and in-memory databases are
// returned unchanged. A relative data_dir stays relative to the working
// directory.
func (c *Config) DatabaseURI() string {
	if c.Database.Type == DBTypePostgres {
		return c.Database.URI
	}
	return resolveSQLite(c.Database.URI, c.DataDir)
}

func resolveSQLite(uri, dir string) string {
	if rest, ok := strings.CutPrefix(uri, "file:"); ok {
		if strings.HasPrefix(rest, "//") {
			return uri
		}
		p, query, hasQuery := strings.Cut(rest, "?")
		if p == "" || strings.HasPrefix(p, ":memory:") || strings.HasPrefix(p, "/") ||
			filepath.IsAbs(p) || strings.Contains(query, "mode=memory") {
			return uri
		}
		out := "file:" + filepath.ToSlash(filepath.Join(uriPathEscaper.Replace(dir), p))
		if hasQuery {
			out += "?" + query
		}
		return out
	}
	p, query, hasQuery := strings.Cut(uri, "?")
	if p == "" || p == ":memory:" || filepath.IsAbs(p) {
		return uri
	}
	out := filepath.Join(dir, p)
	if hasQuery {
		out += "?" + query
	}
	return out
}

// uriPathEscaper escapes the characters that SQLite URI filenames treat specially.
var uriPathEscaper = strings.NewReplacer("%", "%25", "?", "%3F", "#", "%23")
