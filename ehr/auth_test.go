package ehr_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caseroom/caseroom/ehr"
)

func decodeSegment(t *testing.T, s string, out any) {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAssertionSignedAndClaimed(t *testing.T) {
	rsaKey, ecKey := keysForTest(t)
	tests := []struct {
		name string
		key  crypto.Signer
		alg  string
	}{
		{"RSA", rsaKey, "RS384"},
		{"EC", ecKey, "ES384"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := &ehr.SMARTBackendAuth{ClientID: "c1", TokenURL: "https://ehr.example/token", Key: tt.key}
			jws, err := auth.Assertion()
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(jws, ".")
			if len(parts) != 3 {
				t.Fatalf("%d parts", len(parts))
			}
			var header map[string]string
			decodeSegment(t, parts[0], &header)
			var claims map[string]any
			decodeSegment(t, parts[1], &claims)
			kid, _ := ehr.Thumbprint(tt.key.Public())
			if header["alg"] != tt.alg || header["typ"] != "JWT" || header["kid"] != kid {
				t.Errorf("header %v, want alg %s and the thumbprint as kid", header, tt.alg)
			}
			exp, _ := claims["exp"].(float64)
			if claims["iss"] != "c1" || claims["sub"] != "c1" || claims["aud"] != "https://ehr.example/token" ||
				claims["jti"] == "" || time.Until(time.Unix(int64(exp), 0)) > 5*time.Minute || time.Until(time.Unix(int64(exp), 0)) < time.Minute {
				t.Errorf("claims %v", claims)
			}
			again, _ := auth.Assertion()
			var claims2 map[string]any
			decodeSegment(t, strings.Split(again, ".")[1], &claims2)
			if claims2["jti"] == claims["jti"] {
				t.Error("two assertions share a jti")
			}

			sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
			digest := sha512.Sum384([]byte(parts[0] + "." + parts[1]))
			switch k := tt.key.(type) {
			case *rsa.PrivateKey:
				if err := rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA384, digest[:], sig); err != nil {
					t.Errorf("RS384 signature: %v", err)
				}
			case *ecdsa.PrivateKey:
				if len(sig) != 96 || !ecdsa.Verify(&k.PublicKey, digest[:], new(big.Int).SetBytes(sig[:48]), new(big.Int).SetBytes(sig[48:])) {
					t.Errorf("ES384 signature of %d bytes does not verify", len(sig))
				}
			}
		})
	}
}

func TestJWKS(t *testing.T) {
	rsaKey, ecKey := keysForTest(t)
	auth := &ehr.SMARTBackendAuth{ClientID: "c", TokenURL: "https://x/token", Key: ecKey, KeyID: "key-1"}
	raw, err := auth.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("JWKS %s: %v", raw, err)
	}
	k := set.Keys[0]
	if k["kty"] != "EC" || k["crv"] != "P-384" || k["alg"] != "ES384" || k["kid"] != "key-1" || k["use"] != "sig" || k["d"] != nil {
		t.Errorf("EC JWK %v", k)
	}
	for _, c := range []string{"x", "y"} {
		if b, _ := base64.RawURLEncoding.DecodeString(k[c].(string)); len(b) != 48 {
			t.Errorf("%s has %d bytes, want 48", c, len(b))
		}
	}

	auth = &ehr.SMARTBackendAuth{Key: rsaKey}
	raw, _ = auth.JWKS()
	_ = json.Unmarshal(raw, &set)
	k = set.Keys[0]
	if k["kty"] != "RSA" || k["alg"] != "RS384" || k["e"] != "AQAB" || k["d"] != nil || k["p"] != nil {
		t.Errorf("RSA JWK %v", k)
	}
	if kid, _ := ehr.Thumbprint(rsaKey.Public()); k["kid"] != kid {
		t.Errorf("kid %v, want the thumbprint %s", k["kid"], kid)
	}

	rec := httptest.NewRecorder()
	auth.JWKSHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/jwks.json", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" || rec.Body.String() != string(raw) {
		t.Errorf("handler: %d %s", rec.Code, rec.Body)
	}
}

// TestThumbprintRFC7638 checks the worked example of RFC 7638 section 3.1.
func TestThumbprintRFC7638(t *testing.T) {
	n, _ := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	got, err := ehr.Thumbprint(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537})
	if err != nil || got != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" {
		t.Errorf("Thumbprint = %q, %v", got, err)
	}
}

func writePEM(t *testing.T, blocks ...*pem.Block) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.pem")
	var data []byte
	for _, b := range blocks {
		data = append(data, pem.EncodeToMemory(b)...)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadPrivateKey(t *testing.T) {
	rsaKey, ecKey := keysForTest(t)
	pkcs8RSA, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	pkcs8EC, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	sec1, _ := x509.MarshalECPrivateKey(ecKey)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p256DER, _ := x509.MarshalPKCS8PrivateKey(p256)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKCS8PrivateKey(edKey)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)

	tests := []struct {
		name   string
		blocks []*pem.Block
		want   string // "" for success, else part of the error
	}{
		{"PKCS8 RSA", []*pem.Block{{Type: "PRIVATE KEY", Bytes: pkcs8RSA}}, ""},
		{"PKCS1 RSA", []*pem.Block{{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}}, ""},
		{"PKCS8 EC", []*pem.Block{{Type: "PRIVATE KEY", Bytes: pkcs8EC}}, ""},
		{"SEC1 EC after EC PARAMETERS", []*pem.Block{{Type: "EC PARAMETERS", Bytes: []byte{6, 5, 43, 129, 4, 0, 34}}, {Type: "EC PRIVATE KEY", Bytes: sec1}}, ""},
		{"P-256", []*pem.Block{{Type: "PRIVATE KEY", Bytes: p256DER}}, "want P-384"},
		{"Ed25519", []*pem.Block{{Type: "PRIVATE KEY", Bytes: edDER}}, "not supported"},
		{"RSA 1024", []*pem.Block{{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(small)}}, "too small"},
		{"encrypted", []*pem.Block{{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}}, "encrypted"},
		{"certificate only", []*pem.Block{{Type: "CERTIFICATE", Bytes: []byte{1}}}, "no PEM private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := ehr.LoadPrivateKey(writePEM(t, tt.blocks...))
			switch {
			case tt.want == "" && err != nil:
				t.Fatal(err)
			case tt.want == "" && key == nil:
				t.Fatal("no key")
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := ehr.LoadPrivateKey(filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Error("a missing file loaded")
	}
}

// tokenServer is a minimal token endpoint that counts requests and issues tokens living lifetime seconds.
func tokenServer(t *testing.T, lifetime int, delay time.Duration) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		time.Sleep(delay)
		if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" ||
			r.PostForm.Get("client_assertion") == "" || r.PostForm.Get("scope") != ehr.DefaultSMARTScope {
			http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "tok-" + string(rune('0'+i)), "token_type": "Bearer", "expires_in": lifetime})
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestSMARTTokenCache(t *testing.T) {
	_, ecKey := keysForTest(t)
	srv, requests := tokenServer(t, 600, 50*time.Millisecond)
	auth := &ehr.SMARTBackendAuth{ClientID: "c", TokenURL: srv.URL, Key: ecKey}
	now := time.Now()
	var offset atomic.Int64
	auth.SetClock(func() time.Time { return now.Add(time.Duration(offset.Load())) })
	ctx := context.Background()

	// Concurrent first use shares one token request.
	var wg sync.WaitGroup
	tokens := make([]string, 8)
	for i := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tokens[i], _ = auth.Token(ctx)
		}()
	}
	wg.Wait()
	if requests.Load() != 1 || tokens[0] != "tok-1" || tokens[7] != "tok-1" {
		t.Fatalf("%d token requests, tokens %v; want 1 request", requests.Load(), tokens)
	}
	// Cached until a minute before expiry...
	offset.Store(int64(539 * time.Second))
	if tok, _ := auth.Token(ctx); tok != "tok-1" || requests.Load() != 1 {
		t.Errorf("at 539s: %s after %d requests, want the cached token", tok, requests.Load())
	}
	// ...then renewed.
	offset.Store(int64(541 * time.Second))
	if tok, _ := auth.Token(ctx); tok != "tok-2" || requests.Load() != 2 {
		t.Errorf("at 541s: %s after %d requests, want a new token", tok, requests.Load())
	}
}

func TestSMARTShortLivedTokenMargin(t *testing.T) {
	_, ecKey := keysForTest(t)
	srv, requests := tokenServer(t, 60, 0)
	auth := &ehr.SMARTBackendAuth{ClientID: "c", TokenURL: srv.URL, Key: ecKey}
	now := time.Now()
	var offset atomic.Int64
	auth.SetClock(func() time.Time { return now.Add(time.Duration(offset.Load())) })
	_, _ = auth.Token(context.Background())
	// A 60-second token is renewed after half its life, not used until a minute before expiry (never).
	offset.Store(int64(29 * time.Second))
	_, _ = auth.Token(context.Background())
	offset.Store(int64(31 * time.Second))
	_, _ = auth.Token(context.Background())
	if requests.Load() != 2 {
		t.Errorf("%d token requests, want 2", requests.Load())
	}
}
