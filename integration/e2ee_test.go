//go:build goolm

package integration

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.mau.fi/util/random"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/dendrite"
)

// TestE2EEPingCrossSigningAndRestart talks to the bot in an encrypted room from a client with its own encryption:
// the bot's greeting and replies arrive encrypted and decrypt, its device is signed by its own self-signing key, and
// after a restart it is the same device with the same keys and still answers.
func TestE2EEPingCrossSigningAndRestart(t *testing.T) {
	w := getWorld(t)
	botMXID := id.NewUserID(w.reg.SenderLocalpart, w.hsA.ServerName)
	password := giveBotPassword(t, w, botMXID)
	bot := startBot(t, map[string]any{"encryption": map[string]any{"bot_password": password}})
	alice := newUser(t, w.hsA, "alice")
	room := alice.EncryptedRoomWithBot(botMXID)
	greeting := alice.WaitFor(20*time.Second, "the greeting", func(evt *event.Event) bool {
		return evt.Sender == botMXID && evt.RoomID == room && evt.Type == event.EventMessage
	})
	alice.requireArrivedEncrypted(greeting)

	alice.pingEncrypted(room, botMXID)
	deviceID := botDeviceID(t, bot)
	if trust := alice.trustOf(botMXID, deviceID); trust != id.TrustStateCrossSignedTOFU && trust != id.TrustStateCrossSignedVerified {
		t.Fatalf("the bot's device %s is %s to another user, want cross-signed", deviceID, trust)
	}
	before := alice.botKeys(botMXID)
	if before.devices[deviceID] == "" {
		t.Fatalf("the bot's device %s is not in /keys/query", deviceID)
	}

	bot.stop()
	bot.start()
	if again := botDeviceID(t, bot); again != deviceID {
		t.Fatalf("device after restart = %s, want the same device %s", again, deviceID)
	}
	after := alice.botKeys(botMXID)
	if after.master != before.master || len(after.devices) != len(before.devices) ||
		after.devices[deviceID] != before.devices[deviceID] {
		t.Fatalf("the restart changed the bot's keys: before %+v, after %+v", before, after)
	}
	alice.pingEncrypted(room, botMXID)

	// A device the homeserver no longer knows (logged out) is replaced by a new one, which is cross-signed with the
	// recovery key the bot stored when it made its keys: no password needed.
	bot.stop()
	logOutAllDevices(t, w, password)
	removeConfigKey(t, bot.cfgPath, "encryption", "bot_password")
	bot.start()
	newDeviceID := botDeviceID(t, bot)
	if newDeviceID == deviceID {
		t.Fatalf("the bot kept device %s after it was logged out", deviceID)
	}
	if trust := alice.trustOf(botMXID, newDeviceID); trust != id.TrustStateCrossSignedTOFU && trust != id.TrustStateCrossSignedVerified {
		t.Fatalf("the bot's new device %s is %s to another user, want cross-signed", newDeviceID, trust)
	}
	if keys := alice.botKeys(botMXID); keys.master != before.master {
		t.Fatalf("the new device came with new cross-signing keys")
	}
	alice.pingEncrypted(room, botMXID)

	if log := bot.Log(); strings.Contains(log, password) {
		t.Error("the bot's log contains its password")
	}
	var token, recoveryKey string
	if err := bot.db().QueryRow("SELECT access_token, recovery_key FROM bot_device").Scan(&token, &recoveryKey); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(token, "v1:") || !strings.HasPrefix(recoveryKey, "v1:") {
		t.Errorf("the bot's access token and recovery key are not stored sealed")
	}
}

// TestE2EEUndecryptableMessageGetsNotice sends an encrypted message whose room key the bot never gets: the bot must
// say so instead of staying silent.
func TestE2EEUndecryptableMessageGetsNotice(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		botMXID := on.hs.UserID(on.target.reg.SenderLocalpart)
		startBotOn(t, on.target, nil)
		alice := newUser(t, on.hs, "alice")
		room := alice.EncryptedRoomWithBot(botMXID)
		own := alice.CryptoHelper.Machine().OwnIdentity()
		resp, err := alice.SendMessageEvent(context.Background(), room, event.EventEncrypted, &event.EncryptedEventContent{
			Algorithm:        id.AlgorithmMegolmV1,
			SenderKey:        own.IdentityKey,
			DeviceID:         own.DeviceID,
			SessionID:        id.SessionID(strings.Repeat("A", 43)),
			MegolmCiphertext: []byte(strings.Repeat("A", 120)), // well-formed, of a session nobody shared
		}, mautrix.ReqSendEvent{DontEncrypt: true})
		if err != nil {
			t.Fatal(err)
		}
		notice := alice.WaitFor(30*time.Second, "the undecryptable notice", func(evt *event.Event) bool {
			return evt.Sender == botMXID && evt.Type == event.EventMessage &&
				evt.Content.AsMessage().RelatesTo.GetReplyTo() == resp.EventID
		})
		alice.requireArrivedEncrypted(notice)
		if body := notice.Content.AsMessage().Body; !strings.Contains(body, "couldn't decrypt") || !strings.Contains(body, "unverified devices") {
			t.Fatalf("notice = %q, want it to say the message could not be decrypted and what to do", body)
		}
	})
}

// giveBotPassword gives the bot account a password through Dendrite's admin API, which Dendrite's password prompt
// for uploading cross-signing keys needs, and returns it.
func giveBotPassword(t *testing.T, w *world, botMXID id.UserID) string {
	t.Helper()
	ctx := context.Background()
	// The bot registers itself when it starts; register it here in case no bot ran yet in this world.
	asCli, err := mautrix.NewClient(w.hsA.URL, "", w.reg.AppToken)
	if err != nil {
		t.Fatal(err)
	}
	req := map[string]any{"type": mautrix.AuthTypeAppservice, "username": w.reg.SenderLocalpart, "inhibit_login": true}
	_, err = asCli.MakeRequest(ctx, http.MethodPost, asCli.BuildClientURL("v3", "register"), req, nil)
	if err != nil && !errors.Is(err, mautrix.MUserInUse) {
		t.Fatalf("failed to register the bot user: %v", err)
	}
	admin, err := w.hsA.RegisterUser(ctx, "admin_"+strings.ToLower(random.String(8)), random.String(16), true)
	if err != nil {
		t.Fatal(err)
	}
	password := random.String(24)
	if err = dendrite.ResetPassword(ctx, admin, botMXID, password); err != nil {
		t.Fatal(err)
	}
	return password
}

// logOutAllDevices logs every device of the bot out, as an administrator cleaning up would.
func logOutAllDevices(t *testing.T, w *world, password string) {
	t.Helper()
	ctx := context.Background()
	cli, err := w.hsA.Login(ctx, w.reg.SenderLocalpart, password)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = cli.LogoutAll(ctx); err != nil {
		t.Fatal(err)
	}
}

// removeConfigKey deletes section.key from a bot's config file.
func removeConfigKey(t *testing.T, path, section, key string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err = yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	delete(cfg[section].(map[string]any), key)
	if data, err = yaml.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err = os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// botDeviceID is the device the bot stored in its database.
func botDeviceID(t *testing.T, bot *botProcess) id.DeviceID {
	t.Helper()
	var deviceID id.DeviceID
	if err := bot.db().QueryRow("SELECT device_id FROM bot_device").Scan(&deviceID); err != nil {
		t.Fatalf("no bot device stored: %v", err)
	}
	return deviceID
}

// requireArrivedEncrypted checks that a decrypted event came as m.room.encrypted from the homeserver.
func (u *user) requireArrivedEncrypted(decrypted *event.Event) {
	u.T.Helper()
	if !decrypted.Mautrix.WasEncrypted {
		u.T.Fatalf("event %s arrived in plaintext", decrypted.ID)
	}
	u.WaitFor(time.Second, "the encrypted form of "+decrypted.ID.String(), func(evt *event.Event) bool {
		return evt.ID == decrypted.ID && evt.Type == event.EventEncrypted
	})
}

// pingEncrypted sends an encrypted !ping and waits for the bot's encrypted pong.
func (u *user) pingEncrypted(room id.RoomID, bot id.UserID) {
	u.T.Helper()
	resp, err := u.SendMessageEvent(context.Background(), room, event.EventMessage,
		&event.MessageEventContent{MsgType: event.MsgText, Body: "!ping"})
	if err != nil {
		u.T.Fatal(err)
	}
	u.WaitFor(5*time.Second, "its own ping in encrypted form", func(evt *event.Event) bool {
		return evt.ID == resp.EventID && evt.Type == event.EventEncrypted
	})
	reply := u.WaitFor(30*time.Second, "the encrypted pong", replyTo(bot, resp.EventID))
	u.requireArrivedEncrypted(reply)
	if body := reply.Content.AsMessage().Body; !strings.Contains(body, "Pong") {
		u.T.Fatalf("reply to the encrypted ping = %q, want a pong", body)
	}
}

// trustOf is how much this user's crypto trusts a device of another user, from that user's cross-signing keys.
func (u *user) trustOf(userID id.UserID, deviceID id.DeviceID) id.TrustState {
	u.T.Helper()
	ctx := context.Background()
	mach := u.CryptoHelper.Machine()
	if _, err := mach.FetchKeys(ctx, []id.UserID{userID}, true); err != nil {
		u.T.Fatal(err)
	}
	device, err := mach.CryptoStore.GetDevice(ctx, userID, deviceID)
	if err != nil || device == nil {
		u.T.Fatalf("device %s of %s unknown: %v", deviceID, userID, err)
	}
	trust, err := mach.ResolveTrustContext(ctx, device)
	if err != nil {
		u.T.Fatal(err)
	}
	return trust
}

// publicKeys is what /keys/query shows of a user: the master key and each device's signing key.
type publicKeys struct {
	master  id.Ed25519
	devices map[id.DeviceID]id.Ed25519
}

func (u *user) botKeys(userID id.UserID) publicKeys {
	u.T.Helper()
	resp, err := u.QueryKeys(context.Background(), &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{userID: {}}})
	if err != nil {
		u.T.Fatal(err)
	}
	master := resp.MasterKeys[userID]
	keys := publicKeys{master: master.FirstKey(), devices: make(map[id.DeviceID]id.Ed25519)}
	for deviceID, device := range resp.DeviceKeys[userID] {
		keys.devices[deviceID] = device.Keys.GetEd25519(deviceID)
	}
	if keys.master == "" {
		u.T.Fatalf("%s has no master key", userID)
	}
	return keys
}
