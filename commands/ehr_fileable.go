package commands

import (
	"context"
	"fmt"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/store"
)

// fileableCase reports whether records of a case can ever be filed in the EHR: only when the case is linked to a
// FHIR Patient (a case's patient link is set when it is opened and never changes). Records of other cases stay in
// caseroom and are not queued: in the outbox they could only become dead letters.
func fileableCase(c *store.Case) bool { return c != nil && c.PatientRef != "" }

// fileableCaseID is fileableCase for a case known by its ID.
func fileableCaseID(ctx context.Context, b *bot.Bot, caseID int64) (bool, error) {
	c, err := b.Store.Cases.ByID(ctx, caseID)
	if err != nil {
		return false, err
	}
	return fileableCase(c), nil
}

// notFiledNote is what a clinician is told about a record of a case that is not linked to a FHIR Patient: it is
// kept in caseroom, not filed in the EHR. It is "" for a linked case.
func notFiledNote(c *store.Case) string {
	if fileableCase(c) {
		return ""
	}
	return fmt.Sprintf("\n\nIt stays in caseroom and is not filed in the EHR: case #%d is not linked to a FHIR Patient "+
		"(it was opened without `--patient` or `--mrn`).", c.ID)
}
