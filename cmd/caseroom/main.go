// Command caseroom runs the caseroom appservice: it reads the config, opens the database, connects to the
// homeserver and serves the appservice API until SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/commands"
	"github.com/caseroom/caseroom/config"
	"github.com/caseroom/caseroom/store"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "0.1.0-dev"

// Exit codes, one per class of failure, so that supervisors and scripts can tell them apart.
const (
	exitOK         = 0
	exitUsage      = 2
	exitConfig     = 10
	exitDatabase   = 11
	exitHomeserver = 12
	exitListener   = 13
	exitEncryption = 14
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("caseroom", flag.ContinueOnError)
	flags.SetOutput(stderr)
	configPath := flags.String("c", "config.yaml", "path to the config file")
	registrationPath := flags.String("r", "registration.yaml", "path to the appservice registration file")
	generate := flags.Bool("g", false, "generate the registration (fresh tokens written into the config) and exit")
	writeExample := flags.Bool("e", false, "write the commented example config to the -c path and exit")
	showVersion := flags.Bool("v", false, "print the version and exit")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "Usage: caseroom [-c config.yaml] [-r registration.yaml] [-g | -e | -v]")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "caseroom: unexpected argument %q\n", flags.Arg(0))
		flags.Usage()
		return exitUsage
	}
	restrictUmask()
	switch {
	case *showVersion:
		fmt.Fprintf(stdout, "caseroom %s\n", Version)
		return exitOK
	case *writeExample:
		if err := config.WriteExample(*configPath); err != nil {
			fmt.Fprintf(stderr, "caseroom: %v\n", err)
			return exitConfig
		}
		fmt.Fprintf(stdout, "Wrote the example config to %s. Edit it, then run caseroom -g -c %s -r %s\n",
			*configPath, *configPath, *registrationPath)
		return exitOK
	case *generate:
		return generateRegistration(*configPath, *registrationPath, stdout, stderr)
	}

	cfg, err := config.Load(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "caseroom: invalid config %s:\n%v\n", *configPath, err)
		return exitConfig
	}
	log, closeLog, err := newLogger(cfg.Logging)
	if err != nil {
		fmt.Fprintf(stderr, "caseroom: %v\n", err)
		return exitConfig
	}
	defer closeLog()
	if err = cfg.EnsureDataDir(); err != nil {
		log.Err(err).Msg("Failed to create data directory")
		return exitConfig
	}

	stopProfile, err := startProfile()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	defer stopProfile()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx = log.WithContext(ctx)

	st, err := store.Open(ctx, store.Config{
		Type: cfg.Database.Type, URI: cfg.DatabaseURI(),
		MaxOpenConns: cfg.Database.MaxOpenConns, MaxIdleConns: cfg.Database.MaxIdleConns,
	}, log)
	if err != nil {
		log.Err(err).Msg("Failed to open database")
		return exitDatabase
	}
	defer st.Close()
	if err = tightenPermissions(cfg, log); err != nil {
		log.Err(err).Msg("Failed to make the data files private")
		return exitDatabase
	}

	b, err := bot.New(cfg, st, log)
	if err != nil {
		log.Err(err).Msg("Failed to set up the appservice")
		return exitConfig
	}
	b.Version = Version
	processor := commands.New()
	b.Handler = processor
	b.CommandSpecs = processor.Specs()
	ehrWork, err := newEHR(cfg.EHR, b, log)
	if err != nil {
		log.Err(err).Msg("Failed to set up the EHR connection")
		return exitConfig
	}
	if err = b.Start(ctx); err != nil {
		b.Stop()
		if errors.Is(err, bot.ErrHomeserver) {
			log.Err(err).Msg("Failed to connect to the homeserver")
			return exitHomeserver
		}
		if errors.Is(err, bot.ErrEncryption) {
			log.Err(err).Msg("Failed to set up end-to-end encryption")
			return exitEncryption
		}
		log.Err(err).Msg("Failed to start")
		return exitListener
	}
	outboxDone := make(chan struct{})
	go func() {
		defer close(outboxDone)
		if ehrWork != nil {
			ehrWork.Run(ctx)
		}
	}()
	<-ctx.Done()
	log.Info().Msg("Shutting down")
	b.Stop()
	<-outboxDone
	return exitOK
}

// generateRegistration fills the config's placeholder secrets and writes the registration for the homeserver: both
// files or neither. A config with other problems is refused before anything is written.
func generateRegistration(configPath, registrationPath string, stdout, stderr io.Writer) int {
	cfg, writeConfig, err := config.PrepareSecrets(configPath, false)
	if err != nil {
		fmt.Fprintf(stderr, "caseroom: %v\nNothing was written.\n", err)
		return exitConfig
	}
	// The registration is written next to its place and moved there once the config holds its tokens.
	tmp := registrationPath + ".tmp"
	if err = cfg.Registration().Save(tmp); err != nil {
		_ = os.Remove(tmp)
		fmt.Fprintf(stderr, "caseroom: failed to write registration: %v\nNothing was written.\n", err)
		return exitConfig
	}
	if err = writeConfig(); err != nil {
		_ = os.Remove(tmp)
		fmt.Fprintf(stderr, "caseroom: %v\nNothing was written.\n", err)
		return exitConfig
	}
	if err = os.Rename(tmp, registrationPath); err != nil {
		fmt.Fprintf(stderr, "caseroom: failed to move the registration into place: %v (it is in %s)\n", err, tmp)
		return exitConfig
	}
	fmt.Fprintf(stdout, "Wrote %s and stored its tokens in %s. Register it with your homeserver "+
		"(Synapse: app_service_config_files; Dendrite: app_service_api.config_files; Conduit: the register-appservice admin command).\n",
		registrationPath, configPath)
	return exitOK
}

func newLogger(cfg config.LoggingConfig) (zerolog.Logger, func(), error) {
	level, err := zerolog.ParseLevel(cfg.Level)
	if err != nil {
		return zerolog.Nop(), nil, fmt.Errorf("logging.level: %w", err)
	}
	var out io.Writer = os.Stderr
	closeFn := func() {}
	if cfg.File != "" {
		f, err := os.OpenFile(cfg.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return zerolog.Nop(), nil, fmt.Errorf("logging.file: %w", err)
		}
		out = f
		closeFn = func() { _ = f.Close() }
	}
	if cfg.Format == "pretty" {
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.DateTime, NoColor: cfg.File != ""}
	}
	out = redactingWriter{out: out}
	zerolog.TimestampFunc = func() time.Time { return time.Now().UTC() }
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00" // milliseconds: enough to follow one event through the log
	return zerolog.New(out).Level(level).With().Timestamp().Logger(), closeFn, nil
}
