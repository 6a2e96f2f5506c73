//go:build goolm

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/fhirtest"
	"github.com/caseroom/caseroom/internal/fhirtest/fhirtesting"
)

// waitRows waits until a count query on the bot's database reaches want.
func (c *clinic) waitRows(what string, want int, query string, args ...any) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := c.countRows(query, args...)
		if n >= want {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: %d, want %d within 30 s", what, n, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// resourceHistory counts the versions of a resource on the test server (its _history).
func resourceHistory(t *testing.T, srv *fhirtest.Server, ref string) int {
	t.Helper()
	resp, err := http.Get(srv.URL + "/" + ref + "/_history")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var bundle struct {
		Entry []json.RawMessage `json:"entry"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &bundle) != nil {
		t.Fatalf("history of %s: HTTP %d: %s", ref, resp.StatusCode, raw)
	}
	return len(bundle.Entry)
}

// findOne searches resources by identifier; there must be exactly one.
func findOne(t *testing.T, cli *ehr.Client, typ, system, value string, out any) {
	t.Helper()
	bundle, err := cli.Search(context.Background(), typ, ehr.IdentifierQuery(system, value))
	if err != nil {
		t.Fatal(err)
	}
	if len(bundle.Entry) != 1 {
		t.Fatalf("%d %s resources carry %s|%s, want 1", len(bundle.Entry), typ, system, value)
	}
	if err := bundle.Entry[0].Decode(out); err != nil {
		t.Fatal(err)
	}
}

// sendRelated sends a text message with a relation (a reply or a thread message) and returns its event ID.
func sendRelated(t *testing.T, u *user, room id.RoomID, text string, rel *event.RelatesTo) id.EventID {
	t.Helper()
	resp, err := u.SendMessageEvent(context.Background(), room, event.EventMessage,
		&event.MessageEventContent{MsgType: event.MsgText, Body: text, RelatesTo: rel})
	if err != nil {
		t.Fatalf("%s could not send %q: %v", u.UserID, text, err)
	}
	return resp.EventID
}

func replyRel(to id.EventID) *event.RelatesTo {
	return &event.RelatesTo{InReplyTo: &event.InReplyTo{EventID: to}}
}

// threadRel is a message in the thread of root, as Element sends it (a fallback reply to the latest message).
func threadRel(root, latest id.EventID) *event.RelatesTo {
	return &event.RelatesTo{Type: event.RelThread, EventID: root, IsFallingBack: true, InReplyTo: &event.InReplyTo{EventID: latest}}
}

// TestPlanAndFilingsReachTheChart: each change of the treatment plan becomes a new version of the case's one
// CarePlan; /file as a reply files a patient's message, and in a thread the whole thread, as Communications about
// that CarePlan; a replayed /file and a second /file of the same message file nothing new.
func TestPlanAndFilingsReachTheChart(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		srv := fhirtesting.Start(t)
		fhir := ehrClient(t, srv)
		c, doc, pat, caseRoom, patientRoom, patientRef := ehrCase(t, on, srv)
		provenanceSeedPractitioner(t, srv, "42") // a linked Practitioner must exist in the EHR
		c.mustSucceed(c.admin, c.adminDM, "!admin clinician add "+doc.UserID.String()+" --practitioner Practitioner/42")
		var caseID int64
		if err := c.bot.db().QueryRow("SELECT id FROM cases WHERE case_room_id = $1", caseRoom).Scan(&caseID); err != nil {
			t.Fatal(err)
		}

		// Every change of a goal or task is a new version of one CarePlan.
		due := time.Now().UTC().AddDate(0, 1, 0).Format("2006-01-02")
		versions := 0
		var planRef string
		for i, cmd := range []string{"!plan goal Walk 500 m without pain", "!plan task Change the dressing due " + due, "!plan done 2"} {
			c.mustSucceed(doc, caseRoom, cmd)
			c.waitRows("CarePlan deliveries", i+1, "SELECT COUNT(*) FROM ehr_outbox WHERE kind = 'careplan' AND delivered_at IS NOT NULL")
			var plan ehr.CarePlan
			findOne(t, fhir, "CarePlan", ehr.CarePlanIdentifierSystem, ehr.CarePlanIdentifier(caseID), &plan)
			if planRef != "" && "CarePlan/"+plan.ID != planRef {
				t.Fatalf("after %q the case has CarePlan/%s, before %s", cmd, plan.ID, planRef)
			}
			planRef = "CarePlan/" + plan.ID
			n := resourceHistory(t, srv, planRef)
			if n <= versions {
				t.Fatalf("after %q the CarePlan has %d versions, before %d", cmd, n, versions)
			}
			versions = n
		}
		if versions != 3 {
			t.Fatalf("the CarePlan has %d versions after goal, task and done, want 3", versions)
		}
		botNotice(doc, c, caseRoom, "Treatment plan of case", "filed in the EHR as "+planRef, "1 goal, 1 task")
		// A note is for the care team only: it changes nothing in the EHR.
		c.mustSucceed(doc, caseRoom, "!plan note SECRET-NOTE anxious about the wound")
		if n := c.countRows("SELECT COUNT(*) FROM ehr_outbox WHERE kind = 'careplan'"); n != 3 {
			t.Fatalf("%d CarePlan outbox items after a note, want still 3", n)
		}
		var plan ehr.CarePlan
		findOne(t, fhir, "CarePlan", ehr.CarePlanIdentifierSystem, ehr.CarePlanIdentifier(caseID), &plan)
		raw, _ := json.Marshal(plan)
		if plan.Status != "active" || plan.Intent != "plan" || plan.Subject.Reference != patientRef || plan.Author == nil ||
			plan.Author.Reference != "Practitioner/42" || len(plan.Activity) != 1 || plan.Activity[0].Detail.Status != "completed" ||
			plan.Activity[0].Detail.Description != "Change the dressing" || plan.Activity[0].Detail.ScheduledPeriod.End != due ||
			len(plan.Goal) != 1 || plan.Goal[0].Display != "Walk 500 m without pain" || strings.Contains(string(raw), "SECRET") {
			t.Fatalf("CarePlan = %s", raw)
		}
		var goal ehr.Goal
		goalType, goalID, _ := ehr.ParseReference(plan.Goal[0].Reference)
		if err := fhir.Read(context.Background(), goalType, goalID, &goal); err != nil {
			t.Fatal(err)
		}
		if goal.LifecycleStatus != "active" || goal.Description.Text != "Walk 500 m without pain" || goal.Subject.Reference != patientRef {
			t.Fatalf("Goal = %+v", goal)
		}

		// /file as a reply to the patient's message.
		said := pat.Send(patientRoom, "The dressing came off last night & it's bleeding a little")
		saidEvt := doc.WaitFor(30*time.Second, "the patient's message", func(evt *event.Event) bool { return evt.ID == said })
		fileCmd := sendRelated(t, doc, patientRoom, "!file", replyRel(said))
		reply := doc.WaitFor(30*time.Second, "the reply to /file", replyTo(c.botID, fileCmd)).Content.AsMessage().Body
		if !strings.Contains(reply, "Queued for the chart") || !strings.Contains(reply, pat.UserID.String()) {
			t.Fatalf("/file reply: %s", reply)
		}
		notice := botNotice(doc, c, patientRoom, "The message was filed to the chart as Communication/")
		var com ehr.Communication
		findOne(t, fhir, "Communication", ehr.CommunicationIdentifierSystem, string(fileCmd), &com)
		if !strings.Contains(notice, "Communication/"+com.ID) {
			t.Fatalf("notice %q names another Communication than %s", notice, com.ID)
		}
		wantPayload := fmt.Sprintf("%s (%s): The dressing came off last night & it's bleeding a little", pat.UserID,
			time.UnixMilli(saidEvt.Timestamp).UTC().Format("2006-01-02 15:04:05 UTC"))
		if com.Status != "completed" || com.Subject.Reference != patientRef || com.Sender == nil || com.Sender.Reference != patientRef ||
			len(com.About) != 1 || com.About[0].Reference != planRef || len(com.Payload) != 1 || com.Payload[0].ContentString != wantPayload ||
			!strings.HasPrefix(com.Sent, time.UnixMilli(saidEvt.Timestamp).UTC().Format("2006-01-02T15:04:05")) {
			t.Fatalf("Communication = %+v, want payload %q", com, wantPayload)
		}

		// The same command replayed by the homeserver, and a second /file of the same message: nothing new.
		txn, _ := json.Marshal(map[string]any{"events": []json.RawMessage{rawEvent(t, doc, patientRoom, fileCmd)}})
		if status, resp := putTransaction(t, c.bot, "replay-file", c.bot.reg.ServerToken, txn); status != http.StatusOK {
			t.Fatalf("replay: %d %s", status, resp)
		}
		again := sendRelated(t, doc, patientRoom, "!file", replyRel(said))
		if body := doc.WaitFor(30*time.Second, "the reply to the second /file", replyTo(c.botID, again)).Content.AsMessage().Body; !strings.Contains(body, "already filed") {
			t.Fatalf("second /file of the same message: %s", body)
		}
		if replies := doc.Matching(replyTo(c.botID, fileCmd)); len(replies) != 1 {
			t.Fatalf("%d replies to the replayed /file, want 1", len(replies))
		}
		if n := c.countRows("SELECT COUNT(*) FROM ehr_outbox WHERE kind = 'communication'"); n != 1 {
			t.Fatalf("%d Communication outbox items, want 1", n)
		}

		// The patient cannot file.
		if _, body := c.command(pat, patientRoom, "!file"); !strings.Contains(body, "⛔") {
			t.Fatalf("the patient ran /file: %s", body)
		}

		// /file in a thread files the whole thread: its root and the messages in it, without the bot's and the command.
		root := pat.Send(patientRoom, "Can I shower with the new dressing?")
		answer := sendRelated(t, doc, patientRoom, "Yes, with a waterproof cover", threadRel(root, root))
		thanks := sendRelated(t, pat, patientRoom, "Thank you!", threadRel(root, answer))
		threadCmd := sendRelated(t, doc, patientRoom, "/file", threadRel(root, thanks))
		reply = doc.WaitFor(30*time.Second, "the reply to /file in the thread", replyTo(c.botID, threadCmd)).Content.AsMessage().Body
		if !strings.Contains(reply, "Queued for the chart: the thread, 3 messages from") {
			t.Fatalf("/file in a thread: %s", reply)
		}
		botNotice(doc, c, patientRoom, "The thread (3 messages) was filed to the chart as Communication/")
		var thread ehr.Communication
		findOne(t, fhir, "Communication", ehr.CommunicationIdentifierSystem, string(threadCmd), &thread)
		if len(thread.Payload) != 3 || !strings.HasSuffix(thread.Payload[0].ContentString, "): Can I shower with the new dressing?") ||
			!strings.HasPrefix(thread.Payload[1].ContentString, doc.UserID.String()+" (") ||
			!strings.HasSuffix(thread.Payload[1].ContentString, "): Yes, with a waterproof cover") ||
			!strings.HasSuffix(thread.Payload[2].ContentString, "): Thank you!") || thread.Sender.Reference != patientRef ||
			thread.Subject.Reference != patientRef || len(thread.About) != 1 || thread.About[0].Reference != planRef {
			t.Fatalf("thread Communication = %+v", thread)
		}
		if n, err := srv.Count(context.Background(), "Communication", nil); err != nil || n != 2 {
			t.Fatalf("%d Communications in the EHR (%v), want 2", n, err)
		}
	})
}

// TestGuidedCheckInQuestionnaireResponse: a guided check-in is filed as its Observations and, besides them, as one
// QuestionnaireResponse holding the answers question by question.
func TestGuidedCheckInQuestionnaireResponse(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, on *onHomeserver) {
		srv := fhirtesting.Start(t)
		fhir := ehrClient(t, srv)
		c, doc, pat, caseRoom, patientRoom, patientRef := ehrCase(t, on, srv)

		start, _ := c.command(pat, patientRoom, "!checkin start")
		// Typed answers, processed in order: a choice by its text, the pain score, a temperature, and the last
		// (optional) question skipped.
		pat.Send(patientRoom, "Worse")
		pat.Send(patientRoom, "4")
		pat.Send(patientRoom, "38.4")
		last := pat.Send(patientRoom, "skip")
		if done := pat.WaitFor(30*time.Second, "the confirmation", replyTo(c.botID, last)).Content.AsMessage().Body; !strings.Contains(done, "Recorded your Daily check-in") {
			t.Fatalf("last answer: %s", done)
		}
		notice := botNotice(doc, c, caseRoom, "Guided check-in answers of "+pat.UserID.String(), "filed in the EHR as QuestionnaireResponse/")
		var qr struct {
			ehr.QuestionnaireResponse
			Contained []ehr.Questionnaire `json:"contained"`
		}
		findOne(t, fhir, "QuestionnaireResponse", ehr.QuestionnaireResponseIdentifierSystem, string(start), &qr)
		if !strings.Contains(notice, "QuestionnaireResponse/"+qr.ID) {
			t.Fatalf("notice %q names another resource than %s", notice, qr.ID)
		}
		if qr.Status != "completed" || qr.Subject.Reference != patientRef || qr.Author.Reference != patientRef || len(qr.Item) != 3 ||
			qr.Item[0].LinkID != "feeling" || qr.Item[0].Answer[0].ValueCoding == nil || qr.Item[0].Answer[0].ValueCoding.Display != "Worse" ||
			qr.Item[1].LinkID != "pain" || qr.Item[1].Answer[0].ValueInteger == nil || *qr.Item[1].Answer[0].ValueInteger != 4 ||
			qr.Item[2].LinkID != "temperature" || qr.Item[2].Answer[0].ValueQuantity == nil || qr.Item[2].Answer[0].ValueQuantity.Value != 38.4 ||
			len(qr.Contained) != 1 || len(qr.Contained[0].Item) != 4 {
			raw, _ := json.Marshal(qr)
			t.Fatalf("QuestionnaireResponse = %s", raw)
		}
		// The readings are Observations of the same check-in, as for a typed check-in.
		obs := observations(t, fhir, patientRef)
		if _, ok := obs[string(start)+"/pain"]; !ok || len(obs) != 2 {
			t.Fatalf("Observations of the guided check-in: %v", keysOf(obs))
		}
	})
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
