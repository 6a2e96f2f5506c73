package store_test

import (
	"context"
	"testing"

	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

func TestBotDevice(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		if dev, err := st.Device.Get(ctx, "@bot:hs"); err != nil || dev != nil {
			t.Fatalf("device before login = %+v, %v; want none", dev, err)
		}
		if err := st.Device.SetRecoveryKey(ctx, "@bot:hs", "rk"); err == nil {
			t.Fatal("recovery key stored without a device")
		}
		if err := st.Device.Put(ctx, &store.BotDevice{UserID: "@bot:hs", DeviceID: "DEV1", SealedAccessToken: "t1"}); err != nil {
			t.Fatal(err)
		}
		if err := st.Device.SetRecoveryKey(ctx, "@bot:hs", "rk"); err != nil {
			t.Fatal(err)
		}
		// A new device (the old one was logged out) keeps the recovery key: it belongs to the user.
		if err := st.Device.Put(ctx, &store.BotDevice{UserID: "@bot:hs", DeviceID: "DEV2", SealedAccessToken: "t2"}); err != nil {
			t.Fatal(err)
		}
		_ = st.Close()
		st = open(t, cfg)
		dev, err := st.Device.Get(ctx, "@bot:hs")
		want := store.BotDevice{UserID: "@bot:hs", DeviceID: "DEV2", SealedAccessToken: "t2", SealedRecoveryKey: "rk"}
		if err != nil || dev == nil || *dev != want {
			t.Fatalf("device after reopen = %+v, %v; want %+v", dev, err, want)
		}
		if other, err := st.Device.Get(ctx, "@other:hs"); err != nil || other != nil {
			t.Fatalf("device of another bot user = %+v, %v", other, err)
		}
	})
}
