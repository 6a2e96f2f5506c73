package commands

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/safetext"
	"github.com/caseroom/caseroom/store"
)

// auditPageSize is how many audit entries `/admin audit` shows at most, newest first.
const auditPageSize = 50

// maxAuditSince is the longest period `since` accepts.
const maxAuditSince = 10 * 366 * 24 * time.Hour

// cmdAdminAudit shows the audit log to admins. It shows IDs, actions and outcomes, never clinical content (the audit
// log holds none), and reading it is itself audited.
var cmdAdminAudit = &Command{
	Name:        "audit",
	Description: "Show the audit log (newest first): who read, wrote or was refused what, where, with which outcome.",
	Params: []Param{{Name: "filters", Type: Rest, Optional: true, Placeholder: "filters",
		Description: "only entries of a user (`@user:server`), of a case (`case 12`), and/or since a time ago (`since 2d`, `since 12h`, `since 30m`, `since 1w`)"}},
	Example: "case 12 since 2d",
	Access:  AdminDirect,
	PHI:     true, // who is a patient of which case
	Run:     runAdminAudit,
}

// auditQuery is a parsed `/admin audit` filter.
type auditQuery struct {
	actor  id.UserID
	caseID int64
	since  time.Duration
}

// parseAuditFilters reads `[<@user>] [case <id>] [since <duration>]`, in any order. Errors are user-facing markdown.
func parseAuditFilters(raw string) (auditQuery, error) {
	var q auditQuery
	words := strings.Fields(raw)
	for i := 0; i < len(words); i++ {
		word := words[i]
		switch lower := strings.ToLower(word); {
		case strings.HasPrefix(word, "@"):
			if q.actor != "" {
				return q, fmt.Errorf("give at most one user")
			}
			if _, _, err := id.UserID(word).Parse(); err != nil {
				return q, fmt.Errorf("%s is not a Matrix user ID like `@name:server`", format.SafeMarkdownCode(word))
			}
			q.actor = id.UserID(word)
		case lower == "case":
			if q.caseID != 0 {
				return q, fmt.Errorf("give at most one case")
			}
			if i+1 >= len(words) {
				return q, fmt.Errorf("`case` needs a case number, e.g. `case 12`")
			}
			i++
			n, err := strconv.ParseInt(strings.TrimPrefix(words[i], "#"), 10, 64)
			if err != nil || n < 1 {
				return q, fmt.Errorf("the case must be a case number like `12`, got %s", format.SafeMarkdownCode(words[i]))
			}
			q.caseID = n
		case lower == "since":
			if q.since != 0 {
				return q, fmt.Errorf("give `since` at most once")
			}
			if i+1 >= len(words) {
				return q, fmt.Errorf("`since` needs a period, e.g. `since 2d` or `since 12h`")
			}
			i++
			d, err := parseAuditSince(words[i])
			if err != nil {
				return q, err
			}
			q.since = d
		default:
			return q, fmt.Errorf("%s is not a filter; use `@user:server`, `case <id>` and/or `since <duration>`", format.SafeMarkdownCode(word))
		}
	}
	return q, nil
}

// parseAuditSince reads a period like 30m, 12h, 2d or 1w.
func parseAuditSince(text string) (time.Duration, error) {
	units := map[byte]time.Duration{'m': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour, 'w': 7 * 24 * time.Hour}
	lower := strings.ToLower(text)
	bad := fmt.Errorf("the period must be a number with m, h, d or w (e.g. `30m`, `12h`, `2d`, `1w`) of at most 10 years, got %s",
		format.SafeMarkdownCode(text))
	if len(lower) < 2 || len(lower) > 8 {
		return 0, bad
	}
	unit, ok := units[lower[len(lower)-1]]
	if !ok {
		return 0, bad
	}
	n, err := strconv.ParseInt(lower[:len(lower)-1], 10, 64)
	if err != nil || n < 1 || time.Duration(n) > maxAuditSince/unit {
		return 0, bad
	}
	return time.Duration(n) * unit, nil
}

// describe says in plain words which entries the query selects, e.g. "of @a:b in case #3 since 2026-01-02 10:00 CET".
func (q auditQuery) describe(call *Call, since time.Time) string {
	var parts []string
	if q.actor != "" {
		parts = append(parts, "of "+q.actor.String())
	}
	if q.caseID != 0 {
		parts = append(parts, fmt.Sprintf("in case #%d", q.caseID))
	}
	if !since.IsZero() {
		parts = append(parts, "since "+call.When(since))
	}
	return strings.Join(parts, " ")
}

func runAdminAudit(ctx context.Context, call *Call) error {
	q, err := parseAuditFilters(call.Str("filters"))
	if err != nil {
		call.Usage("%s.", err.Error())
		return nil
	}
	filter := store.AuditFilter{Actor: q.actor, CaseID: q.caseID, Limit: auditPageSize + 1}
	if q.since > 0 {
		filter.Since = time.Now().Add(-q.since)
	}
	entries, err := call.Bot.Store.Audit.List(ctx, filter)
	if err != nil {
		return err
	}
	more := len(entries) > auditPageSize
	if more {
		entries = entries[:auditPageSize]
	}
	what := q.describe(call, filter.Since)
	call.Audit("read:audit", "ok", q.caseID, auditDetail(q, len(entries)))
	if len(entries) == 0 {
		if what == "" {
			call.Reply("No audit entries yet.")
		} else {
			call.Reply(fmt.Sprintf("No audit entries %s.", safetext.Markdown(what)))
		}
		return nil
	}
	call.ReplyContent(auditTable(call, entries, what, more))
	return nil
}

// auditDetail records the filter of an audit read in the audit log itself (IDs and numbers only).
func auditDetail(q auditQuery, rows int) string {
	parts := []string{fmt.Sprintf("%d entries", rows)}
	if q.actor != "" {
		parts = append(parts, "actor "+q.actor.String())
	}
	if q.since > 0 {
		parts = append(parts, "since "+q.since.String())
	}
	return strings.Join(parts, ", ")
}

// auditTable renders audit entries as an HTML table with a plain-text body. Every value is escaped: actions,
// outcomes and IDs come from the database, but IDs are chosen by users and servers.
func auditTable(call *Call, entries []*store.AuditEntry, what string, more bool) *event.MessageEventContent {
	var h, plain strings.Builder
	title := fmt.Sprintf("Audit log (%d entries, newest first)", len(entries))
	if what != "" {
		title = fmt.Sprintf("Audit log %s (%d entries, newest first)", what, len(entries))
	}
	fmt.Fprintf(&h, "<p><strong>%s</strong></p>", safetext.HTML(title))
	plain.WriteString(title + "\n")
	h.WriteString("<table><thead><tr><th>Time</th><th>Actor</th><th>Action</th><th>Outcome</th><th>Case</th><th>Room</th><th>Event</th></tr></thead><tbody>")
	for _, e := range entries {
		caseCell := ""
		if e.CaseID != 0 {
			caseCell = fmt.Sprintf("#%d", e.CaseID)
		}
		cells := []string{call.When(e.At), e.Actor.String(), e.Action, e.Outcome, caseCell, string(e.RoomID), string(e.EventID)}
		h.WriteString("<tr>")
		for i, cell := range cells {
			if i == 1 || i >= 5 {
				fmt.Fprintf(&h, "<td><code>%s</code></td>", safetext.HTML(cell))
			} else {
				fmt.Fprintf(&h, "<td>%s</td>", safetext.HTML(cell))
			}
		}
		h.WriteString("</tr>")
		fmt.Fprintf(&plain, "\n%s | %s | %s | %s | %s | %s | %s", cells[0], cells[1], cells[2], cells[3], orDash(cells[4]), orDash(cells[5]), orDash(cells[6]))
	}
	h.WriteString("</tbody></table>")
	if more {
		note := fmt.Sprintf("Only the newest %d are shown; narrow them down with @user:server, case <id> or since <duration>.", auditPageSize)
		fmt.Fprintf(&h, "<p>%s</p>", safetext.HTML(note))
		plain.WriteString("\n\n" + note)
	}
	return &event.MessageEventContent{MsgType: event.MsgNotice, Body: plain.String(), Format: event.FormatHTML, FormattedBody: h.String()}
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}
