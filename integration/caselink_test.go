//go:build goolm

package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/homeserver"
)

// TestCaseLinkAndBotRemoval adopts an existing encrypted room as a case room (after the checks refuse it while it
// is not ready), then the homeserver's operator removes the bot from the patient room: the case records that and the case room is told.
func TestCaseLinkAndBotRemoval(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		c := newClinicOn(t, on, nil)
		doc, nurse, stranger := newUser(t, on.hs, "doc"), newUser(t, on.hs, "nurse"), newUser(t, on.hs, "stranger")
		c.registerClinician(doc)
		c.registerClinician(nurse)
		ctx := context.Background()
		var version id.RoomVersion // the homeserver's default
		if on.hs.Implementation() == "synapse" {
			// Synapse's default room version (12) gives a room's creator unlimited power for good: such a room is
			// refused, naming its creator, whatever its power levels say.
			created := doc.EncryptedRoomWithBot(c.botID)
			if _, body := c.command(doc, created, "!case link Shared ward round"); !strings.Contains(body, doc.UserID.String()+"` created this room") {
				t.Fatalf("linked a room whose creator keeps full power: %s", body)
			}
			version = "10" // the rest of the test in a room version whose creator can give the power up
		}
		room := doc.EncryptedRoomWithBotIn(c.botID, version)
		for _, u := range []*user{nurse, stranger} {
			if _, err := doc.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: u.UserID}); err != nil {
				t.Fatal(err)
			}
			u.JoinInvited(room)
		}
		if _, body := c.command(doc, room, "!case link Shared ward round"); !strings.Contains(body, "power level 100") {
			t.Fatalf("linked without the power to manage the room: %s", body)
		}
		var pl event.PowerLevelsEventContent
		if err := doc.StateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		pl.SetUserLevel(c.botID, 100)
		if _, err := doc.SendStateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		if _, body := c.command(doc, room, "!case link Shared ward round"); !strings.Contains(body, stranger.UserID.String()) {
			t.Fatalf("linked a room that holds someone who is not a clinician: %s", body)
		}
		if _, err := doc.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: stranger.UserID}); err != nil {
			t.Fatal(err)
		}
		// The bot alone may decide who is in a case room: the creator gives up the power to invite, kick and change
		// the room's rules.
		if _, body := c.command(doc, room, "!case link Shared ward round"); !strings.Contains(body, doc.UserID.String()) {
			t.Fatalf("linked a room where its creator can still invite: %s", body)
		}
		roomsSetPower(t, doc.Client, room, map[id.UserID]int{c.botID: 100, doc.UserID: 50})
		evtID, body := c.command(doc, room, "!case link Shared ward round --patient Patient/77")
		if !strings.Contains(body, "is open") {
			t.Fatalf("case link: %s", body)
		}
		var patientRoom id.RoomID
		if err := c.bot.db().QueryRow("SELECT patient_room_id FROM cases WHERE created_event = $1 AND case_room_id = $2", evtID, room).Scan(&patientRoom); err != nil {
			t.Fatal(err)
		}
		doc.JoinInvited(patientRoom)
		nurse.JoinInvited(patientRoom)
		if team := c.mustSucceed(nurse, room, "!team"); !strings.Contains(team, doc.UserID.String()) || !strings.Contains(team, nurse.UserID.String()) {
			t.Fatalf("the clinicians in the room are not the care team: %s", team)
		}

		// MSC4391 structured input: a client that shows the command with typed arguments sends it this way.
		raw, _ := json.Marshal(map[string]any{"body": "/team", "msgtype": "m.text",
			"org.matrix.msc4391.command": map[string]any{"command": "team list"},
			"m.mentions":                 map[string]any{"user_ids": []string{c.botID.String()}}})
		var content map[string]any
		_ = json.Unmarshal(raw, &content)
		resp, err := doc.SendMessageEvent(ctx, room, event.EventMessage, content)
		if err != nil {
			t.Fatal(err)
		}
		if body := doc.WaitFor(30*time.Second, "the structured command's reply", replyTo(c.botID, resp.EventID)).Content.AsMessage().Body; !strings.Contains(body, "Care team") {
			t.Fatalf("structured team list: %s", body)
		}

		// Nobody in the room can remove the bot (it holds the highest power level); the homeserver's operator can.
		operator, err := on.hs.RegisterUser(ctx, "operator_"+strings.ToLower(string(doc.DeviceID)), "operator-password", true)
		if err != nil {
			t.Fatal(err)
		}
		evacuateRoom(t, on.hs, operator, patientRoom)
		warning := doc.WaitFor(30*time.Second, "the warning in the case room", func(evt *event.Event) bool {
			return evt.RoomID == room && evt.Sender == c.botID && strings.Contains(evt.Content.AsMessage().Body, "removed from the patient room")
		})
		if !warning.Mautrix.WasEncrypted {
			t.Fatal("the warning was not encrypted")
		}
		var removed *int64
		if err = c.bot.db().QueryRow("SELECT bot_removed_at FROM cases WHERE case_room_id = $1", room).Scan(&removed); err != nil || removed == nil {
			t.Fatalf("bot removal not recorded: %v", err)
		}
	})
}

// evacuateRoom has the homeserver's operator (a server admin) remove every local user from a room, with the
// homeserver's own admin API.
func evacuateRoom(t *testing.T, hs homeserver.Server, operator *mautrix.Client, room id.RoomID) {
	t.Helper()
	ctx := context.Background()
	var err error
	switch hs.Implementation() {
	case "dendrite":
		_, err = operator.MakeRequest(ctx, http.MethodPost,
			operator.BuildURL(mautrix.BaseURLPath{"_dendrite", "admin", "evacuateRoom", string(room)}), struct{}{}, nil)
	case "synapse": // the room is kept (no purge) and its local users are removed, at once
		_, err = operator.MakeRequest(ctx, http.MethodDelete,
			operator.BuildURL(mautrix.BaseURLPath{"_synapse", "admin", "v1", "rooms", string(room)}), map[string]any{"purge": false}, nil)
	default:
		t.Fatalf("no admin API to evacuate a room on %s", hs.Implementation())
	}
	if err != nil {
		t.Fatal(err)
	}
}
