// Package health runs the containers' health checks for the daemon and keeps their state.
//
// A check (store.Health) of a running container is probed every second while the container
// starts, and every Interval once it is healthy. A probe that passes makes the container
// healthy, and ends its start period. A failing probe counts only once the start period is over
// (its time passed, or the container was healthy); after Retries failures in a row the container
// is unhealthy: the monitor asks for it to be restarted
// (Restart), and the container starts over (starting, with a new start period). A container
// that systemd restarted by itself meanwhile is not restarted again: it starts over.
//
// The monitor is declarative: Set gives it the checks of every running container (Targets);
// a target whose Key changed (its unit was rewritten or started again) starts over; the checks of
// containers no longer given stop. The daemon builds the probes (an HTTP GET or a TCP connect to
// the pod's ULA address, which the pod's firewall always lets the host reach, or a command run
// in the container's sandbox by pods.Systemd.RunCheck).
package health

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/store"
)

// States of a container with a health check.
const (
	Starting  = "starting"  // not healthy yet (its start period, or after a restart)
	Healthy   = "healthy"   // the last probe passed
	Unhealthy = "unhealthy" // Retries probes failed in a row after the start period: being restarted
)

// probeGrace is how long past its Timeout a probe may take before its context ends.
const probeGrace = time.Second

// StartProbeEvery is how often a container that is not healthy is probed (readiness comes soon).
const StartProbeEvery = time.Second

// Ref names a container.
type Ref struct {
	App       string
	Container string
}

func (r Ref) String() string { return r.App + "/" + r.Container }

// Target is the check of one running container.
type Target struct {
	Ref
	Check store.Health // its defaults filled in (WithDefaults)
	// Describe says what is checked ("http GET [fd00::6]:8080/healthz"), for status.
	Describe string
	// Key changes whenever the container's unit was rewritten or started again: the check then
	// starts over (a new start period, the old verdict forgotten).
	Key string
	// Probe runs the check once, within Check.Timeout; a nil error is a pass. It must return
	// by its context's end (a little after the timeout).
	Probe func(ctx context.Context) error
}

// State is what the monitor knows of a container's health.
type State struct {
	Status   string    // Starting, Healthy or Unhealthy
	Check    string    // what is checked (Target.Describe)
	Since    time.Time // when Status last changed
	Failures int       // probes failed in a row (counted or not)
	// LastError is the last failed probe's error ("" after a pass).
	LastError string
	// Restarts counts the restarts the monitor asked for; LastRestart and RestartReason are the
	// last one's.
	Restarts      int
	LastRestart   time.Time
	RestartReason string
}

// Restarter restarts an unhealthy container unless it was (re)started after since by other
// means; it reports whether it restarted it.
type Restarter func(ctx context.Context, r Ref, since time.Time, reason string) (bool, error)

// Monitor runs the checks. Its zero value is not usable: use New.
type Monitor struct {
	restart    Restarter
	changed    func() // called (from a check's goroutine) when a State changed
	now        func() time.Time
	startEvery time.Duration // StartProbeEvery (shorter in tests)
	grace      time.Duration // probeGrace (shorter in tests)

	mu     sync.Mutex
	ctx    context.Context
	checks map[Ref]*check
	wg     sync.WaitGroup
}

type check struct {
	target Target
	cancel context.CancelFunc
	// runCtx is the monitor's (Run's) context: a restart runs in it, so that Set starting the
	// check over (the pass saw the restarted unit) does not cut the restart short.
	runCtx  context.Context
	state   State
	started time.Time // when this run of the check began (its start period counts from it)
	// up: the container has been healthy since this run began; its start period is over.
	up bool
}

// New returns a monitor that restarts unhealthy containers with restart and calls changed (it
// must not block for long) after each change of a container's State. Run starts it.
func New(restart Restarter, changed func()) *Monitor {
	return &Monitor{restart: restart, changed: changed, now: time.Now, startEvery: StartProbeEvery, grace: probeGrace, checks: map[Ref]*check{}}
}

// Run runs the checks until ctx ends, then waits for them to stop.
func (m *Monitor) Run(ctx context.Context) {
	m.mu.Lock()
	m.ctx = ctx
	for _, c := range m.checks {
		m.startLocked(c)
	}
	m.mu.Unlock()
	<-ctx.Done()
	m.mu.Lock()
	m.ctx = nil
	m.mu.Unlock()
	m.wg.Wait()
}

// Set replaces the checked containers with targets: new ones start (Starting), those whose Key
// changed start over (their restart count kept), those not given stop and are forgotten.
func (m *Monitor) Set(targets []Target) {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[Ref]Target{}
	for _, t := range targets {
		want[t.Ref] = t
	}
	for ref, c := range m.checks {
		if t, ok := want[ref]; !ok || t.Key != c.target.Key || t.Check.Kind() != c.target.Check.Kind() {
			if c.cancel != nil {
				c.cancel()
			}
			delete(m.checks, ref)
			if ok { // starts over, remembering its restarts
				prev := c.state
				m.addLocked(t, &prev)
			}
		} else {
			c.target.Check, c.target.Describe, c.target.Probe = t.Check, t.Describe, t.Probe
		}
		delete(want, ref)
	}
	for _, t := range want {
		m.addLocked(t, nil)
	}
}

func (m *Monitor) addLocked(t Target, prev *State) {
	now := m.now()
	c := &check{target: t, started: now, state: State{Status: Starting, Check: t.Describe, Since: now}}
	if prev != nil {
		c.state.Restarts, c.state.LastRestart, c.state.RestartReason = prev.Restarts, prev.LastRestart, prev.RestartReason
	}
	m.checks[t.Ref] = c
	if m.ctx != nil {
		m.startLocked(c)
	}
}

func (m *Monitor) startLocked(c *check) {
	ctx, cancel := context.WithCancel(m.ctx)
	c.cancel, c.runCtx = cancel, m.ctx
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.loop(ctx, c)
	}()
}

// Status returns the state of a container's check; false when it has none running.
func (m *Monitor) Status(r Ref) (State, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.checks[r]
	if !ok {
		return State{}, false
	}
	return c.state, true
}

// loop probes one container until ctx ends.
func (m *Monitor) loop(ctx context.Context, c *check) {
	timer := time.NewTimer(0) // the first probe at once
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		m.mu.Lock()
		t := c.target
		m.mu.Unlock()
		// The probe keeps to Timeout itself (a command's unit is stopped by systemd then); this
		// bound is for one that does not.
		pctx, cancel := context.WithTimeout(ctx, t.Check.Timeout+m.grace)
		err := t.Probe(pctx)
		if err == nil && pctx.Err() != nil {
			err = pctx.Err()
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		next, unhealthy := m.record(c, err)
		if unhealthy != "" {
			m.restartUnhealthy(c, unhealthy)
			next = m.startEvery
		}
		timer.Reset(next)
	}
}

// record notes a probe's outcome and says when to probe next, and the reason to restart the
// container when it has just become unhealthy.
func (m *Monitor) record(c *check, err error) (next time.Duration, restartReason string) {
	m.mu.Lock()
	now := m.now()
	s := &c.state
	before := *s
	if err == nil {
		s.Failures, s.LastError = 0, ""
		c.up = true
		if s.Status != Healthy {
			s.Status, s.Since = Healthy, now
		}
	} else {
		s.Failures++
		s.LastError = err.Error()
		counted := c.up || now.Sub(c.started) >= c.target.Check.StartPeriod
		if counted && s.Failures >= c.target.Check.Retries && s.Status != Unhealthy {
			s.Status, s.Since = Unhealthy, now
			restartReason = fmt.Sprintf("%d checks failed in a row, the last: %s", s.Failures, s.LastError)
		}
	}
	next = c.target.Check.Interval
	if s.Status != Healthy {
		next = min(next, m.startEvery)
	}
	changed := *s != before
	m.mu.Unlock()
	if changed && m.changed != nil {
		m.changed()
	}
	return next, restartReason
}

// restartUnhealthy asks for the container's restart; either way its check starts over.
//
// The restart runs in the monitor's context, not the check's: the pass that sees the restarted
// unit may call Set meanwhile, which replaces this check by one that starts over (with the
// restarts counted so far). The outcome is then recorded in that replacement, so that no restart
// goes uncounted.
func (m *Monitor) restartUnhealthy(c *check, reason string) {
	m.mu.Lock()
	since := c.started
	ref := c.target.Ref
	runCtx := c.runCtx
	m.mu.Unlock()
	restarted, err := m.restart(runCtx, ref, since, reason)
	m.mu.Lock()
	now := m.now()
	current := m.checks[ref]
	if current == nil { // no longer checked: nothing to record
		m.mu.Unlock()
		return
	}
	s := &current.state
	if restarted {
		s.Restarts++
		s.LastRestart, s.RestartReason = now, reason
	} else if err != nil {
		s.LastError = "restarting it failed: " + err.Error()
	}
	if current == c { // not replaced meanwhile: it starts over here
		c.started, c.up = now, false
		s.Status, s.Since, s.Failures = Starting, now, 0
	}
	m.mu.Unlock()
	if m.changed != nil {
		m.changed()
	}
}
