package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"unicode/utf8"

	"go.mau.fi/util/random"
	"gopkg.in/yaml.v3"
)

// secretLength is the length of generated secrets.
const secretLength = 64

// secretKeys are the keys GenerateSecrets fills in.
var secretKeys = [][2]string{
	{"appservice", "as_token"},
	{"appservice", "hs_token"},
	{"encryption", "pickle_key"},
}

func secretField(c *Config, key [2]string) *string {
	switch key[1] {
	case "as_token":
		return &c.Appservice.ASToken
	case "hs_token":
		return &c.Appservice.HSToken
	default:
		return &c.Encryption.PickleKey
	}
}

// GenerateSecrets fills in appservice.as_token, appservice.hs_token and
// encryption.pickle_key in the config file at path with fresh random
// 64-character secrets. Without force only values that are "generate" or
// empty (or missing) are replaced, so calling it again changes nothing.
//
// The file is edited through its YAML node tree so comments survive; when
// possible only the secret values themselves are replaced in the original
// text, so the rest of the file stays byte-for-byte the same. It is written
// atomically (temporary file + rename) with mode 0600; if nothing needed
// replacing the file is left untouched. The result is validated before
// anything is written: a config with other problems (e.g. placeholders still
// in homeserver.domain or admins) gets an error and the file stays as it was.
func GenerateSecrets(path string, force bool) (*Config, error) {
	cfg, write, err := PrepareSecrets(path, force)
	if err != nil {
		return nil, err
	}
	return cfg, write()
}

// PrepareSecrets is GenerateSecrets without the write: it returns the
// validated config with its new secrets and a function that writes them into
// the file, so that a caller can write other files that depend on them (the
// registration) first. Nothing is written until write is called.
func PrepareSecrets(path string, force bool) (cfg *Config, write func() error, err error) {
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		path = resolved
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	orig, err := decode(data)
	if err != nil {
		return nil, nil, fmt.Errorf("config: parsing %s: %w", path, err)
	}
	var doc yaml.Node
	if err = yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("config: parsing %s: %w", path, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("config: parsing %s: top level must be a mapping", path)
	}
	root := doc.Content[0]

	want := *orig
	var edits []secretEdit
	for _, key := range secretKeys {
		current := secretField(orig, key)
		if !force && *current != "" && *current != PlaceholderSecret {
			continue
		}
		secret := random.String(secretLength)
		*secretField(&want, key) = secret
		edits = append(edits, secretEdit{key: key, value: secret, node: lookup(root, key[0], key[1])})
	}
	if len(edits) == 0 {
		cfg, err = Load(path)
		return cfg, func() error { return nil }, err
	}
	out, ok := splice(data, edits)
	if !ok || !decodesTo(out, &want) {
		out, err = rewrite(&doc, edits)
		if err != nil {
			return nil, nil, fmt.Errorf("config: rewriting %s: %w", path, err)
		}
		if !decodesTo(out, &want) {
			return nil, nil, fmt.Errorf("config: rewriting %s: result does not round-trip, file left unchanged", path)
		}
	}
	if cfg, err = Parse(out); err != nil {
		return nil, nil, err
	}
	return cfg, func() error { return writeFileAtomic(path, out, 0o600) }, nil
}

type secretEdit struct {
	key   [2]string
	value string
	node  *yaml.Node // existing value node, nil if the key is missing
}

// lookup finds the value node of section.key, or nil.
func lookup(root *yaml.Node, section, key string) *yaml.Node {
	sec := mappingValue(root, section)
	if sec == nil || sec.Kind != yaml.MappingNode {
		return nil
	}
	return mappingValue(sec, key)
}

func mappingValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Kind == yaml.ScalarNode && m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// splice replaces the source text of each existing single-line scalar with
// the new secret, in the same quoting style, leaving every other byte alone.
// It reports false if some edit cannot be done that way.
func splice(data []byte, edits []secretEdit) ([]byte, bool) {
	type span struct {
		start, end int
		text       string
	}
	lineStarts := []int{0}
	for i, b := range data {
		if b == '\n' {
			lineStarts = append(lineStarts, i+1)
		}
	}
	spans := make([]span, 0, len(edits))
	for _, e := range edits {
		n := e.node
		if n == nil || n.Kind != yaml.ScalarNode || n.Line < 1 || n.Line > len(lineStarts) || n.Column < 1 {
			return nil, false
		}
		var quote string
		switch n.Style {
		case 0:
		case yaml.DoubleQuotedStyle:
			quote = `"`
		case yaml.SingleQuotedStyle:
			quote = `'`
		default:
			return nil, false
		}
		literal := quote + n.Value + quote
		if literal == "" {
			return nil, false // implicit null: no text to replace
		}
		// Columns count characters, not bytes.
		start := lineStarts[n.Line-1]
		for range n.Column - 1 {
			if start >= len(data) || data[start] == '\n' {
				return nil, false
			}
			_, size := utf8.DecodeRune(data[start:])
			start += size
		}
		end := start + len(literal)
		if end > len(data) || string(data[start:end]) != literal {
			return nil, false
		}
		if end < len(data) && !bytes.ContainsRune([]byte(" \t\r\n#"), rune(data[end])) {
			return nil, false
		}
		spans = append(spans, span{start, end, quote + e.value + quote})
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start > spans[j].start })
	out := bytes.Clone(data)
	prev := len(out) + 1
	for _, s := range spans {
		if s.end > prev {
			return nil, false // overlapping (e.g. aliases)
		}
		out = append(out[:s.start], append([]byte(s.text), out[s.end:]...)...)
		prev = s.start
	}
	return out, true
}

// rewrite sets the secrets in the node tree, adding missing keys and
// sections, and re-encodes it. Comments survive; blank lines may not.
func rewrite(doc *yaml.Node, edits []secretEdit) ([]byte, error) {
	root := doc.Content[0]
	for _, e := range edits {
		sec := mappingValue(root, e.key[0])
		switch {
		case sec == nil:
			sec = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: e.key[0]}, sec)
		case sec.Kind == yaml.ScalarNode && sec.Tag == "!!null":
			*sec = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", HeadComment: sec.HeadComment, LineComment: sec.LineComment, FootComment: sec.FootComment}
		case sec.Kind != yaml.MappingNode:
			return nil, fmt.Errorf("%s must be a mapping", e.key[0])
		}
		val := mappingValue(sec, e.key[1])
		if val == nil {
			val = &yaml.Node{}
			sec.Content = append(sec.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: e.key[1]}, val)
		}
		style := val.Style & (yaml.DoubleQuotedStyle | yaml.SingleQuotedStyle)
		*val = yaml.Node{
			Kind: yaml.ScalarNode, Tag: "!!str", Value: e.value, Style: style,
			HeadComment: val.HeadComment, LineComment: val.LineComment, FootComment: val.FootComment,
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(detectIndent(root))
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// detectIndent guesses the file's indentation from its first nested mapping.
func detectIndent(root *yaml.Node) int {
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if v.Kind == yaml.MappingNode && v.Style&yaml.FlowStyle == 0 && len(v.Content) > 0 {
			if d := v.Content[0].Column - k.Column; d >= 2 && d <= 9 {
				return d
			}
		}
	}
	return 4
}

// decodesTo reports whether data strictly decodes to exactly want.
func decodesTo(data []byte, want *Config) bool {
	got, err := decode(data)
	return err == nil && reflect.DeepEqual(got, want)
}

// writeFileAtomic writes data to a temporary file in path's directory with
// the given mode and renames it over path.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("config: writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
			err = fmt.Errorf("config: writing %s: %w", path, err)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if dir, derr := os.Open(filepath.Dir(path)); derr == nil {
		_ = dir.Sync()
		_ = dir.Close()
	}
	return nil
}

// WriteExample writes the example configuration to path with mode 0600. It
// refuses to overwrite an existing file.
func WriteExample(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("config: refusing to overwrite existing file %s", path)
	} else if err != nil {
		return fmt.Errorf("config: writing example: %w", err)
	}
	if err = f.Chmod(0o600); err == nil {
		_, err = f.Write(example)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("config: writing example to %s: %w", path, err)
	}
	return nil
}
