package ehr

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/store"
)

// A case's treatment plan in the EHR is one CarePlan per case, identified by urn:caseroom:careplan|case-<case id>
// and kept current: every change of the plan is delivered as the whole plan as it is then, written over the CarePlan
// with If-Match, so that each change becomes a new version of the same resource. The mapping:
//   - status active, intent plan, subject the case's Patient, title from the case, created when the first item was
//     added; author the clinician who made the latest change, contributor every clinician who wrote a part of the
//     plan, each as their Practitioner or, when they have none, by Matrix user ID (an identifier in
//     MatrixUserSystem), so that every version says who made it;
//   - goals are Goal resources (identifier urn:caseroom:goal|<plan item id>; lifecycleStatus active or completed,
//     achievementStatus in-progress or achieved; expressedBy the clinician who added it, named like the author)
//     referenced from CarePlan.goal;
//   - tasks are activity.detail entries (kind Task, description the text, status not-started or completed, the due
//     date as scheduledPeriod.end).
//
// The care team's notes (/plan note) are left out: they are for the care team only, and EHR patient portals commonly
// show CarePlans to patients. A note that belongs in the chart can be filed with /file.
//
// Elements of the stored resources that caseroom does not manage (added by the EHR or by people) are kept: each
// write copies caseroom's elements onto the resource as read, and a write that would change nothing is skipped.

// Identifier systems of the treatment plan resources.
const (
	// CarePlanIdentifierSystem identifies a case's CarePlan; the value is CarePlanIdentifier(case ID).
	CarePlanIdentifierSystem = "urn:caseroom:careplan"
	// GoalIdentifierSystem identifies the Goal of a plan goal; the value is the plan item's ID.
	GoalIdentifierSystem = "urn:caseroom:goal"
	// GoalAchievementSystem is the code system of Goal.achievementStatus.
	GoalAchievementSystem = "http://terminology.hl7.org/CodeSystem/goal-achievement"
)

// CarePlanIdentifier is the identifier value of a case's CarePlan: "case-<id>".
func CarePlanIdentifier(caseID int64) string { return "case-" + strconv.FormatInt(caseID, 10) }

// CarePlan is a FHIR R4 CarePlan.
type CarePlan struct {
	ResourceType string             `json:"resourceType"`
	ID           string             `json:"id,omitempty"`
	Meta         *Meta              `json:"meta,omitempty"`
	Identifier   []Identifier       `json:"identifier,omitempty"`
	Status       string             `json:"status"`
	Intent       string             `json:"intent"`
	Title        string             `json:"title,omitempty"`
	Description  string             `json:"description,omitempty"`
	Subject      Reference          `json:"subject"`
	Created      string             `json:"created,omitempty"`
	Author       *Reference         `json:"author,omitempty"`
	Contributor  []Reference        `json:"contributor,omitempty"`
	Goal         []Reference        `json:"goal,omitempty"`
	Activity     []CarePlanActivity `json:"activity,omitempty"`
	Note         []Annotation       `json:"note,omitempty"`
}

// CarePlanActivity is one activity of a CarePlan.
type CarePlanActivity struct {
	Detail *CarePlanActivityDetail `json:"detail,omitempty"`
}

// CarePlanActivityDetail is an activity described in the plan itself (a task).
type CarePlanActivityDetail struct {
	Kind            string           `json:"kind,omitempty"`
	Code            *CodeableConcept `json:"code,omitempty"`
	Status          string           `json:"status"`
	ScheduledPeriod *Period          `json:"scheduledPeriod,omitempty"`
	ScheduledString string           `json:"scheduledString,omitempty"`
	Description     string           `json:"description,omitempty"`
}

// ResourceKey implements Resource.
func (p *CarePlan) ResourceKey() (string, string) { return "CarePlan", p.ID }

// MarshalJSON always writes resourceType "CarePlan".
func (p CarePlan) MarshalJSON() ([]byte, error) {
	type plain CarePlan
	p.ResourceType = "CarePlan"
	return json.Marshal(plain(p))
}

// Goal is a FHIR R4 Goal.
type Goal struct {
	ResourceType      string           `json:"resourceType"`
	ID                string           `json:"id,omitempty"`
	Meta              *Meta            `json:"meta,omitempty"`
	Identifier        []Identifier     `json:"identifier,omitempty"`
	LifecycleStatus   string           `json:"lifecycleStatus"`
	AchievementStatus *CodeableConcept `json:"achievementStatus,omitempty"`
	Description       CodeableConcept  `json:"description"`
	Subject           Reference        `json:"subject"`
	StartDate         string           `json:"startDate,omitempty"`
	StatusDate        string           `json:"statusDate,omitempty"`
	ExpressedBy       *Reference       `json:"expressedBy,omitempty"`
}

// ResourceKey implements Resource.
func (g *Goal) ResourceKey() (string, string) { return "Goal", g.ID }

// MarshalJSON always writes resourceType "Goal".
func (g Goal) MarshalJSON() ([]byte, error) {
	type plain Goal
	g.ResourceType = "Goal"
	return json.Marshal(plain(g))
}

// The elements caseroom writes; the others of a stored resource are kept.
var (
	carePlanElements = []string{"status", "intent", "title", "description", "subject", "created", "author", "contributor",
		"goal", "activity"}
	goalElements = []string{"lifecycleStatus", "achievementStatus", "description", "subject", "startDate", "statusDate",
		"expressedBy"}
)

// PlanRecord is a case's treatment plan (its goals and tasks, current versions) with the context FHIR needs.
type PlanRecord struct {
	CaseID int64
	// Title is the case's title, used in the CarePlan's title.
	Title string
	// PatientRef is the subject, "Patient/<id>".
	PatientRef string
	// Author is the clinician who made the latest change.
	Author Actor
	// Contributors are the clinicians who wrote the plan, in order of first appearance, each once.
	Contributors []Actor
	Goals        []PlanEntry
	Tasks        []PlanEntry
}

// PlanEntry is a goal or task of a plan, as it is now.
type PlanEntry struct {
	ItemID  int64
	Number  int
	Text    string
	Due     string // YYYY-MM-DD, or ""
	Done    bool
	Created time.Time
	Updated time.Time
	// Creator is the clinician who added the item.
	Creator Actor
}

func checkPlanRecord(rec PlanRecord) error {
	var errs []error
	if !isReference(rec.PatientRef, "Patient") {
		errs = append(errs, fmt.Errorf("patient reference %q is not Patient/<id>", rec.PatientRef))
	}
	entries := len(rec.Goals) + len(rec.Tasks)
	if entries > 0 {
		if err := rec.Author.check("author", "Practitioner", "PractitionerRole"); err != nil {
			errs = append(errs, err)
		}
	}
	for _, a := range rec.Contributors {
		if err := a.check("contributor", "Practitioner", "PractitionerRole"); err != nil {
			errs = append(errs, err)
		}
	}
	for _, e := range append(append([]PlanEntry(nil), rec.Goals...), rec.Tasks...) {
		if e.Text == "" {
			errs = append(errs, fmt.Errorf("plan item %d has no text", e.Number))
		}
		if e.Due != "" {
			if _, err := time.Parse(time.DateOnly, e.Due); err != nil {
				errs = append(errs, fmt.Errorf("plan item %d has an invalid due date %q", e.Number, e.Due))
			}
		}
		if err := e.Creator.check("creator", "Practitioner", "PractitionerRole"); err != nil {
			errs = append(errs, fmt.Errorf("plan item %d: %w", e.Number, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("ehr: invalid treatment plan: %w", errors.Join(errs...))
	}
	return nil
}

// PlanGoals maps the goals of a plan to Goal resources, in the plan's order.
func PlanGoals(rec PlanRecord) ([]Goal, error) {
	if err := checkPlanRecord(rec); err != nil {
		return nil, err
	}
	goals := make([]Goal, 0, len(rec.Goals))
	for _, e := range rec.Goals {
		g := Goal{
			ResourceType:    "Goal",
			Identifier:      []Identifier{{System: GoalIdentifierSystem, Value: strconv.FormatInt(e.ItemID, 10)}},
			LifecycleStatus: "active",
			AchievementStatus: &CodeableConcept{Coding: []Coding{{System: GoalAchievementSystem, Code: "in-progress",
				Display: "In Progress"}}},
			Description: CodeableConcept{Text: e.Text},
			Subject:     Reference{Reference: rec.PatientRef},
			StartDate:   dateOf(e.Created),
			StatusDate:  dateOf(e.Updated),
		}
		if e.Done {
			g.LifecycleStatus = "completed"
			g.AchievementStatus = &CodeableConcept{Coding: []Coding{{System: GoalAchievementSystem, Code: "achieved", Display: "Achieved"}}}
		}
		creator := e.Creator.Reference()
		g.ExpressedBy = &creator
		goals = append(goals, g)
	}
	return goals, nil
}

// PlanCarePlan maps a plan to its CarePlan; goalRefs are the references of its Goals (see PlanGoals), in the same
// order.
func PlanCarePlan(rec PlanRecord, goalRefs []Reference) (*CarePlan, error) {
	if err := checkPlanRecord(rec); err != nil {
		return nil, err
	}
	if len(goalRefs) != len(rec.Goals) {
		return nil, fmt.Errorf("ehr: %d goal references for %d goals", len(goalRefs), len(rec.Goals))
	}
	title := "Treatment plan"
	if rec.Title != "" {
		title += ": " + rec.Title
	}
	plan := &CarePlan{
		ResourceType: "CarePlan",
		Identifier:   []Identifier{{System: CarePlanIdentifierSystem, Value: CarePlanIdentifier(rec.CaseID)}},
		Status:       "active",
		Intent:       "plan",
		Title:        title,
		Description:  fmt.Sprintf("Goals and tasks of the care team of caseroom case #%d, kept current by caseroom.", rec.CaseID),
		Subject:      Reference{Reference: rec.PatientRef},
		Goal:         goalRefs,
	}
	var created time.Time
	for _, e := range append(append([]PlanEntry(nil), rec.Goals...), rec.Tasks...) {
		if created.IsZero() || e.Created.Before(created) {
			created = e.Created
		}
	}
	if !created.IsZero() {
		plan.Created = created.UTC().Truncate(time.Second).Format(time.RFC3339)
	}
	if len(rec.Goals)+len(rec.Tasks) > 0 {
		author := rec.Author.Reference()
		plan.Author = &author
	}
	for _, a := range rec.Contributors {
		plan.Contributor = append(plan.Contributor, a.Reference())
	}
	for _, e := range rec.Tasks {
		detail := &CarePlanActivityDetail{Kind: "Task", Status: "not-started", Description: e.Text}
		if e.Done {
			detail.Status = "completed"
		}
		if e.Due != "" {
			detail.ScheduledPeriod = &Period{End: e.Due}
		}
		plan.Activity = append(plan.Activity, CarePlanActivity{Detail: detail})
	}
	return plan, nil
}

func dateOf(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.DateOnly)
}

// deliverCarePlan writes a case's current treatment plan: its Goals, then its CarePlan.
func (o *Outbox) deliverCarePlan(ctx context.Context, it *store.OutboxItem) (string, []notice, error) {
	c, err := o.Store.Cases.ByID(ctx, it.CaseID)
	if err != nil {
		return "", nil, err
	}
	if c == nil || c.PatientRef == "" {
		return "", nil, permanentError{fmt.Sprintf("case #%d is not linked to a FHIR Patient (open cases with --patient or --mrn)", it.CaseID)}
	}
	rec, err := o.planRecord(ctx, c)
	if err != nil {
		return "", nil, err
	}
	goals, err := PlanGoals(rec)
	if err != nil {
		return "", nil, permanentError{err.Error()}
	}
	changed := false
	goalRefs := make([]Reference, 0, len(goals))
	for i := range goals {
		ref, written, err := o.upsert(ctx, &goals[i], GoalIdentifierSystem, goals[i].Identifier[0].Value, goalElements)
		if err != nil {
			return "", nil, err
		}
		changed = changed || written
		goalRefs = append(goalRefs, Reference{Reference: ref, Display: goals[i].Description.Text})
	}
	plan, err := PlanCarePlan(rec, goalRefs)
	if err != nil {
		return "", nil, permanentError{err.Error()}
	}
	ref, written, err := o.upsert(ctx, plan, CarePlanIdentifierSystem, CarePlanIdentifier(c.ID), carePlanElements)
	if err != nil {
		return "", nil, err
	}
	if !written && !changed {
		// A later change was delivered first (or this one again): the EHR already holds this plan.
		return ref + " (unchanged)", nil, nil
	}
	return ref, []notice{{room: c.CaseRoomID, text: fmt.Sprintf("📋 Treatment plan of case #%d filed in the EHR as %s (%s, %s).",
		c.ID, ref, plural(len(rec.Goals), "goal"), plural(len(rec.Tasks), "task"))}}, nil
}

// planRecord reads a case's plan: goals and tasks with their current versions, and who wrote them.
func (o *Outbox) planRecord(ctx context.Context, c *store.Case) (PlanRecord, error) {
	rec := PlanRecord{CaseID: c.ID, Title: c.Title, PatientRef: c.PatientRef}
	items, err := o.Store.Plans.Items(ctx, c.ID)
	if err != nil {
		return rec, err
	}
	actors := make(map[id.UserID]Actor)
	contributors := make(map[string]bool)
	actor := func(user id.UserID) (Actor, error) {
		if a, ok := actors[user]; ok {
			return a, nil
		}
		ref, err := o.Store.Roles.PractitionerRef(ctx, user)
		if err != nil {
			return Actor{}, err
		}
		a := Actor{Ref: ref, User: string(user)}
		actors[user] = a
		if !contributors[a.key()] {
			contributors[a.key()] = true
			rec.Contributors = append(rec.Contributors, a)
		}
		return a, nil
	}
	var latest time.Time
	for _, item := range items {
		if !item.Kind.PatientVisible() {
			continue // notes stay in caseroom (see above)
		}
		cur := item.Current
		creator, err := actor(item.CreatedBy)
		if err != nil {
			return rec, err
		}
		author, err := actor(cur.Author)
		if err != nil {
			return rec, err
		}
		if !cur.At.Before(latest) {
			latest, rec.Author = cur.At, author
		}
		e := PlanEntry{ItemID: item.ID, Number: item.Number, Text: cur.Text, Due: cur.Due, Done: cur.Status == store.PlanDone,
			Created: item.CreatedAt, Updated: cur.At, Creator: creator}
		if item.Kind == store.PlanGoal {
			rec.Goals = append(rec.Goals, e)
		} else {
			rec.Tasks = append(rec.Tasks, e)
		}
	}
	return rec, nil
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// jsonResource is a resource read or written as plain JSON, so that elements caseroom does not know survive a
// read-modify-write.
type jsonResource map[string]any

// ResourceKey implements Resource.
func (r jsonResource) ResourceKey() (string, string) {
	typ, _ := r["resourceType"].(string)
	id, _ := r["id"].(string)
	return typ, id
}

// version returns meta.versionId, or "".
func (r jsonResource) version() string {
	meta, _ := r["meta"].(map[string]any)
	v, _ := meta["versionId"].(string)
	return v
}

func toJSONResource(res Resource) (jsonResource, error) {
	raw, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	var out jsonResource
	if err = json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// findByIdentifier returns the resource of type typ that carries the identifier system|value, or nil. More than
// one is an error no retry fixes.
func (o *Outbox) findByIdentifier(ctx context.Context, typ, system, value string) (jsonResource, error) {
	bundle, err := o.Client.Search(ctx, typ, IdentifierQuery(system, value))
	if err != nil {
		return nil, err
	}
	var found []jsonResource
	for i, e := range bundle.Entry {
		if e.ResourceType() != typ || (e.Search != nil && e.Search.Mode != "" && e.Search.Mode != "match") {
			continue
		}
		var r jsonResource
		if err := e.Decode(&r); err != nil {
			return nil, fmt.Errorf("failed to decode search result %d: %w", i, err)
		}
		found = append(found, r)
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return found[0], nil
	default:
		return nil, permanentError{fmt.Sprintf("%d %s resources carry the identifier %s|%s", len(found), typ, system, value)}
	}
}

// upsert brings the resource that carries the identifier system|value in line with want: when there is none, it
// is created (a conditional create, so a retry creates nothing new); otherwise the elements named in managed are
// copied from want onto the resource as read (an element want lacks is removed) and the result is written with
// If-Match on the version read, unless nothing changed. A 412 means someone changed the resource meanwhile: it is
// read again and the elements re-applied. It returns "Type/id" and whether anything was written.
func (o *Outbox) upsert(ctx context.Context, want Resource, system, value string, managed []string) (ref string, written bool, err error) {
	typ, _ := want.ResourceKey()
	wanted, err := toJSONResource(want)
	if err != nil {
		return "", false, fmt.Errorf("failed to encode %s: %w", typ, err)
	}
	delete(wanted, "id")
	delete(wanted, "meta")
	for attempt := 0; attempt < 3; attempt++ {
		existing, err := o.findByIdentifier(ctx, typ, system, value)
		if err != nil {
			return "", false, err
		}
		if existing == nil {
			var created jsonResource
			isNew, err := o.Client.Create(ctx, wanted, IdentifierQuery(system, value), &created)
			if err != nil {
				return "", false, err
			}
			if _, id := created.ResourceKey(); isNew && id != "" {
				return typ + "/" + id, true, nil
			}
			continue // created meanwhile by someone else: read it and apply the elements
		}
		_, existingID := existing.ResourceKey()
		merged := make(jsonResource, len(existing))
		for k, v := range existing {
			merged[k] = v
		}
		for _, k := range managed {
			if v, ok := wanted[k]; ok {
				merged[k] = v
			} else {
				delete(merged, k)
			}
		}
		if sameJSON(existing, merged) {
			return typ + "/" + existingID, false, nil
		}
		err = o.Client.Update(ctx, merged, existing.version(), nil)
		var e *Error
		if errors.As(err, &e) && e.Status == http.StatusPreconditionFailed {
			continue
		}
		if err != nil {
			return "", false, err
		}
		return typ + "/" + existingID, true, nil
	}
	// Retryable (like a network error): the next attempt reads the resource afresh.
	return "", false, &Error{Op: "PUT " + typ, Err: fmt.Errorf("%s %s|%s kept changing while being updated (412 three times)", typ, system, value)}
}

// sameJSON reports whether a and b encode to the same JSON (maps encode with sorted keys).
func sameJSON(a, b any) bool {
	ra, errA := json.Marshal(a)
	rb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ra, rb)
}
