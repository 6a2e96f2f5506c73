package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix/crypto/utils"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/care"
)

// MinSecretLength is the minimum length of as_token, hs_token and pickle_key.
const MinSecretLength = 32

// generateHint tells how to fill in the secrets.
const generateHint = "run `caseroom -g -c <config> -r <registration>` to generate it"

// Example placeholders that must be replaced before the bot can run.
var (
	placeholderDomains = []string{"example.org", "matrix.example.org"}
	placeholderAdmin   = id.UserID("@admin:example.org")
)

// localpartRegex is the set of localpart characters caseroom accepts for its bot.
var localpartRegex = regexp.MustCompile(`^[a-z0-9._=\-/]+$`)

type problems []error

// got records "key: problem, got "value"".
func (p *problems) got(key, problem, value string) {
	*p = append(*p, fmt.Errorf("%s: %s, got %q", key, problem, value))
}

// add records "key: problem" (for values that must not be echoed).
func (p *problems) add(key, problem string) {
	*p = append(*p, fmt.Errorf("%s: %s", key, problem))
}

// Validate checks every key and returns all problems joined with
// errors.Join, one "key: problem, got "value"" per line, or nil. Secret
// values are never included in the messages. Validate also caches the
// time zone returned by Location.
func (c *Config) Validate() error {
	var p problems

	c.validateCheckIns(&p)
	c.validateRemindersAlerts(&p)
	p.httpURL("homeserver.url", c.Homeserver.URL)
	switch {
	case c.Homeserver.Domain == "":
		p.got("homeserver.domain", "must not be empty", "")
	case !id.ValidateServerName(c.Homeserver.Domain):
		p.got("homeserver.domain", "must be a valid server name (host or host:port)", c.Homeserver.Domain)
	case isPlaceholderDomain(c.Homeserver.Domain):
		p.got("homeserver.domain", "is the example placeholder, set it to your homeserver's server_name", c.Homeserver.Domain)
	}
	if v := c.Homeserver.RoomVersion; v != "" && !id.RoomVersion(v).IsKnown() {
		p.got("homeserver.room_version", "must be empty (the homeserver's default) or a room version from 1 to 12", v)
	}

	if strings.TrimSpace(c.Appservice.ID) == "" {
		p.got("appservice.id", "must not be empty", c.Appservice.ID)
	}
	p.httpURL("appservice.address", c.Appservice.Address)
	p.listen("appservice.listen", c.Appservice.Listen)
	p.secret("appservice.as_token", c.Appservice.ASToken)
	p.secret("appservice.hs_token", c.Appservice.HSToken)
	if c.Appservice.ASToken != "" && c.Appservice.ASToken != PlaceholderSecret &&
		c.Appservice.ASToken == c.Appservice.HSToken {
		p.add("appservice.hs_token", "must differ from appservice.as_token; "+generateHint)
	}
	if !localpartRegex.MatchString(c.Appservice.Bot.Username) {
		p.got("appservice.bot.username", "must be a Matrix localpart of lowercase a-z, 0-9 and ._=-/", c.Appservice.Bot.Username)
	} else if len(c.BotMXID()) > id.UserIDMaxLength {
		p.got("appservice.bot.username", fmt.Sprintf("makes the bot user ID longer than %d characters", id.UserIDMaxLength), c.Appservice.Bot.Username)
	}
	if c.Appservice.MaxBodyBytes <= 0 {
		p.got("appservice.max_body_bytes", "must be greater than zero", strconv.FormatInt(c.Appservice.MaxBodyBytes, 10))
	}

	switch c.Database.Type {
	case DBTypeSQLite, DBTypePostgres:
	default:
		p.got("database.type", "must be sqlite3-fk-wal or postgres", c.Database.Type)
	}
	isPostgresURI := strings.HasPrefix(c.Database.URI, "postgres://") || strings.HasPrefix(c.Database.URI, "postgresql://")
	switch {
	case c.Database.URI == "":
		p.got("database.uri", "must not be empty", "")
	case c.Database.Type == DBTypePostgres && !isPostgresURI:
		p.got("database.uri", "must start with postgres:// or postgresql:// when database.type is postgres", redactURI(c.Database.URI))
	case c.Database.Type == DBTypeSQLite && isPostgresURI:
		p.got("database.uri", "is a postgres URI but database.type is sqlite3-fk-wal", redactURI(c.Database.URI))
	}
	if c.Database.MaxOpenConns < 0 {
		p.got("database.max_open_conns", "must be 0 (automatic) or more", strconv.Itoa(c.Database.MaxOpenConns))
	}
	if c.Database.MaxIdleConns < 0 {
		p.got("database.max_idle_conns", "must not be negative", strconv.Itoa(c.Database.MaxIdleConns))
	}

	if strings.TrimSpace(c.DataDir) == "" {
		p.got("data_dir", "must not be empty", c.DataDir)
	}

	for i, admin := range c.Admins {
		key := fmt.Sprintf("admins[%d]", i)
		localpart, server, err := admin.Parse()
		switch {
		case err != nil || localpart == "" || !id.ValidateServerName(server):
			p.got(key, `must be a full Matrix user ID such as "@alice:example.com"`, string(admin))
		case admin == placeholderAdmin:
			p.got(key, "is the example placeholder, replace it with a real administrator's user ID", string(admin))
		}
	}
	for i, server := range c.AllowedServers {
		if !id.ValidateServerName(server) {
			p.got(fmt.Sprintf("allowed_servers[%d]", i), "must be a valid server name (host or host:port)", server)
		}
	}

	c.loc = nil
	if c.Timezone == "" {
		p.got("timezone", `must be an IANA time zone name such as "UTC" or "Europe/Berlin"`, "")
	} else if loc, err := time.LoadLocation(c.Timezone); err != nil {
		p.got("timezone", `must be an IANA time zone name such as "UTC" or "Europe/Berlin"`, c.Timezone)
	} else {
		c.loc = loc
	}

	switch c.Logging.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		p.got("logging.level", "must be one of trace, debug, info, warn, error", c.Logging.Level)
	}
	switch c.Logging.Format {
	case "pretty", "json":
	default:
		p.got("logging.format", "must be pretty or json", c.Logging.Format)
	}

	p.secret("encryption.pickle_key", c.Encryption.PickleKey)
	if c.Encryption.RecoveryKey != "" && utils.DecodeBase58RecoveryKey(c.Encryption.RecoveryKey) == nil {
		p.add("encryption.recovery_key", "must be a recovery key as shown when it was made (48 characters in groups of 4, "+
			"spaces optional) or empty")
	}
	if _, ok := MinTrustStates[c.Encryption.MinTrust]; !ok && c.Encryption.MinTrust != "" {
		p.add("encryption.min_trust", fmt.Sprintf("must be one of %s, %s, %s or %s, got %q",
			MinTrustUnverified, MinTrustCrossSigned, MinTrustXSVerified, MinTrustVerified, c.Encryption.MinTrust))
	}
	if c.Encryption.BotPassword != "" && strings.TrimSpace(c.Encryption.BotPassword) == "" {
		p.add("encryption.bot_password", "must not be only spaces; leave it empty for no password")
	}

	if c.EHR.URL != "" {
		p.httpURL("ehr.url", c.EHR.URL)
	}
	if c.EHR.Timeout.bad {
		p.got("ehr.timeout", `must be a duration such as "15s" or "1m"`, c.EHR.Timeout.invalid)
	} else if c.EHR.Timeout.Duration <= 0 {
		p.got("ehr.timeout", "must be greater than zero", c.EHR.Timeout.Duration.String())
	}
	switch auth := c.EHR.Auth; auth.Mode {
	case EHRAuthNone:
	case EHRAuthBearer:
		if auth.Token == "" {
			p.got("ehr.auth.token", "must be set when ehr.auth.mode is bearer", "")
		}
	case EHRAuthSmart:
		if auth.ClientID == "" {
			p.got("ehr.auth.client_id", "must be set when ehr.auth.mode is smart", "")
		}
		p.httpURL("ehr.auth.token_url", auth.TokenURL)
		if auth.PrivateKeyFile == "" {
			p.got("ehr.auth.private_key_file", "must be set when ehr.auth.mode is smart", "")
		}
	default:
		p.got("ehr.auth.mode", "must be none, bearer or smart", auth.Mode)
	}
	c.validateEHRReads(&p)
	c.validateHoles(&p)

	return errors.Join(p...)
}

// httpURL checks that value is an absolute http or https URL with a host.
func (p *problems) httpURL(key, value string) {
	u, err := url.Parse(value)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		p.got(key, "must be an http(s) URL", redactUserinfo(value))
		return
	}
	if u.User != nil {
		p.got(key, "must not contain credentials", redactUserinfo(value))
	}
}

// listen checks a host:port bind address with a numeric port.
func (p *problems) listen(key, value string) {
	_, port, err := net.SplitHostPort(value)
	if err != nil {
		p.got(key, "must be host:port", value)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		p.got(key, "must be host:port with a numeric port from 1 to 65535", value)
	}
}

// secret checks a generated secret without ever echoing its value.
func (p *problems) secret(key, value string) {
	switch {
	case value == "" || value == PlaceholderSecret:
		*p = append(*p, fmt.Errorf("%s: must be a generated secret, got %q; %s", key, value, generateHint))
	case len(value) < MinSecretLength:
		p.add(key, fmt.Sprintf("must be at least %d characters, got %d characters; %s", MinSecretLength, len(value), generateHint))
	default:
		for _, r := range value {
			if r <= ' ' || r > '~' {
				p.add(key, "must contain only printable ASCII characters without spaces; "+generateHint)
				break
			}
		}
	}
}

func isPlaceholderDomain(domain string) bool {
	for _, d := range placeholderDomains {
		if strings.EqualFold(domain, d) {
			return true
		}
	}
	return false
}

// redactURI shows a database URI with its password hidden; values that are
// not URLs (e.g. libpq "key=value" strings) are not shown at all.
func redactURI(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" {
		return "(not shown, may contain a password)"
	}
	return u.Redacted()
}

// redactUserinfo hides a password in a URL before it goes into an error.
func redactUserinfo(value string) string {
	u, err := url.Parse(value)
	if err != nil || u.User == nil {
		return value
	}
	return u.Redacted()
}

func (c *Config) validateCheckIns(p *problems) {
	ranges := care.Ranges{}
	for key, rg := range c.CheckIns.Ranges {
		ranges[care.Kind(key)] = care.Range{Min: rg.Min, Max: rg.Max, Unit: rg.Unit}
	}
	for _, fe := range care.FieldErrors(ranges.Validate()) {
		p.add("checkins."+strings.TrimPrefix(fe.Field, "checkins."), fe.Error())
	}
	for i, text := range c.CheckIns.AlertThresholds {
		if _, err := care.ParseThreshold(text); err != nil {
			p.got(fmt.Sprintf("checkins.alert_thresholds[%d]", i), err.Error(), text)
		}
	}
	c.validateQuestionnaire(p)
}

// Bounds of reminders.grace and alerts.ack_timeout.
const (
	MaxReminderGrace = 7 * 24 * time.Hour
	MaxAckTimeout    = 24 * time.Hour
)

func (c *Config) validateRemindersAlerts(p *problems) {
	for _, d := range []struct {
		key string
		val Duration
		max time.Duration
	}{
		{"reminders.grace", c.Reminders.Grace, MaxReminderGrace},
		{"alerts.ack_timeout", c.Alerts.AckTimeout, MaxAckTimeout},
	} {
		switch {
		case d.val.bad:
			p.got(d.key, `must be a duration such as "15m" or "2h"`, d.val.invalid)
		case d.val.Duration < time.Minute || d.val.Duration > d.max:
			p.got(d.key, "must be from 1m to "+strings.TrimSuffix(strings.TrimSuffix(d.max.String(), "0s"), "0m"), d.val.Duration.String())
		}
	}
}

// Bounds of ehr.poll_interval.
const (
	MinPollInterval = time.Second
	MaxPollInterval = 24 * time.Hour
)

func (c *Config) validateEHRReads(p *problems) {
	if strings.ContainsAny(c.EHR.MRNSystem, " \t\r\n") || len(c.EHR.MRNSystem) > 255 {
		p.got("ehr.mrn_system", "must be an identifier system URI (no spaces, at most 255 characters) or empty", c.EHR.MRNSystem)
	}
	switch d := c.EHR.PollInterval; {
	case d.bad:
		p.got("ehr.poll_interval", `must be a duration such as "30s" or "5m"`, d.invalid)
	case d.Duration < MinPollInterval || d.Duration > MaxPollInterval:
		p.got("ehr.poll_interval", "must be from 1s to 24h", d.Duration.String())
	}
	if secret := c.EHR.SubscriptionSecret; secret != "" {
		switch {
		case len(secret) < MinSecretLength:
			p.add("ehr.subscription_secret", fmt.Sprintf("must be at least %d characters, got %d characters (or empty to turn the endpoint off)",
				MinSecretLength, len(secret)))
		case strings.IndexFunc(secret, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0:
			p.add("ehr.subscription_secret", "must contain only printable ASCII characters without spaces")
		}
	}
}

// Bounds of checkins.max_clock_skew and database.message_retention.
const (
	MaxClockSkew        = 24 * time.Hour
	MaxMessageRetention = 365 * 24 * time.Hour
)

func (c *Config) validateHoles(p *problems) {
	switch d := c.CheckIns.MaxClockSkew; {
	case d.bad:
		p.got("checkins.max_clock_skew", `must be a duration such as "5m" or "30s"`, d.invalid)
	case d.Duration < time.Second || d.Duration > MaxClockSkew:
		p.got("checkins.max_clock_skew", "must be from 1s to 24h", d.Duration.String())
	}
	switch d := c.Database.MessageRetention; {
	case d.bad:
		p.got("database.message_retention", `must be a duration such as "168h" or "24h"`, d.invalid)
	case d.Duration < time.Minute || d.Duration > MaxMessageRetention:
		p.got("database.message_retention", "must be from 1m to 8760h", d.Duration.String())
	}
	if c.Metrics.Listen != "" {
		p.listen("metrics.listen", c.Metrics.Listen)
	}
}
