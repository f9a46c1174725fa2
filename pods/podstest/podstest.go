// Package podstest boots a real systemd as PID 1 of fresh namespaces for tests: a thin *testing.T
// wrapper over internal/lab/box (the engine `onionpod lab` uses too). See that package for what a
// box is and sees.
//
// A typical test:
//
//	func TestPods(t *testing.T) {
//		if podstest.Inside() {
//			t.Skip("runs on the host")
//		}
//		box := podstest.New(t, podstest.Options{}) // skips when not root or systemd is missing
//		box.RunTestInside(t, "TestPodsInsidePhase1", "EXAMPLE_VAR=value")
//		box.RebootT(t)
//		box.RunTestInside(t, "TestPodsInsidePhase2")
//	}
//
//	func TestPodsInsidePhase1(t *testing.T) {
//		if !podstest.Inside() {
//			t.Skip("runs inside a podstest box")
//		}
//		// go-systemd D-Bus, systemctl, journalctl, ip netns ... against the box's systemd
//	}
//
// A TestMain must not boot boxes when Inside() is true: the inner test binary runs TestMain too.
package podstest

import (
	"context"

	"github.com/onionpod/onionpod/internal/lab/box"
)

// SystemdPath is the systemd binary booted as PID 1.
const SystemdPath = box.SystemdPath

// Bind is a bind mount from the host into the box.
type Bind = box.Bind

// Options describe a box.
type Options = box.Options

// System is a running box: the engine's box plus the test helpers (RunTest, RunTestInside,
// RebootT). Its PID field and its methods (Command, Shutdown, Reboot, ...) are the engine's.
type System struct {
	*box.System
}

// ErrUnavailable wraps the reason why a box cannot boot on this machine (not root, a tool missing,
// no cgroup2 mount).
var ErrUnavailable = box.ErrUnavailable

// Available reports why a box cannot boot here, or nil.
func Available() error { return box.Available() }

// Boot starts a box and waits until its systemd is up (see box.Boot).
func Boot(ctx context.Context, opts Options) (*System, error) {
	s, err := box.Boot(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &System{s}, nil
}

// Attach returns the running box booted (with KeepOnExit) on opts.StateDir by another process.
func Attach(opts Options) (*System, error) {
	s, err := box.Attach(opts)
	if err != nil {
		return nil, err
	}
	return &System{s}, nil
}
