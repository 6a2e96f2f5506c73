package care

import "time"

// EffectiveTime is the time a report is recorded under, from the time its message claims to have been sent
// (claimed, stamped by the sender's homeserver, which over federation stamps what it likes) and the time caseroom
// received it: the claimed time, unless it lies after the receive time or more than maxSkew before it; then the
// receive time. A report is never dated into the future, nor back by more than maxSkew.
func EffectiveTime(claimed, received time.Time, maxSkew time.Duration) time.Time {
	if claimed.After(received) || received.Sub(claimed) > maxSkew {
		return received
	}
	return claimed
}
