package bot

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.mau.fi/util/ptr"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// RoomSpec describes a room the bot creates for a case.
type RoomSpec struct {
	Name string
	// HistoryJoined makes history visible to members only from their join (patient rooms); otherwise members see
	// the room's history (case rooms).
	HistoryJoined bool
	// Members are invited at creation and get power level MemberPower.
	Members []id.UserID
}

// MemberPower is the power level of care team members in case rooms: they can name the room (everyone can redact
// their own messages), but only the bot invites, removes, redacts others' messages or changes who may do what, so
// that the database stays the one truth about who is in.
const MemberPower = 50

// CreateRoom creates an encrypted room once per (cause event, step): processing the same event again after a
// crash returns the room made the first time instead of creating another.
func (b *Bot) CreateRoom(ctx context.Context, cause id.EventID, step string, spec RoomSpec) (id.RoomID, error) {
	if existing, err := b.Store.Effects.Get(ctx, cause, step); err != nil {
		return "", err
	} else if existing != "" {
		return id.RoomID(existing), nil
	}
	history := event.HistoryVisibilityShared
	if spec.HistoryJoined {
		history = event.HistoryVisibilityJoined
	}
	users := map[id.UserID]int{}
	// In room versions where the creator always has the highest power (12 and later, Synapse's default) the
	// creator must not be listed; in older ones it must be, or it would lose its power to the preset's levels.
	version := id.RoomVersion(b.Config.Homeserver.RoomVersion)
	if version == "" {
		var err error
		if version, err = b.defaultRoomVersion(ctx); err != nil {
			return "", err
		}
	}
	if !version.PrivilegedRoomCreators() {
		users[b.BotID()] = 100
	}
	for _, member := range spec.Members {
		users[member] = MemberPower
	}
	initial := []*event.Event{
		{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}},
		{Type: event.StateHistoryVisibility, Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: history}}},
		{Type: event.StateGuestAccess, Content: event.Content{Parsed: &event.GuestAccessEventContent{GuestAccess: event.GuestAccessForbidden}}},
	}
	for _, cmd := range b.CommandSpecs {
		initial = append(initial, &event.Event{
			Type: event.StateMSC4391BotCommand, StateKey: ptr.Ptr(cmd.StateKey(b.BotID())), Content: event.Content{Parsed: cmd},
		})
	}
	resp, err := b.AS.BotIntent().CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Name:         spec.Name,
		RoomVersion:  id.RoomVersion(b.Config.Homeserver.RoomVersion),
		Preset:       "private_chat",
		Invite:       spec.Members,
		InitialState: initial,
		PowerLevelOverride: &event.PowerLevelsEventContent{
			Users:           users,
			EventsDefault:   0,
			StateDefaultPtr: ptr.Ptr(MemberPower),
			InvitePtr:       ptr.Ptr(100),
			KickPtr:         ptr.Ptr(100),
			BanPtr:          ptr.Ptr(100),
			// Only the bot removes others' messages (everyone can redact their own).
			RedactPtr: ptr.Ptr(100),
			// Only the bot decides who is in the room and how it is protected.
			Events: map[string]int{
				event.StateGuestAccess.Type:       100,
				"m.room.third_party_invite":       100,
				event.StatePowerLevels.Type:       100,
				event.StateHistoryVisibility.Type: 100,
				event.StateEncryption.Type:        100,
				event.StateJoinRules.Type:         100,
				event.StateTombstone.Type:         100,
				event.StateServerACL.Type:         100,
				event.StateMSC4391BotCommand.Type: 100,
			},
		},
	})
	if err != nil {
		return "", fmt.Errorf("failed to create room: %w", err)
	}
	for _, member := range spec.Members {
		b.invites.note(resp.RoomID, member)
	}
	if err = b.Store.Effects.Put(ctx, cause, step, resp.RoomID.String()); err != nil {
		return "", err
	}
	// Learn the new room's state (encryption, members) at once instead of waiting for its events.
	if _, err = b.AS.BotIntent().State(ctx, resp.RoomID); err != nil {
		return "", fmt.Errorf("failed to load state of new room: %w", err)
	}
	return resp.RoomID, nil
}

// defaultRoomVersion is the version of the rooms the homeserver creates, from its capabilities (asked once).
func (b *Bot) defaultRoomVersion(ctx context.Context) (id.RoomVersion, error) {
	b.roomVersionMu.Lock()
	defer b.roomVersionMu.Unlock()
	if b.roomVersion != "" {
		return b.roomVersion, nil
	}
	caps, err := b.AS.BotIntent().Capabilities(ctx)
	if err != nil {
		return "", fmt.Errorf("failed to ask the homeserver for its default room version: %w", err)
	}
	if caps.RoomVersions == nil || caps.RoomVersions.Default == "" {
		return "", errors.New("the homeserver's capabilities name no default room version")
	}
	b.roomVersion = id.RoomVersion(caps.RoomVersions.Default)
	return b.roomVersion, nil
}

// Membership returns a user's membership of a room as the bot knows it.
func (b *Bot) Membership(ctx context.Context, roomID id.RoomID, userID id.UserID) (event.Membership, error) {
	member, err := b.stateStore.TryGetMember(ctx, roomID, userID)
	if err != nil || member == nil {
		return event.MembershipLeave, err
	}
	return member.Membership, nil
}

// Invite invites a user to a room and sets their power level; a user who is already invited or joined counts as
// done.
func (b *Bot) Invite(ctx context.Context, roomID id.RoomID, userID id.UserID, power int, reason string) error {
	membership, err := b.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if membership != event.MembershipInvite && membership != event.MembershipJoin {
		b.invites.note(roomID, userID)
		_, err = b.AS.BotIntent().InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: userID, Reason: reason})
		if err != nil && !alreadyMember(err) {
			return fmt.Errorf("failed to invite user: %w", err)
		}
	}
	return b.SetPower(ctx, roomID, userID, power)
}

// SetPower sets a user's power level in a room when it differs.
func (b *Bot) SetPower(ctx context.Context, roomID id.RoomID, userID id.UserID, power int) error {
	pl, err := b.AS.BotIntent().PowerLevels(ctx, roomID)
	if err != nil {
		return fmt.Errorf("failed to get power levels: %w", err)
	}
	if pl.GetUserLevel(userID) == power {
		return nil
	}
	pl.SetUserLevel(userID, power)
	if _, err = b.AS.BotIntent().SetPowerLevels(ctx, roomID, pl); err != nil {
		return fmt.Errorf("failed to set power level: %w", err)
	}
	return nil
}

// RaisePower gives a user at least the given power level in a room, never lowering it.
func (b *Bot) RaisePower(ctx context.Context, roomID id.RoomID, userID id.UserID, atLeast int) error {
	pl, err := b.AS.BotIntent().PowerLevels(ctx, roomID)
	if err != nil {
		return fmt.Errorf("failed to get power levels: %w", err)
	}
	if pl.GetUserLevel(userID) >= atLeast {
		return nil
	}
	return b.SetPower(ctx, roomID, userID, atLeast)
}

// Kick removes a user from a room; a user who is not in it counts as done.
func (b *Bot) Kick(ctx context.Context, roomID id.RoomID, userID id.UserID, reason string) error {
	b.invites.forget(roomID, userID)
	membership, err := b.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if membership == event.MembershipLeave || membership == event.MembershipBan {
		return nil
	}
	if err = kickFault(userID); err == nil {
		_, err = b.AS.BotIntent().KickUser(ctx, roomID, &mautrix.ReqKickUser{UserID: userID, Reason: reason})
	}
	if err != nil {
		return fmt.Errorf("failed to remove user: %w", err)
	}
	return nil
}

// MakeReadOnly changes a room's power levels so that only the bot can post or change it: an archived case.
func (b *Bot) MakeReadOnly(ctx context.Context, roomID id.RoomID) error {
	pl, err := b.AS.BotIntent().PowerLevels(ctx, roomID)
	if err != nil {
		return fmt.Errorf("failed to get power levels: %w", err)
	}
	if pl.EventsDefault >= 100 {
		return nil
	}
	pl.EventsDefault = 100
	pl.StateDefaultPtr = ptr.Ptr(100)
	if pl.Events == nil {
		pl.Events = make(map[string]int)
	}
	pl.Events[event.EventReaction.Type] = 100
	pl.Events[event.StateRoomName.Type] = 100
	pl.Events[event.StateTopic.Type] = 100
	if _, err = b.AS.BotIntent().SetPowerLevels(ctx, roomID, pl); err != nil {
		return fmt.Errorf("failed to make room read-only: %w", err)
	}
	return nil
}

// PublishCommands sets the MSC4391 command descriptions in a room (where the bot may send state events).
func (b *Bot) PublishCommands(ctx context.Context, roomID id.RoomID) error {
	for _, cmd := range b.CommandSpecs {
		_, err := b.AS.BotIntent().SendStateEvent(ctx, roomID, event.StateMSC4391BotCommand, cmd.StateKey(b.BotID()), cmd)
		if err != nil {
			return fmt.Errorf("failed to publish command %q: %w", cmd.Command, err)
		}
	}
	return nil
}

// IsEncrypted reports whether the bot knows the room to be end-to-end encrypted.
func (b *Bot) IsEncrypted(ctx context.Context, roomID id.RoomID) (bool, error) {
	return b.stateStore.IsEncrypted(ctx, roomID)
}

func alreadyMember(err error) bool {
	var httpErr mautrix.HTTPError
	return errors.As(err, &httpErr) && httpErr.RespError != nil && httpErr.RespError.ErrCode == mautrix.MForbidden.ErrCode &&
		(strings.Contains(httpErr.RespError.Err, "already in the room") || strings.Contains(httpErr.RespError.Err, "already joined") ||
			strings.Contains(httpErr.RespError.Err, "is already"))
}
