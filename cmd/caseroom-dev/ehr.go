package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/config"
	"github.com/caseroom/caseroom/internal/fhirtest"
	"github.com/caseroom/caseroom/store"
)

// The demo records the FHIR test server is seeded with.
const (
	demoMRNSystem        = "urn:caseroom:demo:mrn"
	demoMRN              = "DEMO-0001"
	demoPractitionerID   = "urn:caseroom:demo:practitioner"
	demoPractitionerCode = "dr.demo"
)

// demoEHR is the running FHIR test server with its demo records.
type demoEHR struct {
	server          *fhirtest.Server
	URL             string // the FHIR base URL caseroom files to
	PatientRef      string // Patient/<id> of the demo patient
	PractitionerRef string // Practitioner/<id> linked to the demo clinician
}

// ehrURL is the FHIR base URL of the test server on port.
func ehrURL(port int) string {
	return "http://127.0.0.1:" + strconv.Itoa(port) + "/fhir/R4"
}

// startEHR starts the project's FHIR test server (in memory, on loopback, at the port kept in ports.json), seeds a
// demo Patient with an MRN and a demo Practitioner, and links the demo clinician to that Practitioner in caseroom's
// database. Without Node.js it says so in one line and returns nil: everything else still works, and caseroom keeps
// the records in its outbox until an EHR answers.
func startEHR(ctx context.Context, p ports, cfg *config.Config, accounts []account, say func(string, ...any)) (*demoEHR, error) {
	if cfg.EHR.URL != ehrURL(p.EHR) {
		say("No EHR started: ehr.url in %s is %q, not the development EHR %s (delete the config to get a fresh one).",
			configFile, cfg.EHR.URL, ehrURL(p.EHR))
		return nil, nil
	}
	srv, err := fhirtest.StartOnPort(ctx, p.EHR)
	if err != nil {
		say("No EHR: the FHIR test server did not start (%v). It needs Node.js 20 with npm; caseroom keeps the "+
			"records in its outbox until an EHR answers.", err)
		return nil, nil
	}
	ehr := &demoEHR{server: srv, URL: srv.URL}
	patient := map[string]any{
		"resourceType": "Patient",
		"identifier":   []any{map[string]any{"system": demoMRNSystem, "value": demoMRN}},
		"name":         []any{map[string]any{"family": "Demo", "given": []string{"Pat"}}},
		"birthDate":    "1960-04-12",
	}
	if ehr.PatientRef, err = createOnce(ctx, srv.URL, "Patient", demoMRNSystem, demoMRN, patient); err != nil {
		srv.Stop()
		return nil, err
	}
	practitioner := map[string]any{
		"resourceType": "Practitioner",
		"identifier":   []any{map[string]any{"system": demoPractitionerID, "value": demoPractitionerCode}},
		"name":         []any{map[string]any{"family": "Demo", "given": []string{"Dana"}, "prefix": []string{"Dr."}}},
	}
	if ehr.PractitionerRef, err = createOnce(ctx, srv.URL, "Practitioner", demoPractitionerID, demoPractitionerCode, practitioner); err != nil {
		srv.Stop()
		return nil, err
	}
	if err = linkDemoClinician(ctx, cfg, accounts, ehr.PractitionerRef); err != nil {
		srv.Stop()
		return nil, err
	}
	return ehr, nil
}

// createOnce creates a resource unless one with the identifier exists (FHIR conditional create), and returns its
// reference.
func createOnce(ctx context.Context, base, resourceType, system, value string, resource map[string]any) (string, error) {
	body, err := json.Marshal(resource)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/"+resourceType, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("If-None-Exist", "identifier="+url.QueryEscape(system+"|"+value))
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("failed to create the demo %s: %w", resourceType, err)
	}
	defer resp.Body.Close()
	var created struct {
		ID string `json:"id"`
	}
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("the FHIR test server refused the demo %s (HTTP %d)", resourceType, resp.StatusCode)
	}
	if err = json.NewDecoder(resp.Body).Decode(&created); err != nil || created.ID == "" {
		return "", fmt.Errorf("the FHIR test server answered the demo %s without an id (%v)", resourceType, err)
	}
	return resourceType + "/" + created.ID, nil
}

// linkDemoClinician registers the demo clinician in caseroom's database with the demo Practitioner (as an admin's
// `admin clinician add --practitioner` would), before caseroom starts. The EHR is in memory, so the Practitioner's
// ID is new on each run.
func linkDemoClinician(ctx context.Context, cfg *config.Config, accounts []account, practitionerRef string) error {
	var clinician, admin id.UserID
	for _, a := range accounts {
		switch {
		case a.admin:
			admin = a.UserID
		case a.Localpart == demoPractitionerCode:
			clinician = a.UserID
		}
	}
	if clinician == "" || admin == "" {
		return fmt.Errorf("the demo accounts lack %s or the admin", demoPractitionerCode)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("failed to create caseroom's data directory: %w", err)
	}
	st, err := store.Open(ctx, store.Config{Type: cfg.Database.Type, URI: cfg.DatabaseURI(), MaxOpenConns: 1}, zerolog.Nop())
	if err != nil {
		return fmt.Errorf("failed to open caseroom's database to register the demo clinician: %w", err)
	}
	defer st.Close()
	if _, err = st.Roles.AddClinician(ctx, clinician, practitionerRef, admin); err != nil {
		return fmt.Errorf("failed to register the demo clinician: %w", err)
	}
	return nil
}
