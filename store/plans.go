package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// PlanKind is what a treatment plan item is.
type PlanKind string

const (
	PlanGoal PlanKind = "goal"
	PlanTask PlanKind = "task"
	PlanNote PlanKind = "note" // for the care team only, never shown to the patient
)

// PatientVisible reports whether items of this kind are shown to the patient.
func (k PlanKind) PatientVisible() bool { return k == PlanGoal || k == PlanTask }

// PlanStatus is whether a plan item is still to be done.
type PlanStatus string

const (
	PlanActive PlanStatus = "active"
	PlanDone   PlanStatus = "done"
)

// PlanChange says what a version of a plan item did.
type PlanChange string

const (
	PlanCreated PlanChange = "created"
	PlanAmended PlanChange = "amended"
	PlanMarked  PlanChange = "done"
)

// DateLayout is how due dates are stored and shown: a calendar date without a time or zone.
const DateLayout = "2006-01-02"

// PlanItem is a goal, task or note of a case's treatment plan, with its current (latest) version.
type PlanItem struct {
	ID           int64
	CaseID       int64
	Number       int // per case, from 1
	Kind         PlanKind
	CreatedBy    id.UserID
	CreatedAt    time.Time
	CreatedEvent id.EventID
	Current      *PlanVersion
}

// PlanVersion is one state of a plan item. Versions are only ever added.
type PlanVersion struct {
	ItemID  int64
	Number  int      // the item's number
	Kind    PlanKind // the item's kind
	Version int      // from 1
	Change  PlanChange
	Text    string
	Due     string // YYYY-MM-DD, or ""
	Status  PlanStatus
	EventID id.EventID // the Matrix event whose command made this version
	Author  id.UserID
	At      time.Time
}

// PlanSummary is the patient-facing summary message of a case's plan, pinned in its patient room.
type PlanSummary struct {
	CaseID     int64
	RoomID     id.RoomID
	EventID    id.EventID
	CauseEvent id.EventID
	PostedAt   time.Time
}

// PlanQuery appends to and reads treatment plans. Nothing is ever updated or deleted: a change is a new version.
type PlanQuery struct {
	db *dbutil.Database
}

const (
	planVersionColumns = `v.item_id, i.number, i.kind, v.version, v.change, v.text, COALESCE(v.due_date, ''), v.status,
		v.event_id, v.author, v.created_at`
	planItemsQuery = `SELECT i.id, i.case_id, i.created_by, i.created_at, i.created_event, ` + planVersionColumns + `
		FROM plan_items i JOIN plan_item_versions v ON v.item_id = i.id
		WHERE i.case_id = $1 AND v.version = (SELECT MAX(version) FROM plan_item_versions WHERE item_id = i.id)`
	insertPlanItemQuery = `INSERT INTO plan_items (case_id, number, kind, created_by, created_at, created_event)
		VALUES ($1, (SELECT COALESCE(MAX(number), 0) + 1 FROM plan_items WHERE case_id = $1), $2, $3, $4, $5)`
	insertPlanVersionQuery = `INSERT INTO plan_item_versions (item_id, version, change, text, due_date, status, event_id, author, created_at)
		VALUES ($1, (SELECT COALESCE(MAX(version), 0) + 1 FROM plan_item_versions WHERE item_id = $1), $2, $3, $4, $5, $6, $7, $8)`
	planHistoryQuery = `SELECT ` + planVersionColumns + `
		FROM plan_item_versions v JOIN plan_items i ON i.id = v.item_id
		WHERE i.case_id = $1 AND ($2 = 0 OR i.number = $2) ORDER BY v.created_at, i.number, v.version`
	planSummaryQuery = `SELECT case_id, room_id, event_id, cause_event, posted_at FROM plan_summaries
		WHERE case_id = $1 ORDER BY posted_at DESC, event_id LIMIT 1`
	insertPlanSummaryQuery = `INSERT INTO plan_summaries (case_id, room_id, event_id, cause_event, posted_at)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (cause_event) DO NOTHING`
)

func scanPlanVersion(row dbutil.Scannable, extra ...any) (*PlanVersion, error) {
	var v PlanVersion
	var at int64
	dest := append(extra, &v.ItemID, &v.Number, &v.Kind, &v.Version, &v.Change, &v.Text, &v.Due, &v.Status, &v.EventID, &v.Author, &at)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	v.At = time.UnixMilli(at).UTC()
	return &v, nil
}

func scanPlanItem(row dbutil.Scannable) (*PlanItem, error) {
	var item PlanItem
	var created int64
	v, err := scanPlanVersion(row, &item.ID, &item.CaseID, &item.CreatedBy, &created, &item.CreatedEvent)
	if err != nil {
		return nil, err
	}
	item.Number, item.Kind, item.Current = v.Number, v.Kind, v
	item.CreatedAt = time.UnixMilli(created).UTC()
	return &item, nil
}

// Items returns a case's plan items with their current versions, by number.
func (q *PlanQuery) Items(ctx context.Context, caseID int64) ([]*PlanItem, error) {
	rows, err := q.db.Query(ctx, planItemsQuery+" ORDER BY i.number", caseID)
	items, err := dbutil.NewRowIterWithError(rows, scanPlanItem, err).AsList()
	if err != nil {
		return nil, fmt.Errorf("failed to load plan of case %d: %w", caseID, err)
	}
	return items, nil
}

// Item returns a case's plan item by its number, or nil.
func (q *PlanQuery) Item(ctx context.Context, caseID int64, number int) (*PlanItem, error) {
	item, err := scanPlanItem(q.db.QueryRow(ctx, planItemsQuery+" AND i.number = $2", caseID, number))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to load plan item %d of case %d: %w", number, caseID, err)
	}
	return item, nil
}

// NewPlanItem is what AddItem stores: the item and its first version.
type NewPlanItem struct {
	CaseID  int64
	Kind    PlanKind
	Text    string
	Due     string // YYYY-MM-DD, or ""
	Author  id.UserID
	EventID id.EventID // the command's event: an event adds at most one item
	At      time.Time
}

// AddItem stores a new item with the next number of its case and its first version, and returns it. Call it
// inside the transaction that marks the command's event processed.
func (q *PlanQuery) AddItem(ctx context.Context, n *NewPlanItem) (*PlanItem, error) {
	var itemID int64
	err := q.db.QueryRow(ctx, insertPlanItemQuery+" RETURNING id", n.CaseID, n.Kind, n.Author, n.At.UnixMilli(), n.EventID).Scan(&itemID)
	if err != nil {
		return nil, fmt.Errorf("failed to store plan item: %w", err)
	}
	if _, err = q.AddVersion(ctx, itemID, &PlanVersion{
		Change: PlanCreated, Text: n.Text, Due: n.Due, Status: PlanActive, EventID: n.EventID, Author: n.Author, At: n.At,
	}); err != nil {
		return nil, err
	}
	item, err := scanPlanItem(q.db.QueryRow(ctx, planItemsQuery+" AND i.id = $2", n.CaseID, itemID))
	if err != nil {
		return nil, fmt.Errorf("failed to read back plan item: %w", err)
	}
	return item, nil
}

// AddVersion appends a version to an item (its number is the next free one) and returns the version number.
// Call it inside the transaction that marks the command's event processed.
func (q *PlanQuery) AddVersion(ctx context.Context, itemID int64, v *PlanVersion) (int, error) {
	switch {
	case v.Status != PlanActive && v.Status != PlanDone:
		return 0, fmt.Errorf("invalid plan item status %q", v.Status)
	case v.Due != "" && !validDate(v.Due):
		return 0, fmt.Errorf("invalid due date %q", v.Due)
	}
	var version int
	err := q.db.QueryRow(ctx, insertPlanVersionQuery+" RETURNING version", itemID, v.Change, v.Text, nullString(v.Due), v.Status,
		v.EventID, v.Author, v.At.UnixMilli()).Scan(&version)
	if err != nil {
		return 0, fmt.Errorf("failed to store version of plan item %d: %w", itemID, err)
	}
	return version, nil
}

func validDate(s string) bool {
	_, err := time.Parse(DateLayout, s)
	return err == nil
}

// History returns every version of a case's plan items, or of item number only (when number is not 0), oldest
// first.
func (q *PlanQuery) History(ctx context.Context, caseID int64, number int) ([]*PlanVersion, error) {
	rows, err := q.db.Query(ctx, planHistoryQuery, caseID, number)
	versions, err := dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (*PlanVersion, error) {
		return scanPlanVersion(row)
	}, err).AsList()
	if err != nil {
		return nil, fmt.Errorf("failed to load plan history of case %d: %w", caseID, err)
	}
	return versions, nil
}

// Summary returns the current patient-facing summary message of a case, or nil when none was posted.
func (q *PlanQuery) Summary(ctx context.Context, caseID int64) (*PlanSummary, error) {
	var s PlanSummary
	var at int64
	err := q.db.QueryRow(ctx, planSummaryQuery, caseID).Scan(&s.CaseID, &s.RoomID, &s.EventID, &s.CauseEvent, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to load plan summary of case %d: %w", caseID, err)
	}
	s.PostedAt = time.UnixMilli(at).UTC()
	return &s, nil
}

// PutSummary records a summary message the bot posted; a second record for the same command event is ignored.
func (q *PlanQuery) PutSummary(ctx context.Context, s *PlanSummary) error {
	_, err := q.db.Exec(ctx, insertPlanSummaryQuery, s.CaseID, s.RoomID, s.EventID, s.CauseEvent, s.PostedAt.UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to store plan summary of case %d: %w", s.CaseID, err)
	}
	return nil
}
