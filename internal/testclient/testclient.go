//go:build goolm

// Package testclient is the Matrix user of caseroom's tests that run against a real homeserver: a mautrix-go client
// with its end-to-end encryption (pure Go, the goolm build tag), cross-signed as Element cross-signs a first session,
// syncing in the background and recording every event it sees, with the few steps a person takes in a chat with the
// bot (open an encrypted chat, accept an invite, send a command and read the reply).
package testclient

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/homeserver"
)

// User is a logged-in, syncing test user with an encrypting device.
type User struct {
	*mautrix.Client
	T            testing.TB
	CryptoHelper *cryptohelper.CryptoHelper
	Password     string

	mu     sync.Mutex
	events []*event.Event
}

// New registers a fresh account on hs (localpart name plus a random suffix) and starts it as Start does.
func New(t testing.TB, hs homeserver.Server, name string, crossSign bool) *User {
	t.Helper()
	localpart := strings.ToLower(name + "_" + random.String(6))
	password := random.String(16)
	if _, err := hs.RegisterUser(context.Background(), localpart, password, false); err != nil {
		t.Fatal(err)
	}
	return Login(t, hs, localpart, password, crossSign)
}

// Login logs an existing account in on a new device with encryption, cross-signs the device with the account's own
// new cross-signing keys when crossSign is set (as Element does when a user sets up their first session; the bot's
// default encryption.min_trust asks for it; crossSign false is an unverified session), and starts syncing until the
// test ends.
func Login(t testing.TB, hs homeserver.Server, localpart, password string, crossSign bool) *User {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cli, err := hs.Login(ctx, localpart, password)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	helper, err := cryptohelper.NewCryptoHelper(cli, []byte("test pickle key"), filepath.Join(t.TempDir(), "crypto.db"))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err = helper.Init(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	cli.Crypto = helper
	if crossSign {
		mach := helper.Machine()
		if _, _, err = mach.GenerateAndUploadCrossSigningKeysWithPassword(ctx, password, ""); err != nil {
			cancel()
			t.Fatalf("failed to set up cross-signing of %s: %v", cli.UserID, err)
		}
		if err = mach.SignOwnDevice(ctx, mach.OwnIdentity()); err != nil {
			cancel()
			t.Fatalf("failed to cross-sign the device of %s: %v", cli.UserID, err)
		}
		if err = mach.SignOwnMasterKey(ctx); err != nil {
			cancel()
			t.Fatalf("failed to sign the master key of %s: %v", cli.UserID, err)
		}
	}
	u := &User{Client: cli, T: t, CryptoHelper: helper, Password: password}
	// Registered after the crypto helper's handlers: the state store is up to date when an event is recorded.
	cli.Syncer.(mautrix.ExtensibleSyncer).OnEvent(func(ctx context.Context, evt *event.Event) {
		u.mu.Lock()
		u.events = append(u.events, evt)
		u.mu.Unlock()
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := cli.SyncWithContext(ctx); err != nil && ctx.Err() == nil {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = helper.Close()
	})
	return u
}

// WaitFor returns the first event seen (since the user was started) that matches, failing the test after timeout.
func (u *User) WaitFor(timeout time.Duration, what string, match func(*event.Event) bool) *event.Event {
	u.T.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if evts := u.Matching(match); len(evts) > 0 {
			return evts[0]
		}
		if time.Now().After(deadline) {
			u.T.Fatalf("%s did not see %s within %s", u.UserID, what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Matching lists the events seen so far that match.
func (u *User) Matching(match func(*event.Event) bool) []*event.Event {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []*event.Event
	for _, evt := range u.events {
		if match(evt) {
			out = append(out, evt)
		}
	}
	return out
}

// Send sends a text message (encrypted in an encrypted room) and returns its event ID.
func (u *User) Send(roomID id.RoomID, text string) id.EventID {
	u.T.Helper()
	resp, err := u.SendText(context.Background(), roomID, text)
	if err != nil {
		u.T.Fatalf("failed to send message: %v", err)
	}
	return resp.EventID
}

// Command sends text to room and returns its event ID and the body of the bot's reply to it.
func (u *User) Command(bot id.UserID, room id.RoomID, text string) (id.EventID, string) {
	u.T.Helper()
	resp, err := u.SendMessageEvent(context.Background(), room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: text})
	if err != nil {
		u.T.Fatalf("%s could not send %q: %v", u.UserID, text, err)
	}
	reply := u.WaitFor(30*time.Second, fmt.Sprintf("the reply to %q", text), ReplyTo(bot, resp.EventID))
	return resp.EventID, reply.Content.AsMessage().Body
}

// EncryptedRoomWithBot creates an encrypted room, invites the bot and waits until it has joined.
func (u *User) EncryptedRoomWithBot(bot id.UserID) id.RoomID {
	u.T.Helper()
	return u.EncryptedRoomWithBotIn(bot, "")
}

// EncryptedRoomWithBotIn is EncryptedRoomWithBot in a room of the given version ("" for the homeserver's default).
func (u *User) EncryptedRoomWithBotIn(bot id.UserID, version id.RoomVersion) id.RoomID {
	u.T.Helper()
	ctx := context.Background()
	stateKey := ""
	resp, err := u.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset:      "private_chat",
		RoomVersion: version,
		Invite:      []id.UserID{bot},
		InitialState: []*event.Event{{
			Type: event.StateEncryption, StateKey: &stateKey,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}},
	})
	if err != nil {
		u.T.Fatal(err)
	}
	u.WaitFor(30*time.Second, "the bot join", BotMembership(bot, resp.RoomID, event.MembershipJoin))
	if encrypted, err := u.StateStore.IsEncrypted(ctx, resp.RoomID); err != nil || !encrypted {
		u.T.Fatalf("the client does not know the room is encrypted: %v", err)
	}
	return resp.RoomID
}

// JoinInvited waits for an invite to room and joins it.
func (u *User) JoinInvited(room id.RoomID) {
	u.T.Helper()
	u.WaitFor(30*time.Second, "an invite to "+room.String(), func(evt *event.Event) bool {
		return evt.RoomID == room && evt.Type == event.StateMember && evt.GetStateKey() == u.UserID.String() &&
			evt.Content.AsMember().Membership == event.MembershipInvite
	})
	// A join over federation can fail while the servers are still fetching each other's keys; a person would try
	// again, and so does the test, for a few seconds.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if _, err = u.JoinRoomByID(context.Background(), room); err == nil {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 500 * time.Millisecond)
	}
	if err != nil {
		u.T.Fatalf("%s could not join %s: %v", u.UserID, room, err)
	}
	u.WaitFor(30*time.Second, "its own join", func(evt *event.Event) bool {
		return evt.RoomID == room && evt.Type == event.StateMember && evt.GetStateKey() == u.UserID.String() &&
			evt.Content.AsMember().Membership == event.MembershipJoin
	})
}

// ReplyTo matches the bot's notices that reply to eventID.
func ReplyTo(bot id.UserID, eventID id.EventID) func(*event.Event) bool {
	return func(evt *event.Event) bool {
		if evt.Sender != bot || evt.Type != event.EventMessage {
			return false
		}
		content := evt.Content.AsMessage()
		return content.MsgType == event.MsgNotice && content.RelatesTo.GetReplyTo() == eventID
	}
}

// BotMembership matches the bot's own membership event in a room.
func BotMembership(bot id.UserID, roomID id.RoomID, membership event.Membership) func(*event.Event) bool {
	return func(evt *event.Event) bool {
		return evt.RoomID == roomID && evt.Type == event.StateMember && evt.GetStateKey() == bot.String() &&
			evt.Content.AsMember().Membership == membership
	}
}
