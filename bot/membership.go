package bot

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
)

// handleBotMembership joins rooms when a user of an allowed homeserver invites the bot, declines other invites
// with a reason the inviter can read, and notes when the bot was removed from a room.
func (b *Bot) handleBotMembership(ctx context.Context, turn *Turn) error {
	evt := turn.Event
	content := evt.Content.AsMember()
	log := zerolog.Ctx(ctx)
	switch content.Membership {
	case event.MembershipInvite:
		inviterServer := evt.Sender.Homeserver()
		if !b.Config.AllowedServer(inviterServer) {
			reason := fmt.Sprintf("caseroom only works with users of allowed homeservers; %s is not one of them", inviterServer)
			if _, err := b.AS.BotIntent().LeaveRoom(ctx, evt.RoomID, &mautrix.ReqLeave{Reason: reason}); err != nil {
				return fmt.Errorf("failed to decline invite: %w", err)
			}
			log.Info().Str("inviter_server", inviterServer).Msg("Declined invite from a homeserver that is not allowed")
			turn.Outcome = "declined"
			return nil
		}
		if _, err := b.AS.BotIntent().JoinRoomByID(ctx, evt.RoomID); err != nil {
			return fmt.Errorf("failed to join room: %w", err)
		}
		log.Info().Msg("Joined room after invite")
		turn.Outcome = "joined"
		turn.Send(evt.RoomID, event.EventMessage, &event.MessageEventContent{
			MsgType:  event.MsgNotice,
			Body:     "Hello, I'm caseroom. Type /help (or !help) to see what I can do here.",
			Mentions: &event.Mentions{},
		})
	case event.MembershipLeave, event.MembershipBan:
		if evt.Sender != b.BotID() {
			log.Info().Str("membership", string(content.Membership)).Msg("Bot was removed from room")
			turn.Outcome = "removed"
		} else {
			turn.Outcome = "left"
		}
	case event.MembershipJoin:
		turn.Outcome = "joined"
	}
	return nil
}
