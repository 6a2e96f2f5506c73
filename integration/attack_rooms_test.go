//go:build goolm

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// roomsClinic is newClinic with environment variables for the bot (fault injection).
func roomsClinic(t *testing.T, extra map[string]any, env ...string) *clinic {
	t.Helper()
	w := getWorld(t)
	admin := newUser(t, w.hsA, "admin")
	if extra == nil {
		extra = map[string]any{}
	}
	extra["admins"] = []string{admin.UserID.String()}
	c := &clinic{t: t, hs: w.hsA, bot: startBot(t, extra, env...), botID: id.NewUserID(w.reg.SenderLocalpart, w.hsA.ServerName), admin: admin}
	c.adminDM = admin.EncryptedRoomWithBot(c.botID)
	return c
}

// roomsLinkableRoom makes an encrypted invite-only room with the bot in which the bot alone holds power over
// membership and the room's rules, as case link requires. Other members get power level 50.
func roomsLinkableRoom(t *testing.T, c *clinic, creator *user, members ...*user) id.RoomID {
	t.Helper()
	ctx := context.Background()
	room := creator.EncryptedRoomWithBot(c.botID)
	for _, m := range members {
		if _, err := creator.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: m.UserID}); err != nil {
			t.Fatal(err)
		}
		m.JoinInvited(room)
	}
	users := map[id.UserID]int{c.botID: 100, creator.UserID: 50}
	for _, m := range members {
		users[m.UserID] = 50
	}
	roomsSetPower(t, creator.Client, room, users)
	return room
}

// roomsSetPower replaces a room's power levels: users as given, everything about membership and the room's rules
// at 100.
func roomsSetPower(t *testing.T, sender *mautrix.Client, room id.RoomID, users map[id.UserID]int) {
	t.Helper()
	hundred, fifty := 100, 50
	pl := &event.PowerLevelsEventContent{
		Users: users, InvitePtr: &hundred, KickPtr: &hundred, BanPtr: &hundred, RedactPtr: &fifty, StateDefaultPtr: &fifty,
		Events: map[string]int{
			event.StatePowerLevels.Type: 100, event.StateEncryption.Type: 100, event.StateJoinRules.Type: 100,
			event.StateHistoryVisibility.Type: 100, event.StateTombstone.Type: 100, event.StateServerACL.Type: 100,
		},
	}
	if _, err := sender.SendStateEvent(context.Background(), room, event.StatePowerLevels, "", pl); err != nil {
		t.Fatalf("could not set power levels: %v", err)
	}
}

// roomsAsBot is a client acting as the bot user with the appservice token, outside caseroom: it stands for a room
// made before caseroom owned membership, where the creator kept power level 100.
func roomsAsBot(t *testing.T, c *clinic) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(c.bot.w.hsA.URL, c.botID, c.bot.w.reg.AppToken)
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// roomsCaseCount counts the cases whose case room is room.
func roomsCaseCount(t *testing.T, c *clinic, room id.RoomID) int {
	t.Helper()
	var n int
	if err := c.bot.db().QueryRow("SELECT COUNT(*) FROM cases WHERE case_room_id = $1", room).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// roomsKicked waits until observer (a member of room) sees u removed from room by the bot, and returns the reason.
func roomsKicked(t *testing.T, c *clinic, observer, u *user, room id.RoomID, timeout time.Duration) string {
	t.Helper()
	evt := observer.WaitFor(timeout, "the removal of "+u.UserID.String()+" from "+room.String(), func(evt *event.Event) bool {
		return evt.RoomID == room && evt.Type == event.StateMember && evt.GetStateKey() == u.UserID.String() &&
			evt.Sender == c.botID && evt.Content.AsMember().Membership == event.MembershipLeave
	})
	return evt.Content.AsMember().Reason
}

// roomsBotNotice waits for a notice of the bot in room that contains all of words.
func roomsBotNotice(t *testing.T, c *clinic, u *user, room id.RoomID, what string, words ...string) *event.Event {
	t.Helper()
	return u.WaitFor(60*time.Second, what, func(evt *event.Event) bool {
		if evt.RoomID != room || evt.Sender != c.botID || evt.Type != event.EventMessage {
			return false
		}
		body := evt.Content.AsMessage().Body
		for _, w := range words {
			if !strings.Contains(body, w) {
				return false
			}
		}
		return true
	})
}

// roomsDecryptedFromBot lists the bot's messages in room that u could read.
func roomsDecryptedFromBot(c *clinic, u *user, room id.RoomID) []*event.Event {
	return u.Matching(func(evt *event.Event) bool {
		return evt.RoomID == room && evt.Sender == c.botID && evt.Type == event.EventMessage
	})
}

// roomsMembership is a user's membership of a room as the bot's database knows it (caseroom's state store).
func roomsMembership(t *testing.T, c *clinic, room id.RoomID, userID id.UserID) string {
	t.Helper()
	var membership string
	err := c.bot.db().QueryRow("SELECT membership FROM mx_user_profile WHERE room_id = $1 AND user_id = $2", room, userID).Scan(&membership)
	if err != nil {
		return "none"
	}
	return membership
}

func roomsOnTeam(t *testing.T, c *clinic, room id.RoomID, userID id.UserID) bool {
	t.Helper()
	var n int
	err := c.bot.db().QueryRow(`SELECT COUNT(*) FROM care_team JOIN cases ON cases.id = care_team.case_id
		WHERE cases.case_room_id = $1 AND care_team.user_id = $2`, room, userID).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func roomsAuditCount(t *testing.T, c *clinic, action string, detail string) int {
	t.Helper()
	var n int
	if err := c.bot.db().QueryRow("SELECT COUNT(*) FROM audit WHERE action = $1 AND detail LIKE $2", action, "%"+detail+"%").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAttackRooms: rooms the bot does not control. case link refuses rooms where someone else holds power over who
// is in, rooms that are public or hold invited outsiders; afterwards, anyone who gets into a case room without being
// on it is removed at once, an encryption change stops what the bot sends there, room keys go to joined members only,
// and team remove and servers deny end room memberships and database state together.
func TestAttackRooms(t *testing.T) {
	// The bot's kicks of users whose ID contains "kickfail" fail for their first 20 seconds.
	c := roomsClinic(t, nil, "CASEROOM_FAULT_KICK_FAIL=kickfail", "CASEROOM_FAULT_KICK_FAIL_FOR=20s")
	w := c.bot.w
	ctx := context.Background()
	doc, nurse := newUser(t, w.hsA, "doc"), newUser(t, w.hsA, "nurse")
	c.registerClinician(doc)
	c.registerClinician(nurse)

	var invitedRoom id.RoomID
	invitedOutsider := newUser(t, w.hsA, "outsider")
	t.Run("link refuses a room with an invited outsider", func(t *testing.T) {
		invitedRoom = roomsLinkableRoom(t, c, doc, nurse)
		// Invited while the creator still had the power to (then gave it up).
		roomsSetPower(t, roomsAsBot(t, c), invitedRoom, map[id.UserID]int{c.botID: 100, doc.UserID: 100, nurse.UserID: 50})
		if _, err := doc.InviteUser(ctx, invitedRoom, &mautrix.ReqInviteUser{UserID: invitedOutsider.UserID}); err != nil {
			t.Fatal(err)
		}
		roomsSetPower(t, doc.Client, invitedRoom, map[id.UserID]int{c.botID: 100, doc.UserID: 50, nurse.UserID: 50})
		invitedOutsider.WaitFor(30*time.Second, "the invite", func(evt *event.Event) bool {
			return evt.RoomID == invitedRoom && evt.Type == event.StateMember && evt.GetStateKey() == invitedOutsider.UserID.String()
		})
		evtID, body := c.command(doc, invitedRoom, "!case link Ward round --patient Patient/1")
		if !strings.Contains(body, "⛔") || !strings.Contains(body, invitedOutsider.UserID.String()) || !strings.Contains(body, "invited") {
			t.Fatalf("a room with an invited outsider was not refused with the problem named: %s", body)
		}
		if n := roomsCaseCount(t, c, invitedRoom); n != 0 {
			t.Fatalf("%d cases were linked to the refused room", n)
		}
		if outcome := c.auditOutcome(evtID); !strings.HasPrefix(outcome, "refused:") {
			t.Fatalf("audit outcome %q", outcome)
		}
	})
	t.Run("an invited member gets no room keys", func(t *testing.T) {
		// The refusal above was sent while the outsider was invited: joining later must not make it readable.
		sent := roomsBotNotice(t, c, doc, invitedRoom, "the bot's answer in the room")
		if !sent.Mautrix.WasEncrypted {
			t.Fatal("the bot's answer was not encrypted")
		}
		if _, err := invitedOutsider.JoinRoomByID(ctx, invitedRoom); err != nil {
			t.Fatal(err)
		}
		invitedOutsider.WaitFor(30*time.Second, "the bot's encrypted answer", func(evt *event.Event) bool {
			return evt.ID == sent.ID
		})
		time.Sleep(5 * time.Second) // time for a room key that should not come
		if got := roomsDecryptedFromBot(c, invitedOutsider, invitedRoom); len(got) > 0 {
			t.Fatalf("the outsider decrypted a message sent while only invited: %q", got[0].Content.AsMessage().Body)
		}
	})
	t.Run("link refuses a public room", func(t *testing.T) {
		room := roomsLinkableRoom(t, c, doc)
		roomsSetPower(t, roomsAsBot(t, c), room, map[id.UserID]int{c.botID: 100, doc.UserID: 100})
		if _, err := doc.SendStateEvent(ctx, room, event.StateJoinRules, "", &event.JoinRulesEventContent{JoinRule: event.JoinRulePublic}); err != nil {
			t.Fatal(err)
		}
		roomsSetPower(t, doc.Client, room, map[id.UserID]int{c.botID: 100, doc.UserID: 50})
		_, body := c.command(doc, room, "!case link Ward round --patient Patient/2")
		if !strings.Contains(body, "⛔") || !strings.Contains(body, "public") || !strings.Contains(body, "invite") {
			t.Fatalf("a public room was not refused with the problem named: %s", body)
		}
		if n := roomsCaseCount(t, c, room); n != 0 {
			t.Fatalf("%d cases were linked to the public room", n)
		}
	})
	t.Run("link refuses a room where someone else may invite or change power levels", func(t *testing.T) {
		room := roomsLinkableRoom(t, c, doc, nurse)
		roomsSetPower(t, roomsAsBot(t, c), room, map[id.UserID]int{c.botID: 100, doc.UserID: 50, nurse.UserID: 100})
		_, body := c.command(doc, room, "!case link Ward round --patient Patient/3")
		if !strings.Contains(body, "⛔") || !strings.Contains(body, nurse.UserID.String()) || !strings.Contains(body, "m.room.power_levels") {
			t.Fatalf("a room where another user holds power was not refused with the problem named: %s", body)
		}
		if n := roomsCaseCount(t, c, room); n != 0 {
			t.Fatalf("%d cases were linked", n)
		}
	})

	var caseRoom, patientRoom id.RoomID
	t.Run("a room the bot controls is linked", func(t *testing.T) {
		caseRoom = roomsLinkableRoom(t, c, doc, nurse)
		evtID, body := c.command(doc, caseRoom, "!case link Ward round --patient Patient/4")
		if !strings.Contains(body, "is open") {
			t.Fatalf("case link: %s", body)
		}
		if err := c.bot.db().QueryRow("SELECT patient_room_id FROM cases WHERE created_event = $1", evtID).Scan(&patientRoom); err != nil {
			t.Fatal(err)
		}
		doc.JoinInvited(patientRoom)
		nurse.JoinInvited(patientRoom)
	})

	t.Run("an outsider invited by a team member is removed", func(t *testing.T) {
		// A room whose creator kept power level 100 (linked before caseroom owned membership).
		roomsSetPower(t, roomsAsBot(t, c), caseRoom, map[id.UserID]int{c.botID: 100, doc.UserID: 100, nurse.UserID: 50})
		outsider := newUser(t, w.hsA, "intruder")
		if _, err := doc.InviteUser(ctx, caseRoom, &mautrix.ReqInviteUser{UserID: outsider.UserID}); err != nil {
			t.Fatal(err)
		}
		// The outsider joins as fast as it can.
		outsider.WaitFor(30*time.Second, "the invite", func(evt *event.Event) bool {
			return evt.RoomID == caseRoom && evt.Type == event.StateMember && evt.GetStateKey() == outsider.UserID.String()
		})
		_, _ = outsider.JoinRoomByID(ctx, caseRoom)
		if reason := roomsKicked(t, c, nurse, outsider, caseRoom, 30*time.Second); reason == "" {
			t.Fatal("removed without a reason")
		}
		roomsBotNotice(t, c, nurse, caseRoom, "the team told in the case room", outsider.UserID.String(), "removed")
		roomsBotNotice(t, c, c.admin, c.adminDM, "the admins told", outsider.UserID.String(), "removed")
		c.mustSucceed(nurse, caseRoom, "!case info")
		time.Sleep(3 * time.Second)
		for _, evt := range roomsDecryptedFromBot(c, outsider, caseRoom) {
			if strings.Contains(evt.Content.AsMessage().Body, "Case #") {
				t.Fatalf("the outsider read the case summary: %q", evt.Content.AsMessage().Body)
			}
		}
		if m := roomsMembership(t, c, caseRoom, outsider.UserID); m != "leave" {
			t.Fatalf("the bot's state holds the outsider as %q", m)
		}
		if n := roomsAuditCount(t, c, "room:intruder-removed", outsider.UserID.String()); n == 0 {
			t.Fatal("the removal was not audited")
		}
	})

	t.Run("an intruder joining after the join rule became public is removed", func(t *testing.T) {
		if _, err := doc.SendStateEvent(ctx, caseRoom, event.StateJoinRules, "", &event.JoinRulesEventContent{JoinRule: event.JoinRulePublic}); err != nil {
			t.Fatal(err)
		}
		intruder := newUser(t, w.hsA, "walkin")
		var err error
		for i := 0; i < 50; i++ {
			if _, err = intruder.JoinRoomByID(ctx, caseRoom); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			// The bot already put the join rule back: nothing more to attack.
			t.Logf("join refused: %v", err)
		} else {
			roomsKicked(t, c, nurse, intruder, caseRoom, 30*time.Second)
		}
		roomsBotNotice(t, c, c.admin, c.adminDM, "the admins told of the join rule", "join rule")
		if rule := state(t, doc, caseRoom, event.StateJoinRules); !strings.Contains(rule, `"invite"`) {
			t.Fatalf("join rule not restored: %s", rule)
		}
		if m := roomsMembership(t, c, caseRoom, intruder.UserID); m == "join" || m == "invite" {
			t.Fatalf("the bot's state holds the intruder as %q", m)
		}
	})

	t.Run("team remove ends the membership and the team row together", func(t *testing.T) {
		flaky := newUser(t, w.hsA, "kickfail")
		c.registerClinician(flaky)
		c.mustSucceed(doc, caseRoom, "!team add "+flaky.UserID.String())
		flaky.JoinInvited(caseRoom)
		flaky.JoinInvited(patientRoom)
		// The homeserver refuses the bot's kicks for a while; the removal still completes, in the rooms and the DB.
		_, body := c.command(doc, caseRoom, "!team remove "+flaky.UserID.String())
		if strings.Contains(body, "⛔") {
			t.Fatalf("team remove: %s", body)
		}
		roomsKicked(t, c, nurse, flaky, caseRoom, 90*time.Second)
		roomsKicked(t, c, nurse, flaky, patientRoom, 90*time.Second)
		if roomsOnTeam(t, c, caseRoom, flaky.UserID) {
			t.Fatal("still on the team in the database")
		}
	})

	t.Run("servers deny removes that server's users", func(t *testing.T) {
		remote := newUser(t, w.hsB, "remotedoc")
		c.mustSucceed(c.admin, c.adminDM, "!admin servers allow "+w.hsB.ServerName)
		c.registerClinician(remote)
		c.mustSucceed(doc, caseRoom, "!team add "+remote.UserID.String())
		remote.JoinInvited(caseRoom)
		remote.JoinInvited(patientRoom)
		c.mustSucceed(c.admin, c.adminDM, "!admin servers deny "+w.hsB.ServerName)
		roomsKicked(t, c, nurse, remote, caseRoom, 60*time.Second)
		roomsKicked(t, c, nurse, remote, patientRoom, 60*time.Second)
		if roomsOnTeam(t, c, caseRoom, remote.UserID) {
			t.Fatal("the denied server's user is still on the team in the database")
		}
		for _, room := range []id.RoomID{caseRoom, patientRoom} {
			if m := roomsMembership(t, c, room, remote.UserID); m == "join" || m == "invite" {
				t.Fatalf("the bot's state holds the removed user as %q", m)
			}
		}
	})

	t.Run("an encryption change stops what the bot sends there", func(t *testing.T) {
		if _, err := doc.SendStateEvent(ctx, caseRoom, event.StateEncryption, "", map[string]any{"algorithm": "m.megolm.v2.weak"}); err != nil {
			t.Fatal(err)
		}
		roomsBotNotice(t, c, c.admin, c.adminDM, "the admins alerted", "encryption", caseRoom.String())
		resp, err := doc.SendMessageEvent(ctx, caseRoom, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "!case info"})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(8 * time.Second)
		for _, evt := range nurse.Matching(func(evt *event.Event) bool {
			return evt.RoomID == caseRoom && evt.Sender == c.botID && evt.Type == event.EventMessage
		}) {
			if evt.Content.AsMessage().RelatesTo.GetReplyTo() == resp.EventID || !evt.Mautrix.WasEncrypted {
				t.Fatalf("the bot sent into the room after its encryption changed: %q (encrypted %v)", evt.Content.AsMessage().Body, evt.Mautrix.WasEncrypted)
			}
		}
		var sent int
		if err := c.bot.db().QueryRow("SELECT COUNT(*) FROM outgoing WHERE room_id = $1 AND cause_event_id = $2 AND sent_event_id IS NOT NULL",
			caseRoom, resp.EventID).Scan(&sent); err != nil {
			t.Fatal(err)
		}
		if sent != 0 {
			t.Fatalf("%d messages sent for the command after the encryption change", sent)
		}
	})
}
