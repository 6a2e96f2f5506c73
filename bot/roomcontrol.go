package bot

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"
)

// RoomStateHandler is told about changes of a room's encryption and join rules, so that rooms the bot owns stay
// the way it made them.
type RoomStateHandler interface {
	HandleRoomState(ctx context.Context, turn *Turn) error
}

// Reconciler brings room memberships in line with the database: it is run at start and then every
// reconcileInterval, so that a removal whose kick failed is completed later.
type Reconciler interface {
	Reconcile(ctx context.Context, b *Bot) error
}

const reconcileInterval = 30 * time.Second

// reconcileLoop runs the handler's Reconcile until the bot stops.
func (b *Bot) reconcileLoop(ctx context.Context, r Reconciler) {
	log := zerolog.Ctx(ctx).With().Str("component", "reconcile").Logger()
	ctx = log.WithContext(ctx)
	ticker := time.NewTicker(reconcileInterval)
	defer ticker.Stop()
	for {
		if err := r.Reconcile(ctx, b); err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Msg("Failed to bring room memberships in line with the database, will retry")
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// joinedOnlyStateStore is the state store as the bot's crypto device sees it. mautrix shares megolm sessions with
// GetRoomJoinedOrInvitedMembers; here that is the joined members, plus invited users the bot itself put on the
// room's case (a care team member, the case's patient in the patient room), who would otherwise never read what the
// bot sent before they joined. Anyone else who is invited (by someone else, to a room that is not a case's) gets no
// room keys until they join, and in a case's rooms they are removed before that.
type joinedOnlyStateStore struct {
	*sqlstatestore.SQLStateStore
	bot *Bot
}

func (s joinedOnlyStateStore) GetRoomJoinedOrInvitedMembers(ctx context.Context, roomID id.RoomID) ([]id.UserID, error) {
	members, err := s.GetRoomMembers(ctx, roomID, event.MembershipJoin, event.MembershipInvite)
	if err != nil {
		return nil, err
	}
	ids := make([]id.UserID, 0, len(members))
	for userID, member := range members {
		if member.Membership == event.MembershipInvite {
			if ok, err := s.bot.invitedMayRead(ctx, roomID, userID); err != nil {
				return nil, err
			} else if !ok {
				continue
			}
		}
		ids = append(ids, userID)
	}
	return ids, nil
}

// invitedMayRead reports whether an invited user gets the room keys of a room: only when the room belongs to a
// case and the user is on it (or the bot has just invited them for it).
func (b *Bot) invitedMayRead(ctx context.Context, roomID id.RoomID, userID id.UserID) (bool, error) {
	c, err := b.Store.Cases.ByRoom(ctx, roomID)
	if err != nil || c == nil {
		return false, err
	}
	if allowed, err := b.ServerAllowed(ctx, userID.Homeserver()); err != nil || !allowed {
		return false, err
	}
	if b.RecentlyInvited(roomID, userID) {
		return true, nil
	}
	if onTeam, err := b.Store.Cases.IsOnTeam(ctx, c.ID, userID); err != nil || onTeam {
		return onTeam, err
	}
	if roomID != c.PatientRoomID {
		return false, nil
	}
	return b.Store.Cases.IsPatientOf(ctx, c.ID, userID)
}

// Members lists the users joined to or invited into a room, as the bot's state store knows them.
func (b *Bot) Members(ctx context.Context, roomID id.RoomID) (map[id.UserID]event.Membership, error) {
	members, err := b.stateStore.GetRoomMembers(ctx, roomID, event.MembershipJoin, event.MembershipInvite)
	if err != nil {
		return nil, err
	}
	out := make(map[id.UserID]event.Membership, len(members))
	for userID, m := range members {
		out[userID] = m.Membership
	}
	return out, nil
}

// RoomState fetches a room's current state from the homeserver (which also updates the bot's state store).
func (b *Bot) RoomState(ctx context.Context, roomID id.RoomID) (mautrix.RoomStateMap, error) {
	st, err := b.AS.BotIntent().State(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("failed to get room state: %w", err)
	}
	return st, nil
}

// SetJoinRule sets a room's join rule.
func (b *Bot) SetJoinRule(ctx context.Context, roomID id.RoomID, rule event.JoinRule) error {
	_, err := b.AS.BotIntent().SendStateEvent(ctx, roomID, event.StateJoinRules, "", &event.JoinRulesEventContent{JoinRule: rule})
	if err != nil {
		return fmt.Errorf("failed to set join rule: %w", err)
	}
	return nil
}

// sendBlocked reports whether nothing may be sent to a room: its encryption state names another algorithm than
// megolm, so the crypto client would send in clear text (mautrix treats such a room as unencrypted).
func (b *Bot) sendBlocked(ctx context.Context, roomID id.RoomID) (bool, error) {
	enc, err := b.stateStore.GetEncryptionEvent(ctx, roomID)
	if err != nil {
		return false, err
	}
	return enc != nil && enc.Algorithm != id.AlgorithmMegolmV1, nil
}

// ErrRoomEncryptionChanged is returned for sends to a room whose encryption was changed away from megolm.
var ErrRoomEncryptionChanged = permanent(fmt.Errorf("the room's encryption is no longer %s; nothing is sent there", id.AlgorithmMegolmV1))

// AdminRooms lists the admins' direct chats with the bot (encrypted rooms with exactly the admin and the bot
// joined), where admin notices go.
func (b *Bot) AdminRooms(ctx context.Context) ([]id.RoomID, error) {
	admins := slices.Clone(b.Config.Admins)
	grants, err := b.Store.Roles.Admins(ctx)
	if err != nil {
		return nil, err
	}
	for _, g := range grants {
		if !slices.Contains(admins, id.UserID(g.Subject)) {
			admins = append(admins, id.UserID(g.Subject))
		}
	}
	var rooms []id.RoomID
	for _, admin := range admins {
		shared, err := b.stateStore.FindSharedRooms(ctx, admin)
		if err != nil {
			return nil, err
		}
		for _, roomID := range shared {
			joined, err := b.JoinedMembers(ctx, roomID)
			if err != nil {
				return nil, err
			}
			if len(joined) != 2 || !slices.Contains(joined, admin) || !slices.Contains(joined, b.BotID()) || slices.Contains(rooms, roomID) {
				continue
			}
			if c, err := b.Store.Cases.ByRoom(ctx, roomID); err != nil {
				return nil, err
			} else if c != nil {
				continue
			}
			rooms = append(rooms, roomID)
		}
	}
	return rooms, nil
}

// NotifyAdmins queues a notice (which must hold no PHI) to every admin's direct chat with the bot.
func (b *Bot) NotifyAdmins(ctx context.Context, turn *Turn, content *event.MessageEventContent) error {
	rooms, err := b.AdminRooms(ctx)
	if err != nil {
		return err
	}
	if len(rooms) == 0 {
		zerolog.Ctx(ctx).Warn().Msg("No admin has a direct chat with me: an admin notice went nowhere")
	}
	for _, roomID := range rooms {
		turn.Send(roomID, event.EventMessage, content)
	}
	return nil
}

// inviteGrace is how long a user the bot invited is left alone while the command that invited them has not yet
// stored them on the case (invites are sent before the command's transaction commits).
const inviteGrace = 30 * time.Second

// recentInvites remembers whom the bot invited where, and when.
type recentInvites struct {
	mu sync.Mutex
	at map[id.RoomID]map[id.UserID]time.Time
}

func (r *recentInvites) note(roomID id.RoomID, userID id.UserID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.at == nil {
		r.at = make(map[id.RoomID]map[id.UserID]time.Time)
	}
	if r.at[roomID] == nil {
		r.at[roomID] = make(map[id.UserID]time.Time)
	}
	r.at[roomID][userID] = time.Now()
}

// RecentlyInvited reports whether the bot itself invited the user to the room within inviteGrace.
func (r *recentInvites) forget(roomID id.RoomID, userID id.UserID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.at[roomID], userID)
}

func (b *Bot) RecentlyInvited(roomID id.RoomID, userID id.UserID) bool {
	b.invites.mu.Lock()
	defer b.invites.mu.Unlock()
	at, ok := b.invites.at[roomID][userID]
	return ok && time.Since(at) < inviteGrace
}
