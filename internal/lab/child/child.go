// Package child starts the lab's long-lived child processes (a box's PID 1, a named) so that the
// kernel's parent-death signal (SysProcAttr.Pdeathsig) means what it says. The kernel sends it
// when the *thread* that forked the child ends, and the Go runtime ends threads whenever a
// goroutine locked to one returns without unlocking (netns work does that): a child started from
// an arbitrary goroutine is then killed at random. Start forks from a goroutine that keeps its
// thread locked until the child exits, so the signal comes only when this process dies.
package child

import (
	"os/exec"
	"runtime"
)

// Start starts cmd from a thread that lives as long as the child and returns a channel that is
// closed once the child has exited and been reaped (cmd.Wait's error is then in waitErr).
func Start(cmd *exec.Cmd) (exited <-chan struct{}, waitErr *error, err error) {
	started := make(chan error, 1)
	done := make(chan struct{})
	var werr error
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine, after the child
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		werr = cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		return nil, nil, err
	}
	return done, &werr, nil
}
