package fhirtest_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/fhirtest"
	"github.com/caseroom/caseroom/internal/fhirtest/fhirtesting"
)

// The server's own behaviour, through plain HTTP: what the ehr tests rely on.

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

func call(t *testing.T, method, u string, header map[string]string, body any) answer {
	t.Helper()
	var r io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &a.body); err != nil {
			t.Fatalf("%s %s: %d %s", method, u, resp.StatusCode, raw)
		}
	}
	return a
}

func observation(identifier string) map[string]any {
	return map[string]any{
		"resourceType": "Observation",
		"status":       "final",
		"identifier":   []any{map[string]any{"system": "urn:caseroom:observation", "value": identifier}},
		"code":         map[string]any{"text": "test"},
	}
}

func ifNoneExist(value string) string {
	return "identifier=" + url.QueryEscape("urn:caseroom:observation|"+value)
}

func transaction(entries ...map[string]any) map[string]any {
	var list []any
	for _, e := range entries {
		list = append(list, e)
	}
	return map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": list}
}

func conditionalEntry(value string) map[string]any {
	return map[string]any{
		"resource": observation(value),
		"request":  map[string]any{"method": "POST", "url": "Observation", "ifNoneExist": ifNoneExist(value)},
	}
}

func count(t *testing.T, srv *fhirtest.Server, value string) int {
	t.Helper()
	n, err := srv.Count(context.Background(), "Observation", url.Values{"identifier": {"urn:caseroom:observation|" + value}})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestConditionalCreateHeader(t *testing.T) {
	srv := fhirtesting.Shared(t)
	h := map[string]string{"If-None-Exist": ifNoneExist("$a+b/c")}
	first := call(t, "POST", srv.URL+"/Observation", h, observation("$a+b/c"))
	second := call(t, "POST", srv.URL+"/Observation", h, observation("$a+b/c"))
	if first.status != 201 || second.status != 200 || first.body["id"] != second.body["id"] {
		t.Fatalf("statuses %d, %d; ids %v, %v", first.status, second.status, first.body["id"], second.body["id"])
	}
	if !strings.HasPrefix(first.header.Get("ETag"), `W/"`) || !strings.Contains(first.header.Get("Location"), "/Observation/") {
		t.Errorf("headers %v", first.header)
	}
	if n := count(t, srv, "$a+b/c"); n != 1 {
		t.Errorf("%d stored, want 1", n)
	}
}

func TestTransactionsAreAtomic(t *testing.T) {
	srv := fhirtesting.Shared(t)
	// Two resources with the same identifier make a later conditional create on it fail (multiple matches).
	for range 2 {
		call(t, "POST", srv.URL+"/Observation", nil, observation("dup"))
	}
	a := call(t, "POST", srv.URL, nil, transaction(conditionalEntry("new"), conditionalEntry("dup")))
	if a.status != http.StatusPreconditionFailed {
		t.Fatalf("status %d %v, want 412", a.status, a.body)
	}
	if n := count(t, srv, "new"); n != 0 {
		t.Errorf("the failed transaction left %d resources behind", n)
	}

	invalid := conditionalEntry("invalid")
	delete(invalid["resource"].(map[string]any), "code")
	a = call(t, "POST", srv.URL, nil, transaction(conditionalEntry("new"), invalid))
	issue := fmt.Sprint(a.body["issue"])
	if a.status != 400 || !strings.Contains(issue, "Bundle.entry[1].resource.code") {
		t.Fatalf("status %d %s, want 400 pointing at entry 1", a.status, issue)
	}
	if n := count(t, srv, "new"); n != 0 {
		t.Errorf("the invalid transaction left %d resources behind", n)
	}
}

func TestTransactionEntryLimit(t *testing.T) {
	srv := fhirtesting.Shared(t)
	var entries []map[string]any
	for i := range 9 {
		entries = append(entries, conditionalEntry(fmt.Sprint("e", i)))
	}
	if a := call(t, "POST", srv.URL, nil, transaction(entries[:8]...)); a.status != 200 || a.body["type"] != "transaction-response" {
		t.Fatalf("8 conditional creates: %d %v", a.status, a.body)
	}
	if a := call(t, "POST", srv.URL, nil, transaction(entries...)); a.status != 400 || !strings.Contains(fmt.Sprint(a.body), "too many entries") {
		t.Fatalf("9 conditional creates: %d %v, want 400 (Medplum's limit)", a.status, a.body)
	}
}

func TestUpdateIfMatchAndHistory(t *testing.T) {
	srv := fhirtesting.Shared(t)
	created := call(t, "POST", srv.URL+"/Observation", nil, observation("u"))
	id := created.body["id"].(string)
	version := created.body["meta"].(map[string]any)["versionId"].(string)
	res := created.body
	for _, ifMatch := range []string{`W/"stale"`, "stale"} { // a bare value is checked too
		if a := call(t, "PUT", srv.URL+"/Observation/"+id, map[string]string{"If-Match": ifMatch}, res); a.status != 412 {
			t.Errorf("If-Match %s: %d, want 412", ifMatch, a.status)
		}
	}
	if a := call(t, "PUT", srv.URL+"/Observation/"+id, map[string]string{"If-Match": `W/"` + version + `"`}, res); a.status != 200 {
		t.Fatalf("If-Match current version: %d %v", a.status, a.body)
	}
	history := call(t, "GET", srv.URL+"/Observation/"+id+"/_history", nil, nil)
	if entries, _ := history.body["entry"].([]any); len(entries) != 2 {
		t.Errorf("history has %d versions, want 2", len(entries))
	}
	if a := call(t, "GET", srv.URL+"/Observation/"+id+"/_history/"+version, nil, nil); a.status != 200 {
		t.Errorf("vread: %d", a.status)
	}
}

func TestFailAndReset(t *testing.T) {
	srv := fhirtesting.Shared(t)
	ctx := context.Background()
	call(t, "POST", srv.URL+"/Observation", nil, observation("r"))
	if err := srv.Fail(ctx, 503, 2, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		a := call(t, "GET", srv.URL+"/Observation", nil, nil)
		if a.status != 503 || a.header.Get("Retry-After") != "3" || a.body["resourceType"] != "OperationOutcome" {
			t.Fatalf("request %d: %d %v %v", i, a.status, a.header, a.body)
		}
	}
	if a := call(t, "GET", srv.URL+"/Observation", nil, nil); a.status != 200 {
		t.Fatalf("third request: %d", a.status)
	}
	if err := srv.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, srv, "r"); n != 0 {
		t.Errorf("%d resources after Reset", n)
	}
	if a := call(t, "GET", srv.URL+"/metadata", nil, nil); a.status != 200 || a.body["fhirVersion"] != "4.0.1" {
		t.Errorf("metadata: %d %v", a.status, a.body)
	}
}

func TestTokenEndpoint(t *testing.T) {
	srv := fhirtesting.Shared(t)
	ctx := context.Background()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	auth := &ehr.SMARTBackendAuth{ClientID: "c1", TokenURL: srv.TokenURL, Key: key}
	jwks := httptest.NewServer(auth.JWKSHandler())
	defer jwks.Close()
	if err := srv.RegisterSMARTClient(ctx, "c1", jwks.URL); err != nil {
		t.Fatal(err)
	}
	post := func(form url.Values) answer {
		resp, err := http.PostForm(srv.TokenURL, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		a := answer{status: resp.StatusCode}
		_ = json.NewDecoder(resp.Body).Decode(&a.body)
		return a
	}
	assertion, err := auth.Assertion()
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"scope":                 {"system/*.read"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
	}
	ok := post(form)
	if ok.status != 200 || ok.body["token_type"] != "bearer" || ok.body["expires_in"] != 300.0 || ok.body["access_token"] == "" {
		t.Fatalf("token: %d %v", ok.status, ok.body)
	}
	if replay := post(form); replay.status != 401 || !strings.Contains(fmt.Sprint(replay.body), "jti was already used") {
		t.Errorf("replayed assertion: %d %v", replay.status, replay.body)
	}
	bad := url.Values{"grant_type": {"password"}}
	if a := post(bad); a.status != 400 || a.body["error"] != "unsupported_grant_type" {
		t.Errorf("password grant: %d %v", a.status, a.body)
	}
	fresh, _ := auth.Assertion()
	parts := strings.Split(fresh, ".")
	form.Set("client_assertion", parts[0]+"."+parts[1]+"."+strings.Repeat("A", len(parts[2])))
	if a := post(form); a.status != 401 || !strings.Contains(fmt.Sprint(a.body), "signature does not verify") {
		t.Errorf("bad signature: %d %v", a.status, a.body)
	}

	if a := call(t, "GET", srv.URL+"/Patient", nil, nil); a.status != 401 {
		t.Errorf("FHIR without a token: %d", a.status)
	}
	token := ok.body["access_token"].(string)
	if a := call(t, "GET", srv.URL+"/Patient", map[string]string{"Authorization": "Bearer " + token}, nil); a.status != 200 {
		t.Errorf("FHIR with the token: %d %v", a.status, a.body)
	}
}

func TestStartStop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second server")
	}
	srv := fhirtesting.Start(t)
	if err := srv.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	srv.Stop() // twice is fine
	if _, err := http.Get(srv.URL + "/metadata"); err == nil {
		t.Error("the server still answers after Stop")
	}
	start := time.Now()
	if err := fhirtest.EnsureInstalled(context.Background()); err != nil || time.Since(start) > 2*time.Second {
		t.Errorf("EnsureInstalled on an installed tree: %v after %v", err, time.Since(start))
	}
}

// entryResponse returns the status and location of a transaction-response's entry i.
func entryResponse(t *testing.T, a answer, i int) (status, location string) {
	t.Helper()
	entries, _ := a.body["entry"].([]any)
	if a.status != 200 || len(entries) <= i {
		t.Fatalf("transaction: %d %v", a.status, a.body)
	}
	resp, _ := entries[i].(map[string]any)["response"].(map[string]any)
	status, _ = resp["status"].(string)
	location, _ = resp["location"].(string)
	return status, location
}

// searchIDs returns the ids of a searchset, in order.
func searchIDs(t *testing.T, srv *fhirtest.Server, query string) []string {
	t.Helper()
	a := call(t, "GET", srv.URL+"/Observation?"+query, nil, nil)
	if a.status != 200 {
		t.Fatalf("search %s: %d %v", query, a.status, a.body)
	}
	var ids []string
	entries, _ := a.body["entry"].([]any)
	for _, e := range entries {
		ids = append(ids, e.(map[string]any)["resource"].(map[string]any)["id"].(string))
	}
	return ids
}

// Conditional creates, identifier searches and rollbacks among a few thousand stored resources: the server indexes
// identifiers and logs what a transaction changes, and must answer exactly as a scan of every resource would.
func TestConditionalCreatesAmongManyResources(t *testing.T) {
	srv := fhirtesting.Shared(t)
	ctx := context.Background()
	const seeded = 2000
	for start := 0; start < seeded; start += 100 {
		var entries []map[string]any
		for i := start; i < start+100; i++ {
			entries = append(entries, map[string]any{
				"resource": observation(fmt.Sprint("seed-", i)),
				"request":  map[string]any{"method": "POST", "url": "Observation"},
			})
		}
		if a := call(t, "POST", srv.URL, nil, transaction(entries...)); a.status != 200 {
			t.Fatalf("seeding: %d %v", a.status, a.body)
		}
	}
	first := searchIDs(t, srv, "_count=2")
	seed0 := searchIDs(t, srv, ifNoneExist("seed-0"))
	if len(first) != 2 || len(seed0) != 1 || first[0] != seed0[0] {
		t.Fatalf("first two stored %v, seed-0 %v", first, seed0)
	}

	locations := map[string]string{}
	for i := range 100 {
		value := fmt.Sprint("new-", i)
		status, location := entryResponse(t, call(t, "POST", srv.URL, nil, transaction(conditionalEntry(value))), 0)
		if !strings.HasPrefix(status, "201") || !strings.HasPrefix(location, "Observation/") {
			t.Fatalf("conditional create %s: %s %s", value, status, location)
		}
		locations[value] = location
	}
	for i := 0; i < 100; i += 10 {
		value := fmt.Sprint("new-", i)
		status, location := entryResponse(t, call(t, "POST", srv.URL, nil, transaction(conditionalEntry(value))), 0)
		if !strings.HasPrefix(status, "200") || location != locations[value] {
			t.Errorf("repeated conditional create %s: %s %s, want 200 %s", value, status, location, locations[value])
		}
	}
	status, location := entryResponse(t, call(t, "POST", srv.URL, nil, transaction(conditionalEntry("seed-7"))), 0)
	if seed7 := searchIDs(t, srv, ifNoneExist("seed-7")); !strings.HasPrefix(status, "200") || len(seed7) != 1 || location != "Observation/"+seed7[0] {
		t.Errorf("conditional create of a seeded identifier: %s %s, stored %v", status, location, seed7)
	}

	// Identifiers shaped like caseroom's (a Matrix event ID starts with "$", which Medplum escapes in the searches of
	// a transaction with several entries): created once, found again by the repeated transaction.
	pair := transaction(conditionalEntry("$evt-1/hr"), conditionalEntry("$evt-1/temp"))
	var firstLocations []string
	for round := range 2 {
		a := call(t, "POST", srv.URL, nil, pair)
		for i := range 2 {
			status, location := entryResponse(t, a, i)
			if want := []string{"201", "200"}[round]; !strings.HasPrefix(status, want) {
				t.Errorf("round %d entry %d: %s, want %s", round, i, status, want)
			}
			if round == 0 {
				firstLocations = append(firstLocations, location)
			} else if location != firstLocations[i] {
				t.Errorf("repeated entry %d: %s, want %s", i, location, firstLocations[i])
			}
		}
	}

	// Subject references as the poller searches them: the whole reference; lists and bare ids as a full scan does.
	for i, subject := range []string{"Patient/a", "Patient/a", "Patient/a", "Patient/b"} {
		obs := observation(fmt.Sprint("subject-", i))
		obs["subject"] = map[string]any{"reference": subject}
		if a := call(t, "POST", srv.URL+"/Observation", nil, obs); a.status != 201 {
			t.Fatalf("create with subject %s: %d %v", subject, a.status, a.body)
		}
	}

	// Token search as Medplum matches it: case-insensitive, value alone or system|value; lists go to a full scan.
	for query, want := range map[string]int{
		"subject=Patient/a": 3,
		"subject=Patient/a&_lastUpdated=gt2000-01-01T00:00:00Z&_sort=_lastUpdated": 3,
		"subject=Patient/b&identifier=subject-3":                                   1,
		"subject=Patient/b&identifier=subject-0":                                   0,
		"subject=" + url.QueryEscape("Patient/a,Patient/b"):                        4,
		"subject=Patient/c": 0,
		"identifier=" + url.QueryEscape(`urn:caseroom:observation|\$evt-1/hr`): 1,
		"identifier=" + url.QueryEscape("$evt-1/temp"):                         1,
		"identifier=SEED-7": 1,
		"identifier=" + url.QueryEscape("URN:CASEROOM:OBSERVATION|seed-7"): 1,
		"identifier=" + url.QueryEscape("urn:other|seed-7"):                0,
		"identifier=" + url.QueryEscape("seed-1,seed-2,new-3"):             3,
		"identifier=seed-1&status=final":                                   1,
		"identifier=seed-1&status=preliminary":                             0,
	} {
		if got := len(searchIDs(t, srv, query)); got != want {
			t.Errorf("%s: %d results, want %d", query, got, want)
		}
	}

	// Two stored matches: the conditional create fails with 412 and the transaction leaves nothing behind, not even
	// the deletion of seed-0, which keeps its place in the search order.
	for range 2 {
		call(t, "POST", srv.URL+"/Observation", nil, observation("dup"))
	}
	deletion := map[string]any{"request": map[string]any{"method": "DELETE", "url": "Observation/" + seed0[0]}}
	a := call(t, "POST", srv.URL, nil, transaction(deletion, conditionalEntry("fresh"), conditionalEntry("dup")))
	if a.status != http.StatusPreconditionFailed {
		t.Fatalf("transaction with a duplicate match: %d %v, want 412", a.status, a.body)
	}
	if n := count(t, srv, "fresh"); n != 0 {
		t.Errorf("the failed transaction left %d resources behind", n)
	}
	if a := call(t, "GET", srv.URL+"/Observation/"+seed0[0], nil, nil); a.status != 200 {
		t.Errorf("seed-0 after the failed transaction: %d", a.status)
	}
	if got := searchIDs(t, srv, "_count=2"); fmt.Sprint(got) != fmt.Sprint(first) {
		t.Errorf("first two stored after the rollback %v, want %v", got, first)
	}
	total, err := srv.Count(ctx, "Observation", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := seeded + 100 + 2 + 4 + 2; total != want { // seeded, conditional creates, "$" pair, subjects, duplicates
		t.Errorf("%d Observations stored, want %d", total, want)
	}
}
