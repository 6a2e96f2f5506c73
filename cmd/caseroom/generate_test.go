package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix/appservice"

	"github.com/caseroom/caseroom/config"
)

// TestGenerateWritesBothOrNeither: caseroom -g on a config that still has other placeholders writes nothing (the
// config keeps its "generate" secrets, no registration appears) and says so; on a complete config it writes the
// secrets into the config and the same tokens into the registration.
func TestGenerateWritesBothOrNeither(t *testing.T) {
	dir := t.TempDir()
	cfgPath, regPath := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "registration.yaml")
	if err := os.WriteFile(cfgPath, config.Example(), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-g", "-c", cfgPath, "-r", regPath}, &stdout, &stderr); code != exitConfig {
		t.Fatalf("-g on the raw example: exit %d, want %d; %s", code, exitConfig, stderr.String())
	}
	if !strings.Contains(stderr.String(), "homeserver.domain") || !strings.Contains(stderr.String(), "Nothing was written") {
		t.Errorf("-g refusal does not name the problem and say nothing was written: %s", stderr.String())
	}
	if data, _ := os.ReadFile(cfgPath); !bytes.Equal(data, config.Example()) {
		t.Errorf("the refused -g changed the config")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the refused -g left files behind: %v", entries)
	}

	complete := strings.NewReplacer("example.org", "hospital.test").Replace(string(config.Example()))
	if err := os.WriteFile(cfgPath, []byte(complete), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	if code := run([]string{"-g", "-c", cfgPath, "-r", regPath}, &stdout, &stderr); code != exitOK {
		t.Fatalf("-g on a complete config: exit %d; %s", code, stderr.String())
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := appservice.LoadRegistration(regPath)
	if err != nil {
		t.Fatal(err)
	}
	if reg.AppToken != cfg.Appservice.ASToken || reg.ServerToken != cfg.Appservice.HSToken || reg.AppToken == config.PlaceholderSecret {
		t.Errorf("registration tokens do not match the config's")
	}
	if info, err := os.Stat(regPath); err != nil || info.Mode().Perm()&0o077 != 0 {
		t.Errorf("registration mode %v (%v), want private to its owner", info.Mode().Perm(), err)
	}
}
