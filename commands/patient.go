package commands

import (
	"context"
	"fmt"
	"strings"
	"time"

	"maunium.net/go/mautrix/format"

	"github.com/caseroom/caseroom/ehr"
	"github.com/caseroom/caseroom/internal/safetext"
)

// ehrReadTimeout bounds the EHR reads of one command.
const ehrReadTimeout = 30 * time.Second

// maxCandidates is how many Patients a lookup by MRN lists when several match.
const maxCandidates = 10

// maxListed is how many items of one kind the summary lists before saying how many more there are.
const maxListed = 12

// runPatientSummary answers `/patient` in a case room with one compact message from the EHR: name, birth date,
// gender, identifiers, active conditions, active medications, allergies and the latest vital signs.
func runPatientSummary(ctx context.Context, call *Call) error {
	c := call.Room.Case
	b := call.Bot
	if b.EHR == nil {
		call.Fail("refused:no-ehr", "⛔ No EHR is configured, so I cannot show the patient's record. An admin can connect one with `ehr.url` in the config.")
		return nil
	}
	if c.PatientRef == "" {
		why := "it was opened without `--patient` or `--mrn`"
		if c.MRN != "" {
			why = fmt.Sprintf("it was opened with MRN %s while no EHR was connected to look it up", format.SafeMarkdownCode(c.MRN))
		}
		call.Fail("refused:no-patient", "⛔ Case #%d is not linked to a patient in the EHR: %s. Open a case with `--patient Patient/<id>` or `--mrn <number>` to see the record here.", c.ID, why)
		return nil
	}
	readCtx, cancel := context.WithTimeout(ctx, ehrReadTimeout)
	defer cancel()
	summary, err := b.EHR.ReadSummary(readCtx, c.PatientRef)
	if err != nil {
		outcome, text := ehrFailure(err, "the patient's record")
		call.Audit("read:patient", outcome, c.ID, c.PatientRef)
		call.Fail(outcome, "%s", text)
		if !ehr.IsNotFound(err) && !ehr.IsUnreachable(err) {
			b.Log.Warn().Err(err).Int64("case_id", c.ID).Msg("Failed to read the patient summary from the EHR")
		}
		return nil
	}
	call.Audit("read:patient", "ok", c.ID, fmt.Sprintf("%s: %d conditions, %d medications, %d allergies, %d vitals",
		c.PatientRef, len(summary.Conditions), len(summary.Medications), len(summary.Allergies), len(summary.Vitals)))
	call.Reply(formatSummary(summary, call.Bot.Config.Location()))
	return nil
}

// ehrFailure turns a failed EHR read into an audit outcome and a message for the room (no details of the EHR's
// answer, which may hold patient data: those go to the log).
func ehrFailure(err error, what string) (outcome, text string) {
	switch {
	case ehr.IsNotFound(err):
		return "failed:not-found", fmt.Sprintf("⛔ The EHR does not have %s (it answered \"not found\"). Check the patient link with `/case info`.", what)
	case ehr.IsUnreachable(err):
		return "failed:unreachable", fmt.Sprintf("⛔ The EHR is not reachable right now, so I could not read %s. Nothing was changed; try again in a few minutes.", what)
	default:
		return "failed:ehr-error", fmt.Sprintf("⛔ The EHR refused to give me %s. An admin can see why in the bot's log and check `/admin ehr status`.", what)
	}
}

// formatSummary writes the summary as one compact Markdown message; every text from the EHR is escaped.
func formatSummary(s *ehr.Summary, loc *time.Location) string {
	p := &s.Patient
	var sb strings.Builder
	name := p.DisplayName()
	if name == "" {
		name = "(no name recorded)"
	}
	fmt.Fprintf(&sb, "**%s**", safetext.Markdown(name))
	if p.BirthDate != "" {
		fmt.Fprintf(&sb, " · born %s", safetext.Markdown(p.BirthDate))
	}
	if p.Gender != "" {
		fmt.Fprintf(&sb, " · %s", safetext.Markdown(p.Gender))
	}
	fmt.Fprintf(&sb, " · %s", format.SafeMarkdownCode(p.Reference()))
	if p.Active != nil && !*p.Active {
		sb.WriteString(" · ⚠️ record marked inactive")
	}
	sb.WriteString("\n\n")

	var ids []string
	for _, ident := range p.Identifier {
		if ident.Value == "" {
			continue
		}
		label := ident.System
		if ident.Type != nil && ehr.ConceptText(*ident.Type) != "" {
			label = ehr.ConceptText(*ident.Type)
		}
		item := format.SafeMarkdownCode(ident.Value)
		if label != "" {
			item += " (" + safetext.Markdown(label) + ")"
		}
		ids = append(ids, item)
	}
	listLine(&sb, "Identifiers", ids)

	var conditions []string
	for _, c := range s.Conditions {
		item := safetext.Markdown(ehr.ConceptText(c.Code))
		if c.OnsetDateTime != "" {
			item += " (since " + safetext.Markdown(dateOf(c.OnsetDateTime)) + ")"
		}
		conditions = append(conditions, item)
	}
	listLine(&sb, "Active conditions", conditions)

	var meds []string
	for _, m := range s.Medications {
		item := safetext.Markdown(orUnnamed(m.MedicationName()))
		if dose := m.Dosage(); dose != "" {
			item += " — " + safetext.Markdown(dose)
		}
		meds = append(meds, item)
	}
	listLine(&sb, "Active medications", meds)

	var allergies []string
	for _, a := range s.Allergies {
		item := safetext.Markdown(orUnnamed(ehr.ConceptText(a.Code)))
		var details []string
		if a.Criticality == "high" {
			details = append(details, "**high criticality**")
		}
		if m := a.Manifestations(); len(m) > 0 {
			details = append(details, safetext.Markdown(strings.Join(m, ", ")))
		}
		if len(details) > 0 {
			item += " (" + strings.Join(details, "; ") + ")"
		}
		allergies = append(allergies, item)
	}
	listLine(&sb, "Allergies", allergies)

	var vitals []string
	for _, v := range s.Vitals {
		item := safetext.Markdown(v.Name())
		if value := v.ValueText(); value != "" {
			item += " " + safetext.Markdown(value)
		}
		if when := ehr.FormatTime(v.Effective(), loc); when != "" {
			item += " (" + safetext.Markdown(when) + ")"
		}
		vitals = append(vitals, item)
	}
	listLine(&sb, "Last vitals", vitals)
	return strings.TrimRight(sb.String(), "\n")
}

// listLine writes "* **label:** a; b; c" with at most maxListed items, or "none recorded".
func listLine(sb *strings.Builder, label string, items []string) {
	fmt.Fprintf(sb, "* **%s:** ", label)
	switch {
	case len(items) == 0:
		sb.WriteString("none recorded")
	case len(items) > maxListed:
		fmt.Fprintf(sb, "%s; and %d more", strings.Join(items[:maxListed], "; "), len(items)-maxListed)
	default:
		sb.WriteString(strings.Join(items, "; "))
	}
	sb.WriteString("\n")
}

func orUnnamed(s string) string {
	if s == "" {
		return "(unnamed)"
	}
	return s
}

// dateOf is the date part of a FHIR dateTime.
func dateOf(s string) string {
	if len(s) > 10 && s[10] == 'T' {
		return s[:10]
	}
	return s
}

// resolveMRN finds the Patient of a medical record number in the EHR, for `case new` and `case link`, before any
// room is made. It returns patientRef unchanged when no MRN was given or no EHR is configured (the MRN is then
// kept as given). When the EHR knows no such patient, several, or cannot be reached, it answers in the room and
// reports false: nothing may be created.
func resolveMRN(ctx context.Context, call *Call, patientRef, mrn string) (string, bool) {
	b := call.Bot
	if mrn == "" || b.EHR == nil {
		return patientRef, checkPatientRef(ctx, call, patientRef)
	}
	system := b.Config.EHR.MRNSystem
	readCtx, cancel := context.WithTimeout(ctx, ehrReadTimeout)
	defer cancel()
	patients, err := b.EHR.FindPatients(readCtx, system, mrn)
	if err != nil {
		outcome, _ := ehrFailure(err, "")
		call.Audit("read:patient-search", outcome, 0, "")
		if ehr.IsUnreachable(err) {
			call.Fail(outcome, "⛔ The EHR is not reachable right now, so I could not look up MRN %s. Nothing was created. "+
				"Try again in a few minutes, or give the patient's FHIR reference with `--patient Patient/<id>`.", format.SafeMarkdownCode(mrn))
		} else {
			b.Log.Warn().Err(err).Msg("Failed to look up an MRN in the EHR")
			call.Fail(outcome, "⛔ The EHR refused the lookup of MRN %s. Nothing was created. Give the patient's FHIR reference "+
				"with `--patient Patient/<id>` instead; an admin can see why in the bot's log.", format.SafeMarkdownCode(mrn))
		}
		return "", false
	}
	in := ""
	if system != "" {
		in = " (in " + format.SafeMarkdownCode(system) + ")"
	}
	switch len(patients) {
	case 0:
		call.Audit("read:patient-search", "not-found", 0, "0 matches")
		call.Fail("refused:mrn-unknown", "⛔ No patient in the EHR has MRN %s%s. Nothing was created.\n\n"+
			"Check the number and try again, or give the patient's FHIR reference with `--patient Patient/<id>`.",
			format.SafeMarkdownCode(mrn), in)
		return "", false
	case 1:
		ref := patients[0].Reference()
		call.Audit("read:patient-search", "ok", 0, "1 match: "+ref)
		return ref, true
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "⛔ %d patients in the EHR have MRN %s%s, so I do not know which one you mean. Nothing was created.\n\n",
		len(patients), format.SafeMarkdownCode(mrn), in)
	var refs []string
	for i, p := range patients {
		refs = append(refs, p.Reference())
		if i >= maxCandidates {
			continue
		}
		name := p.DisplayName()
		if name == "" {
			name = "(no name recorded)"
		}
		fmt.Fprintf(&sb, "* %s", safetext.Markdown(name))
		if p.BirthDate != "" {
			fmt.Fprintf(&sb, ", born %s", safetext.Markdown(p.BirthDate))
		}
		fmt.Fprintf(&sb, " — %s\n", format.SafeMarkdownCode(p.Reference()))
	}
	if len(patients) > maxCandidates {
		fmt.Fprintf(&sb, "* … and %d more\n", len(patients)-maxCandidates)
	}
	sb.WriteString("\nSend the command again with `--patient Patient/<id>` instead of `--mrn`, using the right patient's reference.")
	call.Audit("read:patient-search", "ambiguous", 0, fmt.Sprintf("%d matches: %s", len(patients), strings.Join(refs, ",")))
	call.Fail("refused:mrn-ambiguous", "%s", sb.String())
	return "", false
}
