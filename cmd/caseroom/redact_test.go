package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestRedactingWriterRemovesBodiesAndQueryArgs(t *testing.T) {
	var buf bytes.Buffer
	log := zerolog.New(redactingWriter{&buf})
	log.Debug().RawJSON("req_body", []byte(`{"body":"Jane Doe, BP 180/110"}`)).Str("event_id", "$e").Msg("Request completed")
	log.Trace().Interface("query_args", []any{"Jane Doe"}).Msg("Query")
	log.Info().Str("room_id", "!r:hs").Msg("Joined room")
	out := buf.String()
	if strings.Contains(out, "Jane") || strings.Contains(out, "180/110") {
		t.Fatalf("PHI reached the log: %s", out)
	}
	for _, want := range []string{`"event_id":"$e"`, `"req_body":"[redacted]"`, `"room_id":"!r:hs"`, "Joined room"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s: %s", want, out)
		}
	}
}
