package commands

import (
	"strings"
	"testing"
	"time"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/config"
	"github.com/caseroom/caseroom/store"
)

func TestParseAuditFilters(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    auditQuery
		wantErr string
	}{
		{name: "none", raw: "", want: auditQuery{}},
		{name: "user", raw: "@dr.lee:clinic.example", want: auditQuery{actor: "@dr.lee:clinic.example"}},
		{name: "case", raw: "case 12", want: auditQuery{caseID: 12}},
		{name: "case with hash", raw: "CASE #12", want: auditQuery{caseID: 12}},
		{name: "since days", raw: "since 2d", want: auditQuery{since: 48 * time.Hour}},
		{name: "since hours", raw: "since 12h", want: auditQuery{since: 12 * time.Hour}},
		{name: "since minutes", raw: "since 30m", want: auditQuery{since: 30 * time.Minute}},
		{name: "since weeks", raw: "since 1W", want: auditQuery{since: 7 * 24 * time.Hour}},
		{name: "all, any order", raw: "since 2d case 3 @a:b.example", want: auditQuery{actor: "@a:b.example", caseID: 3, since: 48 * time.Hour}},
		{name: "bad user", raw: "@nobody", wantErr: "`@nobody` is not a Matrix user ID"},
		{name: "two users", raw: "@a:b @c:d", wantErr: "at most one user"},
		{name: "case without id", raw: "case", wantErr: "`case` needs a case number"},
		{name: "case not a number", raw: "case twelve", wantErr: "got `twelve`"},
		{name: "case zero", raw: "case 0", wantErr: "got `0`"},
		{name: "case twice", raw: "case 1 case 2", wantErr: "at most one case"},
		{name: "since without period", raw: "since", wantErr: "`since` needs a period"},
		{name: "since without unit", raw: "since 2", wantErr: "got `2`"},
		{name: "since unknown unit", raw: "since 2y", wantErr: "got `2y`"},
		{name: "since negative", raw: "since -2d", wantErr: "got `-2d`"},
		{name: "since too long ago", raw: "since 9999w", wantErr: "at most 10 years"},
		{name: "since overflow", raw: "since 9999999d", wantErr: "got `9999999d`"},
		{name: "since twice", raw: "since 1d since 2d", wantErr: "`since` at most once"},
		{name: "unknown word, escaped", raw: "yesterday`<b>", wantErr: "``yesterday`<b>`` is not a filter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseAuditFilters(tt.raw)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAuditTableEscapesAndShowsConfiguredZone(t *testing.T) {
	cfg := &config.Config{Timezone: "Europe/Berlin"}
	call := &Call{Turn: &bot.Turn{Bot: &bot.Bot{Config: cfg}}}
	at := time.Date(2026, 1, 15, 9, 30, 0, 0, time.UTC)
	entries := []*store.AuditEntry{
		{At: at, Actor: "@<script>:evil.example", Action: "read:checkins", Outcome: "ok", CaseID: 7, RoomID: "!r:clinic.example", EventID: "$e<i>"},
		{At: at, Actor: "@doc:clinic.example", Action: "command:case list", Outcome: "refused:unencrypted"},
	}
	content := auditTable(call, entries, "of @doc:clinic.example", true)
	for _, want := range []string{"<td><code>@&lt;script&gt;:evil.example</code></td>", "<td><code>$e&lt;i&gt;</code></td>",
		"<td>2026-01-15 10:30 CET</td>", "<td>#7</td>", "refused:unencrypted", "Only the newest 50"} {
		if !strings.Contains(content.FormattedBody, want) {
			t.Errorf("HTML lacks %q:\n%s", want, content.FormattedBody)
		}
	}
	if strings.Contains(content.FormattedBody, "<script>") || strings.Contains(content.FormattedBody, "<i>") {
		t.Errorf("HTML holds unescaped user input:\n%s", content.FormattedBody)
	}
	for _, want := range []string{"Audit log of @doc:clinic.example (2 entries, newest first)",
		"2026-01-15 10:30 CET | @doc:clinic.example | command:case list | refused:unencrypted | – | – | –"} {
		if !strings.Contains(content.Body, want) {
			t.Errorf("plain body lacks %q:\n%s", want, content.Body)
		}
	}
}

func TestAuditCommandDefinition(t *testing.T) {
	p := New()
	cmd, consumed := p.lookup("admin", []string{"audit"})
	if cmd != cmdAdminAudit || consumed != 1 {
		t.Fatalf("/admin audit resolves to %v", cmd)
	}
	if cmd.Access != AdminDirect || !cmd.PHI {
		t.Fatalf("/admin audit must be AdminDirect and need an encrypted room")
	}
	if got := cmd.UsageLine(); got != "/admin audit [<filters>]" {
		t.Fatalf("usage = %q", got)
	}
	if _, err := ParseArgs(cmd.Params, "@a:b case 3 since 2d"); err != nil {
		t.Fatal(err)
	}
}

// TestPHICommandsMarked checks that every command that reads or writes patient data needs an encrypted room.
func TestPHICommandsMarked(t *testing.T) {
	p := New()
	phi := map[string]bool{}
	for _, cmd := range p.Runnable() {
		phi[cmd.FullName()] = cmd.PHI
	}
	for _, name := range []string{"case new", "case info", "case list", "case link", "team", "team list", "patient invite",
		"checkin", "checkin for", "checkins", "plan", "plan goal", "plan task", "plan note", "plan done", "plan amend",
		"plan history", "admin audit", "admin outbox", "admin outbox retry"} {
		marked, ok := phi[name]
		if !ok {
			t.Errorf("no command %q", name)
		} else if !marked {
			t.Errorf("/%s reads or writes patient data but is not marked PHI", name)
		}
	}
	for _, name := range []string{"ping", "help", "admin status"} {
		if phi[name] {
			t.Errorf("/%s holds no patient data but is marked PHI", name)
		}
	}
}
