package dendrite

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/caseroom/caseroom/internal/childproc"
	"github.com/caseroom/caseroom/internal/homeserver"
)

// Version is the Dendrite release that caseroom tests and develops against.
const Version = "v0.13.8"

// dendriteModule is the Go module the binaries are installed from.
const dendriteModule = "github.com/matrix-org/dendrite"

// Binaries holds the paths of the Dendrite programs.
type Binaries struct {
	Dendrite       string
	GenerateConfig string
	GenerateKeys   string
}

// ToolsDirEnv names the environment variable that overrides DefaultToolsDir.
const ToolsDirEnv = homeserver.ToolsDirEnv

// DefaultToolsDir returns the directory that holds the project's tools (see homeserver.DefaultToolsDir).
func DefaultToolsDir() (string, error) {
	return homeserver.DefaultToolsDir()
}

// binariesIn returns the paths the Dendrite programs have in toolsDir/bin.
func binariesIn(toolsDir string) Binaries {
	bin := filepath.Join(toolsDir, "bin")
	return Binaries{
		Dendrite:       filepath.Join(bin, "dendrite"),
		GenerateConfig: filepath.Join(bin, "generate-config"),
		GenerateKeys:   filepath.Join(bin, "generate-keys"),
	}
}

func (b Binaries) all() []string {
	return []string{b.Dendrite, b.GenerateConfig, b.GenerateKeys}
}

// installed reports whether every binary exists and was built from Dendrite at Version.
func (b Binaries) installed() bool {
	for _, path := range b.all() {
		info, err := buildinfo.ReadFile(path)
		if err != nil || info.Main.Path != dendriteModule || info.Main.Version != Version {
			return false
		}
	}
	return true
}

// EnsureBinaries returns the Dendrite programs in toolsDir/bin, installing them with `go install` first if they are
// missing or of another version. An exclusive lock on toolsDir/.lock keeps parallel callers (test binaries of
// several packages) from building at the same time. A cold build takes a few minutes on two cores.
func EnsureBinaries(ctx context.Context, toolsDir string) (Binaries, error) {
	toolsDir, err := filepath.Abs(toolsDir)
	if err != nil {
		return Binaries{}, err
	}
	bins := binariesIn(toolsDir)
	if bins.installed() {
		return bins, nil
	}
	if err = os.MkdirAll(toolsDir, 0o755); err != nil {
		return Binaries{}, fmt.Errorf("failed to create tools directory: %w", err)
	}
	unlock, err := childproc.LockFile(ctx, filepath.Join(toolsDir, ".lock"))
	if err != nil {
		return Binaries{}, err
	}
	defer unlock()
	// Another process may have installed them while this one waited for the lock.
	if bins.installed() {
		return bins, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return Binaries{}, fmt.Errorf("failed to find the go command to install Dendrite: %w", err)
	}
	args := []string{"install"}
	for _, cmd := range []string{"dendrite", "generate-config", "generate-keys"} {
		args = append(args, dendriteModule+"/cmd/"+cmd+"@"+Version)
	}
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = toolsDir
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Join(toolsDir, "bin"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("failed to install Dendrite %s: %w\n%s", Version, err, out)
	}
	if !bins.installed() {
		return Binaries{}, fmt.Errorf("go install did not produce Dendrite %s binaries in %s", Version, filepath.Dir(bins.Dendrite))
	}
	return bins, nil
}
