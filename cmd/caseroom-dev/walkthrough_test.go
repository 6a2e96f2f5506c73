//go:build goolm

package main

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/testclient"
)

func init() { followWalkthrough = walkthrough }

// Where the printed walkthrough names what to type and what to read: a step's command follows two spaces after a
// colon, a record is read with curl.
var (
	walkthroughCommand = regexp.MustCompile(`(?m)^\s+\d+\. .*?:  (!.+)$`)
	walkthroughCurl    = regexp.MustCompile(`(?m)^\s+curl '([^']+)'$`)
)

// walkthrough follows the walkthrough the setup printed, as its reader would in Element: the demo clinician and the
// demo patient sign in on new, cross-signed sessions (the printed advice to set up Secure Backup), type the printed
// commands in the rooms the steps name, file a message by replying !file to it, and then read the printed EHR URLs,
// which must hold the check-in's Observations, the CarePlan with the goal and the filed Communication.
func walkthrough(t *testing.T, s *setup, printed string) {
	t.Helper()
	var commands []string
	for _, m := range walkthroughCommand.FindAllStringSubmatch(printed, -1) {
		commands = append(commands, strings.TrimSpace(m[1]))
	}
	var urls []string
	for _, m := range walkthroughCurl.FindAllStringSubmatch(printed, -1) {
		urls = append(urls, m[1])
	}
	if len(commands) != 4 || !strings.HasPrefix(commands[0], "!case new ") || !strings.HasPrefix(commands[1], "!patient invite ") ||
		!strings.HasPrefix(commands[2], "!checkin ") || !strings.HasPrefix(commands[3], "!plan goal ") || len(urls) != 3 {
		t.Fatalf("the printed walkthrough has commands %q and URLs %q; want case new, patient invite, checkin, plan goal and three URLs:\n%s",
			commands, urls, printed)
	}
	passwords := map[string]string{}
	for _, a := range s.Accounts {
		passwords[a.Localpart] = a.Password
	}
	doc := testclient.Login(t, s.Homeserver, "dr.demo", passwords["dr.demo"], true)
	pat := testclient.Login(t, s.Homeserver, "pat.demo", passwords["pat.demo"], true)
	ok := func(who *testclient.User, room id.RoomID, text string) id.EventID {
		t.Helper()
		evtID, reply := who.Command(s.Bot, room, text)
		if strings.Contains(reply, "⛔") || strings.Contains(reply, "Usage:") {
			t.Fatalf("%q as %s: %s", text, who.UserID, reply)
		}
		return evtID
	}

	// 1. The case, from an encrypted direct chat; the clinician accepts both invites.
	dm := doc.EncryptedRoomWithBot(s.Bot)
	ok(doc, dm, commands[0])
	caseRoom, patientRoom := invitedRoomNamed(t, doc, "Case room"), invitedRoomNamed(t, doc, "Patient room")
	doc.JoinInvited(caseRoom)
	doc.JoinInvited(patientRoom)
	// 2. The patient is invited from the case room.
	ok(doc, caseRoom, commands[1])
	// 3. The patient joins their room and checks in.
	if invitedRoomNamed(t, pat, "Patient room") != patientRoom {
		t.Fatalf("the patient was invited to another room than the case's patient room %s", patientRoom)
	}
	pat.JoinInvited(patientRoom)
	ok(pat, patientRoom, commands[2])
	// 4. A goal of the plan, in the case room.
	ok(doc, caseRoom, commands[3])
	// 5. A message of the care team's discussion, filed by replying !file to it.
	said := doc.Send(caseRoom, "Swelling as expected after the operation; review in two weeks.")
	resp, err := doc.SendMessageEvent(context.Background(), caseRoom, event.EventMessage, &event.MessageEventContent{
		MsgType: event.MsgText, Body: "!file", RelatesTo: &event.RelatesTo{InReplyTo: &event.InReplyTo{EventID: said}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if reply := doc.WaitFor(30*time.Second, "the reply to !file", testclient.ReplyTo(s.Bot, resp.EventID)).Content.AsMessage().Body; strings.Contains(reply, "⛔") {
		t.Fatalf("!file: %s", reply)
	}

	// 6. The records, at the printed URLs.
	want := []struct {
		resource, contains string
	}{
		{"Observation", `"8480-6"`}, // systolic blood pressure, LOINC
		{"CarePlan", "Walk 500 m without pain"},
		{"Communication", "review in two weeks"},
	}
	for i, w := range want {
		if !strings.Contains(urls[i], "/"+w.resource+"?") {
			t.Fatalf("printed URL %d is %s, want a search of %s", i+1, urls[i], w.resource)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			total, body := searchFHIR(t, urls[i])
			if total > 0 && strings.Contains(body, w.contains) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s holds %d %s records without %s within 60 s:\n%s", urls[i], total, w.resource, w.contains, body)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
}

// invitedRoomNamed waits for an invite of u to a room with the given name (as a client shows an invite).
func invitedRoomNamed(t *testing.T, u *testclient.User, name string) id.RoomID {
	t.Helper()
	invited := map[id.RoomID]bool{}
	evt := u.WaitFor(30*time.Second, "an invite to a room named "+name, func(evt *event.Event) bool {
		if evt.Type == event.StateMember && evt.GetStateKey() == u.UserID.String() && evt.Content.AsMember().Membership == event.MembershipInvite {
			invited[evt.RoomID] = true
		}
		return evt.Type == event.StateRoomName && invited[evt.RoomID] && evt.Content.AsRoomName().Name == name
	})
	return evt.RoomID
}

// searchFHIR GETs a FHIR search URL and returns the bundle's total and the whole response.
func searchFHIR(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	if err = json.NewDecoder(resp.Body).Decode(&raw); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", url, resp.Status, err)
	}
	var bundle struct {
		Entry []json.RawMessage `json:"entry"`
	}
	if err = json.Unmarshal(raw, &bundle); err != nil {
		t.Fatalf("GET %s: not a bundle: %v", url, err)
	}
	return len(bundle.Entry), string(raw)
}
