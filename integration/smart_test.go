//go:build goolm

package integration

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/fhirtest/fhirtesting"
)

// TestSMARTBackendServicesTokenFlow: the bot authenticates to the EHR as a SMART Backend Services client. Its
// private key is a PEM file; its public key is published as a JWKS at <appservice.address>/caseroom/jwks.json,
// which the test server's token endpoint fetches to check the signature of the bot's client assertion. Check-ins
// are filed with the token, and one token serves several filings (it is cached until it is about to expire).
func TestSMARTBackendServicesTokenFlow(t *testing.T) {
	ctx := context.Background()
	srv := fhirtesting.Start(t)
	w := getWorld(t)
	// Seeded before the client is registered: from then on the server wants a token for every FHIR request.
	patientRef := seedPatient(t, ehrClient(t, srv), "Adeyemi", "MRN-SMART")

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "caseroom-smart.pem")
	if err = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	const clientID = "caseroom-integration"
	jwksURL := fmt.Sprintf("http://127.0.0.1:%d%s", w.botPort, "/caseroom/jwks.json")
	if err = srv.RegisterSMARTClient(ctx, clientID, jwksURL); err != nil {
		t.Fatal(err)
	}
	if _, err = ehrClient(t, srv).Search(ctx, "Patient", nil); err == nil {
		t.Fatal("the FHIR server answered without a token: the SMART client is not in force")
	}

	c := newClinic(t, map[string]any{"ehr": map[string]any{"url": srv.URL, "timeout": "5s", "auth": map[string]any{
		"mode": "smart", "client_id": clientID, "token_url": srv.TokenURL, "private_key_file": keyFile,
	}}})

	// The published key set holds the public key, and only it.
	resp, err := http.Get(jwksURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	var jwks struct {
		Keys []map[string]any `json:"keys"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &jwks) != nil || len(jwks.Keys) != 1 || jwks.Keys[0]["kty"] != "RSA" ||
		jwks.Keys[0]["n"] == nil || jwks.Keys[0]["d"] != nil || jwks.Keys[0]["p"] != nil {
		t.Fatalf("JWKS at %s: HTTP %d %s", jwksURL, resp.StatusCode, body)
	}

	doc, pat := newUser(t, w.hsA, "doc"), newUser(t, w.hsA, "pat")
	c.registerClinician(doc)
	docDM := doc.EncryptedRoomWithBot(c.botID)
	caseRoom, patientRoom := c.openCase(doc, docDM, "Diabetes follow-up --patient "+patientRef)
	c.mustSucceed(doc, caseRoom, "!patient invite "+pat.UserID.String())
	pat.JoinInvited(patientRoom)

	first, _ := c.command(pat, patientRoom, "!checkin hr=72 glucose=6.1mmol/L")
	waitFiled(t, c, pat, patientRoom, first)
	stats, err := srv.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.TokenRequests < 1 || stats.TokensIssued < 1 || stats.JWKSFetches < 1 {
		t.Fatalf("after a check-in was filed: %+v, want a token request that fetched the JWKS", stats)
	}
	second, _ := c.command(pat, patientRoom, "!checkin hr=70")
	waitFiled(t, c, pat, patientRoom, second)
	after, err := srv.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.TokensIssued != stats.TokensIssued || after.TokenRequests != stats.TokenRequests || after.FHIRRequests <= stats.FHIRRequests {
		t.Fatalf("stats after the first filing %+v, after the second %+v: want more FHIR requests with the same token", stats, after)
	}
	if after.TokensIssued != 1 || after.TokenRequests != 1 {
		t.Fatalf("stats %+v: want one token for everything the bot did", after)
	}
	for _, evtID := range []string{string(first), string(second)} {
		if n, err := srv.Count(ctx, "Observation", ehr.IdentifierQuery(ehr.ObservationIdentifierSystem, evtID+"/hr")); err != nil || n != 1 {
			t.Fatalf("heart rate of %s: %d Observations (%v), want 1", evtID, n, err)
		}
	}
	botNotice(doc, c, caseRoom, "filed in the EHR", "Observation/")
}

// waitFiled waits for the bot's 📋 reaction to a check-in: the EHR has it.
func waitFiled(t *testing.T, c *clinic, u *user, room id.RoomID, checkin id.EventID) {
	t.Helper()
	u.WaitFor(30*time.Second, "the filed reaction", func(evt *event.Event) bool {
		return evt.Type == event.EventReaction && evt.Sender == c.botID && evt.RoomID == room &&
			evt.Content.AsReaction().RelatesTo.EventID == checkin
	})
}
