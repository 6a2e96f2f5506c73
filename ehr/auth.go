package ehr

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Auth adds credentials to a FHIR request.
type Auth interface {
	Authorize(ctx context.Context, req *http.Request) error
}

// tokenInvalidator is an Auth whose token the server may reject before it expires (after a restart, say):
// invalidate drops the token sent in authorization and reports whether a new one can be had.
type tokenInvalidator interface {
	invalidate(authorization string) bool
}

// NoAuth sends no credentials.
type NoAuth struct{}

// Authorize implements Auth.
func (NoAuth) Authorize(context.Context, *http.Request) error { return nil }

// BearerAuth sends a static bearer token.
type BearerAuth struct {
	Token string
}

// Authorize implements Auth.
func (a BearerAuth) Authorize(_ context.Context, req *http.Request) error {
	if a.Token == "" {
		return errors.New("ehr: BearerAuth has an empty token")
	}
	req.Header.Set("Authorization", "Bearer "+a.Token)
	return nil
}

// SMART Backend Services defaults.
const (
	// DefaultSMARTScope is requested when SMARTBackendAuth.Scope is empty.
	DefaultSMARTScope = "system/Patient.read system/Observation.read system/Observation.write system/DiagnosticReport.read " +
		"system/CarePlan.read system/CarePlan.write system/Goal.read system/Goal.write system/Communication.write " +
		"system/QuestionnaireResponse.write"
	// assertionLifetime is how long a client assertion is valid (SMART allows at most five minutes).
	assertionLifetime = 4 * time.Minute
	// tokenRefreshMargin: a cached token is replaced this long before it expires (at most half its lifetime).
	tokenRefreshMargin = time.Minute
	// defaultTokenLifetime is assumed when the token answer has no expires_in.
	defaultTokenLifetime = 5 * time.Minute
	// tokenRequestTimeout bounds a token request when HTTPClient is nil.
	tokenRequestTimeout = 30 * time.Second
)

// SMARTBackendAuth authenticates as a SMART Backend Services client (OAuth client credentials with a signed JWT
// assertion, private_key_jwt): RS384 for an RSA key (2048 bits or more), ES384 for an ECDSA P-384 key. The
// access token is cached until shortly before it expires; concurrent requests share one token request. The
// server must know the client's public key: publish JWKS at the URL registered with the EHR (JWKSHandler).
// Use it as a pointer; it must not be copied after first use.
type SMARTBackendAuth struct {
	ClientID string
	TokenURL string
	Key      crypto.Signer
	// KeyID is the JWK "kid"; empty means the key's RFC 7638 thumbprint.
	KeyID string
	// Scope is requested with each token; empty means DefaultSMARTScope.
	Scope string
	// HTTPClient sends token requests; nil means a client with a 30-second timeout.
	HTTPClient *http.Client

	mu      sync.Mutex
	token   string
	expires time.Time
	now     func() time.Time // for tests; nil means time.Now
}

// Authorize implements Auth: it sets a bearer token, requesting a new one when none is cached or it is about to
// expire.
func (a *SMARTBackendAuth) Authorize(ctx context.Context, req *http.Request) error {
	token, err := a.Token(ctx)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return nil
}

// Token returns a valid access token, from the cache or from the token endpoint.
func (a *SMARTBackendAuth) Token(ctx context.Context) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token != "" && a.clock().Before(a.expires) {
		return a.token, nil
	}
	token, lifetime, err := a.requestToken(ctx)
	if err != nil {
		return "", err
	}
	margin := min(tokenRefreshMargin, lifetime/2)
	a.token, a.expires = token, a.clock().Add(lifetime-margin)
	return token, nil
}

func (a *SMARTBackendAuth) invalidate(authorization string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token == "" || authorization != "Bearer "+a.token {
		return false
	}
	a.token = ""
	return true
}

func (a *SMARTBackendAuth) clock() time.Time {
	if a.now != nil {
		return a.now()
	}
	return time.Now()
}

// requestToken asks the token endpoint for an access token.
func (a *SMARTBackendAuth) requestToken(ctx context.Context) (string, time.Duration, error) {
	const op = "POST token"
	assertion, err := a.Assertion()
	if err != nil {
		return "", 0, err
	}
	scope := a.Scope
	if scope == "" {
		scope = DefaultSMARTScope
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"scope":                 {scope},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, fmt.Errorf("ehr: invalid SMART token URL: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	hc := a.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: tokenRequestTimeout}
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "", 0, fmt.Errorf("ehr: %s: %w", op, ctx.Err())
		}
		return "", 0, &Error{Op: op, Err: stripURL(err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", 0, &Error{Op: op, Err: stripURL(err)}
	}
	var answer struct {
		AccessToken      string      `json:"access_token"`
		TokenType        string      `json:"token_type"`
		ExpiresIn        json.Number `json:"expires_in"`
		Error            string      `json:"error"`
		ErrorDescription string      `json:"error_description"`
	}
	jsonErr := json.Unmarshal(raw, &answer)
	if resp.StatusCode != http.StatusOK {
		e := &Error{Op: op, Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
		if answer.Error != "" {
			e.detail = strings.TrimSuffix(answer.Error+": "+answer.ErrorDescription, ": ")
		}
		return "", 0, e
	}
	if jsonErr != nil || answer.AccessToken == "" {
		return "", 0, &Error{Op: op, Status: resp.StatusCode, detail: "answer has no access_token"}
	}
	if !strings.EqualFold(answer.TokenType, "bearer") {
		return "", 0, &Error{Op: op, Status: resp.StatusCode, detail: fmt.Sprintf("token_type %q is not bearer", answer.TokenType)}
	}
	lifetime := defaultTokenLifetime
	if secs, err := answer.ExpiresIn.Int64(); err == nil && secs > 0 {
		lifetime = time.Duration(secs) * time.Second
	}
	return answer.AccessToken, lifetime, nil
}

// Assertion returns a new signed client assertion (a compact JWS) for the token endpoint.
func (a *SMARTBackendAuth) Assertion() (string, error) {
	if a.ClientID == "" || a.TokenURL == "" || a.Key == nil {
		return "", errors.New("ehr: SMARTBackendAuth needs ClientID, TokenURL and Key")
	}
	alg, err := signingAlgorithm(a.Key.Public())
	if err != nil {
		return "", err
	}
	kid, err := a.keyID()
	if err != nil {
		return "", err
	}
	jti := make([]byte, 16)
	if _, err = rand.Read(jti); err != nil {
		return "", err
	}
	now := time.Now() // the server checks exp against its real clock, never a test clock
	header, _ := json.Marshal(map[string]string{"alg": alg, "kid": kid, "typ": "JWT"})
	claims, _ := json.Marshal(map[string]any{
		"iss": a.ClientID,
		"sub": a.ClientID,
		"aud": a.TokenURL,
		"exp": now.Add(assertionLifetime).Unix(),
		"iat": now.Unix(),
		"jti": hex.EncodeToString(jti),
	})
	input := b64(header) + "." + b64(claims)
	digest := sha512.Sum384([]byte(input))
	sig, err := a.Key.Sign(rand.Reader, digest[:], crypto.SHA384)
	if err != nil {
		return "", fmt.Errorf("ehr: failed to sign the client assertion: %w", err)
	}
	if alg == "ES384" {
		if sig, err = ecdsaRaw(sig, 48); err != nil {
			return "", err
		}
	}
	return input + "." + b64(sig), nil
}

// JWKS returns the public key as a JSON Web Key Set ({"keys":[...]}) for the EHR to fetch.
func (a *SMARTBackendAuth) JWKS() ([]byte, error) {
	if a.Key == nil {
		return nil, errors.New("ehr: SMARTBackendAuth has no Key")
	}
	jwk, err := publicJWK(a.Key.Public())
	if err != nil {
		return nil, err
	}
	if jwk["kid"], err = a.keyID(); err != nil {
		return nil, err
	}
	jwk["use"] = "sig"
	jwk["key_ops"] = []string{"verify"}
	return json.Marshal(map[string]any{"keys": []any{jwk}})
}

// JWKSHandler serves JWKS (GET or HEAD) as application/json.
func (a *SMARTBackendAuth) JWKSHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body, err := a.JWKS()
		if err != nil {
			http.Error(w, "no key configured", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=300")
		_, _ = w.Write(body)
	})
}

func (a *SMARTBackendAuth) keyID() (string, error) {
	if a.KeyID != "" {
		return a.KeyID, nil
	}
	return Thumbprint(a.Key.Public())
}

// Thumbprint returns the RFC 7638 JWK thumbprint (SHA-256, base64url) of a supported public key.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	jwk, err := publicJWK(pub)
	if err != nil {
		return "", err
	}
	var members []string
	switch jwk["kty"] {
	case "RSA":
		members = []string{"e", "kty", "n"}
	default:
		members = []string{"crv", "kty", "x", "y"}
	}
	// The required members, in lexicographic order, with no whitespace; all values are base64url or plain ASCII.
	var b strings.Builder
	b.WriteString("{")
	for i, m := range members {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%q:%q", m, jwk[m])
	}
	b.WriteString("}")
	sum := sha256.Sum256([]byte(b.String()))
	return b64(sum[:]), nil
}

// signingAlgorithm returns the JWS algorithm for a public key: RS384 or ES384.
func signingAlgorithm(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.Size() < 256 {
			return "", fmt.Errorf("ehr: RSA key of %d bits is too small for RS384 (want 2048 or more)", k.Size()*8)
		}
		return "RS384", nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P384() {
			return "", fmt.Errorf("ehr: ECDSA key on %s is not supported (want P-384 for ES384)", k.Curve.Params().Name)
		}
		return "ES384", nil
	default:
		return "", fmt.Errorf("ehr: %T keys are not supported (want RSA or ECDSA P-384)", pub)
	}
}

// publicJWK returns the public JWK members of a supported key, with "alg".
func publicJWK(pub crypto.PublicKey) (map[string]any, error) {
	alg, err := signingAlgorithm(pub)
	if err != nil {
		return nil, err
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return map[string]any{"kty": "RSA", "alg": alg, "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}, nil
	default:
		point, err := pub.(*ecdsa.PublicKey).Bytes() // 0x04 || X || Y, 48 bytes each
		if err != nil || len(point) != 97 {
			return nil, fmt.Errorf("ehr: invalid P-384 public key: %v", err)
		}
		return map[string]any{"kty": "EC", "alg": alg, "crv": "P-384", "x": b64(point[1:49]), "y": b64(point[49:])}, nil
	}
}

// ecdsaRaw turns an ASN.1 DER ECDSA signature into the JWS form: r || s, size bytes each.
func ecdsaRaw(der []byte, size int) ([]byte, error) {
	var sig struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil || len(rest) != 0 || sig.R == nil || sig.S == nil {
		return nil, errors.New("ehr: signer returned an invalid ECDSA signature")
	}
	out := make([]byte, 2*size)
	sig.R.FillBytes(out[:size])
	sig.S.FillBytes(out[size:])
	return out, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// LoadPrivateKey reads an unencrypted PEM private key (PKCS #8, PKCS #1 RSA or SEC 1 EC) usable for SMART Backend
// Services: RSA of 2048 bits or more, or ECDSA P-384.
func LoadPrivateKey(pemPath string) (crypto.Signer, error) {
	raw, err := os.ReadFile(pemPath)
	if err != nil {
		return nil, fmt.Errorf("failed to read private key: %w", err)
	}
	key, err := ParsePrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pemPath, err)
	}
	return key, nil
}

// ParsePrivateKey is LoadPrivateKey for PEM data in memory.
func ParsePrivateKey(pemData []byte) (crypto.Signer, error) {
	for rest := pemData; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted private keys are not supported")
		default:
			continue // such as EC PARAMETERS or a certificate
		}
		if err != nil {
			return nil, fmt.Errorf("invalid %s: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%T is not a signing key", key)
		}
		if _, err = signingAlgorithm(signer.Public()); err != nil {
			return nil, err
		}
		return signer, nil
	}
}
