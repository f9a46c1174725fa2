package podstest_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/onionpod/onionpod/pods/podstest"
)

const persistentUnit = "podstest-selftest.service"

// TestBootRebootShutdown boots a box, starts a transient unit over D-Bus from inside it, writes and
// enables a persistent unit, reboots on the same state dir, sees the persistent unit come back, and
// after Shutdown finds no leftovers on the host.
func TestBootRebootShutdown(t *testing.T) {
	if podstest.Inside() {
		t.Skip("runs on the host")
	}
	start := time.Now()
	box := podstest.New(t, podstest.Options{})
	t.Logf("booted %s (PID %d) in %v", box.Name(), box.PID, time.Since(start))
	ctx := t.Context()

	out, err := box.Command(ctx, "hostname").Output()
	if err != nil || strings.TrimSpace(string(out)) != box.Name() {
		t.Fatalf("hostname inside = %q, %v; want %q", out, err, box.Name())
	}
	// The host's enabled services (tor, named, ...) must not be known inside.
	out, err = box.Command(ctx, "systemctl", "list-units", "--all", "--no-legend", "--plain").CombinedOutput()
	if err != nil {
		t.Fatalf("list-units: %v\n%s", err, out)
	}
	for _, bad := range []string{"tor.service", "named.service", "podman", "getty"} {
		if strings.Contains(string(out), bad) {
			t.Errorf("host unit %s is known inside the box:\n%s", bad, out)
		}
	}
	if err := box.WaitRunning(ctx); err != nil {
		t.Fatal(err)
	}
	netns, err := os.Readlink(box.NetnsPath())
	self, _ := os.Readlink("/proc/self/ns/net")
	if err != nil || netns == self {
		t.Fatalf("box netns %q (%v) must differ from the host's %q", netns, err, self)
	}

	box.RunTestInside(t, "TestInsidePhase1")
	boot1 := box.PID

	start = time.Now()
	box.RebootT(t)
	t.Logf("rebooted in %v", time.Since(start))
	if box.PID == boot1 {
		t.Fatalf("PID unchanged after reboot")
	}
	box.RunTestInside(t, "TestInsidePhase2")

	// The persistent unit lives in the state dir's /etc overlay, not in the host's /etc.
	if _, err := os.Stat(filepath.Join("/etc/systemd/system", persistentUnit)); err == nil {
		t.Errorf("unit file leaked into the host's /etc/systemd/system")
	}
	if _, err := os.Stat(filepath.Join(box.StateDir(), "etc/upper/systemd/system", persistentUnit)); err != nil {
		t.Errorf("unit file not in the state dir: %v", err)
	}

	cgroup := cgroupDir(t, box.Name())
	if _, err := os.Stat(cgroup); err != nil {
		t.Errorf("box cgroup %s: %v", cgroup, err)
	}
	pid := box.PID
	if err := box.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cgroup); err == nil {
		t.Errorf("cgroup %s left behind", cgroup)
	}
	if _, err := os.Stat("/proc/" + itoa(pid)); err == nil {
		if b, _ := os.ReadFile("/proc/" + itoa(pid) + "/comm"); strings.TrimSpace(string(b)) == "systemd" {
			t.Errorf("PID 1 %d still running", pid)
		}
	}
	if err := box.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

// TestInsidePhase1 runs inside the box: a transient unit with DynamicUser and PrivateTmp becomes
// active; a persistent unit is written to /etc/systemd/system, enabled and started.
func TestInsidePhase1(t *testing.T) {
	if !podstest.Inside() {
		t.Skip("runs inside a podstest box")
	}
	ctx := t.Context()
	conn, err := sddbus.NewSystemConnectionContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	props := []sddbus.Property{
		sddbus.PropExecStart([]string{"/bin/sleep", "infinity"}, false),
		sddbus.PropType("exec"),
		{Name: "DynamicUser", Value: dbusVariant(true)},
	}
	done := make(chan string, 1)
	if _, err := conn.StartTransientUnitContext(ctx, "podstest-transient.service", "replace", props, done); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r != "done" {
		t.Fatalf("transient unit job: %s", r)
	}
	assertActive(t, conn, "podstest-transient.service")

	body := "[Unit]\nDescription=podstest self-test\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"
	if err := os.WriteFile(filepath.Join("/etc/systemd/system", persistentUnit), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := conn.ReloadContext(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := conn.EnableUnitFilesContext(ctx, []string{persistentUnit}, false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.StartUnitContext(ctx, persistentUnit, "replace", done); err != nil {
		t.Fatal(err)
	}
	<-done
	assertActive(t, conn, persistentUnit)
}

// TestInsidePhase2 runs inside the box after a reboot: the enabled unit started by itself and the
// transient one is gone.
func TestInsidePhase2(t *testing.T) {
	if !podstest.Inside() {
		t.Skip("runs inside a podstest box")
	}
	conn, err := sddbus.NewSystemConnectionContext(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	assertActive(t, conn, persistentUnit)
	st, err := conn.ListUnitsByNamesContext(t.Context(), []string{"podstest-transient.service"})
	if err != nil {
		t.Fatal(err)
	}
	if len(st) == 1 && st[0].ActiveState == "active" {
		t.Errorf("transient unit survived the reboot")
	}
}

func assertActive(t *testing.T, conn *sddbus.Conn, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := conn.ListUnitsByNamesContext(context.Background(), []string{name})
		if err != nil {
			t.Fatal(err)
		}
		if len(st) == 1 && st[0].ActiveState == "active" && st[0].SubState == "running" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %+v, want active/running", name, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKilledBoxLeavesNothing kills a box's PID 1 with SIGKILL while a PrivateTmp unit runs, and
// checks that Shutdown still removes the unit's /tmp/systemd-private-* directory and the cgroup.
func TestKilledBoxLeavesNothing(t *testing.T) {
	if podstest.Inside() {
		t.Skip("runs on the host")
	}
	box := podstest.New(t, podstest.Options{})
	ctx := t.Context()
	if out, err := box.Command(ctx, "systemd-run", "--unit=podstest-private", "-p", "PrivateTmp=yes", "/bin/sleep", "infinity").CombinedOutput(); err != nil {
		t.Fatalf("systemd-run: %v\n%s", err, out)
	}
	id, err := box.Command(ctx, "cat", "/proc/sys/kernel/random/boot_id").Output()
	if err != nil {
		t.Fatal(err)
	}
	pattern := "/tmp/systemd-private-" + strings.ReplaceAll(strings.TrimSpace(string(id)), "-", "") + "-*"
	if m, _ := filepath.Glob(pattern); len(m) == 0 {
		t.Fatalf("no %s while a PrivateTmp unit runs (is the boot id the box's own?)", pattern)
	}
	if err := syscall.Kill(box.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := box.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(pattern); len(m) != 0 {
		t.Errorf("left behind: %v", m)
	}
	if _, err := os.Stat(cgroupDir(t, box.Name())); err == nil {
		t.Errorf("cgroup left behind")
	}
}

// TestAttach boots a box that outlives its booter (KeepOnExit), attaches to it from its state dir
// as `onionpod lab down` would, and shuts it down through the attached handle.
func TestAttach(t *testing.T) {
	if podstest.Inside() {
		t.Skip("runs on the host")
	}
	if err := podstest.Available(); err != nil {
		t.Skip(err)
	}
	opts := podstest.Options{StateDir: t.TempDir(), Name: podstest.UniqueName("attach"), KeepOnExit: true}
	ctx := t.Context()
	box, err := podstest.Boot(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = box.Shutdown(context.Background()) })
	if _, err := podstest.Attach(podstest.Options{StateDir: opts.StateDir, Name: "some-other-box"}); err == nil {
		t.Errorf("attached to a box under the wrong name")
	}
	same, err := podstest.Attach(opts)
	if err != nil {
		t.Fatal(err)
	}
	if same.PID != box.PID {
		t.Fatalf("attached PID %d, booted %d", same.PID, box.PID)
	}
	if out, err := same.Command(ctx, "systemctl", "is-system-running").Output(); err != nil || strings.TrimSpace(string(out)) != "running" {
		t.Errorf("through the attached handle: %q, %v", out, err)
	}
	if err := same.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if syscall.Kill(box.PID, 0) == nil {
		if b, _ := os.ReadFile("/proc/" + itoa(box.PID) + "/comm"); strings.TrimSpace(string(b)) == "systemd" {
			t.Errorf("box still running after the attached Shutdown")
		}
	}
	if _, err := os.Stat(cgroupDir(t, opts.Name)); err == nil {
		t.Errorf("cgroup left behind")
	}
}
