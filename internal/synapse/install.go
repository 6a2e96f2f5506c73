package synapse

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/caseroom/caseroom/internal/childproc"
)

// Version is the Synapse release (from PyPI) that caseroom tests and develops against.
const Version = "1.163.2"

// minPython is the oldest Python that Version supports.
const minPython = "3.10"

// VenvDir returns the virtualenv that holds Synapse Version under toolsDir.
func VenvDir(toolsDir string) string {
	return filepath.Join(toolsDir, "synapse-"+Version)
}

// EnsureInstalled returns the Python interpreter of a virtualenv under toolsDir that has Synapse Version installed,
// creating the virtualenv and running `pip install matrix-synapse==Version` first if needed. An exclusive lock on
// toolsDir/.synapse.lock keeps parallel callers (test binaries of several packages) from installing at the same
// time. A first install downloads about 60 MB of wheels and takes a minute or two.
func EnsureInstalled(ctx context.Context, toolsDir string) (python string, err error) {
	toolsDir, err = filepath.Abs(toolsDir)
	if err != nil {
		return "", err
	}
	venv := VenvDir(toolsDir)
	python = filepath.Join(venv, "bin", "python")
	if installed(ctx, python) {
		return python, nil
	}
	if err = os.MkdirAll(toolsDir, 0o755); err != nil {
		return "", fmt.Errorf("failed to create tools directory: %w", err)
	}
	unlock, err := childproc.LockFile(ctx, filepath.Join(toolsDir, ".synapse.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if installed(ctx, python) { // another process may have installed it while this one waited for the lock
		return python, nil
	}
	system, err := SystemPython(ctx)
	if err != nil {
		return "", err
	}
	// A half-made virtualenv (an install that was cut off) is made anew.
	if err = os.RemoveAll(venv); err != nil {
		return "", fmt.Errorf("failed to remove incomplete Synapse virtualenv: %w", err)
	}
	if out, err := exec.CommandContext(ctx, system, "-m", "venv", venv).CombinedOutput(); err != nil {
		return "", fmt.Errorf("failed to create a virtualenv for Synapse (Debian: apt-get install python3-venv): %w\n%s", err, out)
	}
	pip := exec.CommandContext(ctx, python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
		"matrix-synapse=="+Version)
	if out, err := pip.CombinedOutput(); err != nil {
		return "", fmt.Errorf("failed to install Synapse %s with pip: %w\n%s", Version, err, tail(out))
	}
	if !installed(ctx, python) {
		return "", fmt.Errorf("pip did not install Synapse %s into %s", Version, venv)
	}
	return python, nil
}

// installed reports whether python runs and imports Synapse Version.
func installed(ctx context.Context, python string) bool {
	if _, err := os.Stat(python); err != nil {
		return false
	}
	// The package's metadata, not synapse.__version__: that one appends git details of the working directory.
	out, err := exec.CommandContext(ctx, python, "-c",
		"import importlib.metadata, synapse; print(importlib.metadata.version('matrix-synapse'))").Output()
	return err == nil && strings.TrimSpace(string(out)) == Version
}

// SystemPython returns the python3 on PATH if it is Python 3.10 or newer, which Synapse needs.
func SystemPython(ctx context.Context) (string, error) {
	path, err := exec.LookPath("python3")
	if err != nil {
		return "", fmt.Errorf("synapse needs Python %s or newer, and python3 is not installed", minPython)
	}
	check := fmt.Sprintf("import sys; sys.exit(0 if sys.version_info >= (%s) else 1)", strings.ReplaceAll(minPython, ".", ", "))
	if err = exec.CommandContext(ctx, path, "-c", check).Run(); err != nil {
		version, _ := exec.CommandContext(ctx, path, "--version").CombinedOutput()
		return "", fmt.Errorf("synapse needs Python %s or newer, and python3 is %s", minPython, strings.TrimSpace(string(version)))
	}
	return path, nil
}

// tail returns the last lines of a command's output, for error messages.
func tail(out []byte) string {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
