// Package bot is caseroom's Matrix side: the appservice HTTP endpoint, the durable inbox, ordered per-room
// processing, membership (invites, kicks), sending, and end-to-end encryption (built with -tags goolm).
package bot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event/cmdschema"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"

	"github.com/caseroom/caseroom/config"
	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/store"
)

// MessageHandler handles the room messages the bot receives (commands, check-ins). It runs outside any database
// transaction; whatever it wants stored or sent it queues on the turn. Returning an error means "try again later"
// for transient errors (see IsTransient) and "this event failed" otherwise.
type MessageHandler interface {
	HandleMessage(ctx context.Context, turn *Turn) error
}

// MembershipHandler is told about membership changes in the bot's rooms (the bot's own too, after the bot has
// joined or noted its removal), so that what the database says about rooms follows what happens in them.
type MembershipHandler interface {
	HandleMembership(ctx context.Context, turn *Turn) error
}

// RedactionHandler is told when a message in one of the bot's rooms was redacted (deleted).
type RedactionHandler interface {
	HandleRedaction(ctx context.Context, turn *Turn, redacted id.EventID) error
}

// ReactionHandler is told about reactions (m.reaction annotations) in the bot's rooms, e.g. to acknowledge an alert.
type ReactionHandler interface {
	HandleReaction(ctx context.Context, turn *Turn) error
}

// PollResponseHandler is told about votes in polls (MSC3381 org.matrix.msc3381.poll.response), e.g. the answers to
// a guided check-in's questions. Like HandleMessage, it queues its effects on the turn.
type PollResponseHandler interface {
	HandlePollResponse(ctx context.Context, turn *Turn) error
}

// Bot is a running caseroom appservice.
type Bot struct {
	Config  *config.Config
	Store   *store.Store
	AS      *appservice.AppService
	Handler MessageHandler
	Log     zerolog.Logger
	Started time.Time
	Version string
	// Metrics are served at /metrics on the metrics listener (metrics.listen).
	Metrics *Metrics
	// EHR is the FHIR client, nil when no EHR is configured.
	EHR *ehr.Client
	// KickEHR, when set, makes the EHR outbox look for new records at once (called after turns that queued some).
	KickEHR func()
	// CommandSpecs are the MSC4391 command descriptions published in the rooms the bot creates or joins.
	CommandSpecs []*cmdschema.EventContent
	// Now is the clock of scheduled work (reminders, missed check-ins, alert escalations): time.Now, or in test
	// builds a clock the test controls.
	Now func() time.Time

	stateStore *sqlstatestore.SQLStateStore
	e2ee       encryption                   // nil without end-to-end encryption
	pushedTo   atomic.Pointer[pushReceiver] // the device that takes pushed crypto data, once it is ready

	roomVersionMu sync.Mutex
	roomVersion   id.RoomVersion // the homeserver's default room version, once asked (see defaultRoomVersion)
	proc          *processor
	server        *http.Server
	listener      net.Listener
	stopOnce      sync.Once
	routes        []route
	hsMu          sync.Mutex
	hsUp          bool
	hsCheckedAt   time.Time
	failMu        sync.Mutex
	failures      map[int64]int // inbox seq -> failed attempts, for giving up on events that fail for good
	resend        resendCheck   // messages queued before the start that may already be in their rooms (resend.go)
	sched         scheduler
	invites       recentInvites // whom the bot invited lately (roomcontrol.go)
	stop          context.CancelFunc
	ctx           context.Context

	// metricsServer serves /metrics on metrics.listen (nil when metrics share the appservice listener or are off).
	metricsServer *http.Server
}

// New prepares the bot: the appservice with its registration and the state store in the bot's database.
func New(cfg *config.Config, st *store.Store, log zerolog.Logger) (*Bot, error) {
	stateStore := sqlstatestore.NewSQLStateStore(st.DB, nil, false)
	as, err := appservice.CreateFull(appservice.CreateOpts{
		Registration:     cfg.Registration(),
		HomeserverDomain: cfg.Homeserver.Domain,
		HomeserverURL:    cfg.Homeserver.URL,
		StateStore:       stateStore,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create appservice: %w", err)
	}
	as.Log = log.With().Str("component", "appservice").Logger()
	b := &Bot{Config: cfg, Store: st, AS: as, Log: log, stateStore: stateStore, Metrics: newMetrics(st)}
	b.proc = newProcessor(b)
	b.Now = systemClock()
	return b, nil
}

// ErrHomeserver marks start-up failures caused by the homeserver (unreachable, refusing the appservice).
var ErrHomeserver = errors.New("homeserver not usable")

// Start upgrades the state store, starts the HTTP listener (so that the homeserver can deliver while the bot is
// still starting), checks the homeserver, registers the bot user, sets up its encryption device, and resumes
// processing what the inbox holds.
func (b *Bot) Start(ctx context.Context) error {
	b.Started = time.Now()
	b.ctx, b.stop = context.WithCancel(context.WithoutCancel(ctx))
	b.ctx = b.Log.WithContext(b.ctx)
	if err := b.stateStore.Upgrade(ctx); err != nil {
		return fmt.Errorf("failed to upgrade state store: %w", err)
	}
	if err := b.listen(); err != nil {
		return err
	}
	b.AS.Live = true
	if err := b.connectHomeserver(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrHomeserver, err)
	}
	if err := b.startEncryption(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrEncryption, err)
	}
	if err := b.proc.resume(b.ctx); err != nil {
		return fmt.Errorf("failed to resume processing: %w", err)
	}
	b.startScheduler()
	b.startPruner()
	if r, ok := b.Handler.(Reconciler); ok {
		go b.reconcileLoop(b.ctx, r)
	}
	b.AS.Ready = true
	b.Log.Info().Str("bot", b.Config.BotMXID().String()).Str("listen", b.Addr()).Msg("caseroom is ready")
	return nil
}

// connectHomeserver waits for the homeserver's /versions, pings the appservice connection only where the homeserver
// supports it (spec v1.7+), registers the bot user and sets its display name.
func (b *Bot) connectHomeserver(ctx context.Context) error {
	intent := b.AS.BotIntent()
	var versions *mautrix.RespVersions
	var err error
	for attempt := 0; ; attempt++ {
		versions, err = intent.Versions(ctx)
		if err == nil {
			break
		}
		if attempt >= 30 || ctx.Err() != nil {
			return fmt.Errorf("homeserver %s did not answer /versions: %w", b.Config.Homeserver.URL, err)
		}
		b.Log.Warn().Err(err).Msg("Homeserver not reachable yet, retrying")
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if versions.Supports(mautrix.FeatureAppservicePing) {
		intent.EnsureAppserviceConnection(ctx)
	}
	if err = intent.EnsureRegistered(ctx); err != nil {
		return fmt.Errorf("failed to register bot user: %w", err)
	}
	if err = intent.SetDisplayName(ctx, b.Config.Appservice.Bot.Displayname); err != nil {
		return fmt.Errorf("failed to set bot display name: %w", err)
	}
	return nil
}

// Addr is the address the HTTP listener is bound to.
func (b *Bot) Addr() string {
	if b.listener == nil {
		return ""
	}
	return b.listener.Addr().String()
}

// Stop stops accepting transactions and waits for the room workers and the encryption device's sync to finish what
// they are doing.
func (b *Bot) Stop() {
	b.stopOnce.Do(func() {
		b.AS.Ready = false
		for _, srv := range []*http.Server{b.server, b.metricsServer} {
			if srv != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = srv.Shutdown(ctx)
				cancel()
			}
		}
		if b.stop != nil {
			b.stop()
		}
		b.proc.wait()
		b.sched.wg.Wait()
		if b.e2ee != nil {
			b.e2ee.wait()
		}
	})
}

// Wake makes the bot send what is queued for a room (used by workers outside the event processing, such as the
// EHR outbox, after they queued a notice).
func (b *Bot) Wake(roomID id.RoomID) {
	b.proc.wake(roomID)
}

// Handle adds an HTTP route to the bot's listener (e.g. the JWKS of SMART Backend Services). Call it before Start.
func (b *Bot) Handle(pattern string, handler http.Handler) {
	b.routes = append(b.routes, route{pattern, handler})
}

type route struct {
	pattern string
	handler http.Handler
}

// BotID is the bot's Matrix user ID.
func (b *Bot) BotID() id.UserID {
	return b.AS.BotMXID()
}
