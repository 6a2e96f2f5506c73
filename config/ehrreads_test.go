package config

import (
	"strings"
	"testing"
	"time"
)

func TestEHRReadsConfig(t *testing.T) {
	cfg := validConfig(t)
	if cfg.EHR.PollInterval.Duration != 30*time.Second || cfg.EHR.MRNSystem != "" || cfg.EHR.SubscriptionSecret != "" {
		t.Fatalf("defaults: poll_interval %v, mrn_system %q, subscription_secret set %v", cfg.EHR.PollInterval.Duration,
			cfg.EHR.MRNSystem, cfg.EHR.SubscriptionSecret != "")
	}
	secret := strings.Repeat("s", 40)
	good, err := Parse([]byte(minimalYAML + "ehr:\n    mrn_system: urn:oid:1.2.36.146.595.217.0.1\n    poll_interval: 1s\n    subscription_secret: " + secret + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if good.EHR.PollInterval.Duration != time.Second || good.EHR.SubscriptionSecret != secret || good.EHR.MRNSystem != "urn:oid:1.2.36.146.595.217.0.1" {
		t.Fatalf("parsed %+v", good.EHR)
	}

	tests := []struct {
		name, yaml, key string
		leaks           string // must not appear in the error
	}{
		{"poll interval not a duration", "poll_interval: often", "ehr.poll_interval", ""},
		{"poll interval too short", "poll_interval: 100ms", "ehr.poll_interval", ""},
		{"poll interval too long", "poll_interval: 48h", "ehr.poll_interval", ""},
		{"mrn system with space", `mrn_system: "urn:oid: 1.2"`, "ehr.mrn_system", ""},
		{"secret too short", "subscription_secret: tooshortsecret", "ehr.subscription_secret", "tooshortsecret"},
		{"secret with space", `subscription_secret: "` + strings.Repeat("ab ", 12) + `"`, "ehr.subscription_secret", strings.Repeat("ab ", 12)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(minimalYAML + "ehr:\n    " + tt.yaml + "\n"))
			if err == nil || !strings.Contains(err.Error(), tt.key+":") {
				t.Fatalf("error = %v, want one about %s", err, tt.key)
			}
			if tt.leaks != "" && strings.Contains(err.Error(), tt.leaks) {
				t.Fatalf("the error shows the secret: %v", err)
			}
		})
	}
}
