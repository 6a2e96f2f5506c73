package commands

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

var caseNewParams = []Param{
	{Name: "title", Type: Rest},
	{Name: "patient", Flag: true, Optional: true},
	{Name: "mrn", Flag: true, Optional: true},
}

var teamAddParams = []Param{
	{Name: "user", Type: User},
	{Name: "label", Type: Rest, Optional: true},
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		params  []Param
		raw     string
		want    map[string]any
		wantErr string
	}{
		{name: "rest title", params: caseNewParams, raw: "Chest pain, 3 days", want: map[string]any{"title": "Chest pain, 3 days"}},
		{name: "flag after title", params: caseNewParams, raw: "Chest pain --mrn 123", want: map[string]any{"title": "Chest pain", "mrn": "123"}},
		{name: "flag with equals before title", params: caseNewParams, raw: "--mrn=123 Chest pain", want: map[string]any{"title": "Chest pain", "mrn": "123"}},
		{name: "flag with space before title", params: caseNewParams, raw: "--patient Patient/7 Chest pain", want: map[string]any{"title": "Chest pain", "patient": "Patient/7"}},
		{name: "quoted title", params: caseNewParams, raw: `"Post-op, day 2" --mrn "A 12"`, want: map[string]any{"title": "Post-op, day 2", "mrn": "A 12"}},
		{name: "unknown flag", params: caseNewParams, raw: "x --bogus 1", wantErr: "`--bogus` is not an option"},
		{name: "flag without value", params: caseNewParams, raw: "x --mrn", wantErr: "`--mrn` needs a value"},
		{name: "flag twice", params: caseNewParams, raw: "--mrn 1 --mrn 2 x", wantErr: "given twice"},
		{name: "missing required", params: caseNewParams, raw: "--mrn 1", wantErr: "`<title>` is missing"},
		{name: "user and label", params: teamAddParams, raw: "@dr.lee:clinic.example head nurse", want: map[string]any{"user": id.UserID("@dr.lee:clinic.example"), "label": "head nurse"}},
		{name: "bad user", params: teamAddParams, raw: "bob", wantErr: "must be a Matrix user ID like `@name:server`, got `bob`"},
		{name: "extra argument", params: []Param{{Name: "user", Type: User}}, raw: "@a:b.c @d:e.f", wantErr: "unexpected extra argument `@d:e.f`"},
		{name: "integer", params: []Param{{Name: "n", Type: Integer}}, raw: "12", want: map[string]any{"n": int64(12)}},
		{name: "bad integer", params: []Param{{Name: "n", Type: Integer}}, raw: "twelve", wantErr: "must be a whole number, got `twelve`"},
		{name: "unclosed quote", params: caseNewParams, raw: `--mrn "12 x`, wantErr: "quote"},
		{name: "markdown in value is escaped in errors", params: teamAddParams, raw: "*bold*", wantErr: "`*bold*`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseArgs(tt.params, tt.raw)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseArgs(%q) error = %v, want %q", tt.raw, err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseArgs(%q) = %#v, %v; want %#v", tt.raw, got, err, tt.want)
			}
		})
	}
}

func TestStructuredArgs(t *testing.T) {
	got, err := structuredArgs(teamAddParams, json.RawMessage(`{"user":"@a:b.c","label":"nurse"}`))
	if err != nil || got["user"] != id.UserID("@a:b.c") || got["label"] != "nurse" {
		t.Fatalf("got %#v, %v", got, err)
	}
	if _, err = structuredArgs(teamAddParams, json.RawMessage(`{"user":"bob"}`)); err == nil {
		t.Fatal("structured input skipped the user ID check")
	}
	if _, err = structuredArgs(teamAddParams, json.RawMessage(`{"user":"@a:b.c","extra":1}`)); err == nil {
		t.Fatal("unknown structured parameter accepted")
	}
}

func TestSpecsAreValidMSC4391(t *testing.T) {
	p := New()
	for _, cmd := range p.Runnable() {
		spec := cmd.Spec()
		if err := spec.Validate(); err != nil {
			t.Errorf("%s: %v", cmd.FullName(), err)
		}
		if spec.Command != cmd.FullName() {
			t.Errorf("spec command %q, want %q", spec.Command, cmd.FullName())
		}
	}
}
