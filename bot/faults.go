//go:build !caseroomtest

package bot

// Fault injection exists only in test builds (-tags caseroomtest); see faults_caseroomtest.go.
const (
	holdProcessing = false
	holdSending    = false
)
