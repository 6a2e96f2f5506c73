package bot

import (
	"errors"
	"strings"
	"testing"
)

func TestSecretSealer(t *testing.T) {
	sealer := newSecretSealer(strings.Repeat("p", 64))
	sealed := sealer.seal("access_token", "syt_secret")
	if strings.Contains(sealed, "syt_secret") || !strings.HasPrefix(sealed, sealPrefix) {
		t.Fatalf("sealed = %q", sealed)
	}
	if again := sealer.seal("access_token", "syt_secret"); again == sealed {
		t.Error("sealing twice gave the same value: the nonce is not random")
	}
	if got, err := sealer.open("access_token", sealed); err != nil || got != "syt_secret" {
		t.Fatalf("open = %q, %v", got, err)
	}
	tests := []struct {
		name    string
		sealer  *secretSealer
		purpose string
		sealed  string
	}{
		{name: "other pickle key", sealer: newSecretSealer(strings.Repeat("q", 64)), purpose: "access_token", sealed: sealed},
		{name: "other purpose", sealer: sealer, purpose: "recovery_key", sealed: sealed},
		{name: "plain text", sealer: sealer, purpose: "access_token", sealed: "syt_secret"},
		{name: "truncated", sealer: sealer, purpose: "access_token", sealed: sealPrefix + "AAAA"},
		{name: "tampered", sealer: sealer, purpose: "access_token", sealed: flipChar(sealed, len(sealed)/2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := tt.sealer.open(tt.purpose, tt.sealed); !errors.Is(err, errSealedSecret) || got != "" {
				t.Fatalf("open = %q, %v; want errSealedSecret", got, err)
			}
		})
	}
}

// flipChar changes the base64 character at i to another one.
func flipChar(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}
