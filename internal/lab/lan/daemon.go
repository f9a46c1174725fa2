package lan

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemon is a router process of the LAN (radvd or dnsmasq): started by this process, or adopted
// by Reopen from the state file, in which case it is recognised by a command line that names the
// LAN's work dir before it is signalled (a PID alone may have been reused).
type daemon struct {
	Name    string `json:"name"`
	PID     int    `json:"pid"`               // the process to signal
	Wrapper int    `json:"wrapper,omitempty"` // unshare --fork wrapping it, if any

	cmd  *exec.Cmd     // nil when adopted
	done chan struct{} // closed when cmd exited; nil when adopted
	dir  string        // the LAN's work dir, which an adopted daemon's command line names
}

// startDaemon runs argv inside the lan namespace in the background, logging to WorkDir/NAME.log.
// With wrapped, argv is "unshare --fork ..." and the daemon is unshare's child.
func (l *LAN) startDaemon(name string, wrapped bool, argv ...string) (*daemon, error) {
	logf, err := os.OpenFile(filepath.Join(l.workDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lan: %s: %w", name, err)
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", append([]string{"--net=" + l.lanNS, "--"}, argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lan: start %s: %w", name, err)
	}
	d := &daemon{Name: name, PID: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(d.done)
	}()
	if wrapped {
		d.Wrapper = d.PID
		if d.PID, err = d.child(); err != nil {
			d.stop()
			return nil, fmt.Errorf("lan: %s: %w: %s", name, err, l.log(name))
		}
	}
	// Both daemons check their configuration at once: an early exit is a failed start.
	if d.exited(30 * time.Millisecond) {
		return nil, fmt.Errorf("lan: %s exited at start: %s", name, l.log(name))
	}
	return d, nil
}

// child waits for the wrapper's forked child and returns its PID.
func (d *daemon) child() (int, error) {
	children := fmt.Sprintf("/proc/%d/task/%d/children", d.Wrapper, d.Wrapper)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(children)
		if err != nil {
			return 0, err
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			return strconv.Atoi(f[0])
		}
		if d.exited(0) {
			return 0, errors.New("exited at start")
		}
	}
	return 0, errors.New("did not start")
}

// exited reports whether the daemon has exited, waiting up to wait for it.
func (d *daemon) exited(wait time.Duration) bool {
	if d.done != nil {
		select {
		case <-d.done:
			return true
		case <-time.After(wait):
			return false
		}
	}
	for deadline := time.Now().Add(wait); ; time.Sleep(10 * time.Millisecond) {
		if !d.ours(d.PID) && !d.ours(d.Wrapper) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// ours reports whether pid is alive and, for an adopted daemon, still runs our command line.
func (d *daemon) ours(pid int) bool {
	if pid == 0 {
		return false
	}
	if d.cmd != nil {
		return syscall.Kill(pid, 0) == nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && d.dir != "" && bytes.Contains(b, []byte(d.dir))
}

func (d *daemon) signal(sig syscall.Signal) error {
	if !d.ours(d.PID) {
		return errors.New("not running")
	}
	return syscall.Kill(d.PID, sig)
}

// stop sends SIGTERM to the daemon (not to its wrapper, which ignores it), then SIGKILL to both
// after two seconds.
func (d *daemon) stop() {
	if d.exited(0) {
		return
	}
	d.signal(syscall.SIGTERM)
	if d.exited(2 * time.Second) {
		return
	}
	for _, pid := range []int{d.PID, d.Wrapper} {
		if d.ours(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	d.exited(2 * time.Second)
}
