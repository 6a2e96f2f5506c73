//go:build !caseroomtest

package bot

import "maunium.net/go/mautrix/id"

// Fault injection exists only in test builds (-tags caseroomtest); see faults_caseroomtest.go.
const (
	holdProcessing = false
	holdSending    = false
)

func kickFault(id.UserID) error { return nil }
