package main

import (
	"bytes"
	"encoding/json"
	"io"
)

// sensitiveLogFields are fields that libraries add at debug and trace level and that can carry patient data or
// secrets: request bodies (message text) and SQL arguments. They are removed from every log line, whatever the
// level, so that no configuration can make caseroom log PHI.
var sensitiveLogFields = []string{"req_body", "resp_body", "query_args", "content", "body"}

// redactingWriter removes sensitiveLogFields from zerolog's JSON lines before passing them on.
type redactingWriter struct {
	out io.Writer
}

func (w redactingWriter) Write(p []byte) (int, error) {
	if !mayHoldSensitive(p) {
		return w.out.Write(p)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(p, &fields); err != nil {
		// Not a JSON object: write nothing rather than something unchecked.
		return len(p), nil
	}
	for _, name := range sensitiveLogFields {
		if _, ok := fields[name]; ok {
			fields[name] = json.RawMessage(`"[redacted]"`)
		}
	}
	clean, err := json.Marshal(fields)
	if err != nil {
		return len(p), nil
	}
	if _, err = w.out.Write(append(clean, '\n')); err != nil {
		return 0, err
	}
	return len(p), nil
}

func mayHoldSensitive(p []byte) bool {
	for _, name := range sensitiveLogFields {
		if bytes.Contains(p, []byte(`"`+name+`":`)) {
			return true
		}
	}
	return false
}
