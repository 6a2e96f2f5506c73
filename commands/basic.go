package commands

import (
	"context"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/format"
)

var cmdPing = &Command{
	Name:        "ping",
	Category:    "General",
	Description: "Check that caseroom is listening.",
	Run: func(ctx context.Context, call *Call) error {
		call.Reply("Pong! caseroom is listening.")
		return nil
	},
}

func (p *Processor) helpCommand() *Command {
	return &Command{
		Name:        "help",
		Category:    "General",
		Description: "List the commands, or show how to use one.",
		Usage:       "[command]",
		Example:     "ping",
		Run: func(ctx context.Context, call *Call) error {
			if len(call.Args) > 1 {
				call.Reply(fmt.Sprintf("**Usage:** `%s`\n\nGive at most one command name.", call.Command.UsageLine()))
				return nil
			}
			if len(call.Args) == 1 {
				call.Reply(p.commandHelp(strings.TrimLeft(call.Args[0], "/!")))
				return nil
			}
			call.Reply(p.overview())
			return nil
		},
	}
}

// overview lists the commands by category, in the order the categories were first registered.
func (p *Processor) overview() string {
	var categories []string
	byCategory := make(map[string][]*Command)
	for _, cmd := range p.commands {
		if _, ok := byCategory[cmd.Category]; !ok {
			categories = append(categories, cmd.Category)
		}
		byCategory[cmd.Category] = append(byCategory[cmd.Category], cmd)
	}
	var sb strings.Builder
	sb.WriteString("**caseroom commands** (type them as `/name` or `!name`)\n")
	for _, category := range categories {
		fmt.Fprintf(&sb, "\n**%s**\n\n", category)
		for _, cmd := range byCategory[category] {
			fmt.Fprintf(&sb, "* `%s` — %s\n", cmd.UsageLine(), cmd.Description)
		}
	}
	sb.WriteString("\nType `/help <command>` for details.")
	return sb.String()
}

func (p *Processor) commandHelp(name string) string {
	cmd := p.byName[strings.ToLower(name)]
	if cmd == nil {
		msg := fmt.Sprintf("There is no command %s.", format.SafeMarkdownCode("/"+name))
		if suggestion := p.suggest(name); suggestion != "" {
			msg += fmt.Sprintf(" Did you mean %s?", format.SafeMarkdownCode("/"+suggestion))
		}
		return msg
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "**/%s** — %s\n\n**Usage:** `%s`", cmd.Name, cmd.Description, cmd.UsageLine())
	if len(cmd.Aliases) > 0 {
		fmt.Fprintf(&sb, "\n\n**Also:** `/%s`", strings.Join(cmd.Aliases, "`, `/"))
	}
	if cmd.Example != "" {
		fmt.Fprintf(&sb, "\n\n**Example:** `/%s %s`", cmd.Name, cmd.Example)
	}
	return sb.String()
}
