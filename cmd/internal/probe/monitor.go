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
	// Refresh is how often Targets is read (default 10 s).
	Refresh time.Duration
	// OnResult, when set, sees every result (the metrics).
	OnResult func(app string, r Result)

	mu   sync.Mutex
	hist map[string]map[Path][]Result
	strs map[string]string // see internLocked
}

// DefaultInterval is how often an app is probed unless configured otherwise.
const DefaultInterval = 5 * time.Minute

func (m *Monitor) interval() time.Duration { return cmp(m.Interval, DefaultInterval) }

// Run probes until ctx ends. The targets are read every Refresh: the apps there at the first
// read are spread over the first interval (a box that boots with 100 apps does not open 100
// circuits at once); an app that appears later is probed within Refresh, then every interval.
func (m *Monitor) Run(ctx context.Context) {
	parallel := m.Parallel
	if parallel <= 0 {
		parallel = 8
	}
	refresh := cmp(m.Refresh, 10*time.Second)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	next := map[string]time.Time{} // app -> when it is probed next
	first := true
	var targets []Target
	lastRead := time.Time{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		now := time.Now()
		if now.Sub(lastRead) >= refresh {
			lastRead = now
			if t, err := m.Targets(ctx); err == nil {
				targets = t
				m.forgetExcept(targets)
				seen := map[string]bool{}
				for i, t := range targets {
					seen[t.App] = true
					if _, ok := next[t.App]; ok {
						continue
					}
					if first {
						next[t.App] = now.Add(time.Duration(i) * m.interval() / time.Duration(len(targets)))
					} else {
						next[t.App] = now
					}
				}
				for app := range next {
					if !seen[app] {
						delete(next, app)
					}
				}
				first = false
			}
		}
		for _, t := range targets {
			if at, ok := next[t.App]; !ok || now.Before(at) {
				continue
			}
			select {
			case sem <- struct{}{}:
			default:
				continue // all busy: try again at the next tick
			}
			next[t.App] = now.Add(m.interval())
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				m.ProbeNow(ctx, t)
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
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
	r.Err, r.Hop, r.Addr = m.internLocked(r.Err), m.internLocked(r.Hop), m.internLocked(r.Addr)
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

// internLocked returns the copy of s the history already holds, if any: the history of 1000
// apps holds 40000 results, whose error, hop and address strings repeat (kept once, not once per
// result). The table is forgotten when it grows past maxInterned (results keep their strings).
func (m *Monitor) internLocked(s string) string {
	if s == "" {
		return s
	}
	if v, ok := m.strs[s]; ok {
		return v
	}
	if m.strs == nil || len(m.strs) >= maxInterned {
		m.strs = map[string]string{}
	}
	m.strs[s] = s
	return s
}

const maxInterned = 16384

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
