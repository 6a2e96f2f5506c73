package commands

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/format"

	"github.com/caseroom/caseroom/ehr"
)

func TestFormatSummary(t *testing.T) {
	var s ehr.Summary
	raw := `{
		"Patient": {"resourceType":"Patient","id":"p1","name":[{"family":"O'Brien *bold*","given":["Ann"]}],"gender":"female",
			"birthDate":"1961-04-02","identifier":[{"system":"urn:mrn","value":"00_12","type":{"text":"MRN"}},{"system":"urn:ssn","value":""}]},
		"Conditions": [{"resourceType":"Condition","code":{"text":"Heart failure [HFrEF]"},"onsetDateTime":"2024-02-10T08:00:00Z"}],
		"Allergies": [{"resourceType":"AllergyIntolerance","code":{"text":"Penicillin"},"criticality":"high",
			"reaction":[{"manifestation":[{"text":"Hives"}]},{"manifestation":[{"text":"Hives"},{"text":"Wheeze"}]}]}],
		"Vitals": [{"resourceType":"Observation","id":"o1","code":{"text":"Heart rate"},"valueQuantity":{"value":88,"unit":"/min"},
			"effectiveDateTime":"2026-03-02T08:00:00Z"}]
	}`
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatal(err)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	md := formatSummary(&s, berlin)
	want := []string{
		`**O\'Brien \*bold\*\, Ann** · born 1961\-04\-02 · female · ` + "`Patient/p1`",
		"* **Identifiers:** `00_12` (MRN)\n",
		`* **Active conditions:** Heart failure \[HFrEF\] (since 2024\-02\-10)`,
		"* **Active medications:** none recorded\n",
		`* **Allergies:** Penicillin (**high criticality**; Hives\, Wheeze)` + "\n",
		`* **Last vitals:** Heart rate 88 \/min (2026\-03\-02 09\:00 CET)`,
	}
	for _, w := range want {
		if !strings.Contains(md, w) {
			t.Errorf("summary lacks %q:\n%s", w, md)
		}
	}
	html := format.RenderMarkdown(md, true, false).FormattedBody
	if strings.Contains(html, "<em>") || strings.Contains(html, "<strong>bold") {
		t.Errorf("EHR text rendered as Markdown: %s", html)
	}
}

func TestListLineCaps(t *testing.T) {
	var items []string
	for range maxListed + 3 {
		items = append(items, "x")
	}
	var sb strings.Builder
	listLine(&sb, "Things", items)
	if !strings.HasSuffix(sb.String(), "; and 3 more\n") {
		t.Fatalf("got %q", sb.String())
	}
}
