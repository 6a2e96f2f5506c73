package fhirtest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestInstalled(t *testing.T) {
	write := func(t *testing.T, path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const lock = `{"packages":{"":{"name":"x"},"node_modules/a":{"version":"1.0.0"},"node_modules/@s/b":{"version":"2.0.0"}}}`
	tests := []struct {
		name   string
		hidden string // node_modules/.package-lock.json; "" for none
		files  []string
		want   bool
	}{
		{"no node_modules", "", nil, false},
		{"all there", `{"packages":{"node_modules/a":{"version":"1.0.0"},"node_modules/@s/b":{"version":"2.0.0"}}}`,
			[]string{"node_modules/a/package.json", "node_modules/@s/b/package.json"}, true},
		{"older version", `{"packages":{"node_modules/a":{"version":"0.9.0"},"node_modules/@s/b":{"version":"2.0.0"}}}`,
			[]string{"node_modules/a/package.json", "node_modules/@s/b/package.json"}, false},
		{"package missing on disk", `{"packages":{"node_modules/a":{"version":"1.0.0"},"node_modules/@s/b":{"version":"2.0.0"}}}`,
			[]string{"node_modules/a/package.json"}, false},
		{"package missing from npm's record", `{"packages":{"node_modules/a":{"version":"1.0.0"}}}`,
			[]string{"node_modules/a/package.json", "node_modules/@s/b/package.json"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, filepath.Join(dir, "package-lock.json"), lock)
			if tt.hidden != "" {
				write(t, filepath.Join(dir, "node_modules", ".package-lock.json"), tt.hidden)
			}
			for _, f := range tt.files {
				write(t, filepath.Join(dir, f), "{}")
			}
			want, err := readLock(filepath.Join(dir, "package-lock.json"))
			if err != nil {
				t.Fatal(err)
			}
			if got := installed(dir, want); got != tt.want {
				t.Errorf("installed = %v, want %v", got, tt.want)
			}
		})
	}
}
