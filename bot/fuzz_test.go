package bot

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

const fuzzBotID = id.UserID("@caseroom:clinic.example")

func FuzzDecodeTransaction(f *testing.F) {
	for _, seed := range []string{
		`{"events":[]}`,
		`{"events":[{"event_id":"$a","room_id":"!r:clinic.example","sender":"@jo:clinic.example","type":"m.room.message",` +
			`"origin_server_ts":1700000000002,"content":{"msgtype":"m.text","body":"!checkin hr=88"}},` +
			`{"event_id":"$b","room_id":"!r:clinic.example","sender":"@caseroom:clinic.example","type":"m.room.member",` +
			`"state_key":"@caseroom:clinic.example","origin_server_ts":1700000000001,"content":{"membership":"join"}},` +
			`{"event_id":"$c","room_id":"!r:clinic.example","sender":"@caseroom:clinic.example","type":"m.room.message",` +
			`"origin_server_ts":1700000000000,"content":{"msgtype":"m.notice","body":"Pong"}}]}`,
		`{"events":[{"type":"m.typing","content":{"user_ids":[]}},42,"x",null,[],{}]}`,
		`{"events":[{"event_id":"$a","room_id":"!r:x","sender":"@a:x","type":"m.room.encrypted","origin_server_ts":-1}]}`,
		`{"events":[{"event_id":"$a","room_id":"!r:x","sender":"@a:x","type":"t","origin_server_ts":1e30}]}`,
		`{"events":[{"event_id":1,"room_id":"!r:x","sender":"@a:x","type":"t"}]}`,
		`{"events":null,"ephemeral":[{"type":"m.receipt"}],"de.sorunome.msc2409.to_device":[]}`,
		`{"events":[{"event_id":"$a","event_id":"$b","room_id":"!r:x","sender":"@a:x","type":"t","state_key":null}]}`,
		`{"events":{"0":{}}}`,
		`{"events":[`,
		`[]`,
		`null`,
		``,
		"\xff\xfe{\"events\":[]}",
	} {
		f.Add([]byte(seed))
	}
	now := time.UnixMilli(1700000000000)
	f.Fuzz(func(t *testing.T, body []byte) {
		events, total, skipped, err := decodeTransaction(body, fuzzBotID, now)
		if err != nil {
			if events != nil || skipped != nil || total != 0 {
				t.Fatalf("decodeTransaction failed (%v) but returned events", err)
			}
			return
		}
		if len(events)+len(skipped) > total {
			t.Fatalf("%d events and %d skipped of %d entries", len(events), len(skipped), total)
		}
		for i, idx := range skipped {
			if idx < 0 || idx >= total || (i > 0 && idx <= skipped[i-1]) {
				t.Fatalf("skipped indexes %v of %d entries", skipped, total)
			}
		}
		for i, evt := range events {
			if evt.EventID == "" || evt.RoomID == "" || evt.Sender == "" || evt.Type == "" || !evt.ReceivedAt.Equal(now) {
				t.Fatalf("incomplete inbox event %+v", evt)
			}
			if i > 0 && bytes.Index(body, evt.Raw) < bytes.Index(body, events[i-1].Raw) {
				t.Fatalf("event %s stored before %s, not in delivery order", events[i-1].EventID, evt.EventID)
			}
			// The stored raw event is the event as sent, and says what the inbox row says.
			var hdr eventHeader
			if err := json.Unmarshal(evt.Raw, &hdr); err != nil {
				t.Fatalf("stored raw event does not parse: %v", err)
			}
			if hdr.ID != evt.EventID || hdr.RoomID != evt.RoomID || hdr.Sender != evt.Sender || hdr.Type != evt.Type || hdr.OriginTS != evt.OriginTS {
				t.Fatalf("inbox row %+v differs from its raw event %+v", evt, hdr)
			}
			if hdr.Sender == fuzzBotID && hdr.StateKey == nil {
				t.Fatalf("the bot's own message %s was kept", evt.EventID)
			}
		}
	})
}
