//go:build caseroomtest

package bot

import "os"

// Fault injection for crash tests, compiled only with -tags caseroomtest. With CASEROOM_FAULT_HOLD_PROCESSING set the
// bot acknowledges and stores transactions but processes nothing, so a test can kill it between acknowledging and
// processing; with CASEROOM_FAULT_HOLD_SENDING set it processes events but sends nothing, so a test can kill it
// between storing a reply and sending it.
var (
	holdProcessing = os.Getenv("CASEROOM_FAULT_HOLD_PROCESSING") != ""
	holdSending    = os.Getenv("CASEROOM_FAULT_HOLD_SENDING") != ""
)
