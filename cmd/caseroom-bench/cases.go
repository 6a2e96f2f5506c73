package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/fhirtest"
	"github.com/caseroom/caseroom/internal/homeserver"
	"github.com/caseroom/caseroom/store"
)

// patientRoom is a real case's patient room with its patient (the lane's user), where check-ins go.
type patientRoom struct {
	Room       id.RoomID
	Patient    id.UserID
	PatientRef string
}

// setUpCases gives every lane a case linked to a FHIR Patient, the way people do it: an admin (listed in the
// config's admins) registers a clinician in a direct chat, the clinician opens one case per lane with
// `!case new ... --patient Patient/<id>` in a direct chat, joins the case room, runs `!patient invite` there, and
// the lane's user joins the patient room as its patient. The direct chats are created encrypted (caseroom runs
// PHI commands only in encrypted rooms); the bench clients have no crypto and send plaintext, which caseroom
// accepts because it checks the room's encryption setting. Progress is read from caseroom's database, since the
// bot's answers are encrypted.
func setUpCases(ctx context.Context, hs homeserver.Server, w *world, st *store.Store, botID id.UserID, fhir *fhirtest.Server) error {
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	domain := botID.Homeserver()
	admin, err := newBenchClient(ctx, hs, "bench_admin")
	if err != nil {
		return err
	}
	doc, err := newBenchClient(ctx, hs, "bench_doc")
	if err != nil {
		return err
	}
	defer admin.Client.Client.CloseIdleConnections()
	defer doc.Client.Client.CloseIdleConnections()
	if admin.UserID != id.NewUserID("bench_admin", domain) {
		return fmt.Errorf("the admin registered as %s, not as the admin in caseroom's config", admin.UserID)
	}
	adminDM, err := roomWith(ctx, admin, botID, nil, true)
	if err != nil {
		return err
	}
	if err = sendText(ctx, admin, adminDM, "!admin clinician add "+doc.UserID.String()); err != nil {
		return err
	}
	if err = waitUntil(ctx, "the clinician to be registered", func() (bool, error) {
		return st.Roles.IsClinician(ctx, doc.UserID)
	}); err != nil {
		return err
	}
	docDM, err := roomWith(ctx, doc, botID, nil, true)
	if err != nil {
		return err
	}
	fhirClient, err := ehr.New(ehr.Config{BaseURL: fhir.URL})
	if err != nil {
		return err
	}

	errs := make([]error, len(w.lanes))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, l := range w.lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = setUpCase(ctx, i, l, doc, docDM, st, fhirClient)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func setUpCase(ctx context.Context, i int, l *lane, doc *benchClient, docDM id.RoomID, st *store.Store, fhirClient *ehr.Client) error {
	var created ehr.Patient
	p := &ehr.Patient{ResourceType: "Patient", Name: []ehr.HumanName{{Family: fmt.Sprintf("Bench%02d", i), Given: []string{"Test"}}},
		Gender: "female", BirthDate: "1961-04-02"}
	if _, err := fhirClient.Create(ctx, p, nil, &created); err != nil {
		return fmt.Errorf("failed to seed a Patient in the FHIR server: %w", err)
	}
	ref := "Patient/" + created.ID
	title := fmt.Sprintf("bench %02d", i)
	if err := sendText(ctx, doc, docDM, fmt.Sprintf("!case new %s --patient %s", title, ref)); err != nil {
		return err
	}
	var c *store.Case
	if err := waitUntil(ctx, "case "+title+" to open", func() (bool, error) {
		cases, err := st.Cases.ForMember(ctx, doc.UserID)
		for _, found := range cases {
			if found.Title == title {
				c = found
			}
		}
		return c != nil, err
	}); err != nil {
		return err
	}
	if err := joinWhenInvited(ctx, doc, c.CaseRoomID); err != nil {
		return err
	}
	if err := sendText(ctx, doc, c.CaseRoomID, "!patient invite "+l.user.UserID.String()); err != nil {
		return err
	}
	if err := waitUntil(ctx, "the patient of "+title+" to be invited", func() (bool, error) {
		return st.Cases.IsPatientOf(ctx, c.ID, l.user.UserID)
	}); err != nil {
		return err
	}
	if err := joinWhenInvited(ctx, l.user, c.PatientRoomID); err != nil {
		return err
	}
	l.patient = patientRoom{Room: c.PatientRoomID, Patient: l.user.UserID, PatientRef: ref}
	return nil
}

func sendText(ctx context.Context, c *benchClient, room id.RoomID, body string) error {
	if _, err := c.SendMessageEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body}); err != nil {
		return fmt.Errorf("%s failed to send %q: %w", c.UserID, body, err)
	}
	return nil
}

// joinWhenInvited joins a room, retrying while the invite has not arrived yet.
func joinWhenInvited(ctx context.Context, c *benchClient, room id.RoomID) error {
	var last error
	for {
		if _, err := c.JoinRoomByID(ctx, room); err == nil {
			return nil
		} else if !errors.Is(err, mautrix.MForbidden) {
			return fmt.Errorf("%s failed to join %s: %w", c.UserID, room, err)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s was not invited to %s: %w (%v)", c.UserID, room, context.Cause(ctx), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitUntil polls done every 50 ms.
func waitUntil(ctx context.Context, what string, done func() (bool, error)) error {
	for {
		ok, err := done()
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// patientRooms are the lanes' patient rooms (empty before setUpCases).
func (w *world) patientRooms() []patientRoom {
	var out []patientRoom
	for _, l := range w.lanes {
		if l.patient.Room != "" {
			out = append(out, l.patient)
		}
	}
	return out
}
