package care

import (
	"testing"
	"time"
)

func TestEffectiveTime(t *testing.T) {
	received := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	skew := 5 * time.Minute
	for _, tt := range []struct {
		name    string
		claimed time.Time
		want    time.Time
	}{
		{"same time", received, received},
		{"a little earlier", received.Add(-2 * time.Minute), received.Add(-2 * time.Minute)},
		{"exactly the skew", received.Add(-skew), received.Add(-skew)},
		{"older than the skew", received.Add(-skew - time.Millisecond), received},
		{"long ago", received.AddDate(-1, 0, 0), received},
		{"zero", time.UnixMilli(0), received},
		{"a millisecond in the future", received.Add(time.Millisecond), received},
		{"next year", received.AddDate(1, 0, 0), received},
	} {
		if got := EffectiveTime(tt.claimed, received, skew); !got.Equal(tt.want) {
			t.Errorf("%s: EffectiveTime(%s) = %s, want %s", tt.name, tt.claimed, got, tt.want)
		}
	}
}
