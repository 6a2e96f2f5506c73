package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

func TestEarlyRedactions(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		at := time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC)
		r := &store.EarlyRedaction{EventID: "$redaction", RoomID: "!p:hs", Redacts: "$checkin", Sender: "@pat:hs", ReceivedAt: at}
		for range 2 { // a redaction processed again is remembered once
			if err := st.EarlyRedactions.Add(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		got, err := st.EarlyRedactions.For(ctx, "!p:hs", "$checkin")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || *got[0] != *r {
			t.Fatalf("For = %+v, want %+v", got, r)
		}
		if other, err := st.EarlyRedactions.For(ctx, "!other:hs", "$checkin"); err != nil || len(other) != 0 {
			t.Fatalf("a redaction of another room's event ID applies: %+v %v", other, err)
		}
	})
}
