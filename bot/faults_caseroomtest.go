//go:build caseroomtest

package bot

import (
	"errors"
	"os"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"
)

// Fault injection for crash tests, compiled only with -tags caseroomtest. With CASEROOM_FAULT_HOLD_PROCESSING set the
// bot acknowledges and stores transactions but processes nothing, so a test can kill it between acknowledging and
// processing; with CASEROOM_FAULT_HOLD_SENDING set it processes events but sends nothing, so a test can kill it
// between storing a reply and sending it. With CASEROOM_FAULT_KICK_FAIL=<text> the bot's kicks of users whose ID
// contains the text fail for CASEROOM_FAULT_KICK_FAIL_FOR (a duration, default 20s) from the first attempt.
var (
	holdProcessing = os.Getenv("CASEROOM_FAULT_HOLD_PROCESSING") != ""
	holdSending    = os.Getenv("CASEROOM_FAULT_HOLD_SENDING") != ""

	kickFailMatch  = os.Getenv("CASEROOM_FAULT_KICK_FAIL")
	kickFailFor, _ = time.ParseDuration(os.Getenv("CASEROOM_FAULT_KICK_FAIL_FOR"))
	kickFailMu     sync.Mutex
	kickFailFirst  = map[id.UserID]time.Time{}
)

func kickFault(userID id.UserID) error {
	if kickFailMatch == "" || !strings.Contains(userID.String(), kickFailMatch) {
		return nil
	}
	window := kickFailFor
	if window <= 0 {
		window = 20 * time.Second
	}
	kickFailMu.Lock()
	defer kickFailMu.Unlock()
	first, ok := kickFailFirst[userID]
	if !ok {
		first = time.Now()
		kickFailFirst[userID] = first
	}
	if time.Since(first) < window {
		return errors.New("injected kick failure")
	}
	return nil
}
