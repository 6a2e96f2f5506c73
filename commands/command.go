// Package commands defines what users can ask caseroom to do: the command definitions (name, aliases, typed
// parameters, who may run them and where), parsing of `/name args`, `!name args` and MSC4391 structured input,
// permission checks, help generated from the definitions, and the handlers.
package commands

import (
	"context"
	"fmt"
	"strings"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/event/cmdschema"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/store"
)

// ParamType is the type of a command parameter.
type ParamType int

const (
	Word    ParamType = iota // one word, or a quoted text
	Rest                     // all remaining words, as typed
	User                     // a Matrix user ID
	Integer                  // a whole number
)

// Param describes one parameter. Positional parameters are given in order; Flag parameters as `--name value` or
// `--name=value`, anywhere.
type Param struct {
	Name        string
	Type        ParamType
	Optional    bool
	Flag        bool
	Placeholder string // shown in usage, e.g. "Patient/id"; defaults to the name
	Description string
}

// Access says who may run a command and in which room.
type Access int

const (
	// Anyone of an allowed homeserver, in any room.
	Anyone Access = iota
	// AnyClinician is a registered clinician, in any room but a patient room.
	AnyClinician
	// ClinicianDirect is a registered clinician in a direct chat with the bot.
	ClinicianDirect
	// CareTeam is a clinician on the case's care team, in the case room.
	CareTeam
	// OwnPatientRoom is the patient of a patient room, in that room.
	OwnPatientRoom
	// CareTeamAnyRoom is a clinician on the care team, in the case room or the patient room.
	CareTeamAnyRoom
	// CaseMember is the care team in the case room, or the patient and the care team in the patient room.
	CaseMember
	// AdminDirect is an admin in a direct chat with the bot (the admin room).
	AdminDirect
)

func (a Access) String() string {
	switch a {
	case AnyClinician:
		return "registered clinicians, outside patient rooms"
	case ClinicianDirect:
		return "registered clinicians, in a direct chat with the bot"
	case CareTeam:
		return "the case's care team, in its case room"
	case OwnPatientRoom:
		return "the patient, in their patient room"
	case CareTeamAnyRoom:
		return "the case's care team, in its case room or patient room"
	case CaseMember:
		return "the care team in the case room; the patient and the care team in the patient room"
	case AdminDirect:
		return "admins, in a direct chat with the bot"
	default:
		return "everyone"
	}
}

// Command is one thing a user can ask caseroom to do. Help, usage errors and the MSC4391 state events are
// generated from it. A command with Subcommands only dispatches (and lists them when called alone).
type Command struct {
	Name        string
	Aliases     []string
	Category    string
	Description string // one line
	Params      []Param
	Example     string // arguments of a typical call
	Access      Access
	// PHI marks commands that read or write patient data: with encryption.require they run only in encrypted rooms.
	PHI         bool
	Subcommands []*Command
	Run         func(ctx context.Context, call *Call) error

	parent *Command
}

// FullName is the name with its parents' names, e.g. "case new".
func (c *Command) FullName() string {
	if c.parent != nil {
		return c.parent.FullName() + " " + c.Name
	}
	return c.Name
}

// UsageLine is the command's usage as shown to users: `/case new <title> [--patient <Patient/id>]`.
func (c *Command) UsageLine() string {
	parts := []string{"/" + c.FullName()}
	if len(c.Subcommands) > 0 {
		names := make([]string, len(c.Subcommands))
		for i, sub := range c.Subcommands {
			names[i] = sub.Name
		}
		parts = append(parts, strings.Join(names, "|"))
	}
	for _, p := range c.Params {
		placeholder := p.Placeholder
		if placeholder == "" {
			placeholder = p.Name
		}
		text := "<" + placeholder + ">"
		if p.Flag {
			text = "--" + p.Name + " " + text
		}
		if p.Optional {
			text = "[" + text + "]"
		}
		parts = append(parts, text)
	}
	return strings.Join(parts, " ")
}

// Spec is the command's MSC4391 description, published as room state so that clients can offer it as a slash
// command with typed arguments.
func (c *Command) Spec() *cmdschema.EventContent {
	spec := &cmdschema.EventContent{
		Command:     c.FullName(),
		Description: event.MakeExtensibleText(c.Description),
	}
	for _, alias := range c.Aliases {
		if c.parent != nil {
			alias = c.parent.FullName() + " " + alias
		}
		spec.Aliases = append(spec.Aliases, alias)
	}
	for _, p := range c.Params {
		prim := cmdschema.PrimitiveTypeString
		switch p.Type {
		case User:
			prim = cmdschema.PrimitiveTypeUserID
		case Integer:
			prim = cmdschema.PrimitiveTypeInteger
		}
		param := &cmdschema.Parameter{Key: p.Name, Schema: prim.Schema(), Optional: p.Optional}
		if p.Description != "" {
			param.Description = event.MakeExtensibleText(p.Description)
		}
		spec.Parameters = append(spec.Parameters, param)
		if p.Type == Rest {
			spec.TailParam = p.Name
		}
	}
	return spec
}

// Call is one command invocation.
type Call struct {
	*bot.Turn
	Command *Command
	Args    map[string]any // parameter values by name: string, id.UserID or int64
	Sender  id.UserID
	Room    *RoomContext
	proc    *Processor
}

// Str returns a text parameter ("" when not given).
func (c *Call) Str(name string) string {
	s, _ := c.Args[name].(string)
	return s
}

// UserArg returns a user parameter.
func (c *Call) UserArg(name string) id.UserID {
	u, _ := c.Args[name].(id.UserID)
	return u
}

// Int returns an integer parameter and whether it was given.
func (c *Call) Int(name string) (int64, bool) {
	n, ok := c.Args[name].(int64)
	return n, ok
}

// Audit records what the call did, in the turn's transaction.
func (c *Call) Audit(action, outcome string, caseID int64, detail string) {
	entry := &store.AuditEntry{
		Actor: c.Sender, Action: action, Outcome: outcome, CaseID: caseID,
		RoomID: c.Event.RoomID, EventID: c.Event.ID, Detail: detail,
	}
	c.Write(func(ctx context.Context) error { return c.Bot.Store.Audit.Add(ctx, entry) })
}

// Fail answers with ⛔ and a message, and audits the failure.
func (c *Call) Fail(outcome, markdown string, args ...any) {
	c.Outcome = outcome
	c.Reply(fmt.Sprintf(markdown, args...)) // the answer first: the room's messages are sent in order
	c.React("⛔")
	var caseID int64
	if c.Room != nil && c.Room.Case != nil {
		caseID = c.Room.Case.ID
	}
	c.Audit("command:"+c.Command.FullName(), outcome, caseID, "")
}

// Done answers with ✅ and a message that says what happened, and audits the success.
func (c *Call) Done(caseID int64, markdown string, args ...any) {
	c.Outcome = "ok"
	c.Reply(fmt.Sprintf(markdown, args...))
	c.React("✅")
	c.Audit("command:"+c.Command.FullName(), "ok", caseID, "")
}

// Usage answers with the usage line and one line of why.
func (c *Call) Usage(why string, args ...any) {
	c.Outcome = "bad-arguments"
	c.Reply(fmt.Sprintf("**Usage:** `%s`\n\n%s", c.Command.UsageLine(), fmt.Sprintf(why, args...)))
}

// When formats a time for users: in the configured zone, to the minute.
func (c *Call) When(t time.Time) string {
	return t.In(c.Bot.Config.Location()).Format("2006-01-02 15:04 MST")
}
