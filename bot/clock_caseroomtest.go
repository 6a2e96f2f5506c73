//go:build caseroomtest

package bot

import (
	"os"
	"strings"
	"time"
)

// schedulerPoll is short in test builds: a test moves the clock by rewriting a file, which wakes nothing.
const schedulerPoll = 100 * time.Millisecond

// systemClock, in test builds (-tags caseroomtest), reads the time from the file named by CASEROOM_TEST_CLOCK_FILE
// on every call: an RFC 3339 time that the test rewrites (atomically, by renaming) to move the bot's clock. Without
// the variable, or while the file is missing, empty or unreadable, it is the real time.
func systemClock() func() time.Time {
	path := os.Getenv("CASEROOM_TEST_CLOCK_FILE")
	if path == "" {
		return time.Now
	}
	return func() time.Time {
		data, err := os.ReadFile(path)
		if err != nil {
			return time.Now()
		}
		t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(data)))
		if err != nil {
			return time.Now()
		}
		return t
	}
}
