package commands

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"
)

var adminCommands = []*Command{{
	Name:        "admin",
	Category:    "Admin",
	Description: "Manage clinicians, admins and allowed homeservers; see the bot's status.",
	Access:      AdminDirect,
	Subcommands: []*Command{
		{
			Name:        "clinician",
			Description: "Register, remove or list clinicians.",
			Access:      AdminDirect,
			Subcommands: []*Command{
				{
					Name: "add", Description: "Register a clinician, optionally linked to a FHIR Practitioner.",
					Params: []Param{
						{Name: "user", Type: User, Placeholder: "@user:server", Description: "the clinician's Matrix ID"},
						{Name: "practitioner", Type: Word, Flag: true, Optional: true, Placeholder: "Practitioner/id", Description: "their FHIR Practitioner reference"},
					},
					Example: "@dr.lee:clinic.example --practitioner Practitioner/42",
					Access:  AdminDirect, Run: runClinicianAdd,
				},
				{
					Name: "remove", Description: "Remove a clinician (they stay in rooms until removed from care teams).",
					Params: []Param{{Name: "user", Type: User, Placeholder: "@user:server"}},
					Access: AdminDirect, Run: runClinicianRemove,
				},
				{Name: "list", Description: "List the registered clinicians.", Access: AdminDirect, Run: runClinicianList},
			},
		},
		{
			Name:        "admin",
			Description: "Add, remove or list admins.",
			Access:      AdminDirect,
			Subcommands: []*Command{
				{Name: "add", Description: "Make a user an admin.", Params: []Param{{Name: "user", Type: User, Placeholder: "@user:server"}}, Access: AdminDirect, Run: runAdminAdd},
				{Name: "remove", Description: "Remove an admin added with this command.", Params: []Param{{Name: "user", Type: User, Placeholder: "@user:server"}}, Access: AdminDirect, Run: runAdminRemove},
				{Name: "list", Description: "List the admins.", Access: AdminDirect, Run: runAdminList},
			},
		},
		{
			Name:        "servers",
			Description: "Allow, deny or list the homeservers whose users caseroom works with.",
			Access:      AdminDirect,
			Subcommands: []*Command{
				{Name: "allow", Description: "Allow users of a homeserver.", Params: []Param{{Name: "server", Type: Word, Placeholder: "server.name"}}, Example: "clinic-b.example", Access: AdminDirect, Run: runServerAllow},
				{Name: "deny", Description: "Stop allowing a homeserver added with `allow`.", Params: []Param{{Name: "server", Type: Word, Placeholder: "server.name"}}, Access: AdminDirect, Run: runServerDeny},
				{Name: "list", Description: "List the allowed homeservers.", Access: AdminDirect, Run: runServerList},
			},
		},
		{Name: "status", Description: "Show version, uptime, database, inbox backlog and homeserver reachability.", Access: AdminDirect, Run: runStatus},
		adminOutboxCommand,
		adminEHRCommand,
		cmdAdminAudit,
	},
}}

func runClinicianAdd(ctx context.Context, call *Call) error {
	user := call.UserArg("user")
	ref := call.Str("practitioner")
	if ref != "" && !validReference(ref, "Practitioner") {
		call.Usage("`--practitioner` must be a FHIR reference like `Practitioner/42`, got %s.", format.SafeMarkdownCode(ref))
		return nil
	}
	if allowed, err := call.Bot.ServerAllowed(ctx, user.Homeserver()); err != nil {
		return err
	} else if !allowed {
		call.Fail("refused:server", "⛔ %s is on %s, which is not an allowed homeserver. Allow it first with %s.",
			format.SafeMarkdownCode(user.String()), format.SafeMarkdownCode(user.Homeserver()), format.SafeMarkdownCode("/admin servers allow "+user.Homeserver()))
		return nil
	}
	if patient, err := call.Bot.Store.Cases.IsAnyPatient(ctx, user); err != nil {
		return err
	} else if patient {
		call.Fail("refused:patient", "⛔ %s is a patient in caseroom and cannot also be registered as a clinician.", format.SafeMarkdownCode(user.String()))
		return nil
	}
	refused, checkNote := checkPractitioner(ctx, call, ref)
	if refused {
		return nil
	}
	var added bool
	call.Write(func(ctx context.Context) (err error) {
		added, err = call.Bot.Store.Roles.AddClinician(ctx, user, ref, call.Sender)
		if err != nil {
			return err
		}
		what := "is now a registered clinician"
		if !added {
			what = "was already a registered clinician"
		}
		if ref != "" {
			what += ", linked to " + format.SafeMarkdownCode(ref)
		}
		call.Done(0, "%s %s.%s", format.SafeMarkdownCode(user.String()), what, checkNote)
		return nil
	})
	return nil
}

func runClinicianRemove(ctx context.Context, call *Call) error {
	user := call.UserArg("user")
	call.Write(func(ctx context.Context) error {
		removed, err := call.Bot.Store.Roles.RemoveClinician(ctx, user)
		if err != nil {
			return err
		}
		if !removed {
			call.Fail("not-found", "%s is not a registered clinician; nothing changed.", format.SafeMarkdownCode(user.String()))
			return nil
		}
		call.Done(0, "%s is no longer a registered clinician. They stay on care teams until removed with `/team remove`.",
			format.SafeMarkdownCode(user.String()))
		return nil
	})
	return nil
}

func runClinicianList(ctx context.Context, call *Call) error {
	clinicians, err := call.Bot.Store.Roles.Clinicians(ctx)
	if err != nil {
		return err
	}
	if len(clinicians) == 0 {
		call.Reply("No clinicians are registered yet. Add one with `/admin clinician add @user:server`.")
		return nil
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "**Registered clinicians** (%d)\n\n", len(clinicians))
	for _, c := range clinicians {
		fmt.Fprintf(&sb, "* %s", format.SafeMarkdownCode(c.UserID.String()))
		if c.PractitionerRef != "" {
			fmt.Fprintf(&sb, " — %s", format.SafeMarkdownCode(c.PractitionerRef))
		}
		fmt.Fprintf(&sb, " (added by %s, %s)\n", format.SafeMarkdownCode(c.AddedBy.String()), call.When(c.AddedAt))
	}
	call.Reply(sb.String())
	return nil
}

func runAdminAdd(ctx context.Context, call *Call) error {
	user := call.UserArg("user")
	if allowed, err := call.Bot.ServerAllowed(ctx, user.Homeserver()); err != nil {
		return err
	} else if !allowed {
		call.Fail("refused:server", "⛔ %s is on a homeserver that is not allowed. Allow it first with %s.",
			format.SafeMarkdownCode(user.String()), format.SafeMarkdownCode("/admin servers allow "+user.Homeserver()))
		return nil
	}
	call.Write(func(ctx context.Context) error {
		if slices.Contains(call.Bot.Config.Admins, user) {
			call.Fail("unchanged", "%s is already an admin (named in the config file).", format.SafeMarkdownCode(user.String()))
			return nil
		}
		added, err := call.Bot.Store.Roles.AddAdmin(ctx, user, call.Sender)
		if err != nil {
			return err
		}
		if !added {
			call.Fail("unchanged", "%s is already an admin.", format.SafeMarkdownCode(user.String()))
			return nil
		}
		call.Done(0, "%s is now an admin.", format.SafeMarkdownCode(user.String()))
		return nil
	})
	return nil
}

func runAdminRemove(ctx context.Context, call *Call) error {
	user := call.UserArg("user")
	if slices.Contains(call.Bot.Config.Admins, user) {
		call.Fail("refused:config", "⛔ %s is an admin because the config file names them; remove them there.", format.SafeMarkdownCode(user.String()))
		return nil
	}
	call.Write(func(ctx context.Context) error {
		removed, err := call.Bot.Store.Roles.RemoveAdmin(ctx, user)
		if err != nil {
			return err
		}
		if !removed {
			call.Fail("not-found", "%s is not an admin; nothing changed.", format.SafeMarkdownCode(user.String()))
			return nil
		}
		call.Done(0, "%s is no longer an admin.", format.SafeMarkdownCode(user.String()))
		return nil
	})
	return nil
}

func runAdminList(ctx context.Context, call *Call) error {
	added, err := call.Bot.Store.Roles.Admins(ctx)
	if err != nil {
		return err
	}
	var sb strings.Builder
	sb.WriteString("**Admins**\n\n")
	for _, a := range call.Bot.Config.Admins {
		fmt.Fprintf(&sb, "* %s (config file)\n", format.SafeMarkdownCode(a.String()))
	}
	for _, g := range added {
		fmt.Fprintf(&sb, "* %s (added by %s, %s)\n", format.SafeMarkdownCode(g.Subject), format.SafeMarkdownCode(g.AddedBy.String()), call.When(g.AddedAt))
	}
	call.Reply(sb.String())
	return nil
}

func runServerAllow(ctx context.Context, call *Call) error {
	server := strings.ToLower(call.Str("server"))
	if !validServerName(server) {
		call.Usage("%s is not a homeserver name; write it like `clinic.example` or `clinic.example:8448`.", format.SafeMarkdownCode(call.Str("server")))
		return nil
	}
	call.Write(func(ctx context.Context) error {
		if call.Bot.Config.AllowedServer(server) {
			call.Fail("unchanged", "%s is already allowed (config file).", format.SafeMarkdownCode(server))
			return nil
		}
		added, err := call.Bot.Store.Roles.AllowServer(ctx, server, call.Sender)
		if err != nil {
			return err
		}
		if !added {
			call.Fail("unchanged", "%s was already allowed.", format.SafeMarkdownCode(server))
			return nil
		}
		call.Done(0, "Users of %s can now use caseroom and be added to care teams.", format.SafeMarkdownCode(server))
		return nil
	})
	return nil
}

func runServerDeny(ctx context.Context, call *Call) error {
	server := strings.ToLower(call.Str("server"))
	if call.Bot.Config.AllowedServer(server) {
		call.Fail("refused:config", "⛔ %s is allowed by the config file (or is my own server); change it there.", format.SafeMarkdownCode(server))
		return nil
	}
	call.Write(func(ctx context.Context) error {
		removed, err := call.Bot.Store.Roles.DenyServer(ctx, server)
		if err != nil {
			return err
		}
		if !removed {
			call.Fail("not-found", "%s was not allowed; nothing changed.", format.SafeMarkdownCode(server))
			return nil
		}
		// Their care team memberships end with the server's allowance; the kicks from case and patient rooms
		// follow once this is stored (and are retried by the reconciler when the homeserver refuses one).
		ended, err := call.Bot.Store.Cases.RemoveTeamMembersOfServer(ctx, server)
		if err != nil {
			return err
		}
		call.Done(0, "Users of %s are no longer obeyed, invited or joined. %d care team memberships ended; I am removing "+
			"the server's users from all case and patient rooms.", format.SafeMarkdownCode(server), ended)
		return nil
	})
	b := call.Bot
	call.AfterCommit(func() {
		if err := reconcileRooms(ctx, b); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Could not remove all users of a denied server yet, will retry")
		}
	})
	return nil
}

func runServerList(ctx context.Context, call *Call) error {
	added, err := call.Bot.Store.Roles.AllowedServers(ctx)
	if err != nil {
		return err
	}
	var sb strings.Builder
	sb.WriteString("**Allowed homeservers**\n\n")
	fmt.Fprintf(&sb, "* %s (my own)\n", format.SafeMarkdownCode(call.Bot.Config.Homeserver.Domain))
	for _, s := range call.Bot.Config.AllowedServers {
		if s != call.Bot.Config.Homeserver.Domain {
			fmt.Fprintf(&sb, "* %s (config file)\n", format.SafeMarkdownCode(s))
		}
	}
	for _, g := range added {
		fmt.Fprintf(&sb, "* %s (added by %s, %s)\n", format.SafeMarkdownCode(g.Subject), format.SafeMarkdownCode(g.AddedBy.String()), call.When(g.AddedAt))
	}
	call.Reply(sb.String())
	return nil
}

func runStatus(ctx context.Context, call *Call) error {
	b := call.Bot
	dbState := "reachable"
	if err := b.Store.Ping(ctx); err != nil {
		dbState = "NOT reachable"
	}
	backlog, oldest, err := b.Store.Inbox.Backlog(ctx)
	if err != nil {
		return err
	}
	hsState := "reachable"
	if _, err := b.AS.BotIntent().Versions(ctx); err != nil {
		hsState = "NOT reachable"
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "**caseroom status**\n\n* Version: %s\n* Up since: %s (%s)\n", format.SafeMarkdownCode(b.Version),
		call.When(b.Started), time.Since(b.Started).Round(time.Second))
	fmt.Fprintf(&sb, "* Database: %s, %s\n", b.Config.Database.Type, dbState)
	fmt.Fprintf(&sb, "* Inbox backlog: %d event(s) waiting", backlog)
	if backlog > 0 {
		fmt.Fprintf(&sb, ", oldest from %s", call.When(oldest))
	}
	fmt.Fprintf(&sb, "\n* Homeserver %s: %s\n", format.SafeMarkdownCode(b.Config.Homeserver.Domain), hsState)
	call.Reply(sb.String())
	return nil
}

// validReference reports whether ref is a relative FHIR reference to a resource of the given type.
func validReference(ref, resourceType string) bool {
	typ, resID, ok := strings.Cut(ref, "/")
	if !ok || typ != resourceType || resID == "" || len(resID) > 64 {
		return false
	}
	for _, r := range resID {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// validServerName checks the shape of a Matrix server name: host, optionally with a port.
func validServerName(name string) bool {
	_, _, err := id.UserID("@x:" + name).Parse()
	return err == nil && name != "" && !strings.ContainsAny(name, " /@")
}
