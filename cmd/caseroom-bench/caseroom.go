package main

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.mau.fi/util/random"
	"gopkg.in/yaml.v3"

	"github.com/caseroom/caseroom/config"
	"github.com/caseroom/caseroom/internal/childproc"
	"github.com/caseroom/caseroom/internal/homeserver"

	_ "github.com/lib/pq" // create and drop the per-run PostgreSQL database
)

// database is caseroom's database for one engine run.
type database struct {
	Type string // database.type in caseroom's config
	URI  string
	drop func()
}

// createDatabase makes an empty database: a SQLite file in dir, or a new PostgreSQL database next to the
// maintenance database at adminURL, dropped again by drop.
func createDatabase(ctx context.Context, eng engine, dir, adminURL string) (*database, error) {
	if eng == engineSQLite {
		return &database{
			Type: config.DBTypeSQLite,
			URI:  "file:" + filepath.Join(dir, "caseroom.db") + "?_txlock=immediate",
			drop: func() {},
		}, nil
	}
	u, err := url.Parse(adminURL)
	if err != nil || u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return nil, fmt.Errorf("-postgres must be a postgres:// URL")
	}
	admin, err := sql.Open("postgres", adminURL)
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err = admin.PingContext(pingCtx); err != nil {
		_ = admin.Close()
		return nil, fmt.Errorf("PostgreSQL at %s://%s is not reachable: %w", u.Scheme, u.Host, err)
	}
	name := "caseroom_bench_" + strings.ToLower(random.String(10))
	if _, err = admin.ExecContext(pingCtx, "CREATE DATABASE "+name); err != nil {
		_ = admin.Close()
		return nil, fmt.Errorf("failed to create database %s: %w", name, err)
	}
	u.Path = "/" + name
	return &database{
		Type: config.DBTypePostgres,
		URI:  u.String(),
		drop: func() {
			// The run's context may be cancelled by now (Ctrl-C): dropping must still happen.
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
				fmt.Fprintf(os.Stderr, "caseroom-bench: failed to drop database %s: %v\n", name, err)
			}
			_ = admin.Close()
		},
	}, nil
}

// caseroomSetup is caseroom's config and registration for one engine run.
type caseroomSetup struct {
	Config           *config.Config
	ConfigPath       string
	RegistrationPath string
	BotURL           string // the appservice listener
	LogPath          string
	Env              []string // added to caseroom's environment
}

// writeCaseroomConfig writes a config the way an operator would (production logging: info, JSON, to a file) and
// the registration caseroom derives from it.
func writeCaseroomConfig(dir, hsURL, domain string, db *database, ehrURL string) (*caseroomSetup, error) {
	port, err := homeserver.FreePort()
	if err != nil {
		return nil, err
	}
	s := &caseroomSetup{
		ConfigPath:       filepath.Join(dir, "caseroom.yaml"),
		RegistrationPath: filepath.Join(dir, "caseroom-registration.yaml"),
		BotURL:           fmt.Sprintf("http://127.0.0.1:%d", port),
		LogPath:          filepath.Join(dir, "caseroom.log"),
	}
	doc := map[string]any{
		"homeserver": map[string]any{"url": hsURL, "domain": domain},
		"appservice": map[string]any{
			"id": "caseroom", "address": s.BotURL, "listen": fmt.Sprintf("127.0.0.1:%d", port),
			"as_token": random.String(64), "hs_token": random.String(64),
		},
		"database": map[string]any{"type": db.Type, "uri": db.URI},
		"data_dir": filepath.Join(dir, "caseroom-data"),
		"admins":   []string{"@bench_admin:" + domain},
		"logging":  map[string]any{"level": "info", "format": "json", "file": s.LogPath},
		"encryption": map[string]any{
			"pickle_key": random.String(64),
		},
		"ehr": map[string]any{"url": ehrURL, "timeout": "10s"},
		// On the appservice listener, so that no fixed port can collide.
		"metrics": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", port)},
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	if err = os.WriteFile(s.ConfigPath, out, 0o600); err != nil {
		return nil, err
	}
	if s.Config, err = config.Load(s.ConfigPath); err != nil {
		return nil, fmt.Errorf("the benchmark's caseroom config is invalid: %w", err)
	}
	if err = s.Config.Registration().Save(s.RegistrationPath); err != nil {
		return nil, fmt.Errorf("failed to write caseroom's registration: %w", err)
	}
	return s, nil
}

// caseroomProcess is one run of the caseroom binary.
type caseroomProcess struct {
	proc       *childproc.Process
	readyAfter time.Duration // from just before exec to the first 200 from /_matrix/mau/ready
	logPath    string
}

// start runs caseroom and waits until /_matrix/mau/ready answers 200, polling every 2 ms so that the start-up time
// is measured to a few milliseconds. caseroom runs in a process group of its own, so that a terminal's Ctrl-C
// reaches only the bench, which stops caseroom in order.
func (s *caseroomSetup) start(ctx context.Context, binary string) (*caseroomProcess, error) {
	logFile, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own copy
	cmd := exec.Command(binary, "-c", s.ConfigPath, "-r", s.RegistrationPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if len(s.Env) > 0 {
		cmd.Env = append(os.Environ(), s.Env...)
	}
	p := &caseroomProcess{logPath: s.LogPath}

	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	readyURL := s.BotURL + "/_matrix/mau/ready"
	begin := time.Now()
	if p.proc, err = childproc.Start(cmd, nil); err != nil {
		return nil, fmt.Errorf("failed to start caseroom: %w", err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	err = childproc.WaitReady(waitCtx, client, readyURL, 2*time.Millisecond, p.proc.Done())
	switch {
	case err == nil:
		p.readyAfter = time.Since(begin)
		return p, nil
	case errors.Is(err, childproc.ErrExited):
		return nil, fmt.Errorf("caseroom exited during start-up (%v); see %s", p.proc.Err(), s.LogPath)
	case ctx.Err() != nil:
		_ = p.stop()
		return nil, context.Cause(ctx)
	default:
		_ = p.stop()
		return nil, fmt.Errorf("caseroom was not ready within %s; see %s", readyTimeout, s.LogPath)
	}
}

// stop sends SIGTERM and waits; after caseroomStopIn it kills. An unclean end is an error (the run's numbers
// are still good, but the operator should look at the log).
func (p *caseroomProcess) stop() error {
	select {
	case <-p.proc.Done():
		return nil
	default:
	}
	if p.proc.Stop(caseroomStopIn) {
		return fmt.Errorf("caseroom did not stop within %s of SIGTERM and was killed; see %s", caseroomStopIn, p.logPath)
	}
	if err := p.proc.Err(); err != nil {
		return fmt.Errorf("caseroom exited uncleanly (%v); see %s", err, p.logPath)
	}
	return nil
}

// memory reads the resident set size now (VmRSS) and its peak over the process's life (VmHWM), in KiB.
func (p *caseroomProcess) memory() (rssKiB, peakKiB int64, err error) {
	select {
	case <-p.proc.Done():
		return 0, 0, fmt.Errorf("caseroom exited during the benchmark (%v); see %s", p.proc.Err(), p.logPath)
	default:
	}
	return readMemory(p.proc.Pid())
}

func readMemory(pid int) (rssKiB, peakKiB int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("failed to read memory of process %d: %w", pid, err)
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		key, value, ok := strings.Cut(scanner.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("unexpected %s line in /proc/%d/status: %q", key, pid, scanner.Text())
		}
		if key == "VmRSS" {
			rssKiB = n
		} else {
			peakKiB = n
		}
	}
	if rssKiB == 0 || peakKiB == 0 {
		return 0, 0, errors.Join(scanner.Err(), fmt.Errorf("no VmRSS/VmHWM in /proc/%d/status", pid))
	}
	return rssKiB, peakKiB, nil
}
