package commands

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/store"
)

func thresholdTexts(list []care.Threshold) []string {
	out := make([]string, len(list))
	for i, t := range list {
		out[i] = t.String()
	}
	return out
}

func TestEffectiveThresholds(t *testing.T) {
	own := []*store.CaseThreshold{
		{CaseID: 1, Kind: "spo2", Direction: store.DirectionLow, Threshold: "spo2<88"},
		{CaseID: 1, Kind: "hr", Direction: store.DirectionHigh, Threshold: "hr>130"},
		{CaseID: 1, Kind: "weight", Direction: store.DirectionHigh, Threshold: "weight>=90kg"},
		{CaseID: 1, Kind: "spo2", Direction: store.DirectionHigh, Threshold: "not a threshold"},
	}
	got := thresholdTexts(effectiveThresholds(context.Background(), care.DefaultThresholds(), own))
	for _, want := range []string{"spo2<88", "hr>130", "hr<45", "weight>=90kg", "temp>=38.5C", "bp.sys>=180", "bp.sys<90"} {
		if !slices.ContainsFunc(got, func(s string) bool { return s == want }) {
			t.Errorf("effective thresholds %v lack %s", got, want)
		}
	}
	for _, replaced := range []string{"spo2<92", "hr>120"} {
		if slices.Contains(got, replaced) {
			t.Errorf("the default %s applies although the case replaced it: %v", replaced, got)
		}
	}
	if n := len(got); n != len(care.DefaultThresholds())+1 {
		t.Errorf("%d effective thresholds, want %d (two replaced, one added, one unreadable ignored): %v", n, len(care.DefaultThresholds())+1, got)
	}
}

func TestDirection(t *testing.T) {
	for text, want := range map[string]string{"spo2<92": store.DirectionLow, "spo2<=92": store.DirectionLow,
		"hr>120": store.DirectionHigh, "temp>=38.5": store.DirectionHigh} {
		th, err := care.ParseThreshold(text)
		if err != nil {
			t.Fatal(err)
		}
		if got := direction(th); got != want {
			t.Errorf("direction(%s) = %s, want %s", text, got, want)
		}
	}
}

func TestCrossingLines(t *testing.T) {
	ci, err := care.ParseCheckIn("bp=190/115 spo2=88 hr=70 temp=101.5F feeling awful", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := crossingLines(ci.Values, care.DefaultThresholds())
	want := []string{
		"BP 190/115 mmHg (thresholds bp.sys>=180, bp.dia>=110)",
		"SpO2 88% (threshold spo2<92)",
		"Temp 101.5 °F (threshold temp>=38.5C)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("crossing lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if lines := crossingLines(ci.Values[2:3], care.DefaultThresholds()); len(lines) != 0 {
		t.Fatalf("HR 70 crossed: %v", lines)
	}
}

func TestAlertMessages(t *testing.T) {
	team := []id.UserID{"@doc:hs", "@nurse_*x*:hs"}
	a := &store.Alert{Number: 3, PatientID: "@pat_*bold*:hs", Crossings: "SpO2 88% (threshold spo2<92)\nBP <b>190</b>/115 mmHg (threshold bp.sys>=180)",
		RaisedAt: time.Date(2026, 3, 29, 7, 0, 0, 0, time.UTC)}
	alert := bot.AlertContent(a, team, "2026-03-29 09:00 CEST")
	if alert.MsgType != "m.text" || alert.Mentions == nil || alert.Mentions.Room || !slices.Equal(alert.Mentions.UserIDs, team) {
		t.Fatalf("alert mentions: %+v", alert.Mentions)
	}
	for _, want := range []string{"Alert #3", "SpO2 88%", "spo2<92", "/ack 3", "@pat_*bold*:hs"} {
		if !strings.Contains(alert.Body, want) {
			t.Errorf("alert body lacks %q: %s", want, alert.Body)
		}
	}
	if strings.Contains(alert.FormattedBody, "<b>190</b>") || strings.Contains(alert.FormattedBody, "<em>bold</em>") ||
		!strings.Contains(alert.FormattedBody, "https://matrix.to/#/@doc:hs") {
		t.Errorf("alert HTML must escape stored text and link the team: %s", alert.FormattedBody)
	}
	esc := bot.EscalationContent(a, team, 15*time.Minute)
	if esc.Mentions == nil || !esc.Mentions.Room || !slices.Equal(esc.Mentions.UserIDs, team) || !strings.Contains(esc.Body, "@room") ||
		!strings.Contains(esc.Body, "after 15m") || !strings.Contains(esc.Body, "SpO2 88%") {
		t.Fatalf("escalation: %s %+v", esc.Body, esc.Mentions)
	}
}

func TestRemindAlertCommands(t *testing.T) {
	p := New()
	tests := []struct {
		line    string
		usage   string
		want    map[string]any
		wantErr string
	}{
		{line: "remind checkin daily 09:00 Europe/Berlin", usage: "/remind checkin <schedule>", want: map[string]any{"schedule": "daily 09:00 Europe/Berlin"}},
		{line: "remind list", usage: "/remind list", want: map[string]any{}},
		{line: "remind stop 2", usage: "/remind stop <number>", want: map[string]any{"n": int64(2)}},
		{line: "remind stop two", wantErr: "must be a whole number"},
		{line: "alert set spo2 < 88", usage: "/alert set <threshold>", want: map[string]any{"threshold": "spo2 < 88"}},
		{line: "alert list", usage: "/alert list", want: map[string]any{}},
		{line: "alert clear", usage: "/alert clear [<threshold|all>]", want: map[string]any{}},
		{line: "alert clear all", want: map[string]any{"threshold": "all"}},
		{line: "ack", usage: "/ack [<number>]", want: map[string]any{}},
		{line: "ack 4", want: map[string]any{"n": int64(4)}},
		{line: "acknowledge 4", want: map[string]any{"n": int64(4)}},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			words := strings.Fields(tt.line)
			cmd, consumed := p.lookup(words[0], words[1:])
			if cmd == nil || cmd.Run == nil {
				t.Fatalf("lookup(%q) = %v", tt.line, cmd)
			}
			if cmd.Access != CareTeam || cmd.Category != "Reminders and alerts" || !cmd.PHI {
				t.Errorf("/%s: access %v, category %q, PHI %v", cmd.FullName(), cmd.Access, cmd.Category, cmd.PHI)
			}
			if tt.usage != "" && cmd.UsageLine() != tt.usage {
				t.Errorf("usage = %q, want %q", cmd.UsageLine(), tt.usage)
			}
			args, err := ParseArgs(cmd.Params, strings.Join(words[1+consumed:], " "))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(args) != len(tt.want) {
				t.Fatalf("args = %#v, %v; want %#v", args, err, tt.want)
			}
			for k, v := range tt.want {
				if args[k] != v {
					t.Fatalf("args[%s] = %#v, want %#v", k, args[k], v)
				}
			}
		})
	}
}
