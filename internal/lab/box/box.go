// Package box boots a real systemd as PID 1 of fresh namespaces: the box of `onionpod lab` and of
// the tests (pods/podstest wraps it for a *testing.T).
//
// A box is a systemd 252+ running as PID 1 of new pid, mount, uts, ipc, net and cgroup namespaces, in
// its own cgroup (a child of the host's cgroup2 mount: /sys/fs/cgroup/unified on a hybrid host,
// /sys/fs/cgroup on a pure v2 host). It sees the host's file system except for its own /proc, /run,
// /sys (read-only, with its own cgroup2), /dev (a few device nodes, devpts, shm, mqueue), /usr and
// /proc/sys read-only (except /proc/sys/net), and overlays on /etc and /var whose upper directories
// live in Options.StateDir: a Reboot on the same StateDir keeps what was written there, such as unit
// files in /etc/systemd/system. /tmp is the host's /tmp, so a test binary and temporary paths are
// visible inside.
//
// The unit search path is restricted to a small set of the box's own units (journald, dbus, empty
// sysinit/basic/sockets/multi-user targets, the shutdown targets), /etc/systemd/system (persistent,
// starting empty: the host's own /etc/systemd/system is hidden) and /run/systemd/transient, so none
// of the host's services (tor!) start inside.
//
// Programs that talk to this systemd (systemctl, journalctl, go-systemd's D-Bus client) must run
// inside its pid and mount namespaces: use System.Command or System.CommandIn.
package box

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/lab/child"
	"github.com/onionpod/onionpod/internal/lab/hostcheck"
)

// SystemdPath is the systemd binary booted as PID 1.
const SystemdPath = "/lib/systemd/systemd"

// sigRTMIN4 is SIGRTMIN+4 as glibc counts (SIGRTMIN = 34): systemd's "power off cleanly" signal.
const sigRTMIN4 = syscall.Signal(38)

// stopTimeout is how long Shutdown waits for a clean power-off before SIGKILL.
const stopTimeout = 10 * time.Second

// cgroupPrefix starts the name of every box's cgroup. It (like /run/.podstest and
// container=podstest inside) keeps the name from when the box lived in pods/podstest, so a box
// booted by an earlier build is still recognised by Attach.
const cgroupPrefix = "podstest-"

// Bind is a bind mount from the host into the box.
type Bind struct {
	Source   string // host path (file or directory)
	Target   string // path inside the box; created if missing
	ReadOnly bool
}

// Options describe a box.
type Options struct {
	// StateDir holds the upper directories of the /etc and /var overlays, the box's console log and
	// its pid file. Booting again on the same StateDir keeps what the box wrote to /etc and /var.
	StateDir string
	// Name is unique among running boxes: it names the box's cgroup and is its hostname.
	// Letters, digits, '-', '_' and '.' only.
	Name string
	// BindMounts are mounted into the box before systemd starts (e.g. the onionpod binary).
	BindMounts []Bind
	// ExtraUnitDirs are appended to the unit search path (after the box's own units).
	ExtraUnitDirs []string
	// Netns is the path of an existing network namespace (e.g. a bind mount made by
	// `ip netns add`) the box boots in, and boots in again after a Reboot, so its links (and the
	// processes of others in it) outlive the box's systemd. "" gives every boot a fresh one.
	Netns string
	// KeepOnExit lets the box outlive the process that booted it. By default the box is killed
	// (SIGKILL to its PID 1) when the booting process exits.
	KeepOnExit bool
}

// System is a running box.
type System struct {
	// PID is the host PID of the box's PID 1 (systemd). Reboot changes it.
	PID int

	opts   Options
	cgroup string // host path of the box's cgroup directory

	mu      sync.Mutex
	proc    *os.Process
	exited  <-chan struct{} // closed when PID 1 has been reaped
	bootIDs []string        // every boot id used, for /tmp/systemd-private-* cleanup
	closed  bool
}

// ErrUnavailable is wrapped by Available's and Boot's error when a box cannot boot on this machine
// (not root, a tool missing, no cgroup2 mount): hostcheck.ErrUnavailable.
var ErrUnavailable = hostcheck.ErrUnavailable

// Needs are the parts of the machine a box needs.
func Needs() []hostcheck.Part {
	return []hostcheck.Part{hostcheck.Root, hostcheck.Namespaces, hostcheck.Cgroup2, hostcheck.Overlay,
		hostcheck.UtilLinux, hostcheck.Systemd}
}

// Available reports why a box cannot boot here (an error wrapping ErrUnavailable), or nil.
func Available() error {
	if err := hostcheck.Missing(Needs()...); err != nil {
		return fmt.Errorf("box: %w", err)
	}
	return nil
}

// Boot starts a box and waits until its systemd is up (`running`, or `degraded` when one of the
// box's own units failed, which a test after a Reboot may want to inspect).
func Boot(ctx context.Context, opts Options) (*System, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if err := validName(opts.Name); err != nil {
		return nil, err
	}
	if opts.StateDir == "" {
		return nil, errors.New("box: StateDir is required")
	}
	state, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("box: state dir: %w", err)
	}
	opts.StateDir = state
	if strings.ContainsAny(state, ",:\n\t ") {
		return nil, fmt.Errorf("box: state dir %q: overlay options cannot hold ',', ':' or spaces", state)
	}
	root, err := hostcheck.Cgroup2Mount()
	if err != nil {
		return nil, fmt.Errorf("box: %w", err)
	}
	s := &System{opts: opts, cgroup: filepath.Join(root, cgroupPrefix+opts.Name)}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func validName(name string) error {
	if name == "" || len(name) > 60 {
		return fmt.Errorf("box: name %q: 1 to 60 characters", name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return fmt.Errorf("box: name %q: only letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}

// Attach returns the running box booted (with KeepOnExit) on opts.StateDir by another process,
// e.g. for `onionpod lab down`. Shutdown then powers it off and cleans up as usual.
func Attach(opts Options) (*System, error) {
	if err := validName(opts.Name); err != nil {
		return nil, err
	}
	state, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("box: state dir: %w", err)
	}
	opts.StateDir = state
	root, err := hostcheck.Cgroup2Mount()
	if err != nil {
		return nil, fmt.Errorf("box: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(state, "pid"))
	if err != nil {
		return nil, fmt.Errorf("box: attach %s: %w", opts.Name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return nil, fmt.Errorf("box: attach %s: bad pid file", opts.Name)
	}
	// It must be the box's PID 1: in the box's cgroup.
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil || !strings.Contains(string(cg), "/"+cgroupPrefix+opts.Name+"/") && !strings.Contains(string(cg), "/"+cgroupPrefix+opts.Name+"\n") {
		return nil, fmt.Errorf("box: attach %s: process %d is not that box", opts.Name, pid)
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return nil, fmt.Errorf("box: attach %s: %w", opts.Name, err)
	}
	exited := make(chan struct{})
	go func() { // not our child: poll until it is gone
		for syscall.Kill(pid, 0) == nil {
			time.Sleep(20 * time.Millisecond)
		}
		close(exited)
	}()
	s := &System{PID: pid, opts: opts, cgroup: filepath.Join(root, cgroupPrefix+opts.Name), proc: proc, exited: exited}
	if id, err := os.ReadFile(filepath.Join(state, "boot_id")); err == nil {
		s.bootIDs = append(s.bootIDs, strings.TrimSpace(string(id)))
	}
	return s, nil
}

// start boots PID 1 and waits for it to be up. On failure nothing is left running.
func (s *System) start(ctx context.Context) (err error) {
	bootID, err := newBootID()
	if err != nil {
		return err
	}
	script, err := s.writeBootFiles(bootID)
	if err != nil {
		return err
	}
	cmd, exited, err := s.spawnInit(script)
	if err != nil {
		return err
	}
	s.adopt(cmd, exited, bootID)
	defer func() {
		if err != nil {
			_ = s.stop(context.Background(), 0)
		}
	}()
	return s.waitBooted(ctx)
}

// writeBootFiles prepares the state dir (overlay dirs, the box's own units) and writes the init
// script for this boot; it returns the script's path.
func (s *System) writeBootFiles(bootID string) (string, error) {
	if err := prepareState(s.opts.StateDir, s.opts.Name); err != nil {
		return "", err
	}
	if err := writeOwnUnits(filepath.Join(s.opts.StateDir, "units")); err != nil {
		return "", err
	}
	path := filepath.Join(s.opts.StateDir, "init.sh")
	if _, err := atomicfile.WriteFile(path, []byte(initScript(s.opts, bootID)), 0o700); err != nil {
		return "", fmt.Errorf("box: write init script: %w", err)
	}
	return path, nil
}

// spawnInit starts the init script as PID 1 of new namespaces, inside the box's cgroup (created
// here), with its output appended to the console log. On failure the cgroup is removed.
func (s *System) spawnInit(script string) (*exec.Cmd, <-chan struct{}, error) {
	console, err := os.OpenFile(filepath.Join(s.opts.StateDir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("box: console log: %w", err)
	}
	defer console.Close()
	if err := os.Mkdir(s.cgroup, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, nil, fmt.Errorf("box: create cgroup: %w", err)
	}
	cg, err := os.Open(s.cgroup)
	if err != nil {
		_ = removeCgroup(s.cgroup)
		return nil, nil, fmt.Errorf("box: open cgroup: %w", err)
	}
	defer cg.Close()
	cmd := s.initCommand(script, int(cg.Fd()))
	cmd.Stdout, cmd.Stderr = console, console
	exited, _, err := child.Start(cmd)
	if err != nil {
		_ = removeCgroup(s.cgroup)
		return nil, nil, fmt.Errorf("box: start init: %w", err)
	}
	return cmd, exited, nil
}

// initCommand is the command that runs the init script as PID 1 of new pid, mount, uts, ipc,
// cgroup (and, without Options.Netns, net) namespaces, placed into the cgroup open as cgroupFD.
func (s *System) initCommand(script string, cgroupFD int) *exec.Cmd {
	cloneNet := uintptr(unix.CLONE_NEWNET)
	cmd := exec.Command("/bin/sh", script)
	if s.opts.Netns != "" {
		// nsenter joins the namespace and execs the init script: still the new pid ns's PID 1.
		cloneNet = 0
		cmd = exec.Command("nsenter", "--net="+s.opts.Netns, "/bin/sh", script)
	}
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid: true,
		Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
			cloneNet | unix.CLONE_NEWCGROUP,
		UseCgroupFD: true,
		CgroupFD:    cgroupFD,
	}
	if !s.opts.KeepOnExit {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	return cmd
}

// adopt records the started PID 1 (reaped by a goroutine) and writes its pid and boot id files,
// which Attach reads from another process.
func (s *System) adopt(cmd *exec.Cmd, exited <-chan struct{}, bootID string) {
	s.mu.Lock()
	s.PID = cmd.Process.Pid
	s.proc = cmd.Process
	s.exited = exited
	s.bootIDs = append(s.bootIDs, bootID)
	s.closed = false
	s.mu.Unlock()
	_, _ = atomicfile.WriteFile(filepath.Join(s.opts.StateDir, "pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600)
	_, _ = atomicfile.WriteFile(filepath.Join(s.opts.StateDir, "boot_id"), []byte(bootID+"\n"), 0o600)
}

// waitBooted waits until systemd is up: `running`, or `degraded` when one of the box's own units
// failed (which a test after a Reboot may want to inspect).
func (s *System) waitBooted(ctx context.Context) error {
	state, err := s.waitState(ctx)
	if err != nil {
		return err
	}
	if state != "running" && state != "degraded" {
		return fmt.Errorf("box: boot %s: systemd is %q%s", s.opts.Name, state, s.consoleTail())
	}
	return nil
}

// WaitRunning waits until the box's systemd reports `running` (all its units fine).
func (s *System) WaitRunning(ctx context.Context) error {
	state, err := s.waitState(ctx)
	if err != nil {
		return err
	}
	if state != "running" {
		failed, _ := s.Command(ctx, "systemctl", "--failed", "--no-legend", "--plain").CombinedOutput()
		return fmt.Errorf("box: %s is %q; failed units: %s", s.opts.Name, state, strings.TrimSpace(string(failed)))
	}
	return nil
}

// waitState waits for `systemctl is-system-running --wait` to give a final answer and returns it.
// It retries while PID 1 is still setting up its namespaces (nsenter or systemctl not ready yet).
func (s *System) waitState(ctx context.Context) (string, error) {
	for {
		s.mu.Lock()
		exited := s.exited
		s.mu.Unlock()
		select {
		case <-exited:
			return "", fmt.Errorf("box: %s: PID 1 exited%s", s.opts.Name, s.consoleTail())
		default:
		}
		out, _ := s.Command(ctx, "systemctl", "is-system-running", "--wait").Output()
		state := strings.TrimSpace(string(out))
		switch state {
		case "running", "degraded", "maintenance", "stopping":
			return state, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("box: %s: waiting for systemd (last %q): %w%s", s.opts.Name, state, ctx.Err(), s.consoleTail())
		case <-exited:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// consoleTail returns the end of the box's console log for error messages.
func (s *System) consoleTail() string {
	b, err := os.ReadFile(filepath.Join(s.opts.StateDir, "console.log"))
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "\nconsole.log:\n" + string(b)
}

// NetnsPath is the box's network namespace, for `nsenter --net=...` or netns.GetFromPath.
func (s *System) NetnsPath() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("/proc/%d/ns/net", s.PID)
}

// Name is the box's name (hostname, cgroup).
func (s *System) Name() string { return s.opts.Name }

// StateDir is the box's absolute state directory.
func (s *System) StateDir() string { return s.opts.StateDir }

// Command returns a command that runs argv inside the box: in its mount, pid, net, uts and ipc
// namespaces, with the working directory "/" and the caller's environment.
func (s *System) Command(ctx context.Context, argv ...string) *exec.Cmd {
	return s.CommandIn(ctx, "", argv...)
}

// CommandIn is Command with the working directory dir inside the box ("" is "/").
func (s *System) CommandIn(ctx context.Context, dir string, argv ...string) *exec.Cmd {
	s.mu.Lock()
	pid := s.PID
	s.mu.Unlock()
	args := []string{"-t", strconv.Itoa(pid), "-m", "-p", "-n", "-u", "-i"}
	if dir != "" {
		args = append(args, "--wd="+dir)
	}
	args = append(append(args, "--"), argv...)
	return exec.CommandContext(ctx, "nsenter", args...)
}

// Shutdown powers the box off cleanly (SIGRTMIN+4), kills it if it is not gone after 10 s, and
// removes its cgroup and any /tmp/systemd-private-* directory it left. The state dir is kept.
// Shutdown is idempotent.
func (s *System) Shutdown(ctx context.Context) error {
	return s.stop(ctx, stopTimeout)
}

// Reboot shuts the box down and boots it again on the same state dir and options. PID changes.
func (s *System) Reboot(ctx context.Context) error {
	if err := s.stop(ctx, stopTimeout); err != nil {
		return err
	}
	return s.start(ctx)
}

// stop powers off (or, with grace 0, kills) PID 1, waits for it, and cleans up.
func (s *System) stop(ctx context.Context, grace time.Duration) error {
	s.mu.Lock()
	if s.closed || s.proc == nil {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	proc, exited := s.proc, s.exited
	s.mu.Unlock()

	if grace > 0 {
		_ = proc.Signal(sigRTMIN4)
		timer := time.NewTimer(grace)
		select {
		case <-exited:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
	}
	select {
	case <-exited:
	default:
		_ = proc.Kill() // our own PID 1: the kernel then kills everything in its pid namespace
		<-exited
	}
	var errs []error
	if err := removeCgroup(s.cgroup); err != nil {
		errs = append(errs, err)
	}
	s.mu.Lock()
	ids := s.bootIDs
	s.mu.Unlock()
	for _, id := range ids {
		matches, _ := filepath.Glob("/tmp/systemd-private-" + strings.ReplaceAll(id, "-", "") + "-*")
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				errs = append(errs, fmt.Errorf("box: remove %s: %w", m, err))
			}
		}
	}
	_ = os.Remove(filepath.Join(s.opts.StateDir, "pid"))
	return errors.Join(errs...)
}

// newBootID returns a random boot id in /proc/sys/kernel/random/boot_id's format. The box sees it
// as its boot id, so the /tmp/systemd-private-BOOTID-* directories it creates are recognisable.
func newBootID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("box: boot id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}
