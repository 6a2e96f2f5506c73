//go:build goolm

package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

// TestPHICommandRefusedInUnencryptedRoom: with encryption.require (the default), a command that reads or writes
// patient data is refused in a room that is not end-to-end encrypted, with an explanation, an audit row and no
// effect; commands without patient data still work there, and the same commands work in an encrypted room.
func TestPHICommandRefusedInUnencryptedRoom(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		c := newClinicOn(t, on, nil)
		doc := newUser(t, c.hs, "doc")
		c.registerClinician(doc)
		plainDM := roomWithBot(t, doc, c.botID)
		if encrypted, _ := doc.StateStore.IsEncrypted(context.Background(), plainDM); encrypted {
			t.Fatal("the test room is encrypted")
		}

		if body := c.mustSucceed(doc, plainDM, "!ping"); !strings.Contains(body, "Pong") {
			t.Fatalf("ping in an unencrypted room: %s", body)
		}
		for _, cmd := range []string{"!case list", `!case new "Unencrypted title" --mrn 4242424`} {
			evtID, body := c.command(doc, plainDM, cmd)
			for _, want := range []string{"⛔", "encrypted", "Nothing was done", "turn on encryption"} {
				if !strings.Contains(body, want) {
					t.Errorf("%s: refusal lacks %q: %s", cmd, want, body)
				}
			}
			if outcome := c.auditOutcome(evtID); outcome != "refused:unencrypted" {
				t.Errorf("%s: audited outcome %q, want refused:unencrypted", cmd, outcome)
			}
			if n := c.countRows("SELECT COUNT(*) FROM cases WHERE created_event = $1", evtID); n != 0 {
				t.Errorf("%s: a case was created in an unencrypted room", cmd)
			}
		}
		if n := c.countRows("SELECT COUNT(*) FROM cases"); n != 0 {
			t.Fatalf("%d cases exist after refused commands", n)
		}

		// An admin's audit view needs encryption too.
		adminPlain := roomWithBot(t, c.admin, c.botID)
		if evtID, body := c.command(c.admin, adminPlain, "!admin audit"); !strings.Contains(body, "⛔") || c.auditOutcome(evtID) != "refused:unencrypted" {
			t.Fatalf("admin audit in an unencrypted room: %s", body)
		}
		if body := c.mustSucceed(c.admin, adminPlain, "!admin status"); !strings.Contains(body, "caseroom status") {
			t.Fatalf("admin status in an unencrypted room: %s", body)
		}

		// In an encrypted direct chat the same command runs.
		docDM := doc.EncryptedRoomWithBot(c.botID)
		if body := c.mustSucceed(doc, docDM, "!case list"); !strings.Contains(body, "not on any care team") {
			t.Fatalf("case list in an encrypted room: %s", body)
		}
	})
}

// TestPHICommandsAllowedUnencryptedWhenNotRequired: encryption.require: false lets PHI commands run anywhere.
func TestPHICommandsAllowedUnencryptedWhenNotRequired(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		c := newClinicOn(t, on, map[string]any{"encryption": map[string]any{"require": false}})
		doc := newUser(t, on.hs, "doc")
		c.registerClinician(doc)
		plainDM := roomWithBot(t, doc, c.botID)
		if body := c.mustSucceed(doc, plainDM, "!case list"); !strings.Contains(body, "not on any care team") {
			t.Fatalf("case list with encryption.require false: %s", body)
		}
	})
}

// TestDataAccessMatrix runs every data-reading command as each kind of user, with two cases whose patients and
// care teams differ, and checks that each sees exactly what they may: a patient their own check-ins and the
// patient-facing plan, a clinician only the cases whose care team they are on, an admin the audit log but no
// clinical content, an outsider nothing. Reads, writes and refusals are all in the audit log.
func TestDataAccessMatrix(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		c := newClinicOn(t, on, nil)
		docA, docB := newUser(t, c.hs, "doca"), newUser(t, c.hs, "docb")
		patA, patB, outsider := newUser(t, c.hs, "pata"), newUser(t, c.hs, "patb"), newUser(t, c.hs, "outsider")
		c.registerClinician(docA)
		c.registerClinician(docB)
		docADM, docBDM := docA.EncryptedRoomWithBot(c.botID), docB.EncryptedRoomWithBot(c.botID)
		patADM, outsiderDM := patA.EncryptedRoomWithBot(c.botID), outsider.EncryptedRoomWithBot(c.botID)

		caseRoomA, patientRoomA := c.openCase(docA, docADM, `"Alpha title" --mrn ALPHAMRN1`)
		caseRoomB, patientRoomB := c.openCase(docB, docBDM, `"Bravo title" --mrn BRAVOMRN2`)
		c.mustSucceed(docA, caseRoomA, "!patient invite "+patA.UserID.String())
		patA.JoinInvited(patientRoomA)
		c.mustSucceed(docB, caseRoomB, "!patient invite "+patB.UserID.String())
		patB.JoinInvited(patientRoomB)
		var caseA, caseB int64
		if err := c.bot.db().QueryRow("SELECT id FROM cases WHERE case_room_id = $1", caseRoomA).Scan(&caseA); err != nil {
			t.Fatal(err)
		}
		if err := c.bot.db().QueryRow("SELECT id FROM cases WHERE case_room_id = $1", caseRoomB).Scan(&caseB); err != nil {
			t.Fatal(err)
		}

		checkinA, _ := c.command(patA, patientRoomA, "!checkin hr=61 alphanote sore knee")
		c.mustSucceed(patB, patientRoomB, "!checkin hr=99 bravonote headache")
		c.mustSucceed(docA, caseRoomA, "!plan goal Alphagoal walk to the shop")
		c.mustSucceed(docA, caseRoomA, "!plan note Alphastaffnote anxious about surgery")
		c.mustSucceed(docB, caseRoomB, "!plan goal Bravogoal swim twice a week")

		// What belongs to case A and case B; each reply is checked to hold what it must and nothing of the other case
		// (or, for the patient, nothing meant for the care team only).
		caseAData := []string{"Alpha title", "ALPHAMRN1", "HR 61", "alphanote", "Alphagoal", "Alphastaffnote"}
		caseBData := []string{"Bravo title", "BRAVOMRN2", "HR 99", "bravonote", "Bravogoal"}
		all := append(append([]string{}, caseAData...), caseBData...)
		except := func(keep ...string) []string {
			var out []string
			for _, s := range all {
				if !slices.Contains(keep, s) {
					out = append(out, s)
				}
			}
			return out
		}

		const ok = "ok"
		tests := []struct {
			name    string
			u       *user
			room    id.RoomID
			cmd     string
			outcome string   // ok or the audited refusal
			want    []string // in the reply
			never   []string // never in the reply
		}{
			// Patient A, in their patient room and in a direct chat.
			{"patient A checkins", patA, patientRoomA, "!checkins", ok, []string{"HR 61", "alphanote"}, except("HR 61", "alphanote")},
			{"patient A plan", patA, patientRoomA, "!plan", ok, []string{"Alphagoal"}, except("Alphagoal")},
			{"patient A case info", patA, patientRoomA, "!case info", "refused:room", nil, all},
			{"patient A team", patA, patientRoomA, "!team", "refused:room", nil, all},
			{"patient A plan history", patA, patientRoomA, "!plan history", "refused:room", nil, all},
			{"patient A case list", patA, patientRoomA, "!case list", "refused:role", nil, all},
			{"patient A checkins in a direct chat", patA, patADM, "!checkins", "refused:room", nil, all},
			{"patient A admin audit", patA, patADM, "!admin audit", "refused:role", nil, all},
			// Patient B sees only their own.
			{"patient B checkins", patB, patientRoomB, "!checkins", ok, []string{"HR 99", "bravonote"}, except("HR 99", "bravonote")},
			{"patient B plan", patB, patientRoomB, "!plan", ok, []string{"Bravogoal"}, except("Bravogoal")},
			// Clinician A on case A's team.
			{"clinician A checkins", docA, caseRoomA, "!checkins", ok, []string{"HR 61", "alphanote"}, caseBData},
			{"clinician A plan", docA, caseRoomA, "!plan", ok, []string{"Alphagoal", "Alphastaffnote"}, caseBData},
			{"clinician A case info", docA, caseRoomA, "!case info", ok, []string{"Alpha title", "ALPHAMRN1"}, caseBData},
			{"clinician A checkins in the patient room", docA, patientRoomA, "!checkins", ok, []string{"HR 61"}, caseBData},
			{"clinician A case list", docA, docADM, "!case list", ok, []string{"Alpha title"}, caseBData},
			// Clinician B is not on case A's team: only case B, wherever they ask.
			{"clinician B case list", docB, docBDM, "!case list", ok, []string{"Bravo title"}, caseAData},
			{"clinician B case info", docB, caseRoomB, "!case info", ok, []string{"BRAVOMRN2"}, caseAData},
			{"clinician B checkins", docB, caseRoomB, "!checkins", ok, []string{"HR 99"}, caseAData},
			{"clinician B plan", docB, caseRoomB, "!plan", ok, []string{"Bravogoal"}, caseAData},
			{"clinician B checkins in a direct chat", docB, docBDM, "!checkins", "refused:room", nil, all},
			{"clinician B plan in a direct chat", docB, docBDM, "!plan", "refused:room", nil, all},
			{"clinician B admin audit", docB, docBDM, "!admin audit case " + fmt.Sprint(caseA), "refused:role", nil, all},
			// The admin manages but reads no clinical content.
			{"admin checkins", c.admin, c.adminDM, "!checkins", "refused:room", nil, all},
			{"admin case info", c.admin, c.adminDM, "!case info", "refused:room", nil, all},
			{"admin plan", c.admin, c.adminDM, "!plan", "refused:room", nil, all},
			{"admin case list", c.admin, c.adminDM, "!case list", "refused:role", nil, all},
			{"admin audit of case A", c.admin, c.adminDM, "!admin audit case " + fmt.Sprint(caseA), ok,
				[]string{"read:checkins", "write:checkin", "read:plan", patA.UserID.String(), fmt.Sprintf("#%d", caseA)}, all},
			{"admin audit of patient A", c.admin, c.adminDM, "!admin audit " + patA.UserID.String() + " since 1h", ok,
				[]string{"read:checkins", "command:case info", "refused:room", "command:admin audit", "refused:role"}, all},
			// An outsider gets nothing anywhere.
			{"outsider checkins", outsider, outsiderDM, "!checkins", "refused:room", nil, all},
			{"outsider case info", outsider, outsiderDM, "!case info", "refused:room", nil, all},
			{"outsider plan", outsider, outsiderDM, "!plan", "refused:room", nil, all},
			{"outsider case list", outsider, outsiderDM, "!case list", "refused:role", nil, all},
			{"outsider admin audit", outsider, outsiderDM, "!admin audit", "refused:role", nil, all},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				evtID, body := c.command(tt.u, tt.room, tt.cmd)
				refused := strings.Contains(body, "⛔")
				if refused != (tt.outcome != ok) {
					t.Fatalf("reply %q, want outcome %s", body, tt.outcome)
				}
				if tt.outcome != ok {
					if outcome := c.auditOutcome(evtID); outcome != tt.outcome {
						t.Errorf("audited outcome %q, want %q", outcome, tt.outcome)
					}
				}
				for _, want := range tt.want {
					if !strings.Contains(body, want) {
						t.Errorf("reply lacks %q:\n%s", want, body)
					}
				}
				for _, never := range tt.never {
					if strings.Contains(body, never) {
						t.Errorf("reply reveals %q:\n%s", never, body)
					}
				}
			})
		}

		// Nobody gets into the other case's rooms.
		for _, attempt := range []struct {
			u    *user
			room id.RoomID
		}{{patB, patientRoomA}, {patA, caseRoomA}, {docB, caseRoomA}, {docB, patientRoomA}, {outsider, patientRoomB}} {
			if _, err := attempt.u.JoinRoomByID(context.Background(), attempt.room); err == nil {
				t.Errorf("%s could join %s without an invite", attempt.u.UserID, attempt.room)
			}
		}

		// The audit log has the reads, the writes and the refusals, with who, where and which case.
		db := c.bot.db()
		for _, row := range []struct {
			actor   id.UserID
			action  string
			outcome string
			caseID  int64
			eventID id.EventID
		}{
			{patA.UserID, "write:checkin", ok, caseA, checkinA},
			{patA.UserID, "read:checkins", ok, caseA, ""},
			{patA.UserID, "read:plan", ok, caseA, ""},
			{patA.UserID, "command:case info", "refused:room", caseA, ""},
			{docB.UserID, "read:checkins", ok, caseB, ""},
			{docB.UserID, "command:checkins", "refused:room", 0, ""},
			{c.admin.UserID, "read:audit", ok, caseA, ""},
			{c.admin.UserID, "command:checkins", "refused:room", 0, ""},
			{outsider.UserID, "command:case list", "refused:role", 0, ""},
		} {
			query := "SELECT COUNT(*) FROM audit WHERE actor = $1 AND action = $2 AND outcome = $3 AND COALESCE(case_id, 0) = $4 AND room_id IS NOT NULL AND event_id IS NOT NULL AND at > 0"
			args := []any{row.actor, row.action, row.outcome, row.caseID}
			if row.eventID != "" {
				query += " AND event_id = $5"
				args = append(args, row.eventID)
			}
			var n int
			if err := db.QueryRow(query, args...).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				t.Errorf("no audit row %s %s %s (case %d)", row.actor, row.action, row.outcome, row.caseID)
			}
		}
		if body := c.mustSucceed(c.admin, c.adminDM, "!admin audit case 99999"); !strings.Contains(body, "No audit entries in case #99999") {
			t.Errorf("empty audit answer: %s", body)
		}
	})
}

// TestBadTransactionsRejectedWhileTrafficFlows hammers the transaction endpoint with requests that carry a wrong or
// missing token, are too large or are not JSON, while a user talks to the bot: every bad request gets its 4xx with
// a Matrix error, every message of the user is answered, and the bot keeps running.
func TestBadTransactionsRejectedWhileTrafficFlows(t *testing.T) {
	bot := startBot(t, map[string]any{"appservice": map[string]any{"max_body_bytes": 4096}})
	alice := newUser(t, bot.w.hsA, "alice")
	botMXID := id.NewUserID(bot.w.reg.SenderLocalpart, bot.w.hsA.ServerName)
	room := roomWithBot(t, alice, botMXID)

	bad := []struct {
		token  string
		body   []byte
		status int
		code   string
	}{
		{"", []byte(`{"events":[]}`), http.StatusUnauthorized, "M_UNAUTHORIZED"},
		{"wrong-" + bot.w.reg.ServerToken, []byte(`{"events":[]}`), http.StatusForbidden, "M_FORBIDDEN"},
		{bot.w.reg.ServerToken[:len(bot.w.reg.ServerToken)-1], []byte(`{"events":[]}`), http.StatusForbidden, "M_FORBIDDEN"},
		{bot.w.reg.ServerToken, []byte(`{"events":[` + strings.Repeat(`{"type":"x"},`, 400) + `{}]}`), http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		{bot.w.reg.ServerToken, []byte(`{"events":[{"event_id":"$x",`), http.StatusBadRequest, "M_NOT_JSON"},
		{bot.w.reg.ServerToken, []byte(`["not","a","transaction"]`), http.StatusBadRequest, "M_BAD_JSON"},
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent atomic.Int64
	var mu sync.Mutex
	var failures []string
	for worker := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				b := bad[(i+worker)%len(bad)]
				status, resp, err := sendTransaction(bot, fmt.Sprintf("bad-%d-%d", worker, i), b.token, b.body)
				sent.Add(1)
				if err != nil || status != b.status || !strings.Contains(resp, `"errcode":"`+b.code+`"`) {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("got %d %s (%v), want %d %s", status, resp, err, b.status, b.code))
					mu.Unlock()
				}
			}
		}()
	}
	var pings []id.EventID
	for i := range 10 {
		pings = append(pings, alice.Send(room, fmt.Sprintf("!ping %d", i)))
	}
	for _, ping := range pings {
		alice.WaitFor(30*time.Second, "the reply to "+ping.String(), replyTo(botMXID, ping))
	}
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d bad requests got the wrong answer, e.g. %s", len(failures), sent.Load(), failures[0])
	}
	if sent.Load() < int64(len(bad)) {
		t.Fatalf("only %d bad requests were sent", sent.Load())
	}
	select {
	case <-bot.done:
		t.Fatalf("caseroom exited:\n%s", bot.Log())
	default:
	}
	if replies := alice.Matching(replyTo(botMXID, pings[0])); len(replies) != 1 {
		t.Fatalf("%d replies to the first ping, want 1", len(replies))
	}
}

// sendTransaction is putTransaction for use outside the test goroutine.
func sendTransaction(bot *botProcess, txnID, token string, body []byte) (int, string, error) {
	req, err := http.NewRequest(http.MethodPut, bot.URL()+"/_matrix/app/v1/transactions/"+txnID, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.String(), err
}

// TestDataFilesArePrivate: the data directory, the SQLite database with its WAL files and the log file are readable
// by caseroom's user only, also when they existed before with wider permissions.
func TestDataFilesArePrivate(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	logFile := filepath.Join(dataDir, "caseroom.log")
	if err := os.Mkdir(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{dataDir, logFile} {
		if err := os.Chmod(path, map[bool]os.FileMode{true: 0o755, false: 0o644}[path == dataDir]); err != nil {
			t.Fatal(err)
		}
	}
	bot := startBot(t, map[string]any{"data_dir": dataDir, "logging": map[string]any{"file": logFile}})
	alice := newUser(t, bot.w.hsA, "alice")
	botMXID := id.NewUserID(bot.w.reg.SenderLocalpart, bot.w.hsA.ServerName)
	room := roomWithBot(t, alice, botMXID)
	alice.WaitFor(30*time.Second, "a reply", replyTo(botMXID, alice.Send(room, "!ping")))

	want := map[string]os.FileMode{dataDir: 0o700, logFile: 0o600}
	for _, name := range []string{"caseroom.db", "caseroom.db-wal", "caseroom.db-shm"} {
		want[filepath.Join(dataDir, name)] = 0o600
	}
	for path, mode := range want {
		info, err := os.Stat(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if got := info.Mode().Perm(); got != mode {
			t.Errorf("%s has mode %04o, want %04o", path, got, mode)
		}
	}
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, entry := range entries {
		info, err := entry.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s in the data directory has mode %04o", entry.Name(), info.Mode().Perm())
		}
	}
	if logged, _ := os.ReadFile(logFile); !strings.Contains(string(logged), "caseroom is ready") {
		t.Errorf("the log file holds no log: %q", logged)
	}
}
