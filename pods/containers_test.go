package pods

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/onionpod/onionpod/pods/podstest"
)

const (
	duoApp   = "duo"
	duoNetns = "onionpod-duo"
	// longApp has a name too long for a user name as it is: AppUser shortens it.
	longApp = "a-rather-long-app-name-for-a-user-name"
)

// TestContainersUnderSystemd boots a real systemd and runs an app of several containers in one
// network namespace: they share one dynamic user and a volume (a file one writes, the other
// reads), start in order, stop with their signal, carry their limits (as systemd reports them:
// this host's cgroups cannot enforce memory, CPU or task limits inside the box), and a
// container of its own user gets another uid. A command check runs in a container's sandbox
// (its root, network, user, environment) and reports failures with their output. A volume
// written by a pod of an older onionpod (a dynamic user named after its unit) stays readable
// under the app's user, moved to its new place. A container taken out of the app is removed. A
// volume never takes a directory of onionpod's state dir (app "onion", volume "blog": the key
// of app blog stays root's).
func TestContainersUnderSystemd(t *testing.T) {
	if podstest.Inside() {
		t.Skip("runs on the host")
	}
	if err := podstest.Available(); err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat(busyboxPath); err != nil {
		t.Skipf("busybox-static needed: %v", err)
	}
	for _, tool := range []string{"curl", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s needed: %v", tool, err)
		}
	}
	box := podstest.New(t, podstest.Options{})
	box.RunTestInside(t, "TestInsideContainers", envStore+"="+filepath.Join(t.TempDir(), "store"))
}

// duoSpecs are the containers of duo: "web" (busybox httpd, the app's port) and "worker",
// which writes into the shared volume and starts before web, and "loner" with its own user.
func duoSpecs(root string) []Spec {
	up, down := netCommands(duoNetns)
	base := Spec{App: duoApp, Root: root, Netns: "/run/netns/" + duoNetns, NetUp: up, NetDown: down}
	worker := base
	worker.Container = "worker"
	worker.Command = []string{"/bin/busybox", "sh", "-c", "id -u > /shared/worker-uid; echo $GREETING > /shared/greeting; exec sleep 1000"}
	worker.Env = []string{"GREETING=from the worker"}
	worker.Volumes = []Volume{{Name: "shared", Path: "/shared"}}
	worker.KillSignal = "SIGINT"
	worker.Limits = Limits{Memory: "64M", CPU: "50%", CPUWeight: 20, Tasks: 16}
	web := base
	web.Container = "web"
	web.Command = []string{"/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/shared"}
	web.Volumes = []Volume{{Name: "shared", Path: "/shared"}}
	web.After = []string{"worker"}
	loner := base
	loner.Container = "loner"
	loner.Command = []string{"/bin/busybox", "sleep", "1000"}
	loner.OwnUser = true
	return []Spec{worker, web, loner}
}

func TestInsideContainers(t *testing.T) {
	store, sd := inside(t)
	ctx := t.Context()
	reg := startRegistry(t)
	push(t, reg+"/apps/busybox:1", busyboxImage(t))
	img, err := store.Pull(ctx, reg+"/apps/busybox:1", nil)
	if err != nil {
		t.Fatal(err)
	}

	// A volume written by a pod of an older onionpod, whose dynamic user was named after its
	// unit (no User=): the app's user takes it over.
	old := fmt.Sprintf("[Service]\nType=oneshot\nExecStart=/bin/busybox sh -c \"echo old > /shared/old\"\nRootDirectory=%s\n"+
		"MountAPIVFS=yes\nDynamicUser=yes\nStateDirectory=onionpod/%s/shared\nBindPaths=%s:/shared\n",
		img.Root, duoApp, legacyVolumeHostDir(duoApp, "shared"))
	if err := os.WriteFile("/etc/systemd/system/onionpod-pod-duo_old.service", []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemctl", "start", "onionpod-pod-duo_old.service").CombinedOutput(); err != nil {
		t.Fatalf("the old pod: %v: %s", err, out)
	}
	oldUID := fileUID(t, filepath.Join(legacyVolumeHostDir(duoApp, "shared"), "old"))
	t.Logf("the old pod wrote as uid %d", oldUID)

	specs := duoSpecs(img.Root)
	units, err := AppUnits(specs...)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := sd.ApplyApp(ctx, duoApp, units); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/etc/systemd/system/onionpod-pod-duo_old.service"); err == nil {
		t.Error("ApplyApp kept a container unit that is not in the app")
	}
	worker := waitContainer(t, sd, duoApp, "worker", 0)
	web := waitContainer(t, sd, duoApp, "web", 0)
	loner := waitContainer(t, sd, duoApp, "loner", 0)
	t.Logf("three containers running %v after ApplyApp", time.Since(start).Round(time.Millisecond))
	if !sd.CurrentApp(t.Context(), duoApp, units) {
		t.Error("CurrentApp is false right after ApplyApp")
	}

	// One dynamic user for worker and web (not root), another for loner.
	wUID, webUID, lonerUID := procUID(t, worker.MainPID), procUID(t, web.MainPID), procUID(t, loner.MainPID)
	if wUID == 0 || wUID != webUID || lonerUID == wUID || lonerUID == 0 {
		t.Errorf("uids: worker %d, web %d, loner %d: want worker = web, loner another, none root", wUID, webUID, lonerUID)
	}
	for _, st := range []Status{worker, web, loner} {
		checkSandbox(t, st.MainPID, 0)
	}
	// What the worker wrote into the volume, web serves; the old pod's file is the app's now.
	vol := VolumeHostDir(duoApp, "shared")
	waitFile(t, filepath.Join(vol, "greeting"))
	if got := httpGet(t, duoNetns, "http://127.0.0.1:8080/greeting"); got != "from the worker\n" {
		t.Errorf("web serves %q of the worker's volume", got)
	}
	if got := httpGet(t, duoNetns, "http://127.0.0.1:8080/worker-uid"); strings.TrimSpace(got) != strconv.Itoa(wUID) {
		t.Errorf("the worker wrote uid %q, runs as %d", got, wUID)
	}
	if uid := fileUID(t, filepath.Join(vol, "old")); uid != wUID || uid == oldUID && oldUID != wUID {
		t.Errorf("the old pod's file is owned by %d (was %d), the app's user is %d", uid, oldUID, wUID)
	}
	if got := httpGet(t, duoNetns, "http://127.0.0.1:8080/old"); got != "old\n" {
		t.Errorf("the old pod's file: %q", got)
	}

	// Order, stop signal and limits, as systemd has them.
	show := func(c string, props ...string) map[string]string {
		out, err := exec.Command("systemctl", "show", "-p", strings.Join(props, ","), ContainerUnitName(duoApp, c)).Output()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			k, v, _ := strings.Cut(line, "=")
			m[k] = v
		}
		return m
	}
	if p := show("web", "After", "Wants", "Requires"); !strings.Contains(p["After"], "onionpod-pod-duo_worker.service") ||
		!strings.Contains(p["Wants"], "onionpod-pod-duo_worker.service") || !strings.Contains(p["Requires"], "onionpod-net-duo.service") {
		t.Errorf("web's order: %v", p)
	}
	want := map[string]string{"KillSignal": "2", "MemoryMax": strconv.Itoa(64 << 20), "CPUQuotaPerSecUSec": "500ms", "CPUWeight": "20", "TasksMax": "16"}
	if p := show("worker", "KillSignal", "MemoryMax", "CPUQuotaPerSecUSec", "CPUWeight", "TasksMax"); !mapsEqual(p, want) {
		t.Errorf("worker's settings %v, want %v", p, want)
	}
	p := show("web", "KillSignal", "MemoryMax", "CPUQuotaPerSecUSec", "CPUWeight", "TasksMax")
	if p["KillSignal"] != "15" || p["CPUQuotaPerSecUSec"] != "infinity" || p["CPUWeight"] != "50" || p["TasksMax"] != "512" {
		t.Errorf("web's default settings %v", p)
	}
	if mem, err := strconv.ParseUint(p["MemoryMax"], 10, 64); err != nil || mem == 0 || mem > physicalMemory(t)/4+1 {
		t.Errorf("web's default MemoryMax %q: want a quarter of the box's memory (%d)", p["MemoryMax"], physicalMemory(t))
	}

	// Command checks in web's sandbox: its network (it reaches web's port), its user, the
	// environment file of the worker, a failure's output, a timeout.
	checkSpec := specs[1]
	if err := sd.RunCheck(ctx, checkSpec, []string{"/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/greeting"}, 5*time.Second); err != nil {
		t.Errorf("a passing check: %v", err)
	}
	err = sd.RunCheck(ctx, checkSpec, []string{"/bin/busybox", "sh", "-c", "echo uid $(id -u); exit 3"}, 5*time.Second)
	if !errors.Is(err, ErrCheckFailed) || !strings.HasSuffix(err.Error(), fmt.Sprintf("uid %d", wUID)) {
		t.Errorf("a failing check as the app's user: %v (want ErrCheckFailed ending uid %d)", err, wUID)
	}
	err = sd.RunCheck(ctx, specs[0], []string{"/bin/busybox", "sh", "-c", "echo $GREETING; test -f /shared/nothing"}, 5*time.Second)
	if !errors.Is(err, ErrCheckFailed) || !strings.Contains(err.Error(), "from the worker") {
		t.Errorf("a check with the worker's environment and volume: %v", err)
	}
	start = time.Now()
	err = sd.RunCheck(ctx, checkSpec, []string{"/bin/busybox", "sleep", "30"}, 300*time.Millisecond)
	if !errors.Is(err, ErrCheckFailed) || !strings.Contains(err.Error(), "no answer within") || time.Since(start) > 25*time.Second { // the check must not wait for its 30 s sleep
		t.Errorf("a check that hangs: %v after %v", err, time.Since(start))
	}
	for i := range 3 { // the transient unit is gone each time: the same name again
		start := time.Now()
		if err := sd.RunCheck(ctx, checkSpec, []string{"/bin/busybox", "true"}, 5*time.Second); err != nil {
			t.Errorf("check %d: %v", i, err)
		}
		t.Logf("a command check ran in %v", time.Since(start).Round(time.Millisecond))
	}
	if _, err := sd.UnitStatus(ctx, CheckUnitName(duoApp, "web")); err == nil {
		t.Errorf("the check's unit is still there")
	}

	// The worker stops with SIGINT: busybox sh ignores nothing, exits 130.
	if err := sd.StopUnit(ctx, ContainerUnitName(duoApp, "worker")); err != nil {
		t.Fatal(err)
	}
	// Logs of one container, and of all.
	var logs strings.Builder
	if err := sd.Logs(ctx, duoApp, "web", false, &logs); err != nil || !strings.Contains(logs.String(), "container web") || strings.Contains(logs.String(), "container worker") {
		t.Errorf("web's logs (%v):\n%s", err, logs.String())
	}
	logs.Reset()
	if err := sd.Logs(ctx, duoApp, "", false, &logs); err != nil || !strings.Contains(logs.String(), "container web") || !strings.Contains(logs.String(), "container worker") {
		t.Errorf("all logs (%v):\n%s", err, logs.String())
	}
	if err := sd.Logs(ctx, duoApp, "nosuch", false, &logs); !errors.Is(err, ErrNotFound) {
		t.Errorf("logs of an unknown container: %v", err)
	}

	// Take loner out: ApplyApp removes its unit; Stop and Remove act on all containers.
	units, err = AppUnits(specs[:2]...)
	if err != nil {
		t.Fatal(err)
	}
	if sd.CurrentApp(t.Context(), duoApp, units) {
		t.Error("CurrentApp is true with a container to remove")
	}
	if err := sd.ApplyApp(ctx, duoApp, units); err != nil {
		t.Fatal(err)
	}
	if _, err := sd.ContainerStatus(ctx, duoApp, "loner"); !errors.Is(err, ErrNotFound) {
		t.Errorf("loner after it left the app: %v", err)
	}
	waitContainer(t, sd, duoApp, "worker", worker.MainPID)
	if err := sd.Stop(ctx, duoApp); err != nil {
		t.Fatal(err)
	}
	states, err := sd.PodStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"worker", "web"} {
		if st := states[PodRef{duoApp, c}]; st.ActiveState == "active" {
			t.Errorf("%s after Stop: %+v", c, st)
		}
	}
	if refs, err := sd.PodUnits(ctx); err != nil || len(refs) != 2 {
		t.Errorf("PodUnits = %v, %v", refs, err)
	}
	if err := sd.Remove(ctx, duoApp); err != nil {
		t.Fatal(err)
	}
	if units, err := sd.Units(ctx); err != nil || len(units) != 0 {
		t.Errorf("units after Remove: %v, %v", units, err)
	}

	if _, err := os.Lstat(legacyVolumeHostDir(duoApp, "shared")); err == nil {
		t.Error("the old volume is still at its old place")
	}
	if _, err := os.Lstat(legacyVolumeLink(duoApp, "shared")); err == nil {
		t.Error("systemd's symlink to the old volume is still there")
	}

	// A volume's directory never meets onionpod's state dir: an app named "onion" with a volume
	// named "blog" leaves the onion key of app blog (/var/lib/onionpod/onion/blog) as it is.
	keyDir := "/var/lib/onionpod/onion/blog"
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keyDir, "hs_ed25519_secret_key"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	thief := Spec{App: "onion", Root: img.Root, Netns: "/run/netns/onionpod-onion", Volumes: []Volume{{Name: "blog", Path: "/loot"}},
		Command: []string{"/bin/busybox", "sh", "-c", "cat /loot/hs_ed25519_secret_key; exec sleep 1000"}}
	thief.NetUp, thief.NetDown = netCommands("onionpod-onion")
	tunits, err := PodUnits(thief)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.Apply(ctx, tunits...); err != nil {
		t.Fatal(err)
	}
	waitContainer(t, sd, "onion", "onion", 0)
	if st, err := os.Lstat(keyDir); err != nil || !st.IsDir() || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("the key's directory after a pod's volume of the same name: %v, %v", st, err)
	}
	if uid := fileUID(t, filepath.Join(keyDir, "hs_ed25519_secret_key")); uid != 0 {
		t.Errorf("the key belongs to uid %d now", uid)
	}
	if err := sd.Remove(ctx, "onion"); err != nil {
		t.Fatal(err)
	}

	// An app whose name is too long for a user name as is runs as its shortened AppUser.
	lspec := Spec{App: longApp, Root: img.Root, Netns: "/run/netns/onionpod-long", Command: []string{"/bin/busybox", "sleep", "1000"}}
	lspec.NetUp, lspec.NetDown = netCommands("onionpod-long")
	lunits, err := PodUnits(lspec)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.Apply(ctx, lunits...); err != nil {
		t.Fatal(err)
	}
	lst := waitContainer(t, sd, longApp, longApp, 0)
	if out, err := exec.Command("ps", "-o", "user=", "-p", strconv.Itoa(lst.MainPID)).Output(); err == nil && strings.TrimSpace(string(out)) != AppUser(longApp) {
		t.Errorf("the long app runs as %q, want %s", strings.TrimSpace(string(out)), AppUser(longApp))
	}
	if err := sd.Remove(ctx, longApp); err != nil {
		t.Fatal(err)
	}
}

// waitContainer waits until a container's unit is active/running with a main PID other than notPID.
func waitContainer(t *testing.T, sd *Systemd, app, container string, notPID int) Status {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := sd.ContainerStatus(t.Context(), app, container)
		if err == nil && st.ActiveState == "active" && st.SubState == "running" && st.MainPID != 0 && st.MainPID != notPID {
			return st
		}
		if time.Now().After(deadline) {
			out, _ := exec.Command("systemctl", "status", "--no-pager", ContainerUnitName(app, container)).CombinedOutput()
			t.Fatalf("%s/%s not running: %+v, %v\n%s", app, container, st, err, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitFile(t *testing.T, p string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(p); err == nil {
			return
		}
	}
	t.Fatalf("%s never appeared", p)
}

func fileUID(t *testing.T, p string) int {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return int(st.Sys().(*syscall.Stat_t).Uid)
}

func physicalMemory(t *testing.T) uint64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		t.Fatal(err)
	}
	return si.Totalram * uint64(si.Unit)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
