package daemon

import (
	"errors"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/reconcile"
	"github.com/onionpod/onionpod/cmd/internal/store"
)

// TestRetriesBackOff: a failing app waits 5 s, then 10, 20, 40 s... (at most 5 min) before its
// next attempt; it is not tried before; a new generation (the user changed it) or a success
// forgets the backoff.
func TestRetriesBackOff(t *testing.T) {
	r := retries{}
	now := time.Unix(1700000000, 0)
	app := store.App{Name: "blog", Generation: 3}
	failed := reconcile.Result{Apps: map[string]*reconcile.AppResult{"blog": {Err: errors.New("pull: connection refused")}}}
	for i, want := range []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second} {
		if due := r.due([]store.App{app}, now); len(due) != 0 {
			t.Fatalf("attempt %d: held back though due: %v", i+1, due)
		}
		r.record([]store.App{app}, failed, now)
		due := r.due([]store.App{app}, now.Add(want-time.Second))
		if got := due["blog"]; got.Failures != i+1 || got.In != time.Second || got.Err != "pull: connection refused" {
			t.Fatalf("after failure %d: %+v, want a retry in %v", i+1, got, want)
		}
		// A pass while it waits leaves the backoff as it is.
		r.record([]store.App{app}, reconcile.Result{Apps: map[string]*reconcile.AppResult{"blog": {Retrying: true, Err: errors.New("x")}}}, now)
		if at, ok := r.nextAt(now); !ok || !at.Equal(now.Add(want)) {
			t.Fatalf("after failure %d: next retry at %v, want %v", i+1, at, now.Add(want))
		}
		if at, ok := r.nextAt(now.Add(want)); ok {
			t.Fatalf("after failure %d: a timer for a backoff already over, at %v", i+1, at)
		}
		now = now.Add(want)
	}
	if got := retryDelay(20); got != maxRetry {
		t.Errorf("delay after 20 failures: %v, want %v", got, maxRetry)
	}
	changed := app
	changed.Generation++
	if due := r.due([]store.App{changed}, now); len(due) != 0 || len(r) != 0 {
		t.Errorf("a change of the app kept its backoff: %v", due)
	}
	r.record([]store.App{app}, failed, now)
	r.record([]store.App{app}, reconcile.Result{Apps: map[string]*reconcile.AppResult{"blog": {}}}, now)
	if len(r) != 0 {
		t.Errorf("a success kept the backoff: %v", r)
	}
}
