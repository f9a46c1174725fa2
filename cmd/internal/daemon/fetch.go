package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/reconcile"
)

// fetchTimeout bounds one registry pull: a registry that stalls fails the app after it.
const fetchTimeout = 10 * time.Minute

// fetcher pulls images in the background, one job per app, so that a slow or stalled registry
// never holds the reconcile pass or another app. A finished job triggers a pass.
type fetcher struct {
	ctx     context.Context                             // the daemon's: every job ends with it
	pull    func(ctx context.Context, ref string) error // the image store's Pull
	start   func(func())                                // runs a job (the daemon's WaitGroup.Go)
	done    func(app string)                            // a job ended
	timeout time.Duration

	mu   sync.Mutex
	jobs map[string]*fetchJob // by app
}

type fetchJob struct {
	ref      string
	finished bool
	err      error
	cancel   context.CancelFunc
}

func newFetcher(ctx context.Context, pull func(context.Context, string) error, start func(func()), done func(string)) *fetcher {
	return &fetcher{ctx: ctx, pull: pull, start: start, done: done, timeout: fetchTimeout, jobs: map[string]*fetchJob{}}
}

// fetch starts pulling ref for app, or reports how the pull goes: reconcile.ErrFetching while
// it runs, then its outcome once (a failed pull is forgotten once reported: the next fetch
// tries again). A new ref for the app abandons the pull of the old one.
func (f *fetcher) fetch(app, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.jobs[app]
	if j != nil && j.ref != ref {
		j.cancel()
		delete(f.jobs, app)
		j = nil
	}
	switch {
	case j == nil:
		f.startLocked(app, ref)
		return reconcile.ErrFetching
	case !j.finished:
		return reconcile.ErrFetching
	}
	delete(f.jobs, app)
	return j.err
}

func (f *fetcher) startLocked(app, ref string) {
	ctx, cancel := context.WithTimeout(f.ctx, f.timeout)
	j := &fetchJob{ref: ref, cancel: cancel}
	f.jobs[app] = j
	f.start(func() {
		err := f.pull(ctx, ref)
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("daemon: fetching %s took longer than %v: %w", ref, f.timeout, err)
		}
		cancel()
		f.mu.Lock()
		j.finished, j.err = true, err
		if err == nil && f.jobs[app] == j {
			delete(f.jobs, app) // the image is in the store: nothing to report
		}
		f.mu.Unlock()
		if f.ctx.Err() == nil {
			f.done(app)
		}
	})
}

// fetching reports whether ref is being pulled for app.
func (f *fetcher) fetching(app, ref string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.jobs[app]
	return j != nil && j.ref == ref && !j.finished
}
