// Package podstest boots a real systemd as PID 1 of fresh namespaces, for tests and for the lab.
//
// A box is a systemd 252+ running as PID 1 of new pid, mount, uts, ipc, net and cgroup namespaces, in
// its own cgroup (a child of the host's cgroup2 mount: /sys/fs/cgroup/unified on a hybrid host,
// /sys/fs/cgroup on a pure v2 host). It sees the host's file system except for its own /proc, /run,
// /sys (read-only, with its own cgroup2), /dev (a few device nodes, devpts, shm, mqueue), /usr and
// /proc/sys read-only (except /proc/sys/net), and overlays on /etc and /var whose upper directories
// live in Options.StateDir: a Reboot on the same StateDir keeps what was written there, such as unit
// files in /etc/systemd/system. /tmp is the host's /tmp, so a test binary and t.TempDir() paths are
// visible inside.
//
// The unit search path is restricted to a small set of podstest's own units (journald, dbus, empty
// sysinit/basic/sockets/multi-user targets, the shutdown targets), /etc/systemd/system (persistent,
// starting empty: the host's own /etc/systemd/system is hidden) and /run/systemd/transient, so none
// of the host's services (tor!) start inside.
//
// Programs that talk to this systemd (systemctl, journalctl, go-systemd's D-Bus client) must run
// inside its pid and mount namespaces: use System.Command, or System.RunTestInside to run a test
// function of the current test binary inside the box. A typical test:
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
)

// SystemdPath is the systemd binary booted as PID 1.
const SystemdPath = "/lib/systemd/systemd"

// sigRTMIN4 is SIGRTMIN+4 as glibc counts (SIGRTMIN = 34): systemd's "power off cleanly" signal.
const sigRTMIN4 = syscall.Signal(38)

// stopTimeout is how long Shutdown waits for a clean power-off before SIGKILL.
const stopTimeout = 10 * time.Second

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
	// ExtraUnitDirs are appended to the unit search path (after podstest's own units).
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
	exited  chan struct{} // closed when PID 1 has been reaped
	bootIDs []string      // every boot id used, for /tmp/systemd-private-* cleanup
	closed  bool
}

// ErrUnavailable wraps the reason why a box cannot boot on this machine (not root, a tool missing,
// no cgroup2 mount).
var ErrUnavailable = errors.New("podstest: unavailable")

// Available reports why a box cannot boot here, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root", ErrUnavailable)
	}
	for _, tool := range []string{SystemdPath, "/lib/systemd/systemd-journald", "/usr/bin/dbus-daemon"} {
		if _, err := os.Stat(tool); err != nil {
			return fmt.Errorf("%w: %s missing", ErrUnavailable, tool)
		}
	}
	for _, tool := range []string{"nsenter", "mount", "umount", "systemctl", "journalctl", "sh", "mknod"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s not in PATH", ErrUnavailable, tool)
		}
	}
	if _, err := cgroup2Mount(); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
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
		return nil, errors.New("podstest: StateDir is required")
	}
	state, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("podstest: state dir: %w", err)
	}
	opts.StateDir = state
	if strings.ContainsAny(state, ",:\n\t ") {
		return nil, fmt.Errorf("podstest: state dir %q: overlay options cannot hold ',', ':' or spaces", state)
	}
	root, err := cgroup2Mount()
	if err != nil {
		return nil, fmt.Errorf("podstest: %w", err)
	}
	s := &System{opts: opts, cgroup: filepath.Join(root, "podstest-"+opts.Name)}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func validName(name string) error {
	if name == "" || len(name) > 60 {
		return fmt.Errorf("podstest: name %q: 1 to 60 characters", name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return fmt.Errorf("podstest: name %q: only letters, digits, '-', '_' and '.'", name)
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
		return nil, fmt.Errorf("podstest: state dir: %w", err)
	}
	opts.StateDir = state
	root, err := cgroup2Mount()
	if err != nil {
		return nil, fmt.Errorf("podstest: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(state, "pid"))
	if err != nil {
		return nil, fmt.Errorf("podstest: attach %s: %w", opts.Name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return nil, fmt.Errorf("podstest: attach %s: bad pid file", opts.Name)
	}
	// It must be the box's PID 1: in the box's cgroup.
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil || !strings.Contains(string(cg), "/podstest-"+opts.Name+"/") && !strings.Contains(string(cg), "/podstest-"+opts.Name+"\n") {
		return nil, fmt.Errorf("podstest: attach %s: process %d is not that box", opts.Name, pid)
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return nil, fmt.Errorf("podstest: attach %s: %w", opts.Name, err)
	}
	exited := make(chan struct{})
	go func() { // not our child: poll until it is gone
		for syscall.Kill(pid, 0) == nil {
			time.Sleep(20 * time.Millisecond)
		}
		close(exited)
	}()
	s := &System{PID: pid, opts: opts, cgroup: filepath.Join(root, "podstest-"+opts.Name), proc: proc, exited: exited}
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
	if err := prepareState(s.opts.StateDir, s.opts.Name); err != nil {
		return err
	}
	if err := writeOwnUnits(filepath.Join(s.opts.StateDir, "units")); err != nil {
		return err
	}
	script := initScript(s.opts, bootID)
	scriptPath := filepath.Join(s.opts.StateDir, "init.sh")
	if err := os.WriteFile(scriptPath, []byte(script), 0o700); err != nil {
		return fmt.Errorf("podstest: write init script: %w", err)
	}
	console, err := os.OpenFile(filepath.Join(s.opts.StateDir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("podstest: console log: %w", err)
	}
	defer console.Close()

	if err := os.Mkdir(s.cgroup, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("podstest: create cgroup: %w", err)
	}
	cg, err := os.Open(s.cgroup)
	if err != nil {
		_ = removeCgroup(s.cgroup)
		return fmt.Errorf("podstest: open cgroup: %w", err)
	}
	defer cg.Close()

	cloneNet := uintptr(unix.CLONE_NEWNET)
	cmd := exec.Command("/bin/sh", scriptPath)
	if s.opts.Netns != "" {
		// nsenter joins the namespace and execs the init script: still the new pid ns's PID 1.
		cloneNet = 0
		cmd = exec.Command("nsenter", "--net="+s.opts.Netns, "/bin/sh", scriptPath)
	}
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stdin = nil
	cmd.Stdout = console
	cmd.Stderr = console
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid: true,
		Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
			cloneNet | unix.CLONE_NEWCGROUP,
		UseCgroupFD: true,
		CgroupFD:    int(cg.Fd()),
	}
	if !s.opts.KeepOnExit {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		_ = removeCgroup(s.cgroup)
		return fmt.Errorf("podstest: start init: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()

	s.mu.Lock()
	s.PID = cmd.Process.Pid
	s.proc = cmd.Process
	s.exited = exited
	s.bootIDs = append(s.bootIDs, bootID)
	s.closed = false
	s.mu.Unlock()
	_ = os.WriteFile(filepath.Join(s.opts.StateDir, "pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600)
	_ = os.WriteFile(filepath.Join(s.opts.StateDir, "boot_id"), []byte(bootID+"\n"), 0o600)

	defer func() {
		if err != nil {
			_ = s.stop(context.Background(), 0)
		}
	}()
	state, err := s.waitState(ctx)
	if err != nil {
		return err
	}
	if state != "running" && state != "degraded" {
		return fmt.Errorf("podstest: boot %s: systemd is %q%s", s.opts.Name, state, s.consoleTail())
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
		return fmt.Errorf("podstest: %s is %q; failed units: %s", s.opts.Name, state, strings.TrimSpace(string(failed)))
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
			return "", fmt.Errorf("podstest: %s: PID 1 exited%s", s.opts.Name, s.consoleTail())
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
			return "", fmt.Errorf("podstest: %s: waiting for systemd (last %q): %w%s", s.opts.Name, state, ctx.Err(), s.consoleTail())
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
	return s.command(ctx, nil, argv...)
}

func (s *System) command(ctx context.Context, nsenterFlags []string, argv ...string) *exec.Cmd {
	s.mu.Lock()
	pid := s.PID
	s.mu.Unlock()
	args := []string{"-t", strconv.Itoa(pid), "-m", "-p", "-n", "-u", "-i"}
	args = append(append(append(args, nsenterFlags...), "--"), argv...)
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
				errs = append(errs, fmt.Errorf("podstest: remove %s: %w", m, err))
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
		return "", fmt.Errorf("podstest: boot id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}
