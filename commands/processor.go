package commands

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/event/cmdschema"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/bot"
	"github.com/caseroom/caseroom/care"
)

// Processor finds, checks and runs commands in room messages.
type Processor struct {
	commands []*Command
	byName   map[string]*Command

	toldMu sync.Mutex
	told   map[string]bool // room|user pairs already told that their server is not allowed
}

var (
	_ bot.MessageHandler    = (*Processor)(nil)
	_ bot.MembershipHandler = (*Processor)(nil)
	_ bot.RedactionHandler  = (*Processor)(nil)
)

// New makes a processor with caseroom's commands.
func New() *Processor {
	p := &Processor{byName: make(map[string]*Command), told: make(map[string]bool)}
	p.register(cmdPing, p.helpCommand())
	p.register(caseCommands...)
	p.register(planCommands...)
	p.register(fileCommands...)
	p.register(checkinCommands...)
	p.register(remindCommands...)
	p.register(alertCommands...)
	p.register(adminCommands...)
	return p
}

func (p *Processor) register(cmds ...*Command) {
	for _, cmd := range cmds {
		for _, name := range append([]string{cmd.Name}, cmd.Aliases...) {
			if _, dup := p.byName[name]; dup {
				panic(fmt.Sprintf("command name %q registered twice", name))
			}
			p.byName[name] = cmd
		}
		linkParents(cmd)
		p.commands = append(p.commands, cmd)
	}
}

func linkParents(cmd *Command) {
	for _, sub := range cmd.Subcommands {
		sub.parent = cmd
		if sub.Category == "" {
			sub.Category = cmd.Category
		}
		linkParents(sub)
	}
}

// Commands lists the top-level commands in registration order.
func (p *Processor) Commands() []*Command {
	return p.commands
}

// Runnable lists every command that runs something (subcommands included), in help order.
func (p *Processor) Runnable() []*Command {
	var out []*Command
	var walk func(*Command)
	walk = func(c *Command) {
		if c.Run != nil {
			out = append(out, c)
		}
		for _, sub := range c.Subcommands {
			walk(sub)
		}
	}
	for _, c := range p.commands {
		walk(c)
	}
	return out
}

// lookup finds the command named by the first words, descending into subcommands.
func (p *Processor) lookup(name string, words []string) (cmd *Command, consumed int) {
	cmd = p.byName[strings.ToLower(name)]
	for cmd != nil && consumed < len(words) && len(cmd.Subcommands) > 0 {
		sub := findSub(cmd, words[consumed])
		if sub == nil {
			break
		}
		cmd = sub
		consumed++
	}
	return cmd, consumed
}

func findSub(cmd *Command, name string) *Command {
	name = strings.ToLower(name)
	for _, sub := range cmd.Subcommands {
		if sub.Name == name {
			return sub
		}
		for _, alias := range sub.Aliases {
			if alias == name {
				return sub
			}
		}
	}
	return nil
}

// HandleMessage runs the command in a message, if it holds one. Edits, notices (other bots) and plain chat are
// left alone.
func (p *Processor) HandleMessage(ctx context.Context, turn *bot.Turn) error {
	content := turn.Event.Content.AsMessage()
	if original := content.RelatesTo.GetReplaceID(); original != "" {
		if content.NewContent == nil || content.NewContent.MsgType != event.MsgText {
			return nil
		}
		return p.handleCheckInEdit(ctx, turn, original, content.NewContent.Body)
	}
	if content.MsgType != event.MsgText {
		return nil
	}
	var cmd *Command
	var args map[string]any
	var argErr error
	structured := content.MSC4391BotCommand
	if structured != nil {
		words := strings.Fields(structured.Command)
		if len(words) == 0 {
			return nil
		}
		var consumed int
		cmd, consumed = p.lookup(words[0], words[1:])
		if cmd == nil || consumed != len(words)-1 {
			turn.Outcome = "unknown-command"
			turn.Reply(fmt.Sprintf("Unknown command %s. Type `/help` to see the commands.", format.SafeMarkdownCode("/"+structured.Command)))
			return nil
		}
		if cmd.Run != nil {
			args, argErr = structuredArgs(cmd.Params, structured.Arguments)
		}
	} else {
		name, rawArgs, ok := SplitCommand(content.Body)
		if !ok {
			return p.handleGuidedText(ctx, turn) // plain chat, unless it answers a guided check-in
		}
		if len(rawArgs) > MaxCommandLength {
			turn.Outcome = "bad-arguments"
			turn.Reply(fmt.Sprintf("That command is too long (%d characters, at most %d).", len(rawArgs), MaxCommandLength))
			return nil
		}
		words := strings.Fields(rawArgs)
		var consumed int
		cmd, consumed = p.lookup(name, words)
		if cmd == nil {
			turn.Outcome = "unknown-command"
			msg := fmt.Sprintf("Unknown command %s.", format.SafeMarkdownCode("/"+name))
			if suggestion := p.suggest(name); suggestion != "" {
				msg += fmt.Sprintf(" Did you mean %s?", format.SafeMarkdownCode("/"+suggestion))
			}
			turn.Reply(msg + " Type `/help` to see the commands.")
			return nil
		}
		for range consumed {
			rawArgs = strings.TrimSpace(rawArgs)
			_, rawArgs, _ = strings.Cut(rawArgs, strings.Fields(rawArgs)[0])
		}
		if cmd.Run != nil {
			args, argErr = ParseArgs(cmd.Params, rawArgs)
		} else if len(words) > consumed {
			argErr = fmt.Errorf("%s is not a subcommand of %s", format.SafeMarkdownCode(words[consumed]), format.SafeMarkdownCode("/"+cmd.FullName()))
		}
	}

	// The gate's steps 1 and 2 (see gate.go); commands for everyone that show nothing private (help, ping) need no
	// trusted device. Unencrypted rooms are refused later, with advice, when encryption.require is set.
	action := "command:" + cmd.FullName()
	if cmd.PHI {
		if refused, err := refuseClearText(ctx, turn, action, 0, false); err != nil || refused {
			return err
		}
	}
	if (cmd.Access != Anyone || cmd.PHI) && refuseUntrusted(turn, action, 0) {
		return nil
	}

	sender := turn.Event.Sender
	allowed, err := turn.Bot.ServerAllowed(ctx, sender.Homeserver())
	if err != nil {
		return err
	}
	if !allowed {
		turn.Outcome = "refused:server"
		if p.firstTold(turn.Event.RoomID, sender) {
			turn.Reply(fmt.Sprintf("⛔ I only work with users of allowed homeservers, and %s is not one of them. "+
				"An admin can allow it with `/admin servers allow`.", format.SafeMarkdownCode(sender.Homeserver())))
		}
		call := &Call{Turn: turn, Command: cmd, Sender: sender}
		call.Audit("command:"+cmd.FullName(), "refused:server", 0, "")
		return nil
	}

	turn.Command = cmd.FullName()
	room, err := resolveRoom(ctx, turn.Bot, turn.Event.RoomID, sender)
	if err != nil {
		return err
	}
	call := &Call{Turn: turn, Command: cmd, Args: args, Sender: sender, Room: room, proc: p}
	if outcome, why := checkAccess(cmd, room, turn.Bot.BotID()); outcome != "" {
		call.Fail(outcome, "%s", why)
		return nil
	}
	if refused, err := refuseUnencrypted(ctx, call); err != nil || refused {
		return err
	}
	if cmd.Run == nil {
		call.Outcome = "usage"
		why := "Choose one of the subcommands. Type `/help " + cmd.FullName() + "` for details."
		if argErr != nil {
			why = argErr.Error() + ". " + why
		}
		call.Usage("%s", why)
		return nil
	}
	if argErr != nil {
		call.Usage("%s.", argErr.Error())
		return nil
	}
	turn.Outcome = "ok"
	return cmd.Run(ctx, call)
}

// firstTold reports whether this is the first time the bot tells this user in this room that their server is not
// allowed, so that it says so once rather than on every message.
func (p *Processor) firstTold(roomID id.RoomID, userID id.UserID) bool {
	p.toldMu.Lock()
	defer p.toldMu.Unlock()
	key := string(roomID) + "|" + string(userID)
	if p.told[key] {
		return false
	}
	p.told[key] = true
	return true
}

// suggest returns the command name closest to a mistyped one, if any is close.
func (p *Processor) suggest(name string) string {
	name = strings.ToLower(name)
	best, bestDist := "", 3
	for candidate := range p.byName {
		d := care.EditDistance(name, candidate)
		if d < bestDist || (d == bestDist && best != "" && candidate < best) {
			best, bestDist = candidate, d
		}
	}
	return best
}

// Specs are the MSC4391 descriptions of every runnable command, for publishing as room state.
func (p *Processor) Specs() []*cmdschema.EventContent {
	var specs []*cmdschema.EventContent
	for _, cmd := range p.Runnable() {
		specs = append(specs, cmd.Spec())
	}
	return specs
}
