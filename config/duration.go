package config

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written in YAML as a Go duration string such
// as "15s" or "1m30s". A string that does not parse is kept so that Validate
// can report it with its key.
type Duration struct {
	time.Duration
	invalid string
	bad     bool
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(node *yaml.Node) error {
	if node.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: must be a duration such as \"15s\"", node.Line)
	}
	v, err := time.ParseDuration(node.Value)
	if err != nil {
		*d = Duration{invalid: node.Value, bad: true}
		return nil
	}
	*d = Duration{Duration: v}
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) {
	if d.bad {
		return d.invalid, nil
	}
	return d.Duration.String(), nil
}
