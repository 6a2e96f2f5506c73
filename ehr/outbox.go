package ehr

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/care"
	"github.com/caseroom/caseroom/store"
)

// Outbox delivers the records queued in the database's EHR outbox: in order per case (one patient), idempotently
// (conditional creates on the record's identifier, updates with If-Match), retrying network errors, 408, 429 and
// 5xx with exponential backoff and jitter (honouring Retry-After), and dead-lettering anything else with the
// server's OperationOutcome. Each result is recorded together with the room's notice in one transaction.
type Outbox struct {
	Store  *store.Store
	Client *Client
	// Wake is called with the rooms that got a notice, so that the bot sends it.
	Wake func(id.RoomID)
	Log  zerolog.Logger
	// Observe, when set, is told the outcome of each delivery attempt: "delivered", "retry" or "dead".
	Observe func(outcome string)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Idle is how long the worker sleeps when nothing is due (default 1 s).
	Idle time.Duration
	// MaxBackoff caps the delay between attempts of one item (default 30 s, so that everything is delivered within
	// a minute of the EHR coming back; a longer Retry-After is still honoured).
	MaxBackoff time.Duration
	// Parallel is how many patients' records are delivered at once (default DefaultParallel). A patient's records
	// are still delivered one after the other, in order.
	Parallel int

	kick chan struct{}
}

// DefaultParallel is Outbox.Parallel when unset: enough to keep the EHR busy while caseroom records each result.
const DefaultParallel = 4

func (o *Outbox) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Outbox) observe(outcome string) {
	if o.Observe != nil {
		o.Observe(outcome)
	}
}

// Kick makes the worker look for due items at once.
func (o *Outbox) Kick() {
	if o.kick == nil {
		return
	}
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends.
func (o *Outbox) Run(ctx context.Context) {
	if o.kick == nil {
		o.kick = make(chan struct{}, 1)
	}
	idle := o.Idle
	if idle <= 0 {
		idle = time.Second
	}
	for ctx.Err() == nil {
		items, err := o.Store.EHR.Due(ctx, o.now(), 50)
		if err != nil {
			o.Log.Warn().Err(err).Msg("Failed to read the EHR outbox")
		}
		o.deliverAll(ctx, items)
		if ctx.Err() != nil {
			return
		}
		if len(items) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
		case <-o.kick:
		case <-time.After(idle):
		}
	}
}

// DeliverDue delivers everything due now once (for tests and benchmarks) and returns how many items it tried.
func (o *Outbox) DeliverDue(ctx context.Context) (int, error) {
	items, err := o.Store.EHR.Due(ctx, o.now(), 1000)
	if err != nil {
		return 0, err
	}
	o.deliverAll(ctx, items)
	return len(items), nil
}

// deliverAll delivers items, up to Parallel at once. The items are the first due record of each patient (see
// EHROutboxQuery.Due), so delivering them at the same time keeps each patient's order.
func (o *Outbox) deliverAll(ctx context.Context, items []*store.OutboxItem) {
	parallel := o.Parallel
	if parallel <= 0 {
		parallel = DefaultParallel
	}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			o.deliverOne(ctx, it)
		}()
	}
	wg.Wait()
}

// permanentError is a delivery failure that no retry fixes (missing links in caseroom's own data).
type permanentError struct{ msg string }

func (e permanentError) Error() string { return e.msg }

func (o *Outbox) deliverOne(ctx context.Context, it *store.OutboxItem) {
	log := o.Log.With().Int64("outbox_seq", it.Seq).Str("kind", it.Kind).Int64("case_id", it.CaseID).Logger()
	attemptCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	result, notices, err := o.deliver(attemptCtx, it)
	if err == nil {
		err = o.Store.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
			if err := o.Store.EHR.MarkDelivered(ctx, it.Seq, result); err != nil {
				return err
			}
			return o.queue(ctx, it, notices)
		})
		if err != nil {
			log.Err(err).Msg("Failed to record EHR delivery; it will be repeated (idempotently)")
			return
		}
		log.Debug().Msg("Delivered to the EHR")
		o.observe("delivered")
		o.wake(notices)
		return
	}
	var perm permanentError
	if IsRetryable(err) && !errors.As(err, &perm) {
		delay := o.backoff(it.Attempts + 1)
		var e *Error
		if errors.As(err, &e) && e.RetryAfter > delay {
			delay = e.RetryAfter
		}
		log.Warn().Err(err).Dur("retry_in", delay).Msg("EHR delivery failed, will retry")
		o.observe("retry")
		if err := o.Store.EHR.MarkRetry(ctx, it.Seq, safeReason(err), o.now().Add(delay)); err != nil {
			log.Err(err).Msg("Failed to record EHR retry")
		}
		return
	}
	log.Warn().Err(err).Msg("EHR refused a record, moved to dead letters")
	o.observe("dead")
	reason := safeReason(err)
	deadNotice := notice{room: "", text: ""}
	c, _ := o.Store.Cases.ByID(ctx, it.CaseID)
	if c != nil {
		deadNotice = notice{room: c.CaseRoomID, text: fmt.Sprintf("⚠️ A record of case #%d could not be filed in the EHR and is kept "+
			"as dead letter %d: %s\n\nAn admin can see it with `/admin outbox` and file it again with `/admin outbox retry %d` once fixed.",
			c.ID, it.Seq, reason, it.Seq)}
	}
	err = o.Store.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := o.Store.EHR.MarkDead(ctx, it.Seq, reason); err != nil {
			return err
		}
		if deadNotice.room == "" {
			return nil
		}
		return o.queue(ctx, it, []notice{deadNotice})
	})
	if err != nil {
		log.Err(err).Msg("Failed to record dead letter")
		return
	}
	o.wake([]notice{deadNotice})
}

// safeReason is the error text kept with an item and shown to admins: the server's OperationOutcome text and
// status, never request data.
func safeReason(err error) string {
	text := err.Error()
	if len(text) > 500 {
		text = text[:500] + "…"
	}
	return text
}

func (o *Outbox) backoff(attempt int) time.Duration {
	maxDelay := o.MaxBackoff
	if maxDelay <= 0 {
		maxDelay = 30 * time.Second
	}
	d := time.Second
	for i := 1; i < attempt && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	return d/2 + rand.N(d/2+1)
}

// notice is a message for a room (reaction when react is set).
type notice struct {
	room  id.RoomID
	text  string
	react id.EventID
}

func (o *Outbox) queue(ctx context.Context, it *store.OutboxItem, notices []notice) error {
	for _, n := range notices {
		var err error
		if n.react != "" {
			_, err = o.Store.Outgoing.Add(ctx, n.room, event.EventReaction, &event.ReactionEventContent{
				RelatesTo: event.RelatesTo{Type: event.RelAnnotation, EventID: n.react, Key: n.text},
			}, it.SourceEvent)
		} else {
			_, err = o.Store.Outgoing.Add(ctx, n.room, event.EventMessage, &event.MessageEventContent{
				MsgType: event.MsgNotice, Body: n.text, Mentions: &event.Mentions{},
			}, it.SourceEvent)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (o *Outbox) wake(notices []notice) {
	if o.Wake == nil {
		return
	}
	for _, n := range notices {
		if n.room != "" {
			o.Wake(n.room)
		}
	}
}

// deliver sends one item and returns the result to store and the notices for rooms.
func (o *Outbox) deliver(ctx context.Context, it *store.OutboxItem) (string, []notice, error) {
	switch it.Kind {
	case store.OutboxCheckIn:
		return o.deliverCheckIn(ctx, it)
	case store.OutboxCarePlan:
		return o.deliverCarePlan(ctx, it)
	case store.OutboxCommunication:
		return o.deliverCommunication(ctx, it)
	case store.OutboxQuestionnaireResponse:
		return o.deliverQuestionnaireResponse(ctx, it)
	default:
		return "", nil, permanentError{fmt.Sprintf("unknown outbox kind %q", it.Kind)}
	}
}

func (o *Outbox) deliverCheckIn(ctx context.Context, it *store.OutboxItem) (string, []notice, error) {
	version, err := o.Store.CheckIns.CheckInVersion(ctx, it.RecordID, it.Version)
	if err != nil {
		return "", nil, err
	}
	if version == nil {
		return "", nil, permanentError{fmt.Sprintf("check-in %d version %d does not exist", it.RecordID, it.Version)}
	}
	c, err := o.Store.Cases.ByID(ctx, it.CaseID)
	if err != nil {
		return "", nil, err
	}
	if c == nil || c.PatientRef == "" {
		return "", nil, permanentError{fmt.Sprintf("case #%d is not linked to a FHIR Patient (open cases with --patient or --mrn)", it.CaseID)}
	}
	record := CheckInRecord{
		EventID:    string(version.EventID),
		CheckIn:    &care.CheckIn{Values: version.Values, Note: version.Note},
		PatientRef: c.PatientRef,
		Effective:  version.EffectiveAt,
	}
	if version.RecordedBy != version.PatientID {
		// A clinician entered it: their Practitioner, or (without one) their Matrix ID names the performer.
		ref, err := o.Store.Roles.PractitionerRef(ctx, version.RecordedBy)
		if err != nil {
			return "", nil, err
		}
		record.PerformerRef = ref
		if ref == "" {
			record.RecordedBy = string(version.RecordedBy)
		}
	} else {
		record.PerformerRef = c.PatientRef
	}
	if version.Version == 1 {
		bundle, err := CheckInBundle(record)
		if err != nil {
			return "", nil, permanentError{err.Error()}
		}
		resp, err := o.Client.Transaction(ctx, bundle)
		if err != nil {
			return "", nil, err
		}
		refs := locations(resp)
		return strings.Join(refs, ","), []notice{
			{room: it.RoomID, react: it.SourceEvent, text: "📋"},
			{room: c.CaseRoomID, text: fmt.Sprintf("📋 Check-in of %s filed in the EHR as %s.", version.PatientID, strings.Join(refs, ", "))},
		}, nil
	}
	// A later version: bring each Observation of the check-in to this version (amended values, or entered in error).
	status := "amended"
	if version.Status == store.StatusEnteredInError {
		status = "entered-in-error"
	}
	wanted, err := CheckInObservations(record)
	if err != nil {
		return "", nil, permanentError{err.Error()}
	}
	all, err := o.Store.CheckIns.Versions(ctx, it.RecordID)
	if err != nil {
		return "", nil, err
	}
	var refs []string
	for _, obs := range wanted {
		obs.Status = status
		ref, err := o.upsertObservation(ctx, obs)
		if err != nil {
			return "", nil, err
		}
		refs = append(refs, ref)
	}
	// Readings of earlier versions that the amendment dropped are marked entered in error.
	for _, kind := range droppedKinds(all, version) {
		ref, err := o.markObservation(ctx, ObservationIdentifier(string(version.EventID), kind), "entered-in-error")
		if err != nil {
			return "", nil, err
		}
		if ref != "" {
			refs = append(refs, ref)
		}
	}
	what := "Correction"
	if status == "entered-in-error" {
		what = "Removal (entered in error)"
	}
	return strings.Join(refs, ","), []notice{
		{room: c.CaseRoomID, text: fmt.Sprintf("📋 %s of a check-in of %s filed in the EHR: %s.", what, version.PatientID, strings.Join(refs, ", "))},
	}, nil
}

// droppedKinds lists the kinds that earlier versions had and this version lacks.
func droppedKinds(all []*store.CheckIn, current *store.CheckIn) []care.Kind {
	have := make(map[care.Kind]bool)
	for _, v := range current.Values {
		have[v.Kind] = true
	}
	var dropped []care.Kind
	seen := make(map[care.Kind]bool)
	for _, version := range all {
		for _, v := range version.Values {
			if !have[v.Kind] && !seen[v.Kind] {
				seen[v.Kind] = true
				dropped = append(dropped, v.Kind)
			}
		}
	}
	return dropped
}

// upsertObservation writes obs over the Observation with its identifier (If-Match on the version read; a 412 means
// someone changed it meanwhile: read again and re-apply), or creates it when there is none.
func (o *Outbox) upsertObservation(ctx context.Context, obs Observation) (string, error) {
	idValue := obs.IdentifierValue(ObservationIdentifierSystem)
	for attempt := 0; attempt < 3; attempt++ {
		existing, err := o.findObservation(ctx, idValue)
		if err != nil {
			return "", err
		}
		if existing == nil {
			var created Observation
			if _, err = o.Client.Create(ctx, &obs, IdentifierQuery(ObservationIdentifierSystem, idValue), &created); err != nil {
				return "", err
			}
			return "Observation/" + created.ID, nil
		}
		obs.ID = existing.ID
		var updated Observation
		err = o.Client.Update(ctx, &obs, versionOf(existing), &updated)
		var e *Error
		if errors.As(err, &e) && e.Status == http.StatusPreconditionFailed {
			continue
		}
		if err != nil {
			return "", err
		}
		return "Observation/" + obs.ID, nil
	}
	return "", fmt.Errorf("observation %s kept changing while being updated (412 three times)", idValue)
}

// markObservation sets the status of the Observation with an identifier value, if it exists.
func (o *Outbox) markObservation(ctx context.Context, idValue, status string) (string, error) {
	for attempt := 0; attempt < 3; attempt++ {
		existing, err := o.findObservation(ctx, idValue)
		if err != nil || existing == nil {
			return "", err
		}
		if existing.Status == status {
			return "Observation/" + existing.ID, nil
		}
		existing.Status = status
		err = o.Client.Update(ctx, existing, versionOf(existing), nil)
		var e *Error
		if errors.As(err, &e) && e.Status == http.StatusPreconditionFailed {
			continue
		}
		if err != nil {
			return "", err
		}
		return "Observation/" + existing.ID, nil
	}
	return "", fmt.Errorf("observation %s kept changing while being updated (412 three times)", idValue)
}

func (o *Outbox) findObservation(ctx context.Context, idValue string) (*Observation, error) {
	bundle, err := o.Client.Search(ctx, "Observation", IdentifierQuery(ObservationIdentifierSystem, idValue))
	if err != nil {
		return nil, err
	}
	found, err := bundle.Observations()
	if err != nil || len(found) == 0 {
		return nil, err
	}
	if len(found) > 1 {
		return nil, permanentError{fmt.Sprintf("%d Observations carry the identifier %s", len(found), idValue)}
	}
	return &found[0], nil
}

func versionOf(obs *Observation) string {
	if obs.Meta == nil {
		return ""
	}
	return obs.Meta.VersionID
}

// locations lists "Type/id" of a transaction response's entries.
func locations(resp *Bundle) []string {
	var refs []string
	for _, entry := range resp.Entry {
		if entry.Response == nil || entry.Response.Location == "" {
			continue
		}
		loc := entry.Response.Location
		if i := strings.Index(loc, "/_history/"); i >= 0 {
			loc = loc[:i]
		}
		parts := strings.Split(strings.TrimSuffix(loc, "/"), "/")
		if len(parts) >= 2 {
			loc = parts[len(parts)-2] + "/" + parts[len(parts)-1]
		}
		refs = append(refs, loc)
	}
	return refs
}
