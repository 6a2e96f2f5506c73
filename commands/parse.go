package commands

import (
	"errors"
	"strings"
	"unicode"
)

// MaxCommandLength is the longest message body that is parsed as a command.
const MaxCommandLength = 4000

// SplitCommand recognises `/name args` and `!name args`: the prefix, then a name starting with a letter. It returns
// the name and the rest of the message with surrounding space trimmed.
func SplitCommand(body string) (name, rawArgs string, ok bool) {
	if len(body) < 2 || (body[0] != '/' && body[0] != '!') {
		return "", "", false
	}
	rest := body[1:]
	end := strings.IndexFunc(rest, unicode.IsSpace)
	if end < 0 {
		end = len(rest)
	}
	name = rest[:end]
	if name == "" || !unicode.IsLetter([]rune(name)[0]) {
		return "", "", false
	}
	return name, strings.TrimSpace(rest[end:]), true
}

// SplitArgs splits arguments on white space, keeping "double" or 'single' quoted parts together; a backslash
// escapes the next character inside double quotes and outside quotes.
func SplitArgs(raw string) ([]string, error) {
	if len(raw) > MaxCommandLength {
		return nil, errors.New("the command is too long")
	}
	var args []string
	var cur strings.Builder
	inArg := false
	var quote rune
	escaped := false
	for _, r := range raw {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\' && quote != '\'':
			escaped = true
			inArg = true
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote = r
			inArg = true
		case unicode.IsSpace(r):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(r)
			inArg = true
		}
	}
	if quote != 0 {
		return nil, errors.New("a quote (" + string(quote) + ") is not closed")
	}
	if escaped {
		return nil, errors.New("the text ends with a lone backslash")
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}
