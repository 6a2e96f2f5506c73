//go:build goolm

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestLogHoldsNoPHIOrSecrets runs the clinical scenarios with the bot logging at debug (and trace) level — a case
// with a title and an MRN, a patient with a name, check-ins with values and notes (valid, invalid, edited), plan
// items, history and case reads, the audit view — and then scans everything the bot logged for those, and for the
// tokens, the pickle key and the bot's password. encryption.require is off so that some of the patient data also
// travels in plaintext requests (a case list in an unencrypted direct chat), which the HTTP client logs.
func TestLogHoldsNoPHIOrSecrets(t *testing.T) {
	for _, level := range []string{"debug", "trace"} {
		t.Run(level, func(t *testing.T) {
			scanScenarioLog(t, level)
		})
	}
}

func scanScenarioLog(t *testing.T, level string) {
	w := getWorld(t)
	botMXID := id.NewUserID(w.reg.SenderLocalpart, w.hsA.ServerName)
	password := giveBotPassword(t, w, botMXID)
	c := newClinic(t, map[string]any{
		"logging":    map[string]any{"level": level, "format": "json"},
		"encryption": map[string]any{"bot_password": password, "require": false},
	})
	doc, pat := newUser(t, w.hsA, "doc"), newUser(t, w.hsA, "pat")
	ctx := context.Background()
	const patientName = "Ophelia Quintessa Marchbanks"
	if err := pat.SetDisplayName(ctx, patientName); err != nil {
		t.Fatal(err)
	}
	c.registerClinician(doc)
	docDM := doc.EncryptedRoomWithBot(c.botID)
	caseRoom, patientRoom := c.openCase(doc, docDM, `"Zanzibar Xylophone wound" --mrn MRN8675309Q`)
	c.mustSucceed(doc, caseRoom, "!patient invite "+pat.UserID.String())
	pat.JoinInvited(patientRoom)

	first, reply := c.command(pat, patientRoom, "!checkin bp=173/104 hr=131 glucose=12.9mmol/L pain=7 Quetzalcoatl rash spreading")
	if !strings.Contains(reply, "Quetzalcoatl") {
		t.Fatalf("check-in: %s", reply)
	}
	if _, reply = c.command(pat, patientRoom, "!checkin temp=52 Periwinkle shivers"); !strings.Contains(reply, "Nothing was stored") {
		t.Fatalf("invalid check-in: %s", reply)
	}
	edit, err := pat.SendMessageEvent(ctx, patientRoom, event.EventMessage, &event.MessageEventContent{
		MsgType: event.MsgText, Body: "* !checkin bp=171/102 Obsidian lantern dizziness",
		NewContent: &event.MessageEventContent{MsgType: event.MsgText, Body: "!checkin bp=171/102 Obsidian lantern dizziness"},
		RelatesTo:  &event.RelatesTo{Type: event.RelReplace, EventID: first},
	})
	if err != nil {
		t.Fatal(err)
	}
	pat.WaitFor(30*time.Second, "the amendment confirmation", replyTo(c.botID, edit.EventID))
	c.mustSucceed(doc, caseRoom, "!checkin for "+pat.UserID.String()+" glucose=14.3mmol/L Marzipan tremor by phone")
	c.mustSucceed(doc, caseRoom, "!plan goal Tangerine Walrus stroll daily")
	c.mustSucceed(doc, caseRoom, "!plan note Vermilion Hedgehog protocol discussed")
	c.mustSucceed(doc, caseRoom, "!checkins")
	c.mustSucceed(doc, caseRoom, "!case info")
	c.mustSucceed(doc, docDM, "!case list")
	if list := c.mustSucceed(doc, roomWithBot(t, doc, c.botID), "!case list"); !strings.Contains(list, "Zanzibar") {
		t.Fatalf("case list in the unencrypted chat: %s", list)
	}
	pat.Send(patientRoom, "Lavender Mongoose question about my tablets") // chat: no reply, but processed in order
	c.mustSucceed(pat, patientRoom, "!plan")
	c.mustSucceed(pat, patientRoom, "!checkins")
	c.mustSucceed(c.admin, c.adminDM, "!admin audit")
	c.bot.stop()

	var base map[string]any
	if err := yaml.Unmarshal(w.baseCfg, &base); err != nil {
		t.Fatal(err)
	}
	pickleKey, _ := base["encryption"].(map[string]any)["pickle_key"].(string)
	log := c.bot.Log()
	if !strings.Contains(log, `"message":"Processed event"`) || !strings.Contains(log, `"level":"debug"`) {
		t.Fatalf("the bot did not log at debug level:\n%s", log)
	}
	forbidden := map[string]string{
		"patient name":        patientName,
		"patient first name":  "Ophelia",
		"case title":          "Zanzibar",
		"MRN":                 "MRN8675309Q",
		"blood pressure":      "173/104",
		"edited value":        "171/102",
		"glucose":             "12.9mmol",
		"glucose (on behalf)": "14.3mmol",
		"check-in note":       "Quetzalcoatl",
		"invalid note":        "Periwinkle",
		"edited note":         "Obsidian",
		"note on behalf":      "Marzipan",
		"plan goal":           "Tangerine Walrus",
		"plan note":           "Vermilion Hedgehog",
		"chat message":        "Lavender Mongoose",
		"as_token":            w.reg.AppToken,
		"hs_token":            w.reg.ServerToken,
		"pickle key":          pickleKey,
		"bot password":        password,
	}
	for what, secret := range forbidden {
		if secret == "" {
			t.Fatalf("no value for %s", what)
		}
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, secret) {
				t.Errorf("the log holds the %s: %s", what, line)
				break
			}
		}
	}
}
