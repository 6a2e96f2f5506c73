//go:build goolm

package bot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/store"
)

// Names under which secrets are sealed (see secretSealer).
const (
	sealAccessToken = "access_token"
	sealRecoveryKey = "recovery_key"
)

// How long decrypting waits for a room key that has not arrived yet: first for the key the sender's client sends
// along with its message, then, after asking the sender's devices for it, a little longer.
const (
	roomKeyWait        = 4 * time.Second
	roomKeyRequestWait = 6 * time.Second
)

// encryptionBuilt says whether this build has end-to-end encryption.
const encryptionBuilt = true

// deviceDisplayName is the display name of the bot's device in users' device lists.
const deviceDisplayName = "caseroom"

// deviceSyncFilter keeps the device's /sync down to what end-to-end encryption needs: to-device events (room keys),
// device list changes and one-time key counts, which no filter removes. Room events are left out — the appservice
// transactions deliver them, and the processor keeps the state store up to date — except redactions: Dendrite never
// pushes those to appservices, so the device's sync puts them into the inbox (deduplicated by event ID, so a
// homeserver that does push them causes no second processing).
const deviceSyncFilter = `{
	"presence": {"types": []},
	"account_data": {"types": []},
	"room": {
		"timeline": {"types": ["m.room.redaction"], "limit": 100},
		"state": {"types": []},
		"ephemeral": {"types": []},
		"account_data": {"types": []}
	}
}`

// cryptoDevice is the bot's end-to-end encryption device: a real device of the bot user with its own access token,
// made once by logging in with the appservice token and reused after restarts. Its olm account, megolm sessions and
// sync token live in the bot's database (mautrix's crypto store, pickled with encryption.pickle_key). Dendrite pushes
// no to-device events to appservices, so the device runs its own /sync for them.
type cryptoDevice struct {
	bot    *Bot
	cli    *mautrix.Client
	helper *cryptohelper.CryptoHelper
	mach   *crypto.OlmMachine
	sealer *secretSealer
	done   chan struct{}

	// awaited holds the megolm sessions whose room key the device waited for in vain (decryptOrPark), and when:
	// another event of such a session is answered at once instead of waiting again.
	awaitedMu sync.Mutex
	awaited   map[string]time.Time
}

var _ encryption = (*cryptoDevice)(nil)

// startEncryption sets up the bot's device (logging in on first start), loads its crypto state, makes sure the device
// is cross-signed, and starts the device's /sync loop, which runs until the bot stops.
func (b *Bot) startEncryption(ctx context.Context) error {
	log := b.Log.With().Str("component", "crypto").Logger()
	ctx = log.WithContext(ctx)
	d := &cryptoDevice{bot: b, sealer: newSecretSealer(b.Config.Encryption.PickleKey), done: make(chan struct{})}
	stored, err := b.Store.Device.Get(ctx, b.BotID())
	if err != nil {
		return err
	}
	if err = d.connect(ctx, stored); err != nil {
		return err
	}
	log = log.With().Stringer("device_id", d.cli.DeviceID).Logger()
	ctx = log.WithContext(ctx)
	d.cli.Log = b.Log // the crypto helper adds its component
	d.helper, err = cryptohelper.NewCryptoHelper(d.cli, []byte(b.Config.Encryption.PickleKey), b.Store.DB)
	if err != nil {
		return fmt.Errorf("failed to set up crypto helper: %w", err)
	}
	// The crypto store keeps the olm account of each device apart, so a new device never trips over an old one.
	d.helper.DBAccountID = d.cli.DeviceID.String()
	if err = d.helper.Init(ctx); err != nil {
		return fmt.Errorf("failed to load crypto state of device %s: %w", d.cli.DeviceID, err)
	}
	d.mach = d.helper.Machine()
	d.mach.SetBackgroundCtx(b.ctx)
	d.cli.Crypto = d.helper

	var sealedRecoveryKey string
	if stored != nil {
		sealedRecoveryKey = stored.SealedRecoveryKey
	}
	if err = d.ensureCrossSigned(ctx, sealedRecoveryKey); err != nil {
		return err
	}
	filterID, err := d.createSyncFilter(ctx)
	if err != nil {
		return err
	}
	receiver := pushReceiver(d)
	b.pushedTo.Store(&receiver)
	go d.syncLoop(log.WithContext(b.ctx), filterID)
	b.e2ee = d
	log.Info().Msg("End-to-end encryption ready")
	return nil
}

// connect makes the device's client from the stored device, or logs in with the appservice token to make a device
// when there is none or the homeserver no longer knows the stored one.
func (d *cryptoDevice) connect(ctx context.Context, stored *store.BotDevice) error {
	log := zerolog.Ctx(ctx)
	cfg := d.bot.Config
	if stored != nil {
		token, err := d.sealer.open(sealAccessToken, stored.SealedAccessToken)
		if err != nil {
			return fmt.Errorf("failed to read the stored access token of device %s: %w", stored.DeviceID, err)
		}
		d.cli, err = d.newClient(stored.DeviceID, token)
		if err != nil {
			return err
		}
		whoami, err := d.cli.Whoami(ctx)
		switch {
		case err == nil && (whoami.DeviceID == "" || whoami.DeviceID == stored.DeviceID):
			log.Debug().Stringer("device_id", stored.DeviceID).Msg("Using the stored bot device")
			return nil
		case errors.Is(err, mautrix.MUnknownToken):
			log.Warn().Stringer("old_device_id", stored.DeviceID).
				Msg("The homeserver no longer knows the bot's device (logged out?); making a new one")
		case err != nil:
			return fmt.Errorf("failed to check the bot device's access token: %w", err)
		default:
			return fmt.Errorf("the stored access token belongs to device %s, not %s", whoami.DeviceID, stored.DeviceID)
		}
	}
	loginCli, err := mautrix.NewClient(cfg.Homeserver.URL, d.bot.BotID(), cfg.Appservice.ASToken)
	if err != nil {
		return err
	}
	resp, err := loginCli.Login(ctx, &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypeAppservice,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: cfg.Appservice.Bot.Username},
		InitialDeviceDisplayName: deviceDisplayName,
	})
	if err != nil {
		return fmt.Errorf("failed to log in the bot to get a device: %w", err)
	}
	if resp.UserID != "" && resp.UserID != d.bot.BotID() {
		return fmt.Errorf("logging in as the bot gave a device of %s", resp.UserID)
	}
	err = d.bot.Store.Device.Put(ctx, &store.BotDevice{
		UserID: d.bot.BotID(), DeviceID: resp.DeviceID, SealedAccessToken: d.sealer.seal(sealAccessToken, resp.AccessToken),
	})
	if err != nil {
		return err
	}
	log.Info().Stringer("device_id", resp.DeviceID).Msg("Logged in the bot's new device")
	d.cli, err = d.newClient(resp.DeviceID, resp.AccessToken)
	return err
}

func (d *cryptoDevice) newClient(deviceID id.DeviceID, accessToken string) (*mautrix.Client, error) {
	cli, err := mautrix.NewClient(d.bot.Config.Homeserver.URL, d.bot.BotID(), accessToken)
	if err != nil {
		return nil, fmt.Errorf("failed to make the device's client: %w", err)
	}
	cli.DeviceID = deviceID
	cli.StateStore = joinedOnlyStateStore{d.bot.stateStore, d.bot} // room keys: see joinedOnlyStateStore
	cli.SyncTraceLog = true
	return cli, nil
}

func (d *cryptoDevice) createSyncFilter(ctx context.Context) (string, error) {
	var resp mautrix.RespCreateFilter
	url := d.cli.BuildClientURL("v3", "user", d.cli.UserID, "filter")
	if _, err := d.cli.MakeRequest(ctx, http.MethodPost, url, json.RawMessage(deviceSyncFilter), &resp); err != nil {
		return "", fmt.Errorf("failed to create the device's sync filter: %w", err)
	}
	return resp.FilterID, nil
}

// syncRefusalsBeforeGivingUp is how many internal errors in a row, without any /sync ever answered, make the device
// stop syncing (see syncLoop).
const syncRefusalsBeforeGivingUp = 3

// syncLoop runs the device's /sync until ctx ends, handing to-device events, device list changes and one-time key
// counts to the crypto machine. The sync token is stored after each response, so a restart continues where it was.
func (d *cryptoDevice) syncLoop(ctx context.Context, filterID string) {
	defer close(d.done)
	log := zerolog.Ctx(ctx)
	since, err := d.cli.Store.LoadNextBatch(ctx, d.cli.UserID)
	if err != nil {
		log.Warn().Err(err).Msg("Failed to load the device's sync token, starting from scratch")
	}
	backoff := time.Second
	synced, refusals := false, 0
	for ctx.Err() == nil {
		resp, err := d.cli.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 30000, Since: since, FilterID: filterID})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// Synapse serves no /sync to appservice users (an internal error, every time) and pushes the device's
			// to-device events, device lists and key counts in transactions instead (see pushedCrypto).
			if refusals = refusals + 1; !isInternalError(err) {
				refusals = 0
			}
			if !synced && refusals >= syncRefusalsBeforeGivingUp {
				log.Info().Msg("The homeserver does not serve /sync to the bot's device; using the to-device events " +
					"and device lists it pushes in transactions (MSC2409, MSC3202) instead")
				return
			}
			log.Warn().Err(err).Dur("retry_in", backoff).Msg("Device sync failed, will retry")
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		backoff, synced, refusals = time.Second, true, 0
		// A response is handled completely even when the bot is stopping, so that no room key is lost.
		procCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		d.mach.ProcessSyncResponse(procCtx, resp, since)
		if err = d.storeRoomEvents(procCtx, resp); err != nil {
			cancel()
			log.Warn().Err(err).Msg("Failed to store room events from the device's sync, will retry")
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			continue
		}
		if err = d.cli.Store.SaveNextBatch(procCtx, d.cli.UserID, resp.NextBatch); err != nil {
			log.Warn().Err(err).Msg("Failed to store the device's sync token")
		}
		cancel()
		since = resp.NextBatch
	}
}

// storeRoomEvents puts the room events of a device sync (redactions, see deviceSyncFilter) into the inbox and wakes
// their rooms.
func (d *cryptoDevice) storeRoomEvents(ctx context.Context, resp *mautrix.RespSync) error {
	var events []*store.InboxEvent
	now := time.Now()
	for roomID, room := range resp.Rooms.Join {
		for _, evt := range room.Timeline.Events {
			if evt.Type != event.EventRedaction || evt.Sender == d.bot.BotID() {
				continue
			}
			evt.RoomID = roomID
			raw, err := json.Marshal(evt)
			if err != nil {
				return err
			}
			events = append(events, &store.InboxEvent{EventID: evt.ID, RoomID: roomID, Sender: evt.Sender, Type: evt.Type.Type,
				OriginTS: evt.Timestamp, Raw: raw, ReceivedAt: now})
		}
	}
	rooms, err := d.bot.Store.Inbox.Add(ctx, events)
	if err != nil {
		return err
	}
	for _, roomID := range rooms {
		d.bot.proc.wake(roomID)
	}
	return nil
}

func (d *cryptoDevice) decrypt(ctx context.Context, evt *event.Event) (*event.Event, error) {
	decrypted, err := d.helper.Decrypt(ctx, evt)
	if !errors.Is(err, crypto.ErrNoSessionFound) {
		return decrypted, err
	}
	if !d.waitForRoomKey(ctx, evt) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w within %s", crypto.ErrNoSessionFound, roomKeyWait+roomKeyRequestWait)
	}
	return d.helper.Decrypt(ctx, evt)
}

// handlePushed gives the crypto machine what the homeserver pushed for the bot's device in a transaction (see
// pushedCrypto), before the transaction is acknowledged: a room key is never lost to a crash, and one that is
// handled twice (the transaction sent again) is recognised by the crypto store.
func (d *cryptoDevice) handlePushed(ctx context.Context, pushed *pushedCrypto) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if pushed.DeviceLists != nil {
		d.mach.HandleDeviceLists(ctx, pushed.DeviceLists, "")
	}
	toDevice, otk := pushed.forDevice(d.cli.UserID, d.cli.DeviceID)
	for _, evt := range toDevice {
		d.mach.HandleToDeviceEvent(ctx, evt)
	}
	if otk != nil {
		d.mach.HandleOTKCounts(ctx, otk)
	}
	d.mach.MarkOlmHashSavePoint(ctx)
	if len(toDevice) > 0 || otk != nil {
		d.bot.Log.Debug().Str("component", "crypto").Int("to_device", len(toDevice)).Bool("otk_counts", otk != nil).
			Msg("Handled crypto data pushed in a transaction")
	}
}

// awaitedFor is how long a session whose key never came is remembered (so its next events get their notice at
// once), and awaitedMax how many such sessions are remembered at most.
const (
	awaitedFor = 10 * time.Minute
	awaitedMax = 10000
)

func (d *cryptoDevice) decryptOrPark(ctx context.Context, evt *event.Event) (*event.Event, error) {
	decrypted, err := d.helper.Decrypt(ctx, evt)
	content := evt.Content.AsEncrypted()
	key := content.SenderKey.String() + "|" + content.SessionID.String()
	if !errors.Is(err, crypto.ErrNoSessionFound) {
		if err == nil {
			d.awaitedMu.Lock()
			delete(d.awaited, key)
			d.awaitedMu.Unlock()
		}
		return decrypted, err
	}
	d.awaitedMu.Lock()
	at, waited := d.awaited[key]
	d.awaitedMu.Unlock()
	if waited && time.Since(at) < awaitedFor {
		return nil, fmt.Errorf("%w (waited %s for it)", crypto.ErrNoSessionFound, roomKeyWait+roomKeyRequestWait)
	}
	return nil, &awaitRoomKey{wait: func(ctx context.Context) {
		if d.waitForRoomKey(ctx, evt) || ctx.Err() != nil {
			return
		}
		d.awaitedMu.Lock()
		defer d.awaitedMu.Unlock()
		if d.awaited == nil {
			d.awaited = make(map[string]time.Time)
		}
		if len(d.awaited) >= awaitedMax {
			for k, t := range d.awaited {
				if time.Since(t) >= awaitedFor || len(d.awaited) >= awaitedMax {
					delete(d.awaited, k)
				}
			}
		}
		d.awaited[key] = time.Now()
	}}
}

// waitForRoomKey waits for the room key of an encrypted event, first for the one its sender's client sends along,
// then, after asking the sender's devices for it, a little longer. It reports whether the key arrived.
func (d *cryptoDevice) waitForRoomKey(ctx context.Context, evt *event.Event) bool {
	content := evt.Content.AsEncrypted()
	log := zerolog.Ctx(ctx).With().Stringer("event_id", evt.ID).Stringer("session_id", content.SessionID).Logger()
	log.Debug().Msg("Room key has not arrived yet, waiting for it")
	if d.helper.WaitForSession(ctx, evt.RoomID, content.SenderKey, content.SessionID, roomKeyWait) {
		return true
	}
	if ctx.Err() != nil {
		return false
	}
	log.Debug().Msg("Room key still missing, asking the sender's devices for it")
	//lint:ignore SA1019 an empty device ID asks all of the sender's devices
	d.helper.RequestSession(ctx, evt.RoomID, content.SenderKey, content.SessionID, evt.Sender, content.DeviceID)
	return d.helper.WaitForSession(ctx, evt.RoomID, content.SenderKey, content.SessionID, roomKeyRequestWait)
}

func (d *cryptoDevice) client() *mautrix.Client {
	return d.cli
}

func (d *cryptoDevice) trackRoomEvent(ctx context.Context, evt *event.Event) {
	switch evt.Type {
	case event.StateMember:
		d.mach.HandleMemberEvent(ctx, evt)
		// Invited users mostly get no room keys (joinedOnlyStateStore), and mautrix keeps the room's session when an
		// invited user joins: start a new one, shared with the new member, for what is sent from now on.
		if evt.Content.AsMember().Membership == event.MembershipJoin && prevMembership(evt) != event.MembershipJoin {
			if err := d.mach.CryptoStore.RemoveOutboundGroupSession(ctx, evt.RoomID); err != nil {
				zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to end the room's outgoing megolm session after a join")
			}
		}
	case event.StateHistoryVisibility:
		d.mach.HandleHistoryVisibility(ctx, evt)
	}
}

// prevMembership is the membership a member event replaced, "" when the event does not say.
func prevMembership(evt *event.Event) event.Membership {
	if evt.Unsigned.PrevContent == nil {
		return ""
	}
	_ = evt.Unsigned.PrevContent.ParseRaw(evt.Type)
	if prev := evt.Unsigned.PrevContent.AsMember(); prev != nil {
		return prev.Membership
	}
	return ""
}

func (d *cryptoDevice) wait() {
	<-d.done
}
