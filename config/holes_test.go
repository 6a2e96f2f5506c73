package config

import (
	"strings"
	"testing"
	"time"
)

func TestHolesSettings(t *testing.T) {
	cfg := validConfig(t)
	if cfg.Metrics.Listen != "127.0.0.1:29351" || cfg.CheckIns.MaxClockSkew.Duration != 5*time.Minute ||
		cfg.Database.MessageRetention.Duration != 7*24*time.Hour {
		t.Fatalf("defaults: metrics.listen %q, checkins.max_clock_skew %s, database.message_retention %s",
			cfg.Metrics.Listen, cfg.CheckIns.MaxClockSkew.Duration, cfg.Database.MessageRetention.Duration)
	}
	tests := []struct {
		name string
		yaml string
		want string // "" = valid
	}{
		{"custom values", "metrics: {listen: '[::1]:9100'}\ncheckins: {max_clock_skew: 30s}\ndatabase: {message_retention: 24h}\n", ""},
		{"metrics off", "metrics: {listen: ''}\n", ""},
		{"metrics on the appservice listener", "metrics: {listen: '127.0.0.1:29350'}\n", ""},
		{"metrics listen without port", "metrics: {listen: localhost}\n", `metrics.listen: must be host:port, got "localhost"`},
		{"skew not a duration", "checkins: {max_clock_skew: soon}\n", `checkins.max_clock_skew: must be a duration such as "5m" or "30s", got "soon"`},
		{"skew zero", "checkins: {max_clock_skew: 0s}\n", `checkins.max_clock_skew: must be from 1s to 24h, got "0s"`},
		{"skew too long", "checkins: {max_clock_skew: 48h}\n", `checkins.max_clock_skew: must be from 1s to 24h, got "48h0m0s"`},
		{"retention not a duration", "database: {message_retention: forever}\n", `database.message_retention: must be a duration such as "168h" or "24h", got "forever"`},
		{"retention too short", "database: {message_retention: 30s}\n", `database.message_retention: must be from 1m to 8760h, got "30s"`},
		{"retention too long", "database: {message_retention: 9000h}\n", `database.message_retention: must be from 1m to 8760h, got "9000h0m0s"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(minimalYAML + tt.yaml))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Parse error = %v, want %q", err, tt.want)
			}
		})
	}
}
