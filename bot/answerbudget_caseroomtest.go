//go:build caseroomtest

package bot

import (
	"os"
	"strconv"
)

// With CASEROOM_FAULT_PAGE_BYTES set, test builds use that answer budget instead: a test lifts it to make an answer
// the homeserver really refuses.
func init() {
	if n, err := strconv.Atoi(os.Getenv("CASEROOM_FAULT_PAGE_BYTES")); err == nil && n > 0 {
		AnswerBytes = n
	}
}
