package commands

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"
)

// MaxArgLength limits one argument value.
const MaxArgLength = 1000

// ParseArgs turns the text after a command name into parameter values. Flags (`--name value`, `--name=value`) may
// stand anywhere; the other words fill the positional parameters in order; a Rest parameter takes the remaining
// words as typed. Errors say which parameter, which value and what is allowed, in words fit for the user.
func ParseArgs(params []Param, raw string) (map[string]any, error) {
	values := make(map[string]any)
	flags := make(map[string]*Param)
	var positional []*Param
	for i := range params {
		if params[i].Flag {
			flags[params[i].Name] = &params[i]
		} else {
			positional = append(positional, &params[i])
		}
	}
	rest := strings.TrimSpace(raw)
	next := 0
	for rest != "" {
		if strings.HasPrefix(rest, "--") {
			word, remaining, err := nextWord(rest)
			if err != nil {
				return nil, err
			}
			name, value, hasValue := strings.Cut(strings.TrimPrefix(word, "--"), "=")
			p := flags[name]
			if p == nil {
				return nil, fmt.Errorf("%s is not an option of this command%s", format.SafeMarkdownCode("--"+name), flagHint(params))
			}
			if _, dup := values[name]; dup {
				return nil, fmt.Errorf("%s is given twice", format.SafeMarkdownCode("--"+name))
			}
			if !hasValue {
				if remaining == "" || strings.HasPrefix(remaining, "--") {
					return nil, fmt.Errorf("%s needs a value", format.SafeMarkdownCode("--"+name))
				}
				if value, remaining, err = nextWord(remaining); err != nil {
					return nil, err
				}
			}
			converted, err := convert(p, value)
			if err != nil {
				return nil, err
			}
			values[name] = converted
			rest = remaining
			continue
		}
		if next >= len(positional) {
			word, _, _ := nextWord(rest)
			return nil, fmt.Errorf("unexpected extra argument %s", format.SafeMarkdownCode(word))
		}
		p := positional[next]
		next++
		var value string
		if p.Type == Rest {
			value, rest = takeRest(rest)
		} else {
			var err error
			if value, rest, err = nextWord(rest); err != nil {
				return nil, err
			}
		}
		converted, err := convert(p, value)
		if err != nil {
			return nil, err
		}
		values[p.Name] = converted
	}
	for _, p := range params {
		if _, ok := values[p.Name]; !ok && !p.Optional {
			return nil, fmt.Errorf("%s is missing", describe(&p))
		}
	}
	return values, nil
}

// takeRest takes the rest of the text up to the first flag; surrounding quotes of a single quoted text are removed.
func takeRest(text string) (value, remaining string) {
	end := len(text)
	if i := strings.Index(text, " --"); i >= 0 {
		end = i
	}
	value, remaining = strings.TrimSpace(text[:end]), strings.TrimSpace(text[end:])
	if args, err := SplitArgs(value); err == nil && len(args) == 1 && (strings.HasPrefix(value, `"`) || strings.HasPrefix(value, `'`)) {
		value = args[0]
	}
	return value, remaining
}

// nextWord takes one word (quoted text counts as one word) off the front of text.
func nextWord(text string) (word, remaining string, err error) {
	text = strings.TrimSpace(text)
	end := 0
	var quote rune
	escaped := false
	for i, r := range text {
		_, size := utf8.DecodeRuneInString(text[i:]) // not len(string(r)): an invalid byte is one byte, not U+FFFD's three
		end = i + size
		switch {
		case escaped:
			escaped = false
		case r == '\\' && quote != '\'':
			escaped = true
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'':
			quote = r
		case r == ' ' || r == '\t' || r == '\n':
			end = i
			goto done
		}
	}
done:
	args, err := SplitArgs(text[:end])
	if err != nil {
		return "", "", err
	}
	if len(args) == 0 {
		return "", strings.TrimSpace(text[end:]), nil
	}
	return args[0], strings.TrimSpace(text[end:]), nil
}

func convert(p *Param, value string) (any, error) {
	if len(value) > MaxArgLength {
		return nil, fmt.Errorf("%s is too long (%d characters, at most %d)", describe(p), len(value), MaxArgLength)
	}
	switch p.Type {
	case User:
		userID := id.UserID(value)
		if _, _, err := userID.Parse(); err != nil || !strings.HasPrefix(value, "@") {
			return nil, fmt.Errorf("%s must be a Matrix user ID like `@name:server`, got %s", describe(p), format.SafeMarkdownCode(value))
		}
		return userID, nil
	case Integer:
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s must be a whole number, got %s", describe(p), format.SafeMarkdownCode(value))
		}
		return n, nil
	default:
		if strings.TrimSpace(value) == "" && !p.Optional {
			return nil, fmt.Errorf("%s must not be empty", describe(p))
		}
		return value, nil
	}
}

// structuredArgs converts MSC4391 structured arguments into parameter values with the same checks as typed text.
func structuredArgs(params []Param, raw json.RawMessage) (map[string]any, error) {
	var input map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &input); err != nil {
			return nil, fmt.Errorf("the structured arguments are not a JSON object")
		}
	}
	values := make(map[string]any)
	for i := range params {
		p := &params[i]
		v, ok := input[p.Name]
		if !ok || v == nil {
			if !p.Optional {
				return nil, fmt.Errorf("%s is missing", describe(p))
			}
			continue
		}
		var text string
		switch v := v.(type) {
		case string:
			text = v
		case float64:
			text = strconv.FormatFloat(v, 'f', -1, 64)
		default:
			return nil, fmt.Errorf("%s has a value of the wrong type", describe(p))
		}
		converted, err := convert(p, text)
		if err != nil {
			return nil, err
		}
		values[p.Name] = converted
	}
	for name := range input {
		if !hasParam(params, name) {
			return nil, fmt.Errorf("%s is not a parameter of this command", format.SafeMarkdownCode(name))
		}
	}
	return values, nil
}

func hasParam(params []Param, name string) bool {
	for _, p := range params {
		if p.Name == name {
			return true
		}
	}
	return false
}

func describe(p *Param) string {
	if p.Flag {
		return format.SafeMarkdownCode("--" + p.Name)
	}
	placeholder := p.Placeholder
	if placeholder == "" {
		placeholder = p.Name
	}
	return format.SafeMarkdownCode("<" + placeholder + ">")
}

func flagHint(params []Param) string {
	var names []string
	for _, p := range params {
		if p.Flag {
			names = append(names, "--"+p.Name)
		}
	}
	if len(names) == 0 {
		return " (it takes no options)"
	}
	return " (options: " + format.SafeMarkdownCode(strings.Join(names, ", ")) + ")"
}
