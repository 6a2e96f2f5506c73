package commands

import (
	"context"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"
)

var cmdPing = &Command{
	Name:        "ping",
	Category:    "General",
	Description: "Check that caseroom is listening.",
	Access:      Anyone,
	Run: func(ctx context.Context, call *Call) error {
		call.Reply("Pong! caseroom is listening.")
		return nil
	},
}

func (p *Processor) helpCommand() *Command {
	return &Command{
		Name:        "help",
		Category:    "General",
		Description: "List the commands you can use here, or show how to use one.",
		Params:      []Param{{Name: "command", Type: Rest, Optional: true, Description: "a command name, e.g. case new"}},
		Example:     "case new",
		Access:      Anyone,
		Run: func(ctx context.Context, call *Call) error {
			if name := strings.TrimLeft(call.Str("command"), "/!"); name != "" {
				call.Reply(p.commandHelp(name))
				return nil
			}
			hidePHI := false
			if call.Bot.Config.Encryption.Require {
				encrypted, err := call.Bot.IsEncrypted(ctx, call.Event.RoomID)
				if err != nil {
					return err
				}
				hidePHI = !encrypted
			}
			call.Reply(p.overview(call.Room, call.Bot.BotID(), hidePHI))
			return nil
		},
	}
}

// overview lists the commands the sender may run in this room, by category, in registration order. With hidePHI
// (an unencrypted room while encryption.require is set) the commands that work with patient data are left out.
func (p *Processor) overview(rc *RoomContext, botID id.UserID, hidePHI bool) string {
	var categories []string
	byCategory := make(map[string][]*Command)
	for _, cmd := range p.Runnable() {
		if (rc != nil && !mayRun(cmd, rc, botID)) || (hidePHI && cmd.PHI) {
			continue
		}
		if _, ok := byCategory[cmd.Category]; !ok {
			categories = append(categories, cmd.Category)
		}
		byCategory[cmd.Category] = append(byCategory[cmd.Category], cmd)
	}
	var sb strings.Builder
	sb.WriteString("**Commands you can use here** (type them as `/name` or `!name`)\n")
	for _, category := range categories {
		fmt.Fprintf(&sb, "\n**%s**\n\n", category)
		for _, cmd := range byCategory[category] {
			fmt.Fprintf(&sb, "* `%s` — %s\n", cmd.UsageLine(), cmd.Description)
		}
	}
	if hidePHI {
		sb.WriteString("\nThis room is not end-to-end encrypted, so the commands that work with patient data are not listed: " +
			"they run only in encrypted rooms.\n")
	}
	sb.WriteString("\nType `/help <command>` for details.")
	return sb.String()
}

// commandHelp explains one command: usage, parameters, who may run it and an example.
func (p *Processor) commandHelp(name string) string {
	words := strings.Fields(name)
	cmd, consumed := p.lookup(words[0], words[1:])
	if cmd == nil || consumed != len(words)-1 {
		msg := fmt.Sprintf("There is no command %s.", format.SafeMarkdownCode("/"+name))
		if suggestion := p.suggest(words[0]); suggestion != "" && cmd == nil {
			msg += fmt.Sprintf(" Did you mean %s?", format.SafeMarkdownCode("/"+suggestion))
		}
		return msg
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "**/%s** — %s\n\n**Usage:** `%s`", cmd.FullName(), cmd.Description, cmd.UsageLine())
	for _, sub := range cmd.Subcommands {
		fmt.Fprintf(&sb, "\n* `%s` — %s", sub.UsageLine(), sub.Description)
	}
	for _, param := range cmd.Params {
		if param.Description != "" {
			fmt.Fprintf(&sb, "\n* %s: %s", describe(&param), param.Description)
		}
	}
	if len(cmd.Aliases) > 0 {
		fmt.Fprintf(&sb, "\n\n**Also:** `/%s`", strings.Join(cmd.Aliases, "`, `/"))
	}
	if cmd.Run != nil {
		fmt.Fprintf(&sb, "\n\n**Who:** %s", cmd.Access)
	}
	if cmd.Example != "" {
		fmt.Fprintf(&sb, "\n\n**Example:** `/%s %s`", cmd.FullName(), cmd.Example)
	}
	return sb.String()
}
