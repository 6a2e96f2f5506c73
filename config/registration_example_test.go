package config_test

import (
	"os"
	"testing"

	"maunium.net/go/mautrix/appservice"

	"github.com/caseroom/caseroom/config"
)

// TestRootRegistrationMatchesExample keeps the example registration.yaml at the project root in step with what
// `caseroom -g` would write for the example config (placeholder tokens aside).
func TestRootRegistrationMatchesExample(t *testing.T) {
	root, err := appservice.LoadRegistration("../registration.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := config.Default().Registration().YAML()
	got, _ := root.YAML()
	if got != want {
		t.Fatalf("registration.yaml differs from the example config's registration:\n%s\nwant:\n%s", got, want)
	}
	if _, err := os.Stat("../config.example.yaml"); err != nil {
		t.Fatal(err)
	}
}
