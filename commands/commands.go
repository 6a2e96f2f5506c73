// Package commands defines what users can ask caseroom to do: the command definitions, parsing of `/name args` and
// `!name args`, help generated from the definitions, and the handlers.
package commands

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"

	"github.com/caseroom/caseroom/bot"
)

// Command is one thing a user can ask caseroom to do. Help text and usage errors are generated from it.
type Command struct {
	Name        string
	Aliases     []string
	Category    string
	Description string // one line
	Usage       string // arguments: <required> [optional]
	Example     string // arguments of a typical call
	Run         func(ctx context.Context, call *Call) error
}

// Call is one command invocation.
type Call struct {
	*bot.Turn
	Command *Command
	Name    string // as typed (may be an alias)
	RawArgs string
	Args    []string
}

// UsageLine is the command's usage as shown to users.
func (c *Command) UsageLine() string {
	return strings.TrimSpace("/" + c.Name + " " + c.Usage)
}

// Processor finds and runs commands in room messages.
type Processor struct {
	commands []*Command
	byName   map[string]*Command
}

var _ bot.MessageHandler = (*Processor)(nil)

// New makes a processor with caseroom's commands.
func New() *Processor {
	p := &Processor{byName: make(map[string]*Command)}
	p.register(cmdPing, p.helpCommand())
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
		p.commands = append(p.commands, cmd)
	}
}

// Commands lists the registered commands in registration order.
func (p *Processor) Commands() []*Command {
	return slices.Clone(p.commands)
}

// HandleMessage runs the command in a message, if it holds one. Edits, notices (other bots) and plain chat are
// left alone.
func (p *Processor) HandleMessage(ctx context.Context, turn *bot.Turn) error {
	content := turn.Event.Content.AsMessage()
	if content.MsgType != event.MsgText || content.RelatesTo.GetReplaceID() != "" {
		return nil
	}
	name, rawArgs, ok := SplitCommand(content.Body)
	if !ok {
		return nil
	}
	cmd := p.byName[strings.ToLower(name)]
	if cmd == nil {
		turn.Outcome = "unknown-command"
		msg := fmt.Sprintf("Unknown command %s.", format.SafeMarkdownCode("/"+name))
		if suggestion := p.suggest(name); suggestion != "" {
			msg += fmt.Sprintf(" Did you mean %s?", format.SafeMarkdownCode("/"+suggestion))
		}
		turn.Reply(msg + " Type `/help` to see the commands.")
		return nil
	}
	args, err := SplitArgs(rawArgs)
	if err != nil {
		turn.Outcome = "bad-arguments"
		turn.Reply(fmt.Sprintf("**Usage:** `%s`\n\n%s", cmd.UsageLine(), format.EscapeMarkdown(err.Error())))
		return nil
	}
	turn.Outcome = cmd.Name
	return cmd.Run(ctx, &Call{Turn: turn, Command: cmd, Name: name, RawArgs: rawArgs, Args: args})
}

// suggest returns the command name closest to a mistyped one, if any is close.
func (p *Processor) suggest(name string) string {
	name = strings.ToLower(name)
	best, bestDist := "", 3
	for candidate := range p.byName {
		d := editDistance(name, candidate)
		if d < bestDist || (d == bestDist && best != "" && candidate < best) {
			best, bestDist = candidate, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
