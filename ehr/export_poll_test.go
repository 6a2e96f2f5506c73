package ehr

// Kicked reports (and consumes) a pending Kick, for tests of the subscription endpoint.
func (p *Poller) Kicked() bool {
	p.init()
	select {
	case <-p.kick:
		return true
	default:
		return false
	}
}
