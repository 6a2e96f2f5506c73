package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/caseroom/caseroom/internal/dendrite"
	"github.com/caseroom/caseroom/internal/synapse"
)

func TestParseFlagsHomeserver(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, hsDendrite},
		{[]string{"-homeserver", "synapse"}, hsSynapse},
		{[]string{"-homeserver", "Dendrite"}, hsDendrite},
	} {
		var stderr bytes.Buffer
		opts, code := parseFlags(tc.args, &stderr)
		if code >= 0 || opts.Homeserver != tc.want {
			t.Errorf("parseFlags(%q) = homeserver %q, code %d (%s), want %q", tc.args, opts.Homeserver, code, stderr.String(), tc.want)
		}
	}
	var stderr bytes.Buffer
	if _, code := parseFlags([]string{"-homeserver", "conduit"}, &stderr); code != 2 || !strings.Contains(stderr.String(), `unknown homeserver "conduit"`) {
		t.Errorf("parseFlags(-homeserver conduit) = code %d, %q; want 2 and an error naming it", code, stderr.String())
	}
}

func TestHomeserverTitle(t *testing.T) {
	if got, want := homeserverTitle(hsDendrite, pinnedVersion(hsDendrite)), "Dendrite "+dendrite.Version; got != want {
		t.Errorf("Dendrite's title = %q, want %q", got, want)
	}
	if got, want := homeserverTitle(hsSynapse, pinnedVersion(hsSynapse)), "Synapse "+synapse.Version; got != want {
		t.Errorf("Synapse's title = %q, want %q", got, want)
	}
}

// The report names the homeserver and its version in its title, its machine block and every engine's heading.
func TestReportNamesHomeserver(t *testing.T) {
	r := &Report{
		Machine: describeMachine(buildResult{Tags: "goolm", GoVersion: "go1.26.8"}, installedHomeserver{Name: hsSynapse, Version: synapse.Version}),
		Command: "caseroom-bench -quick -homeserver synapse",
		Options: options{Homeserver: hsSynapse, N: 200},
		Targets: benchTargets,
		Engines: []*EngineResult{{Engine: string(engineSQLite)}, {Engine: string(enginePostgres)}},
	}
	var out bytes.Buffer
	printMarkdown(&out, r)
	text := out.String()
	want := "Synapse " + synapse.Version
	for _, line := range []string{
		"## caseroom benchmark on " + want,
		"homeserver: " + want + ";",
		"### SQLite on " + want,
		"### PostgreSQL on " + want,
		"a message event as " + want + " delivered it",
	} {
		if !strings.Contains(text, line) {
			t.Errorf("the report lacks %q:\n%s", line, text)
		}
	}
	if strings.Contains(text, "Dendrite "+dendrite.Version) {
		t.Errorf("a report of a run on Synapse names Dendrite %s:\n%s", dendrite.Version, text)
	}
}
