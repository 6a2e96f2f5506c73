package ehr

import "time"

// SetClock replaces the clock of a SMARTBackendAuth, for tests of token caching.
func (a *SMARTBackendAuth) SetClock(now func() time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.now = now
}
