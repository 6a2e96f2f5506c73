package ehr_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/fhirtest"
	"github.com/caseroom/caseroom/internal/fhirtest/fhirtesting"
)

var testKeys struct {
	once sync.Once
	rsa  *rsa.PrivateKey
	ec   *ecdsa.PrivateKey
	err  error
}

// keys returns an RSA 2048 and an ECDSA P-384 key, generated once per test binary.
func keysForTest(t *testing.T) (*rsa.PrivateKey, *ecdsa.PrivateKey) {
	t.Helper()
	testKeys.once.Do(func() {
		if testKeys.rsa, testKeys.err = rsa.GenerateKey(rand.Reader, 2048); testKeys.err == nil {
			testKeys.ec, testKeys.err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		}
	})
	if testKeys.err != nil {
		t.Fatal(testKeys.err)
	}
	return testKeys.rsa, testKeys.ec
}

// serveJWKS publishes the client's JWKS the way the bot does, and counts fetches.
func serveJWKS(t *testing.T, auth *ehr.SMARTBackendAuth) (url string, fetches *atomic.Int32) {
	t.Helper()
	fetches = new(atomic.Int32)
	h := auth.JWKSHandler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/.well-known/jwks.json", fetches
}

func tokenRequests(t *testing.T, srv *fhirtest.Server) int {
	t.Helper()
	st, err := srv.Stats(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	return st.TokenRequests
}

func TestSMARTBackendServices(t *testing.T) {
	rsaKey, ecKey := keysForTest(t)
	tests := []struct {
		name string
		key  crypto.Signer
		alg  string
	}{
		{"RSA RS384", rsaKey, "RS384"},
		{"EC P-384 ES384", ecKey, "ES384"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fhirtesting.Shared(t)
			ctx := testContext(t)
			auth := &ehr.SMARTBackendAuth{ClientID: "caseroom-" + tt.alg, TokenURL: srv.TokenURL, Key: tt.key}
			jwksURL, fetches := serveJWKS(t, auth)
			if err := srv.RegisterSMARTClient(ctx, auth.ClientID, jwksURL); err != nil {
				t.Fatal(err)
			}

			// Without a token the server refuses.
			_, err := newClient(t, srv, nil).Search(ctx, "Patient", nil)
			var e *ehr.Error
			if !errors.As(err, &e) || e.Status != http.StatusUnauthorized {
				t.Fatalf("search without a token: %v, want 401", err)
			}

			c := newClient(t, srv, auth)
			patient := createPatient(t, ctx, c, "smart-"+tt.alg)
			if _, err := c.Search(ctx, "Observation", map[string][]string{"subject": {patient}}); err != nil {
				t.Fatalf("search with a SMART token: %v", err)
			}
			if n := tokenRequests(t, srv); n != 1 {
				t.Errorf("%d token requests for two FHIR calls, want 1 (cached)", n)
			}
			if fetches.Load() == 0 {
				t.Error("the token endpoint never fetched the JWKS")
			}

			// A token close to expiry is replaced before it is used.
			auth.SetClock(func() time.Time { return time.Now().Add(299 * time.Second) })
			if _, err := c.Search(ctx, "Patient", nil); err != nil {
				t.Fatalf("search after the token's refresh time: %v", err)
			}
			if n := tokenRequests(t, srv); n != 2 {
				t.Errorf("%d token requests after the cached token aged, want 2", n)
			}
		})
	}
}

func TestSMARTTokenForgottenByServer(t *testing.T) {
	rsaKey, _ := keysForTest(t)
	srv := fhirtesting.Shared(t)
	ctx := testContext(t)
	auth := &ehr.SMARTBackendAuth{ClientID: "caseroom", TokenURL: srv.TokenURL, Key: rsaKey, KeyID: "k1"}
	jwksURL, _ := serveJWKS(t, auth)
	if err := srv.RegisterSMARTClient(ctx, auth.ClientID, jwksURL); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, srv, auth)
	if _, err := c.Search(ctx, "Patient", nil); err != nil {
		t.Fatal(err)
	}
	// A server restart forgets its tokens: the client gets a 401, drops its token and gets a new one once.
	if err := srv.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterSMARTClient(ctx, auth.ClientID, jwksURL); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Search(ctx, "Patient", nil); err != nil {
		t.Fatalf("search after the server forgot the token: %v", err)
	}
	if n := tokenRequests(t, srv); n != 1 {
		t.Errorf("%d token requests since the reset, want 1", n)
	}
}

func TestSMARTRejectedAssertion(t *testing.T) {
	rsaKey, ecKey := keysForTest(t)
	srv := fhirtesting.Shared(t)
	ctx := testContext(t)

	// The JWKS publishes the EC key under the kid the client signs with using the RSA key.
	published := &ehr.SMARTBackendAuth{ClientID: "caseroom", TokenURL: srv.TokenURL, Key: ecKey, KeyID: "k1"}
	jwksURL, _ := serveJWKS(t, published)
	if err := srv.RegisterSMARTClient(ctx, "caseroom", jwksURL); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		auth *ehr.SMARTBackendAuth
		want string
	}{
		{"key not in JWKS", &ehr.SMARTBackendAuth{ClientID: "caseroom", TokenURL: srv.TokenURL, Key: rsaKey, KeyID: "k1"}, "RS384"},
		{"unknown client", &ehr.SMARTBackendAuth{ClientID: "stranger", TokenURL: srv.TokenURL, Key: ecKey, KeyID: "k1"}, "unknown client"},
		{"wrong audience", &ehr.SMARTBackendAuth{ClientID: "caseroom", TokenURL: srv.TokenURL + "?x", Key: ecKey, KeyID: "k1"}, "aud"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newClient(t, srv, tt.auth).Search(ctx, "Patient", nil)
			var e *ehr.Error
			if !errors.As(err, &e) || e.Status != http.StatusUnauthorized || e.Retryable() {
				t.Fatalf("got %v, want a permanent 401 from the token endpoint", err)
			}
			if !strings.Contains(err.Error(), "invalid_client") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("message %q lacks invalid_client and %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "eyJ") {
				t.Errorf("message %q holds a JWT", err)
			}
		})
	}
}
