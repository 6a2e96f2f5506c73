package main

import (
	"context"
	"fmt"
	"sync"

	"github.com/rs/zerolog"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/config"
	"github.com/caseroom/caseroom/ehr"
)

// JWKSPath is where the bot publishes the public key of SMART Backend Services (register
// <appservice.address>/caseroom/jwks.json with the EHR).
const JWKSPath = "/caseroom/jwks.json"

// ehrWorkers are the background workers of the EHR connection: the outbox (caseroom → EHR) and the poller of new
// results (EHR → case rooms).
type ehrWorkers struct {
	outbox *ehr.Outbox
	poller *ehr.Poller
}

// Run runs the workers until ctx ends.
func (w *ehrWorkers) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		w.outbox.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		w.poller.Run(ctx)
	}()
	wg.Wait()
}

// newEHR builds the FHIR client, the outbox worker and the poller of new results from the config, and registers
// the subscription endpoint when ehr.subscription_secret is set; it returns nil when no EHR is configured.
func newEHR(cfg config.EHRConfig, b *bot.Bot, log zerolog.Logger) (*ehrWorkers, error) {
	if cfg.URL == "" {
		return nil, nil
	}
	var auth ehr.Auth
	switch cfg.Auth.Mode {
	case config.EHRAuthBearer:
		auth = ehr.BearerAuth{Token: cfg.Auth.Token}
	case config.EHRAuthSmart:
		key, err := ehr.LoadPrivateKey(cfg.Auth.PrivateKeyFile)
		if err != nil {
			return nil, fmt.Errorf("ehr.auth.private_key_file: %w", err)
		}
		smart := &ehr.SMARTBackendAuth{ClientID: cfg.Auth.ClientID, TokenURL: cfg.Auth.TokenURL, Key: key}
		if _, err = smart.JWKS(); err != nil {
			return nil, fmt.Errorf("ehr.auth.private_key_file: %w", err)
		}
		b.Handle("GET "+JWKSPath, smart.JWKSHandler())
		auth = smart
	default:
		auth = ehr.NoAuth{}
	}
	client, err := ehr.New(ehr.Config{BaseURL: cfg.URL, Timeout: cfg.Timeout.Duration, Auth: auth})
	if err != nil {
		return nil, fmt.Errorf("ehr.url: %w", err)
	}
	outbox := &ehr.Outbox{Store: b.Store, Client: client, Wake: b.Wake, Log: log.With().Str("component", "ehr").Logger()}
	outbox.Observe = func(outcome string) { b.Metrics.EHRRequests.WithLabelValues(outcome).Inc() }
	b.KickEHR = outbox.Kick
	b.EHR = client
	poller := &ehr.Poller{
		Store: b.Store, Client: client, Wake: b.Wake, Log: log.With().Str("component", "ehr-poller").Logger(),
		Interval: cfg.PollInterval.Duration, Location: b.Config.Location(), Actor: b.Config.BotMXID(),
	}
	if cfg.SubscriptionSecret != "" {
		sub := &ehr.Subscription{Poller: poller, Secret: cfg.SubscriptionSecret, Log: log}
		b.Handle("POST "+ehr.SubscriptionPath, sub)
		b.Handle("PUT "+ehr.SubscriptionPath+"/{type}/{id}", sub)
	}
	return &ehrWorkers{outbox: outbox, poller: poller}, nil
}
