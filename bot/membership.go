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
		allowed, err := b.ServerAllowed(ctx, inviterServer)
		if err != nil {
			return err
		}
		if !allowed {
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
		// The room's earlier state (encryption, members) reaches the bot only this way; its replies, starting with
		// the greeting below, are encrypted when the room is.
		if _, err := b.AS.BotIntent().Client.State(ctx, evt.RoomID); err != nil {
			log.Warn().Err(err).Msg("Failed to fetch room state after joining")
		}
		if err := b.PublishCommands(ctx, evt.RoomID); err != nil {
			// Rooms where the bot may not send state events simply go without slash-command suggestions.
			log.Debug().Err(err).Msg("Could not publish command descriptions")
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
