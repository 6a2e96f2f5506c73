package config

import (
	"strings"
	"testing"
	"time"
)

func TestRemindersAlertsConfig(t *testing.T) {
	cfg := validConfig(t)
	if cfg.Reminders.Grace.Duration != 2*time.Hour || cfg.Alerts.AckTimeout.Duration != 15*time.Minute {
		t.Fatalf("defaults: grace %s, ack_timeout %s; want 2h and 15m", cfg.Reminders.Grace.Duration, cfg.Alerts.AckTimeout.Duration)
	}
	tests := []struct {
		name string
		yaml string
		want string // "" = valid
	}{
		{"custom values", "reminders: {grace: 30m}\nalerts: {ack_timeout: 5m}\n", ""},
		{"grace not a duration", "reminders: {grace: soon}\n", `reminders.grace: must be a duration such as "15m" or "2h", got "soon"`},
		{"grace too long", "reminders: {grace: 200h}\n", `reminders.grace: must be from 1m to 168h, got "200h0m0s"`},
		{"ack timeout zero", "alerts: {ack_timeout: 0s}\n", `alerts.ack_timeout: must be from 1m to 24h, got "0s"`},
		{"ack timeout too short", "alerts: {ack_timeout: 30s}\n", `alerts.ack_timeout: must be from 1m to 24h, got "30s"`},
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
