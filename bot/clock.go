//go:build !caseroomtest

package bot

import "time"

// schedulerPoll is the longest the scheduler sleeps before it looks for due work again (it also wakes when its next
// item is due, and when a command adds work). Test builds poll much more often; see clock_caseroomtest.go.
const schedulerPoll = 30 * time.Second

// systemClock is the clock of scheduled work: the real time. Test builds can set it from a file.
func systemClock() func() time.Time {
	return time.Now
}
