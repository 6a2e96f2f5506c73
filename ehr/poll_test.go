package ehr_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/fhirtest"
	"github.com/caseroom/caseroom/internal/fhirtest/fhirtesting"
	"github.com/caseroom/caseroom/internal/safetext"
	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

// pollFixture is a store with one case linked to a patient of the test server, and a Poller for it.
type pollFixture struct {
	srv     *fhirtest.Server
	fhir    *ehr.Client
	st      *store.Store
	poller  *ehr.Poller
	c       *store.Case
	patient string

	mu    sync.Mutex
	woken []id.RoomID
}

func newPollFixture(t *testing.T, cfg store.Config) *pollFixture {
	t.Helper()
	ctx := testContext(t)
	f := &pollFixture{srv: fhirtesting.Shared(t)}
	f.fhir = newClient(t, f.srv, nil)
	st, err := store.Open(ctx, cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	f.st = st
	f.patient = seedPatient(t, ctx, f.fhir, "Okafor", mrnSystem, "0012345")
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	f.poller = &ehr.Poller{
		Store: st, Client: f.fhir, Log: zerolog.Nop(), Location: loc, Actor: "@caseroom:hs",
		Wake: func(room id.RoomID) {
			f.mu.Lock()
			f.woken = append(f.woken, room)
			f.mu.Unlock()
		},
	}
	return f
}

// openCase stores a case for the fixture's patient (opened now).
func (f *pollFixture) openCase(t *testing.T, room string) *store.Case {
	t.Helper()
	c := &store.Case{Title: "Heart failure", PatientRef: f.patient, CaseRoomID: id.RoomID("!" + room + ":hs"),
		PatientRoomID: id.RoomID("!p" + room + ":hs"), CreatedBy: "@doc:hs"}
	if err := f.st.Cases.Create(context.Background(), c, id.EventID("$"+room)); err != nil {
		t.Fatal(err)
	}
	return c
}

// notices returns the bodies of the notices queued for a room.
func (f *pollFixture) notices(t *testing.T, room id.RoomID) []string {
	t.Helper()
	pending, err := f.st.Outgoing.Pending(context.Background(), room, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range pending {
		var content event.MessageEventContent
		if err := json.Unmarshal(o.Content, &content); err != nil {
			t.Fatal(err)
		}
		if content.MsgType != event.MsgNotice {
			t.Fatalf("queued %s, want a notice", content.MsgType)
		}
		out = append(out, content.Body)
	}
	return out
}

func TestPollerPostsNewResultsOnce(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		f := newPollFixture(t, cfg)
		ctx := testContext(t)
		before := seed(t, ctx, f.fhir, f.patient, vital("8867-4", "Heart rate", 70, "/min", "2026-03-01T08:00:00Z"))
		time.Sleep(5 * time.Millisecond)
		c := f.openCase(t, "case1")
		time.Sleep(5 * time.Millisecond)

		hr := seed(t, ctx, f.fhir, f.patient, vital("8867-4", "Heart rate", 88, "/min", "2026-03-14T09:30:00Z"))
		report := seed(t, ctx, f.fhir, f.patient, `{"resourceType":"DiagnosticReport","status":"final","subject":{"reference":"%PATIENT%"},
			"code":{"text":"Chest X-ray"},"effectiveDateTime":"2026-03-14T10:00:00Z","conclusion":"No *acute* findings [see PACS](http://x)"}`)
		// What caseroom filed itself is not news to the room.
		seed(t, ctx, f.fhir, f.patient, strings.Replace(vital("8867-4", "Heart rate", 91, "/min", "2026-03-14T09:00:00Z"),
			`"status":"final"`, `"status":"final","identifier":[{"system":"urn:caseroom:observation","value":"$ev/hr"}]`, 1))
		seed(t, ctx, f.fhir, f.patient, strings.Replace(vital("8310-5", "Body temperature", 37, "Cel", "2026-03-14T09:00:00Z"),
			`"status":"final"`, `"status":"entered-in-error"`, 1))
		other := seedPatient(t, ctx, f.fhir, "Other", mrnSystem, "2")
		seed(t, ctx, f.fhir, other, vital("8867-4", "Heart rate", 120, "/min", "2026-03-14T09:00:00Z"))

		if err := f.poller.PollOnce(ctx); err != nil {
			t.Fatal(err)
		}
		got := f.notices(t, c.CaseRoomID)
		want := []string{
			"🧪 New result from the EHR: Heart rate 88 /min (2026-03-14 10:30 CET) — " + hr,
			"🧪 New result from the EHR: Chest X-ray: No *acute* findings [see PACS](http://x) (2026-03-14 11:00 CET) — " + report,
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("notices:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		for _, n := range got {
			if strings.Contains(n, before) {
				t.Fatal("a result from before the case was posted")
			}
		}
		// EHR text is escaped: the conclusion's Markdown stays text.
		pending, _ := f.st.Outgoing.Pending(ctx, c.CaseRoomID, 10)
		var content event.MessageEventContent
		_ = json.Unmarshal(pending[1].Content, &content)
		if strings.Contains(content.FormattedBody, "<em>") || strings.Contains(content.FormattedBody, "<a ") {
			t.Fatalf("EHR text rendered as Markdown: %s", content.FormattedBody)
		}
		f.mu.Lock()
		woken := len(f.woken)
		f.mu.Unlock()
		if woken != 2 {
			t.Fatalf("room woken %d times, want 2", woken)
		}

		// Polling again (the overlap reads them again) posts nothing new.
		if err := f.poller.PollOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(f.notices(t, c.CaseRoomID)); n != 2 {
			t.Fatalf("%d notices after a second poll, want 2", n)
		}
		for _, typ := range ehr.ResultTypes {
			if cursor, _ := f.st.EHRReads.Cursor(ctx, c.ID, typ); cursor.IsZero() {
				t.Fatalf("no %s cursor after polling", typ)
			}
		}
		// The subscription path sees the same result: still once.
		if n, err := f.poller.DeliverRef(ctx, "Observation", strings.TrimPrefix(hr, "Observation/"), store.EHRSourceSubscription); err != nil || n != 0 {
			t.Fatalf("subscription delivery of a polled result = %d, %v", n, err)
		}
		// And the other way round: the subscription first, then the poll.
		pushed := seed(t, ctx, f.fhir, f.patient, vital("2708-6", "Oxygen saturation", 93, "%", "2026-03-14T12:00:00Z"))
		if n, err := f.poller.DeliverRef(ctx, "Observation", strings.TrimPrefix(pushed, "Observation/"), store.EHRSourceSubscription); err != nil || n != 1 {
			t.Fatalf("subscription delivery = %d, %v", n, err)
		}
		if err := f.poller.PollOnce(ctx); err != nil {
			t.Fatal(err)
		}
		got = f.notices(t, c.CaseRoomID)
		if len(got) != 3 || !strings.Contains(got[2], "Oxygen saturation 93 %") {
			t.Fatalf("notices after push then poll: %q", got)
		}
		results, _ := f.st.EHRReads.Results(ctx, c.ID)
		if len(results) != 3 || results[2].Source != store.EHRSourceSubscription || results[0].Source != store.EHRSourcePoll || results[0].OutgoingSeq == 0 {
			t.Fatalf("seen = %+v", results)
		}
		audit, _ := f.st.Audit.List(ctx, store.AuditFilter{CaseID: c.ID})
		if len(audit) != 3 || audit[0].Action != "read:ehr-result" || audit[0].Actor != "@caseroom:hs" || !strings.Contains(audit[0].Detail, pushed) {
			t.Fatalf("audit = %+v", audit)
		}
	})
}

func TestPollerClosedCasesAndTwoCases(t *testing.T) {
	f := newPollFixture(t, testdb.New(t, testdb.SQLite))
	ctx := testContext(t)
	first := f.openCase(t, "a")
	second := f.openCase(t, "b")
	closed := f.openCase(t, "c")
	if err := f.st.Cases.Close(ctx, closed.ID, "@doc:hs"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	seed(t, ctx, f.fhir, f.patient, vital("8867-4", "Heart rate", 88, "/min", "2026-03-14T09:30:00Z"))
	if err := f.poller.PollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if a, b, c := len(f.notices(t, first.CaseRoomID)), len(f.notices(t, second.CaseRoomID)), len(f.notices(t, closed.CaseRoomID)); a != 1 || b != 1 || c != 0 {
		t.Fatalf("notices per room: open %d and %d, closed %d; want 1, 1, 0", a, b, c)
	}
}

func TestPollerEHRDown(t *testing.T) {
	f := newPollFixture(t, testdb.New(t, testdb.SQLite))
	ctx := testContext(t)
	c := f.openCase(t, "a")
	time.Sleep(5 * time.Millisecond)
	seed(t, ctx, f.fhir, f.patient, vital("8867-4", "Heart rate", 88, "/min", "2026-03-14T09:30:00Z"))
	if err := f.srv.Fail(ctx, http.StatusServiceUnavailable, 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.poller.PollOnce(ctx); !ehr.IsUnreachable(err) {
		t.Fatalf("poll while the EHR answers 503: %v, want unreachable", err)
	}
	if n := len(f.notices(t, c.CaseRoomID)); n != 0 {
		t.Fatalf("%d notices while the EHR failed", n)
	}
	if cursor, _ := f.st.EHRReads.Cursor(ctx, c.ID, "Observation"); !cursor.IsZero() {
		t.Fatal("the cursor moved although the search failed")
	}
	if err := f.poller.PollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(f.notices(t, c.CaseRoomID)); n != 1 {
		t.Fatalf("%d notices after the EHR recovered, want 1", n)
	}
}

// TestPollerRun: the worker polls on its interval and at once when kicked.
func TestPollerRun(t *testing.T) {
	f := newPollFixture(t, testdb.New(t, testdb.SQLite))
	f.poller.Interval = time.Hour
	ctx, cancel := context.WithCancel(testContext(t))
	c := f.openCase(t, "a")
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.poller.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	time.Sleep(200 * time.Millisecond) // the first poll, at start, finds nothing
	seed(t, ctx, f.fhir, f.patient, vital("8867-4", "Heart rate", 88, "/min", "2026-03-14T09:30:00Z"))
	f.poller.Kick()
	deadline := time.Now().Add(10 * time.Second)
	for len(f.notices(t, c.CaseRoomID)) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("a kick did not make the poller poll")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestResultText(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	yes := true
	tests := []struct {
		name string
		json string
		want string
	}{
		{"quantity", `{"resourceType":"Observation","id":"1","status":"final","code":{"coding":[{"code":"8867-4","display":"Heart rate"}]},
			"effectiveDateTime":"2026-07-01T08:00:00Z","valueQuantity":{"value":88.0,"code":"/min"}}`,
			"🧪 New result from the EHR: Heart rate 88 /min (2026-07-01 10:00 CEST) — Observation/1"},
		{"panel", `{"resourceType":"Observation","id":"2","status":"final","code":{"text":"Blood pressure"},"effectiveDateTime":"2026-07-01",
			"component":[{"code":{"text":"Systolic"},"valueQuantity":{"value":142,"unit":"mm[Hg]"}},{"code":{"text":"Diastolic"},"valueQuantity":{"value":91,"unit":"mm[Hg]"}}]}`,
			"🧪 New result from the EHR: Blood pressure 142/91 mm[Hg] (2026-07-01) — Observation/2"},
		{"mixed components, preliminary", `{"resourceType":"Observation","id":"3","status":"preliminary","code":{"text":"Panel"},
			"component":[{"code":{"text":"A"},"valueQuantity":{"value":1,"unit":"g"}},{"code":{"text":"B"},"valueString":"pos_itive"}]}`,
			"🧪 New result from the EHR: Panel A 1 g, B pos_itive (preliminary) — Observation/3"},
		{"coded report", `{"resourceType":"DiagnosticReport","id":"4","status":"final","code":{"text":"ECG"},"issued":"2026-01-01T12:00:00Z",
			"conclusionCode":[{"text":"Sinus rhythm"}]}`,
			"🧪 New result from the EHR: ECG: Sinus rhythm (2026-01-01 13:00 CET) — DiagnosticReport/4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r ehr.Result
			if err := json.Unmarshal([]byte(tt.json), &r); err != nil {
				t.Fatal(err)
			}
			// What the room sees: the Markdown rendered (EHR text in it is escaped, so it shows as written).
			if got := safetext.Render(r.NoticeMarkdown(berlin)); got.Body != tt.want || got.FormattedBody != "" {
				t.Fatalf("got  %s (formatted %q)\nwant %s", got.Body, got.FormattedBody, tt.want)
			}
		})
	}
	b := ehr.Result{ValueBoolean: &yes}
	if b.ValueText() != "yes" {
		t.Fatalf("boolean value = %q", b.ValueText())
	}
}
