package dendrite

import (
	"context"
	"sync"
)

// StartPair starts two federating Dendrites (Options.Federation) in dirA and dirB, with the given appservice
// registrations. Their server names are localhost:<HTTPS port>, which each reaches the other at.
func StartPair(ctx context.Context, dirA, dirB string, regsA, regsB []string) (*Server, *Server, error) {
	var (
		wg         sync.WaitGroup
		a, b       *Server
		errA, errB error
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		a, errA = Start(ctx, Options{Dir: dirA, Federation: true, AppServiceRegistrations: regsA})
	}()
	go func() {
		defer wg.Done()
		b, errB = Start(ctx, Options{Dir: dirB, Federation: true, AppServiceRegistrations: regsB})
	}()
	wg.Wait()
	if errA != nil || errB != nil {
		if a != nil {
			a.Stop()
		}
		if b != nil {
			b.Stop()
		}
		if errA != nil {
			return nil, nil, errA
		}
		return nil, nil, errB
	}
	return a, b, nil
}
