package bot

import (
	"encoding/json"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

// TestInboxKeepsDeliveryOrder: events of a transaction are stored in the order the homeserver delivered them, not
// by origin_server_ts, which the sender's server sets (over federation, to whatever it likes).
func TestInboxKeepsDeliveryOrder(t *testing.T) {
	body := []byte(`{"events":[` +
		`{"event_id":"$first","room_id":"!r:x","sender":"@a:x","type":"m.room.message","origin_server_ts":1700000000000,"content":{}},` +
		`{"event_id":"$forged","room_id":"!r:x","sender":"@evil:remote","type":"m.room.message","origin_server_ts":1,"content":{}},` +
		`{"event_id":"$future","room_id":"!r:x","sender":"@evil:remote","type":"m.room.message","origin_server_ts":99999999999999,"content":{}},` +
		`{"event_id":"$last","room_id":"!r:x","sender":"@a:x","type":"m.room.message","origin_server_ts":1700000000001,"content":{}}]}`)
	events, _, _, err := decodeTransaction(body, fuzzBotID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var got []id.EventID
	for _, evt := range events {
		got = append(got, evt.EventID)
	}
	want := []id.EventID{"$first", "$forged", "$future", "$last"}
	if gotJSON, _ := json.Marshal(got); string(gotJSON) != `["$first","$forged","$future","$last"]` {
		t.Fatalf("stored order %v, want the delivery order %v", got, want)
	}
}
