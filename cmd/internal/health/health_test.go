package health

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/store"
)

// A unit test of the monitor's own logic (timing and state) with probes that are plain
// functions; the daemon's tests and the e2e test run it with real probes.

type restarts struct {
	mu      sync.Mutex
	reasons []string
	answer  bool
}

func (r *restarts) restart(_ context.Context, ref Ref, _ time.Time, reason string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, ref.String()+": "+reason)
	return r.answer, nil
}

func (r *restarts) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reasons)
}

func start(t *testing.T, r *restarts) *Monitor {
	t.Helper()
	m := New(r.restart, func() {})
	m.startEvery = 20 * time.Millisecond
	m.grace = 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return m
}

func waitState(t *testing.T, m *Monitor, ref Ref, what string, cond func(State) bool) State {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, ok := m.Status(ref)
		if ok && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not %s: %+v (%v)", ref, what, st, ok)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func tcpCheck(interval, start time.Duration, retries int) store.Health {
	return store.Health{TCP: true, Interval: interval, Timeout: 50 * time.Millisecond, Retries: retries, StartPeriod: start}
}

// TestHealthyAndUnhealthy: a passing probe makes a container healthy and ends its start period;
// once it fails, Retries failures in a row make it unhealthy: it is restarted once, with the
// reason, and starts over.
func TestHealthyAndUnhealthy(t *testing.T) {
	r := &restarts{answer: true}
	m := start(t, r)
	var failing atomic.Bool
	ref := Ref{"notes", "db"}
	m.Set([]Target{{Ref: ref, Check: tcpCheck(30*time.Millisecond, time.Hour, 3), Key: "1", Describe: "tcp [fd00::6]:5432",
		Probe: func(context.Context) error {
			if failing.Load() {
				return errors.New("connection refused")
			}
			return nil
		}}})
	st := waitState(t, m, ref, "healthy", func(s State) bool { return s.Status == Healthy })
	if st.Check != "tcp [fd00::6]:5432" || st.Failures != 0 {
		t.Errorf("healthy state %+v", st)
	}
	failing.Store(true)
	st = waitState(t, m, ref, "restarted", func(s State) bool { return s.Restarts == 1 })
	if st.Status != Starting || !strings.Contains(st.RestartReason, "3 checks failed in a row, the last: connection refused") {
		t.Errorf("after the restart: %+v", st)
	}
	if r.count() != 1 || !strings.HasPrefix(r.reasons[0], "notes/db: 3 checks failed") {
		t.Errorf("restarts asked: %q", r.reasons)
	}
	failing.Store(false)
	waitState(t, m, ref, "healthy again", func(s State) bool { return s.Status == Healthy && s.Restarts == 1 })
}

// TestStartPeriod: failures during the start period do not count; a probe that hangs fails at
// its timeout.
func TestStartPeriod(t *testing.T) {
	r := &restarts{answer: true}
	m := start(t, r)
	ref := Ref{"slow", "slow"}
	began := time.Now()
	m.Set([]Target{{Ref: ref, Check: tcpCheck(20*time.Millisecond, 400*time.Millisecond, 2), Key: "1",
		Probe: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}})
	st := waitState(t, m, ref, "failing", func(s State) bool { return s.Failures >= 3 })
	if st.Status != Starting || r.count() != 0 {
		t.Errorf("in its start period: %+v, %d restarts", st, r.count())
	}
	if !strings.Contains(st.LastError, "deadline exceeded") {
		t.Errorf("a hanging probe's error: %q", st.LastError)
	}
	waitState(t, m, ref, "restarted", func(s State) bool { return s.Restarts == 1 })
	if time.Since(began) < 400*time.Millisecond {
		t.Errorf("restarted %v after it started, within its start period", time.Since(began))
	}
}

// TestRestartedByItself: a restart the restarter declines (systemd restarted the container
// meanwhile) is not counted; the check starts over.
func TestRestartedByItself(t *testing.T) {
	r := &restarts{answer: false}
	m := start(t, r)
	ref := Ref{"app", "app"}
	m.Set([]Target{{Ref: ref, Check: tcpCheck(10*time.Millisecond, 0, 1), Key: "1",
		Probe: func(context.Context) error { return errors.New("no") }}})
	for r.count() < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	if st, _ := m.Status(ref); st.Restarts != 0 {
		t.Errorf("declined restarts counted: %+v", st)
	}
}

// TestSetStartsOver: a new Key starts the check over (the old verdict forgotten, restarts
// kept); a container no longer given has no state.
func TestSetStartsOver(t *testing.T) {
	r := &restarts{answer: true}
	m := start(t, r)
	ref := Ref{"app", "web"}
	var fail atomic.Bool
	fail.Store(true)
	probe := func(context.Context) error {
		if fail.Load() {
			return errors.New("503")
		}
		return nil
	}
	m.Set([]Target{{Ref: ref, Check: tcpCheck(10*time.Millisecond, 0, 1), Key: "1", Probe: probe}})
	waitState(t, m, ref, "restarted", func(s State) bool { return s.Restarts >= 1 })
	fail.Store(false)
	waitState(t, m, ref, "healthy", func(s State) bool { return s.Status == Healthy })
	blocked := make(chan struct{})
	m.Set([]Target{{Ref: ref, Check: tcpCheck(10*time.Millisecond, 0, 1), Key: "2",
		Probe: func(ctx context.Context) error { <-blocked; return nil }}})
	st, _ := m.Status(ref)
	if st.Status != Starting || st.Restarts < 1 {
		t.Errorf("after a new key: %+v", st)
	}
	close(blocked)
	m.Set(nil)
	if _, ok := m.Status(ref); ok {
		t.Error("a container no longer given still has a state")
	}
}

// TestRestartSeenByAPass: the pass that sees the restarted unit starts the check over (a new
// Key) while the restart is still under way. The restart is not cut short by it, and it is
// counted in the check that carries on.
func TestRestartSeenByAPass(t *testing.T) {
	ref := Ref{"notes", "db"}
	failing := func(context.Context) error { return errors.New("no response") }
	var m *Monitor
	var cutShort atomic.Bool
	m = New(func(ctx context.Context, r Ref, _ time.Time, reason string) (bool, error) {
		// The unit restarts; a pass sees it and gives the check a new Key.
		m.Set([]Target{{Ref: ref, Check: tcpCheck(time.Hour, time.Hour, 1), Key: "2", Probe: failing}})
		if ctx.Err() != nil {
			cutShort.Store(true)
			return false, ctx.Err()
		}
		return true, nil
	}, func() {})
	m.startEvery, m.grace = 20*time.Millisecond, 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	m.Set([]Target{{Ref: ref, Check: tcpCheck(10*time.Millisecond, 0, 1), Key: "1", Probe: failing}})
	st := waitState(t, m, ref, "restarted", func(s State) bool { return s.Restarts == 1 })
	if cutShort.Load() {
		t.Error("the restart's context ended when the check started over")
	}
	if st.Status != Starting || !strings.Contains(st.RestartReason, "1 checks failed in a row") {
		t.Errorf("after the restart: %+v", st)
	}
}
