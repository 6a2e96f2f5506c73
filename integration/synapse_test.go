//go:build goolm

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/homeserver"
	"github.com/caseroom/caseroom/internal/synapse"
	"github.com/caseroom/caseroom/internal/testdb"
)

// synapseWorld is a Synapse with caseroom registered on it (its own registration and appservice port), started
// once for the tests that run on Synapse and stopped by TestMain.
type synapseWorld struct {
	hs     *synapse.Server
	target *botTarget
}

var (
	theSynapse    *synapseWorld
	theSynapseErr error
	synapseOnce   sync.Once
)

// getSynapse starts the shared Synapse once (installing it into .tools on the first run).
func getSynapse(t *testing.T) *synapseWorld {
	t.Helper()
	w := getWorld(t) // the caseroom binary
	synapseOnce.Do(func() {
		theSynapse, theSynapseErr = startSynapse(w)
	})
	if theSynapseErr != nil {
		testdb.Unavailable(t, theSynapseErr)
	}
	return theSynapse
}

func startSynapse(w *world) (*synapseWorld, error) {
	return startSynapseIn(w, filepath.Join(w.dir, "synapse"))
}

// startSynapseIn starts a Synapse with caseroom registered in dir (which the caller stops).
func startSynapseIn(w *world, dir string) (*synapseWorld, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	fedPort, err := homeserver.FreePort()
	if err != nil {
		return nil, err
	}
	botPort, err := homeserver.FreePort()
	if err != nil {
		return nil, err
	}
	domain := fmt.Sprintf("localhost:%d", fedPort) // it federates with the world's Dendrites
	reg, baseCfg, err := generateRegistration(ctx, w.binary, dir, domain, botPort)
	if err != nil {
		return nil, err
	}
	regPath := filepath.Join(dir, "registration.yaml")
	hs, err := synapse.Start(ctx, synapse.Options{
		Dir: filepath.Join(dir, "hs"), Federation: true, FederationAddr: fmt.Sprintf("127.0.0.1:%d", fedPort),
		AppServiceRegistrations: []string{regPath},
	})
	if err != nil {
		return nil, err
	}
	return &synapseWorld{hs: hs, target: &botTarget{hs: hs, port: botPort,
		regPath: regPath, reg: reg, baseCfg: baseCfg}}, nil
}

// onHomeserver is a homeserver with caseroom registered, for tests that run on each homeserver.
type onHomeserver struct {
	hs     homeserver.Server
	target *botTarget
}

// onDendrite is homeserver A (Dendrite) of the shared world.
func onDendrite(t *testing.T) *onHomeserver {
	t.Helper()
	w := getWorld(t)
	return &onHomeserver{hs: w.hsA, target: w.dendriteTarget()}
}

// onSynapse is the shared Synapse.
func onSynapse(t *testing.T) *onHomeserver {
	t.Helper()
	syn := getSynapse(t)
	return &onHomeserver{hs: syn.hs, target: syn.target}
}

// forEachHomeserver runs fn as a subtest on Dendrite and on Synapse, the way testdb.ForEach runs per database.
func forEachHomeserver(t *testing.T, fn func(t *testing.T, on *onHomeserver)) {
	t.Helper()
	for _, hs := range []struct {
		name string
		on   func(*testing.T) *onHomeserver
	}{{"dendrite", onDendrite}, {"synapse", onSynapse}} {
		t.Run(hs.name, func(t *testing.T) { fn(t, hs.on(t)) })
	}
}

// TestSynapseFirstContact: caseroom on Synapse cross-signs its device without being given a password (Synapse
// asks for none on a first key upload, MSC3967), and answers a ping in a plain and in an encrypted direct chat, with
// its reply encrypted in the encrypted one. Synapse serves no /sync to appservice users: the bot's device gets the room
// keys from the to-device events Synapse pushes in transactions (MSC2409), which it detects by itself.
func TestSynapseFirstContact(t *testing.T) {
	// A Synapse of its own: on the shared one, an earlier test's bot (another database) already made the bot
	// user's cross-signing keys, and a new bot device without their recovery key stays unverified.
	syn, err := startSynapseIn(getWorld(t), t.TempDir())
	if err != nil {
		testdb.Unavailable(t, err)
	}
	t.Cleanup(syn.hs.Stop)
	bot := startBotOn(t, syn.target, nil)
	botID := syn.hs.UserID("caseroom")
	alice := newUser(t, syn.hs, "alice")

	plain := roomWithBot(t, alice, botID)
	pingID := alice.Send(plain, "!ping")
	reply := alice.WaitFor(30*time.Second, "the pong", replyTo(botID, pingID))
	if body := reply.Content.AsMessage().Body; !strings.Contains(body, "Pong") {
		t.Fatalf("reply to the ping = %q, want a pong", body)
	}

	encrypted := alice.EncryptedRoomWithBot(botID)
	alice.pingEncrypted(encrypted, botID)
	if trust := alice.trustOf(botID, botDeviceID(t, bot)); trust != id.TrustStateCrossSignedTOFU {
		t.Errorf("alice sees the bot's device as %s, want cross-signed (TOFU)", trust)
	}
	// The device gives up its own /sync after a few refusals, seconds after the start.
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(bot.Log(), "does not serve /sync to the bot's device"); {
		if time.Now().After(deadline) {
			t.Errorf("the bot did not say that it relies on pushed to-device events")
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if t.Failed() {
		t.Logf("synapse log:\n%s\ncaseroom log:\n%s", syn.hs.LogTail(60), bot.Log())
	}
}

// TestCareTeamAcrossSynapseAndDendrite: caseroom on Synapse (creating rooms of version 10, which Dendrite can join)
// with a clinician of a Dendrite on its care team: the remote clinician joins both rooms over federation, runs
// commands in the encrypted case room, and reads a patient's check-in summary there.
func TestCareTeamAcrossSynapseAndDendrite(t *testing.T) {
	c := newClinicOn(t, onSynapse(t), map[string]any{"homeserver": map[string]any{"room_version": "10"}})
	w := c.bot.w
	doc, pat, remoteDoc := newUser(t, c.hs, "doc"), newUser(t, c.hs, "pat"), newUser(t, w.hsB, "remotedoc")
	c.registerClinician(doc)
	docDM := doc.EncryptedRoomWithBot(c.botID)
	caseRoom, patientRoom := c.openCase(doc, docDM, "Shared care")
	c.mustSucceed(doc, caseRoom, "!patient invite "+pat.UserID.String())
	pat.JoinInvited(patientRoom)

	c.mustSucceed(c.admin, c.adminDM, "!admin servers allow "+w.hsB.ServerName)
	c.registerClinician(remoteDoc)
	c.mustSucceed(doc, caseRoom, "!team add "+remoteDoc.UserID.String()+" cardiologist")
	remoteDoc.JoinInvited(caseRoom)
	remoteDoc.JoinInvited(patientRoom)
	if body := c.mustSucceed(remoteDoc, caseRoom, "!team"); !strings.Contains(body, "cardiologist") {
		t.Fatalf("team as seen by the remote clinician: %s", body)
	}
	c.mustSucceed(pat, patientRoom, "!checkin hr=88 short of breath")
	summary := botNotice(remoteDoc, c, caseRoom, "Check-in", "HR 88/min", "short of breath")
	if !strings.Contains(summary, pat.UserID.String()) {
		t.Fatalf("the summary does not name the patient: %s", summary)
	}
	remoteDoc.WaitFor(5*time.Second, "the summary in encrypted form", func(evt *event.Event) bool {
		return evt.RoomID == caseRoom && evt.Sender == c.botID && evt.Type == event.EventEncrypted
	})
}
