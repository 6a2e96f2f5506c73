package bot

import (
	"context"
	"slices"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// ServerAllowed reports whether users of a homeserver may use the bot: the bot's own server, the servers in the
// config's allowed_servers and those allowed by admins.
func (b *Bot) ServerAllowed(ctx context.Context, server string) (bool, error) {
	if b.Config.AllowedServer(server) {
		return true, nil
	}
	return b.Store.Roles.IsServerAllowed(ctx, server)
}

// IsAdmin reports whether a user is an admin: named in the config or added by an admin.
func (b *Bot) IsAdmin(ctx context.Context, userID id.UserID) (bool, error) {
	if slices.Contains(b.Config.Admins, userID) {
		return true, nil
	}
	return b.Store.Roles.IsAdmin(ctx, userID)
}

// JoinedMembers lists the users joined to a room, as the bot's state store knows them.
func (b *Bot) JoinedMembers(ctx context.Context, roomID id.RoomID) ([]id.UserID, error) {
	members, err := b.stateStore.GetRoomMembers(ctx, roomID, event.MembershipJoin)
	if err != nil {
		return nil, err
	}
	ids := make([]id.UserID, 0, len(members))
	for userID := range members {
		ids = append(ids, userID)
	}
	slices.Sort(ids)
	return ids, nil
}
