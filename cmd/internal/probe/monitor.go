package probe

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Monitor probes every target once per interval, spreading the probes evenly over it (never
// a burst of circuits: tor stalls when asked for many at once), and keeps each app's recent
// results per path.
type Monitor struct {
	Prober *Prober
	// Targets lists what to probe; it is asked at the start of every round.
	Targets func(ctx context.Context) ([]Target, error)
	// Interval between two probes of an app (default DefaultInterval).
	Interval time.Duration
	// Keep results per app and path (default 20).
	Keep int
	// Parallel bounds the probes in flight (default 8).
	Parallel int
	// OnResult, when set, sees every result (the metrics).
	OnResult func(app string, r Result)

	mu   sync.Mutex
	hist map[string]map[Path][]Result
}

// DefaultInterval is how often an app is probed unless configured otherwise.
const DefaultInterval = 5 * time.Minute

func (m *Monitor) interval() time.Duration { return cmp(m.Interval, DefaultInterval) }

// Run probes until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	parallel := m.Parallel
	if parallel <= 0 {
		parallel = 8
	}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		start := time.Now()
		targets, err := m.Targets(ctx)
		if err == nil {
			m.forgetExcept(targets)
		}
		var spread time.Duration
		if len(targets) > 0 {
			spread = m.interval() / time.Duration(len(targets))
		}
		for i, t := range targets {
			if !sleepUntil(ctx, start.Add(time.Duration(i)*spread)) {
				return
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				m.ProbeNow(ctx, t)
			}()
		}
		if !sleepUntil(ctx, start.Add(m.interval())) {
			return
		}
	}
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// ProbeNow probes t at once and records the results.
func (m *Monitor) ProbeNow(ctx context.Context, t Target) []Result {
	var out []Result
	for _, path := range t.Paths() {
		r := m.Prober.ProbePath(ctx, t, path)
		if ctx.Err() != nil {
			return out // cut short by shutdown: not a finding about the app
		}
		m.record(t.App, r)
		out = append(out, r)
	}
	return out
}

func (m *Monitor) record(app string, r Result) {
	keep := m.Keep
	if keep <= 0 {
		keep = 20
	}
	m.mu.Lock()
	if m.hist == nil {
		m.hist = map[string]map[Path][]Result{}
	}
	byPath := m.hist[app]
	if byPath == nil {
		byPath = map[Path][]Result{}
		m.hist[app] = byPath
	}
	h := append(byPath[r.Path], r)
	if len(h) > keep {
		h = slices.Clone(h[len(h)-keep:])
	}
	byPath[r.Path] = h
	m.mu.Unlock()
	if m.OnResult != nil {
		m.OnResult(app, r)
	}
}

// forgetExcept drops the history of apps no longer probed.
func (m *Monitor) forgetExcept(targets []Target) {
	keep := map[string]bool{}
	for _, t := range targets {
		keep[t.App] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for app := range m.hist {
		if !keep[app] {
			delete(m.hist, app)
		}
	}
}

// History returns an app's recent results per path, oldest first.
func (m *Monitor) History(app string) map[Path][]Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[Path][]Result{}
	for p, h := range m.hist[app] {
		out[p] = slices.Clone(h)
	}
	return out
}

// Latest returns an app's last result of each path, in path order (onion, ipv6, ipv4).
func (m *Monitor) Latest(app string) []Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Result
	for _, p := range []Path{PathOnion, PathIPv6, PathIPv4} {
		if h := m.hist[app][p]; len(h) > 0 {
			out = append(out, h[len(h)-1])
		}
	}
	return out
}
