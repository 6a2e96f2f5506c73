package commands

import (
	"context"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/format"
)

var adminOutboxCommand = &Command{
	Name:        "outbox",
	Description: "Show the EHR outbox: what waits for delivery and the dead letters.",
	Access:      AdminDirect,
	PHI:         true, // which records of which cases wait or were refused, and why
	Run:         runOutbox,
	Subcommands: []*Command{
		{
			Name: "retry", Description: "File a dead letter again (after fixing what the EHR refused).",
			Params:  []Param{{Name: "n", Type: Integer, Placeholder: "n", Description: "the number shown by /admin outbox"}},
			Example: "12",
			Access:  AdminDirect, PHI: true, Run: runOutboxRetry,
		},
	},
}

var adminEHRCommand = &Command{
	Name:        "ehr",
	Description: "Show whether an EHR is connected and how delivery goes.",
	Access:      AdminDirect,
	Subcommands: []*Command{
		{Name: "status", Description: "Show the EHR connection and the outbox counts.", Access: AdminDirect, Run: runEHRStatus},
	},
}

func runOutbox(ctx context.Context, call *Call) error {
	items, err := call.Bot.Store.EHR.List(ctx, true, 50)
	if err != nil {
		return err
	}
	if len(items) == 0 {
		call.Reply("The EHR outbox is empty: everything was delivered.")
		return nil
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "**EHR outbox** (newest %d undelivered)\n\n", len(items))
	for _, it := range items {
		state := "waiting"
		if !it.DeadAt.IsZero() {
			state = "**dead letter** since " + call.When(it.DeadAt)
		} else if it.Attempts > 0 {
			state = fmt.Sprintf("retrying (attempt %d, next %s)", it.Attempts+1, call.When(it.NextAttempt))
		}
		fmt.Fprintf(&sb, "* **%d** — %s %d v%d of case #%d, queued %s — %s", it.Seq, it.Kind, it.RecordID, it.Version, it.CaseID, call.When(it.CreatedAt), state)
		if it.LastError != "" {
			fmt.Fprintf(&sb, "\n  %s", format.SafeMarkdownCode(it.LastError))
		}
		sb.WriteString("\n")
	}
	sb.WriteString("\nFile a dead letter again with `/admin outbox retry <n>`.")
	call.Reply(sb.String())
	return nil
}

func runOutboxRetry(ctx context.Context, call *Call) error {
	seq, _ := call.Int("n")
	call.Write(func(ctx context.Context) error {
		ok, err := call.Bot.Store.EHR.Requeue(ctx, seq)
		if err != nil {
			return err
		}
		if !ok {
			call.Fail("not-found", "There is no dead letter %d; `/admin outbox` lists them.", seq)
			return nil
		}
		if call.Bot.KickEHR != nil {
			call.AfterCommit(call.Bot.KickEHR)
		}
		call.Done(0, "Dead letter %d is queued again; I will say in its case room when it is filed.", seq)
		return nil
	})
	return nil
}

func runEHRStatus(ctx context.Context, call *Call) error {
	stats, err := call.Bot.Store.EHR.Stats(ctx)
	if err != nil {
		return err
	}
	var sb strings.Builder
	if call.Bot.EHR == nil {
		sb.WriteString("**No EHR is configured.** caseroom keeps every record locally and queues it; set `ehr.url` in the config to file them.\n\n")
	} else {
		fmt.Fprintf(&sb, "**EHR:** %s (auth: %s)\n\n", format.SafeMarkdownCode(call.Bot.EHR.BaseURL()), call.Bot.Config.EHR.Auth.Mode)
	}
	fmt.Fprintf(&sb, "* Waiting: %d", stats.Pending)
	if stats.Pending > 0 {
		fmt.Fprintf(&sb, " (oldest queued %s)", call.When(stats.OldestPending))
	}
	fmt.Fprintf(&sb, "\n* Dead letters: %d\n* Delivered: %d\n", stats.Dead, stats.Delivered)
	call.Reply(sb.String())
	return nil
}
