package commands

import (
	"context"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/format"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/ehr"
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

// checkPractitioner looks up a Practitioner reference in the EHR before a clinician is linked to it: a clinician's
// records name it, and an EHR that checks references refuses every one of them when it does not exist, so that they
// could only become dead letters. It refuses (and reports true) when the EHR answers that it does not have it;
// when the EHR cannot be asked or refuses the read, the link is made and the returned note says that it could not
// be checked. Without an EHR there is nothing to check.
func checkPractitioner(ctx context.Context, call *Call, ref string) (refused bool, note string) {
	if call.Bot.EHR == nil {
		return false, ""
	}
	typ, practitionerID, _ := strings.Cut(ref, "/")
	readCtx, cancel := context.WithTimeout(ctx, ehrReadTimeout)
	defer cancel()
	err := call.Bot.EHR.Read(readCtx, typ, practitionerID, nil)
	switch {
	case err == nil:
		return false, ""
	case ehr.IsNotFound(err):
		call.Fail("refused:no-practitioner", "⛔ The EHR has no %s (it answered \"not found\"), so the records of %s would name "+
			"someone the EHR does not know and could not be filed. Nothing changed. Check the id of the clinician's "+
			"Practitioner resource in the EHR.", format.SafeMarkdownCode(ref), format.SafeMarkdownCode(call.UserArg("user").String()))
		return true, ""
	default:
		// The error holds no server text (see ehr.Error).
		call.Bot.Log.Warn().Err(err).Msg("Failed to look up a Practitioner in the EHR")
		return false, fmt.Sprintf("\n\nI could not check that the EHR has %s (it did not answer or refused the lookup). "+
			"If it does not, their records cannot be filed: `/admin outbox` would list them.", format.SafeMarkdownCode(ref))
	}
}

// checkPatientRef looks up the Patient a case is opened for with --patient, when an EHR is connected: a case for a
// Patient the EHR does not have could file none of its records. It answers in the room and reports false when the
// EHR answers "not found"; when the EHR cannot be asked, the case is opened (its records wait in the outbox).
func checkPatientRef(ctx context.Context, call *Call, patientRef string) bool {
	if call.Bot.EHR == nil || patientRef == "" {
		return true
	}
	typ, patientID, _ := strings.Cut(patientRef, "/")
	readCtx, cancel := context.WithTimeout(ctx, ehrReadTimeout)
	defer cancel()
	err := call.Bot.EHR.Read(readCtx, typ, patientID, nil)
	switch {
	case err == nil:
		return true
	case ehr.IsNotFound(err):
		call.Audit("read:patient", "failed:not-found", 0, patientRef)
		call.Fail("refused:no-patient", "⛔ The EHR has no %s (it answered \"not found\"), so nothing of this case could be "+
			"filed in the chart. Nothing was created. Check the reference, or open the case with `--mrn <number>`.",
			format.SafeMarkdownCode(patientRef))
		return false
	default:
		call.Bot.Log.Warn().Err(err).Msg("Failed to look up a Patient in the EHR; opening the case anyway")
		return true
	}
}
