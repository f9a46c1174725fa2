package daemon

import (
	"time"

	"github.com/onionpod/onionpod/cmd/internal/reconcile"
	"github.com/onionpod/onionpod/cmd/internal/store"
)

// Backoff of a failing app: the first retry after firstRetry, each next one twice as late, at
// most maxRetry. A change of the app (a new generation) retries at once.
const (
	firstRetry = 5 * time.Second
	maxRetry   = 5 * time.Minute
)

// retries remembers each failing app's backoff. Only the pass uses it (under passMu).
type retries map[string]*retry

type retry struct {
	generation int64 // the record that failed
	failures   int
	next       time.Time
	err        string
}

// due returns the apps not to be tried yet (for the plan), forgetting the backoff of apps that
// changed or are gone.
func (r retries) due(apps []store.App, now time.Time) map[string]reconcile.Retry {
	out := map[string]reconcile.Retry{}
	current := map[string]int64{}
	for _, a := range apps {
		current[a.Name] = a.Generation
	}
	for name, b := range r {
		gen, ok := current[name]
		switch {
		case !ok || gen != b.generation:
			delete(r, name)
		case now.Before(b.next):
			out[name] = reconcile.Retry{Failures: b.failures, In: b.next.Sub(now), Err: b.err}
		}
	}
	return out
}

// record counts a pass's outcome: a failure pushes the app's next attempt back, a success
// forgets its backoff. Apps that only waited (for their retry, or for their image) are left as
// they were.
func (r retries) record(apps []store.App, res reconcile.Result, now time.Time) {
	for _, a := range apps {
		ar := res.Apps[a.Name]
		switch {
		case ar == nil || ar.Retrying || ar.Fetching:
		case ar.Err == nil:
			delete(r, a.Name)
		default:
			b := r[a.Name]
			if b == nil || b.generation != a.Generation {
				b = &retry{generation: a.Generation}
				r[a.Name] = b
			}
			b.failures++
			b.next = now.Add(retryDelay(b.failures))
			b.err = ar.Err.Error()
		}
	}
}

// nextAt is when the earliest backoff still running after now ends (ok false: none). A backoff
// already over (its app is being tried) needs no timer.
func (r retries) nextAt(now time.Time) (at time.Time, ok bool) {
	for _, b := range r {
		if b.next.After(now) && (!ok || b.next.Before(at)) {
			at, ok = b.next, true
		}
	}
	return at, ok
}

// retryDelay is the wait after the n-th failure in a row.
func retryDelay(n int) time.Duration {
	d := firstRetry
	for i := 1; i < n && d < maxRetry; i++ {
		d *= 2
	}
	return min(d, maxRetry)
}
