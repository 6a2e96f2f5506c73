package ehr_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/testdb"
)

const testSecret = "0123456789abcdef0123456789abcdef-subscription"

// subscriptionServer serves the endpoint as the bot does.
func subscriptionServer(t *testing.T, f *pollFixture) *httptest.Server {
	t.Helper()
	sub := &ehr.Subscription{Poller: f.poller, Secret: testSecret, Log: zerolog.Nop()}
	mux := http.NewServeMux()
	mux.Handle("POST "+ehr.SubscriptionPath, sub)
	mux.Handle("PUT "+ehr.SubscriptionPath+"/{type}/{id}", sub)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// notify sends a notification and returns the status and the Matrix errcode, if any.
func notify(t *testing.T, srv *httptest.Server, method, path, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", ehr.FHIRContentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var merr struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(raw, &merr)
	return resp.StatusCode, merr.ErrCode
}

// readRaw reads a resource from the test server as JSON.
func readRaw(t *testing.T, f *pollFixture, ref string) string {
	t.Helper()
	typ, id, _ := ehr.ParseReference(ref)
	var raw json.RawMessage
	if err := f.fhir.Read(testContext(t), typ, id, &raw); err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func TestSubscriptionRejectsBadRequests(t *testing.T) {
	f := newPollFixture(t, testdb.New(t, testdb.SQLite))
	srv := subscriptionServer(t, f)
	tests := []struct {
		name, method, path, token, body string
		status                          int
		errcode                         string
	}{
		{"no token", "POST", ehr.SubscriptionPath, "", "", http.StatusUnauthorized, "M_MISSING_TOKEN"},
		{"wrong token", "POST", ehr.SubscriptionPath, "wrong", "", http.StatusForbidden, "M_FORBIDDEN"},
		{"token prefix", "POST", ehr.SubscriptionPath, testSecret[:20], "", http.StatusForbidden, "M_FORBIDDEN"},
		{"not JSON", "POST", ehr.SubscriptionPath, testSecret, "{not json", http.StatusBadRequest, "M_NOT_JSON"},
		{"JSON without resourceType", "POST", ehr.SubscriptionPath, testSecret, `{"id":"1"}`, http.StatusBadRequest, "M_BAD_JSON"},
		{"JSON array", "POST", ehr.SubscriptionPath, testSecret, `[1,2]`, http.StatusBadRequest, "M_BAD_JSON"},
		{"oversized", "POST", ehr.SubscriptionPath, testSecret, `{"resourceType":"Basic","note":"` + strings.Repeat("x", ehr.MaxNotificationBytes) + `"}`,
			http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		{"bad id in path", "PUT", ehr.SubscriptionPath + "/Observation/a_b", testSecret, "", http.StatusBadRequest, "M_INVALID_PARAM"},
		{"GET", "GET", ehr.SubscriptionPath, testSecret, "", http.StatusMethodNotAllowed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, errcode := notify(t, srv, tt.method, tt.path, tt.token, tt.body)
			if status != tt.status || errcode != tt.errcode {
				t.Fatalf("got %d %s, want %d %s", status, errcode, tt.status, tt.errcode)
			}
		})
	}
	if f.poller.Kicked() {
		t.Fatal("a rejected request made the poller poll")
	}
}

// TestSubscriptionPostsOnce: a notified result is posted once, however often and in whatever form the EHR sends
// it, and polling afterwards does not post it again. What is posted is the EHR's copy, not the pushed body.
func TestSubscriptionPostsOnce(t *testing.T) {
	f := newPollFixture(t, testdb.New(t, testdb.SQLite))
	ctx := testContext(t)
	srv := subscriptionServer(t, f)
	c := f.openCase(t, "a")
	time.Sleep(5 * time.Millisecond)

	// An empty notification (a ping, or a Subscription without payload) makes the poller poll.
	if status, _ := notify(t, srv, "POST", ehr.SubscriptionPath, testSecret, ""); status != http.StatusOK || !f.poller.Kicked() {
		t.Fatalf("empty notification: %d, kicked=false", status)
	}

	hr := seed(t, ctx, f.fhir, f.patient, vital("8867-4", "Heart rate", 88, "/min", "2026-03-14T09:30:00Z"))
	body := readRaw(t, f, hr)
	forged := strings.Replace(body, `"value":88`, `"value":200`, 1)
	if status, errcode := notify(t, srv, "POST", ehr.SubscriptionPath, testSecret, forged); status != http.StatusOK {
		t.Fatalf("notification: %d %s", status, errcode)
	}
	got := f.notices(t, c.CaseRoomID)
	if len(got) != 1 || !strings.Contains(got[0], "Heart rate 88 /min") || !strings.Contains(got[0], hr) {
		t.Fatalf("notices = %q, want the EHR's heart rate once", got)
	}
	bundle := `{"resourceType":"Bundle","type":"history","entry":[{"fullUrl":"` + f.srv.URL + "/" + hr + `","resource":` + body + `}]}`
	idOnly := `{"resourceType":"Bundle","type":"history","entry":[{"fullUrl":"` + f.srv.URL + "/" + hr + `"}]}`
	status := `{"resourceType":"Bundle","type":"history","entry":[{"resource":{"resourceType":"SubscriptionStatus","status":"active",
		"type":"event-notification","notificationEvent":[{"eventNumber":"1","focus":{"reference":"` + hr + `"}}]}}]}`
	for _, n := range []string{body, body, bundle, idOnly, status} {
		if code, errcode := notify(t, srv, "POST", ehr.SubscriptionPath, testSecret, n); code != http.StatusOK {
			t.Fatalf("repeated notification: %d %s", code, errcode)
		}
	}
	if code, _ := notify(t, srv, "PUT", ehr.SubscriptionPath+"/"+hr, testSecret, body); code != http.StatusOK {
		t.Fatalf("PUT notification: %d", code)
	}
	if err := f.poller.PollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.notices(t, c.CaseRoomID); len(got) != 1 {
		t.Fatalf("%d notices after repeats, bundles and a poll, want 1: %q", len(got), got)
	}

	// A result pushed with the PUT form, id only.
	report := seed(t, ctx, f.fhir, f.patient, `{"resourceType":"DiagnosticReport","status":"final","subject":{"reference":"%PATIENT%"},
		"code":{"text":"Echocardiogram"},"conclusion":"EF 35%"}`)
	if code, _ := notify(t, srv, "PUT", ehr.SubscriptionPath+"/"+report, testSecret, ""); code != http.StatusOK {
		t.Fatalf("PUT notification: %d", code)
	}
	// Resources of other types or of patients without a case are ignored.
	other := seedPatient(t, ctx, f.fhir, "Other", mrnSystem, "2")
	stranger := seed(t, ctx, f.fhir, other, vital("8867-4", "Heart rate", 120, "/min", "2026-03-14T09:00:00Z"))
	for _, n := range []string{readRaw(t, f, stranger), readRaw(t, f, f.patient)} {
		if code, _ := notify(t, srv, "POST", ehr.SubscriptionPath, testSecret, n); code != http.StatusOK {
			t.Fatalf("notification about something else: %d", code)
		}
	}
	got = f.notices(t, c.CaseRoomID)
	if len(got) != 2 || !strings.Contains(got[1], "Echocardiogram: EF 35%") {
		t.Fatalf("notices = %q", got)
	}

	// A notification for a resource that is gone is accepted and ignored; one the EHR cannot serve now is left
	// to polling (202).
	if code, _ := notify(t, srv, "PUT", ehr.SubscriptionPath+"/Observation/gone", testSecret, ""); code != http.StatusOK {
		t.Fatalf("notification for a deleted resource: %d", code)
	}
	late := seed(t, ctx, f.fhir, f.patient, vital("9279-1", "Respiratory rate", 22, "/min", "2026-03-14T10:00:00Z"))
	if err := f.srv.Fail(ctx, http.StatusServiceUnavailable, 1, 0); err != nil {
		t.Fatal(err)
	}
	if code, _ := notify(t, srv, "PUT", ehr.SubscriptionPath+"/"+late, testSecret, ""); code != http.StatusAccepted || !f.poller.Kicked() {
		t.Fatalf("notification while the EHR fails: %d", code)
	}
	if err := f.poller.PollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.notices(t, c.CaseRoomID); len(got) != 3 || !strings.Contains(got[2], late) {
		t.Fatalf("notices = %q", got)
	}
}
