package ehr

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/safetext"
	"github.com/caseroom/caseroom/store"
)

// DefaultPollInterval is how often the Poller looks for new results when Interval is zero.
const DefaultPollInterval = 30 * time.Second

// PollOverlap is how far before its cursor each poll looks again: a server may commit a write with an earlier
// meta.lastUpdated after a later one is visible. What it finds again is recognised in the seen table.
const PollOverlap = time.Minute

// ResultTypes are the resource types posted into case rooms.
var ResultTypes = []string{"Observation", "DiagnosticReport"}

// caseroomSystemPrefix starts the identifier systems of the resources caseroom writes itself.
const caseroomSystemPrefix = "urn:caseroom:"

// Period is a FHIR R4 Period.
type Period struct {
	Start string `json:"start,omitempty"`
	End   string `json:"end,omitempty"`
}

// ResultComponent is a component of an Observation (such as the systolic pressure of a blood pressure).
type ResultComponent struct {
	Code                 CodeableConcept  `json:"code"`
	ValueQuantity        *Quantity        `json:"valueQuantity,omitempty"`
	ValueString          string           `json:"valueString,omitempty"`
	ValueCodeableConcept *CodeableConcept `json:"valueCodeableConcept,omitempty"`
}

// Result is an EHR result as caseroom reads it: an Observation or a DiagnosticReport (the elements of both that
// caseroom shows).
type Result struct {
	ResourceType         string            `json:"resourceType"`
	ID                   string            `json:"id,omitempty"`
	Meta                 *Meta             `json:"meta,omitempty"`
	Identifier           []Identifier      `json:"identifier,omitempty"`
	Status               string            `json:"status,omitempty"`
	Code                 CodeableConcept   `json:"code"`
	Subject              *Reference        `json:"subject,omitempty"`
	EffectiveDateTime    string            `json:"effectiveDateTime,omitempty"`
	EffectiveInstant     string            `json:"effectiveInstant,omitempty"`
	EffectivePeriod      *Period           `json:"effectivePeriod,omitempty"`
	Issued               string            `json:"issued,omitempty"`
	ValueQuantity        *Quantity         `json:"valueQuantity,omitempty"`
	ValueString          string            `json:"valueString,omitempty"`
	ValueCodeableConcept *CodeableConcept  `json:"valueCodeableConcept,omitempty"`
	ValueInteger         *int64            `json:"valueInteger,omitempty"`
	ValueBoolean         *bool             `json:"valueBoolean,omitempty"`
	Component            []ResultComponent `json:"component,omitempty"`
	Conclusion           string            `json:"conclusion,omitempty"`
	ConclusionCode       []CodeableConcept `json:"conclusionCode,omitempty"`
}

// Key is "Observation/<id>".
func (r *Result) Key() string { return r.ResourceType + "/" + r.ID }

// VersionID is meta.versionId, or "".
func (r *Result) VersionID() string {
	if r.Meta == nil {
		return ""
	}
	return r.Meta.VersionID
}

// LastUpdated is meta.lastUpdated (zero when missing or invalid).
func (r *Result) LastUpdated() time.Time {
	if r.Meta == nil {
		return time.Time{}
	}
	t, _ := ParseTime(r.Meta.LastUpdated)
	return t
}

// PatientRef is the subject as "Patient/<id>", or "" when the subject is not a Patient.
func (r *Result) PatientRef() string {
	if r.Subject == nil {
		return ""
	}
	typ, id, ok := ParseReference(r.Subject.Reference)
	if !ok || typ != "Patient" {
		return ""
	}
	return "Patient/" + id
}

// WrittenByCaseroom reports whether caseroom wrote the resource (an identifier system urn:caseroom:...): the room
// was already told about it.
func (r *Result) WrittenByCaseroom() bool {
	for _, ident := range r.Identifier {
		if strings.HasPrefix(ident.System, caseroomSystemPrefix) {
			return true
		}
	}
	return false
}

// Usable reports whether the result is one to show: not entered in error or cancelled.
func (r *Result) Usable() bool {
	return r.Status != "entered-in-error" && r.Status != "cancelled"
}

// Effective is when the result applies as written: effective[x], else issued.
func (r *Result) Effective() string {
	switch {
	case r.EffectiveDateTime != "":
		return r.EffectiveDateTime
	case r.EffectiveInstant != "":
		return r.EffectiveInstant
	case r.EffectivePeriod != nil && r.EffectivePeriod.Start != "":
		return r.EffectivePeriod.Start
	}
	return r.Issued
}

// EffectiveAt is Effective as a time (a date alone is its midnight UTC; zero for other partial dates), for
// ordering.
func (r *Result) EffectiveAt() time.Time {
	if t, ok := ParseTime(r.Effective()); ok {
		return t
	}
	if t, err := time.Parse(time.DateOnly, r.Effective()); err == nil {
		return t
	}
	return time.Time{}
}

// codeKey identifies the code of a result for "newest per code".
func (r *Result) codeKey() string {
	for _, cd := range r.Code.Coding {
		if cd.Code != "" {
			return cd.System + "|" + cd.Code
		}
	}
	return "text|" + r.Code.Text
}

// Name is the text of the result's code.
func (r *Result) Name() string {
	if name := ConceptText(r.Code); name != "" {
		return name
	}
	return r.ResourceType
}

// ValueText is the value as people read it: "88 /min", "142/91 mm[Hg]" for a panel whose components share a unit,
// "Systolic 142 mm[Hg], Diastolic 91 mm[Hg]" otherwise; a DiagnosticReport's conclusion. "" when there is none.
func (r *Result) ValueText() string {
	switch {
	case r.ValueQuantity != nil:
		return QuantityText(r.ValueQuantity)
	case r.ValueCodeableConcept != nil:
		return ConceptText(*r.ValueCodeableConcept)
	case r.ValueString != "":
		return r.ValueString
	case r.ValueInteger != nil:
		return fmt.Sprint(*r.ValueInteger)
	case r.ValueBoolean != nil:
		if *r.ValueBoolean {
			return "yes"
		}
		return "no"
	case len(r.Component) > 0:
		return componentsText(r.Component)
	case r.Conclusion != "":
		return r.Conclusion
	case len(r.ConclusionCode) > 0:
		var parts []string
		for _, c := range r.ConclusionCode {
			if text := ConceptText(c); text != "" {
				parts = append(parts, text)
			}
		}
		return strings.Join(parts, "; ")
	}
	return ""
}

func componentsText(components []ResultComponent) string {
	unit, shared := "", true
	var values []string
	for i, c := range components {
		if c.ValueQuantity == nil {
			shared = false
			break
		}
		u := c.ValueQuantity.Unit
		if u == "" {
			u = c.ValueQuantity.Code
		}
		if i == 0 {
			unit = u
		} else if u != unit {
			shared = false
			break
		}
		values = append(values, FormatNumber(c.ValueQuantity.Value))
	}
	if shared && len(values) > 0 {
		return strings.TrimSpace(strings.Join(values, "/") + " " + unit)
	}
	var parts []string
	for _, c := range components {
		value := ""
		switch {
		case c.ValueQuantity != nil:
			value = QuantityText(c.ValueQuantity)
		case c.ValueCodeableConcept != nil:
			value = ConceptText(*c.ValueCodeableConcept)
		default:
			value = c.ValueString
		}
		if value != "" {
			parts = append(parts, strings.TrimSpace(ConceptText(c.Code)+" "+value))
		}
	}
	return strings.Join(parts, ", ")
}

// NoticeMarkdown is the case-room notice of a new result: "🧪 New result from the EHR: <code text> <value>
// (<effective time in loc>) — Observation/<id>". Every text from the EHR is escaped.
func (r *Result) NoticeMarkdown(loc *time.Location) string {
	var b strings.Builder
	b.WriteString("🧪 New result from the EHR: " + safetext.Markdown(r.Name()))
	if value := r.ValueText(); value != "" {
		if r.ResourceType == "DiagnosticReport" {
			b.WriteString(":")
		}
		b.WriteString(" " + safetext.Markdown(value))
	}
	if r.Status != "" && r.Status != "final" {
		b.WriteString(" (" + safetext.Markdown(r.Status) + ")")
	}
	if when := FormatTime(r.Effective(), loc); when != "" {
		b.WriteString(" (" + safetext.Markdown(when) + ")")
	}
	b.WriteString(" — " + safetext.Markdown(r.Key()))
	return b.String()
}

// Poller posts new EHR results (Observations and DiagnosticReports) of each open case's patient into its case
// room, once: it searches each type with _lastUpdated after a cursor kept per case, and records each posted result
// in the seen table in the transaction that queues the notice. The subscription endpoint (Subscription) posts
// through the same Deliver, so both paths together post each result once.
//
// Results that caseroom wrote itself (identifier system urn:caseroom:...) are skipped, and so are results last
// updated before the case was opened (by the bot's clock: keep the clocks in sync).
type Poller struct {
	Store  *store.Store
	Client *Client
	// Wake is called with a case room after a notice was queued for it, so that the bot sends it.
	Wake func(id.RoomID)
	Log  zerolog.Logger
	// Interval is the time between polls (DefaultPollInterval when zero).
	Interval time.Duration
	// Location is the zone in which result times are shown (UTC when nil).
	Location *time.Location
	// Actor is recorded in the audit log as who read a posted result (the bot).
	Actor id.UserID

	once    sync.Once
	kick    chan struct{}
	pollMu  sync.Mutex
	errMu   sync.Mutex
	lastErr time.Time
}

func (p *Poller) init() {
	p.once.Do(func() { p.kick = make(chan struct{}, 1) })
}

// Kick makes the poller poll at once (after an empty subscription notification, say).
func (p *Poller) Kick() {
	p.init()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Run polls every Interval (and when kicked) until ctx ends.
func (p *Poller) Run(ctx context.Context) {
	p.init()
	interval := p.Interval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-p.kick:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
		if err := p.PollOnce(ctx); err != nil && ctx.Err() == nil {
			p.logFailure(err)
		}
		timer.Reset(interval)
	}
}

// logFailure logs a failed poll as a warning at most once a minute (an EHR that is down fails every poll).
func (p *Poller) logFailure(err error) {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	if time.Since(p.lastErr) < time.Minute {
		p.Log.Debug().Err(err).Msg("Polling the EHR failed again")
		return
	}
	p.lastErr = time.Now()
	p.Log.Warn().Err(err).Msg("Polling the EHR for new results failed; will try again")
}

// PollOnce polls every open case with a patient once. It stops at the first error that means the EHR cannot
// answer now; other failures of one case are logged and the next case is polled.
func (p *Poller) PollOnce(ctx context.Context) error {
	p.pollMu.Lock()
	defer p.pollMu.Unlock()
	cases, err := p.Store.EHRReads.PollTargets(ctx)
	if err != nil {
		return fmt.Errorf("failed to list the cases to poll: %w", err)
	}
	for _, c := range cases {
		if err = p.pollCase(ctx, c); err != nil {
			if IsUnreachable(err) || ctx.Err() != nil {
				return err
			}
			p.Log.Warn().Err(err).Int64("case_id", c.ID).Msg("Failed to poll the EHR for a case")
		}
	}
	return nil
}

func (p *Poller) pollCase(ctx context.Context, c *store.Case) error {
	for _, typ := range ResultTypes {
		cursor, err := p.Store.EHRReads.Cursor(ctx, c.ID, typ)
		if err != nil {
			return err
		}
		since := cursor
		if since.IsZero() {
			since = c.CreatedAt
		}
		params := url.Values{
			"subject":      {c.PatientRef},
			"_lastUpdated": {"gt" + since.Add(-PollOverlap).UTC().Format("2006-01-02T15:04:05.000Z07:00")},
			"_sort":        {"_lastUpdated"},
			"_count":       {searchPageSize},
		}
		results, err := searchDecode[Result](ctx, p.Client, typ, params)
		if err != nil {
			return err
		}
		newest := cursor
		for i := range results {
			r := &results[i]
			if lu := r.LastUpdated(); lu.After(newest) {
				newest = lu
			}
			seen, err := p.Store.EHRReads.Seen(ctx, c.ID, r.Key())
			if err != nil {
				return err
			}
			if seen {
				continue
			}
			if _, err = p.Deliver(ctx, c, r, store.EHRSourcePoll); err != nil {
				return err
			}
		}
		if newest.After(cursor) {
			if err = p.Store.EHRReads.AdvanceCursor(ctx, c.ID, typ, newest); err != nil {
				return err
			}
		}
	}
	return nil
}

// Deliver posts a result into the case room of c unless it was posted before (by either path), was written by
// caseroom, is not about the case's patient, predates the case, or is entered in error. The seen mark, the notice
// and the audit entry are written in one transaction; the room is woken after it commits. It reports whether it
// posted.
func (p *Poller) Deliver(ctx context.Context, c *store.Case, r *Result, source string) (bool, error) {
	if r.ID == "" || !c.Open() || r.PatientRef() != c.PatientRef || r.WrittenByCaseroom() || !r.Usable() {
		return false, nil
	}
	if lu := r.LastUpdated(); lu.IsZero() || !lu.After(c.CreatedAt) {
		return false, nil
	}
	loc := p.Location
	if loc == nil {
		loc = time.UTC
	}
	content := safetext.Render(r.NoticeMarkdown(loc))
	content.MsgType = event.MsgNotice
	content.Mentions = &event.Mentions{}
	posted := false
	err := p.Store.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
		posted = false
		fresh, err := p.Store.EHRReads.MarkSeen(ctx, &store.EHRResult{
			CaseID: c.ID, Key: r.Key(), VersionID: r.VersionID(), LastUpdated: r.LastUpdated(), Source: source,
		})
		if err != nil || !fresh {
			return err
		}
		seq, err := p.Store.Outgoing.Add(ctx, c.CaseRoomID, event.EventMessage, &content, "")
		if err != nil {
			return err
		}
		if err = p.Store.EHRReads.SetNotice(ctx, c.ID, r.Key(), seq); err != nil {
			return err
		}
		posted = true
		return p.Store.Audit.Add(ctx, &store.AuditEntry{
			Actor: p.Actor, Action: "read:ehr-result", Outcome: "posted", CaseID: c.ID, RoomID: c.CaseRoomID,
			Detail: source + " " + r.Key(),
		})
	})
	if err != nil {
		return false, fmt.Errorf("failed to post %s into case %d: %w", r.Key(), c.ID, err)
	}
	if posted {
		p.Log.Debug().Int64("case_id", c.ID).Str("resource", r.Key()).Str("source", source).Msg("Posted an EHR result")
		if p.Wake != nil {
			p.Wake(c.CaseRoomID)
		}
	}
	return posted, nil
}

// DeliverRef reads resourceType/id from the EHR and delivers it to every open case of its patient (the
// subscription path: what the EHR pushed is only a hint; the EHR's own copy is what is posted). A resource that
// no longer exists is ignored. It returns how many rooms it posted into.
func (p *Poller) DeliverRef(ctx context.Context, resourceType, id, source string) (int, error) {
	var r Result
	if err := p.Client.Read(ctx, resourceType, id, &r); err != nil {
		if IsNotFound(err) {
			return 0, nil
		}
		return 0, err
	}
	if r.ResourceType != resourceType || r.ID != id {
		return 0, fmt.Errorf("ehr: reading %s/%s gave %s", resourceType, id, r.Key())
	}
	patient := r.PatientRef()
	if patient == "" {
		return 0, nil
	}
	cases, err := p.Store.EHRReads.OpenCasesOf(ctx, patient)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range cases {
		posted, err := p.Deliver(ctx, c, &r, source)
		if err != nil {
			return n, err
		}
		if posted {
			n++
		}
	}
	return n, nil
}
