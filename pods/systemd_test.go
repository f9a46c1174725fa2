package pods

import (
	"archive/tar"
	"bytes"
	"context"
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

// Environment passed from the host test to its phases inside the box.
const (
	envStore     = "PODS_TEST_STORE"
	envStaticBin = "PODS_TEST_STATIC_BIN"
	envSite      = "PODS_TEST_SITE"
)

// greeting is an environment variable that needs quoting in a unit file.
const greeting = `GREETING=hi "there" 100% $HOME \x %n`

const (
	blogApp   = "blog"
	blogNetns = "onionpod-blog"
	siteApp   = "site"
	siteNetns = "onionpod-site"
)

// TestPodsUnderSystemd boots a real systemd (podstest) and, inside it: pulls a busybox image
// from a registry on loopback, runs it as a pod in its own netns, checks the sandbox, kills it,
// runs a static site, reboots the box and sees both pods come back by themselves, then removes
// them.
func TestPodsUnderSystemd(t *testing.T) {
	if podstest.Inside() {
		t.Skip("runs on the host")
	}
	if err := podstest.Available(); err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat(busyboxPath); err != nil {
		t.Skipf("busybox-static needed: %v", err)
	}
	for _, tool := range []string{"curl", "ip", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s needed: %v", tool, err)
		}
	}
	work := t.TempDir()
	staticBin := filepath.Join(work, "onionpod-static")
	build := exec.Command("go", "build", "-o", staticBin, "./testdata/staticserver")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build static server: %v\n%s", err, out)
	}
	site := filepath.Join(work, "site")
	if err := os.MkdirAll(filepath.Join(site, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(site, "index.html"), []byte("static site\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(site, "sub", "secret.txt"), []byte("listed?\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{envStore + "=" + filepath.Join(work, "store"), envStaticBin + "=" + staticBin, envSite + "=" + site}

	box := podstest.New(t, podstest.Options{})
	box.RunTestInside(t, "TestInsideRunPods", env...)
	start := time.Now()
	box.RebootT(t)
	t.Logf("box rebooted in %v", time.Since(start))
	box.RunTestInside(t, "TestInsideAfterReboot", env...)
}

func inside(t *testing.T) (*ImageStore, *Systemd) {
	t.Helper()
	if !podstest.Inside() {
		t.Skip("runs inside a podstest box")
	}
	sd, err := Connect(t.Context(), "/etc/systemd/system")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sd.Close() })
	return &ImageStore{Dir: os.Getenv(envStore)}, sd
}

// netCommands is the stand-in for onionpod's network code: create a netns with loopback up
// (and leave netUpRan's file, to tell that it ran).
func netCommands(netns string) (up, down []string) {
	return []string{"/bin/sh", "-c", fmt.Sprintf("touch %[2]s; ip netns del %[1]s 2>/dev/null; ip netns add %[1]s && ip -n %[1]s link set lo up", netns, netUpRan(netns))},
		[]string{"/usr/sbin/ip", "netns", "del", netns}
}

// netUpRan is the file netCommands' up command leaves.
func netUpRan(netns string) string { return "/run/netup-ran-" + netns }

func netUpRanYet(netns string) bool {
	_, err := os.Stat(netUpRan(netns))
	return err == nil
}

// makeNetns makes netns with loopback up, as the daemon's network code does before it starts a
// pod.
func makeNetns(t *testing.T, netns string) {
	t.Helper()
	for _, argv := range [][]string{{"ip", "netns", "add", netns}, {"ip", "-n", netns, "link", "set", "lo", "up"}} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
}

func TestInsideRunPods(t *testing.T) {
	store, sd := inside(t)
	ctx := t.Context()

	// A registry on the box's loopback.
	reg := startRegistry(t)
	ref := reg + "/apps/busybox:1"
	push(t, ref, busyboxImage(t))
	img, err := store.Pull(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	argv, err := img.Command(nil)
	if err != nil {
		t.Fatal(err)
	}
	up, down := netCommands(blogNetns)
	spec := Spec{
		App: blogApp, Root: img.Root, Netns: "/run/netns/" + blogNetns, Command: argv,
		Env: MergeEnv(img.Config.Env, []string{greeting}), WorkingDir: img.Config.WorkingDir,
		Volumes: []Volume{{Name: "data", Path: "/data"}},
		NetUp:   up, NetDown: down,
	}
	units, err := PodUnits(spec)
	if err != nil {
		t.Fatal(err)
	}
	// Loaded ahead (what the daemon does while a new app's network is attached): written and
	// enabled, nothing started; then started.
	if err := sd.LoadApp(ctx, blogApp, units); err != nil {
		t.Fatal(err)
	}
	pod := PodUnitName(blogApp)
	if st := unitProperty(t, pod, "ActiveState"); st != "inactive" || !sd.enabled(pod) || netUpRanYet(blogNetns) {
		t.Errorf("after LoadApp: %s is %s (enabled %v, net-up ran %v); want written, enabled, not started", pod, st, sd.enabled(pod), netUpRanYet(blogNetns))
	}
	start := time.Now()
	if err := sd.ApplyApp(ctx, blogApp, units); err != nil {
		t.Fatal(err)
	}
	t.Logf("pod created and started in %v", time.Since(start))
	broken := Unit{Name: PodUnitName("broken"), Content: []byte("[Service]\nType=exec\n\n[Install]\nWantedBy=multi-user.target\n")}
	if err := sd.LoadApp(ctx, "broken", []Unit{broken}); err == nil || !strings.Contains(err.Error(), "bad-setting") {
		t.Errorf("LoadApp of a unit without ExecStart=: %v, want systemd's bad-setting", err)
	}
	if err := sd.Remove(ctx, "broken"); err != nil {
		t.Error(err)
	}
	st := waitRunning(t, sd, blogApp, 0)
	if !st.Enabled || time.Since(st.Since) > time.Minute || st.Result != "success" {
		t.Errorf("pod status: %+v (want enabled, recent Since, Result success)", st)
	}

	// Serves HTTP in its netns, and only there.
	if got := httpGet(t, blogNetns, "http://127.0.0.1:8080/"); got != indexPage {
		t.Errorf("GET / in the pod's netns = %q, want %q", got, indexPage)
	}
	if out, err := exec.Command("curl", "-sS", "--max-time", "2", "http://127.0.0.1:8080/").CombinedOutput(); err == nil {
		t.Errorf("the pod answers outside its netns: %s", out)
	}

	// A dynamic user without capabilities, in its own root, with its environment.
	checkSandbox(t, st.MainPID, 0)
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", st.MainPID))
	if err != nil || !bytes.Contains(environ, []byte(greeting+"\x00")) {
		t.Errorf("environment %q, %v", environ, err)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/www/index.html", st.MainPID)); err != nil || string(b) != indexPage {
		t.Errorf("the pod's root is not the image's: %q, %v", b, err)
	}

	// Its volume exists on the host, owned by its dynamic user; leave a file for after the reboot.
	vol := VolumeHostDir(blogApp, "data")
	vst, err := os.Stat(vol)
	if err != nil {
		t.Fatal(err)
	}
	if uid := vst.Sys().(*syscall.Stat_t).Uid; int(uid) != procUID(t, st.MainPID) {
		t.Errorf("volume owned by %d, pod runs as %d", uid, procUID(t, st.MainPID))
	}
	if err := os.WriteFile(filepath.Join(vol, "kept"), []byte("across reboots"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Killed, it is restarted.
	if err := syscall.Kill(st.MainPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	st2 := waitRunning(t, sd, blogApp, st.MainPID)
	t.Logf("restarted after SIGKILL in %v", time.Since(killed))
	if st2.Restarts < 1 {
		t.Errorf("Restarts = %d after a kill", st2.Restarts)
	}
	if got := httpGet(t, blogNetns, "http://127.0.0.1:8080/"); got != indexPage {
		t.Errorf("after restart GET / = %q", got)
	}

	// Stop and start; applying the same units again changes nothing.
	start = time.Now()
	if err := sd.Stop(ctx, blogApp); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped in %v", time.Since(start))
	if st, err := sd.Status(ctx, blogApp); err != nil || st.ActiveState != "inactive" || st.MainPID != 0 {
		t.Errorf("after Stop: %+v, %v", st, err)
	}
	blogRef := PodRef{App: blogApp, Container: blogApp}
	if states, err := sd.PodStates(ctx); err != nil || states[blogRef].ActiveState == "active" {
		t.Errorf("PodStates after Stop: %+v, %v", states[blogRef], err)
	}
	if err := sd.Apply(ctx, units...); err != nil {
		t.Fatal(err)
	}
	running := waitRunning(t, sd, blogApp, 0)
	// A network unit rewritten (an upgrade orders it after onionpod-networks.service) is read
	// again, and the pod that requires it goes on running: its namespace is made.
	reordered := spec
	reordered.NetBoot = "onionpod-networks.service"
	newUnits, err := PodUnits(reordered)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.ApplyApp(ctx, blogApp, newUnits); err != nil {
		t.Fatal(err)
	}
	if st, err := sd.Status(ctx, blogApp); err != nil || st.MainPID != running.MainPID {
		t.Errorf("after its network unit changed, the pod is %+v, %v; want the same process %d", st, err, running.MainPID)
	}
	if got := unitProperty(t, NetUnitName(blogApp), "After"); !strings.Contains(got, "onionpod-networks.service") {
		t.Errorf("the network unit as systemd holds it starts after %q, want onionpod-networks.service among them", got)
	}
	if states, err := sd.PodStates(ctx); err != nil || states[blogRef].ActiveState != "active" || states[blogRef].SubState != "running" {
		t.Errorf("PodStates when running: %+v, %v", states[blogRef], err)
	}
	// PodStatesOf asks for some units only; one that does not exist is left out.
	noneRef := PodRef{App: "nosuchapp", Container: "nosuchapp"}
	if states, err := sd.PodStatesOf(ctx, []PodRef{blogRef, noneRef}); err != nil || len(states) != 1 ||
		states[blogRef].ActiveState != "active" || states[blogRef].SubState != "running" {
		t.Errorf("PodStatesOf when running: %+v, %v", states, err)
	}

	// Logs come from the journal.
	var logs bytes.Buffer
	if err := sd.Logs(ctx, blogApp, "", false, &logs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "onionpod pod blog") {
		t.Errorf("logs lack systemd's lines about the pod:\n%s", logs.String())
	}
	fctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	var followed bytes.Buffer
	if err := sd.Logs(fctx, blogApp, "", true, &followed); err != nil {
		t.Errorf("Logs(follow) until the context ends: %v", err)
	}
	cancel()
	if !strings.Contains(followed.String(), "onionpod pod blog") {
		t.Errorf("followed logs lack the pod's lines:\n%s", followed.String())
	}
	if err := sd.Logs(ctx, "nothere", "", false, &logs); !errors.Is(err, ErrNotFound) {
		t.Errorf("Logs(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := sd.Status(ctx, "nothere"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Status(unknown) = %v, want ErrNotFound", err)
	}
	if err := sd.Start(ctx, "nothere"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Start(unknown) = %v, want ErrNotFound", err)
	}

	// A static site: the (static) binary and the site, read-only, in an empty root, on port 80.
	sspec := runSite(t, store, sd, 80)
	sst := waitRunning(t, sd, siteApp, 0)
	if got := httpGet(t, siteNetns, "http://127.0.0.1:80/"); got != "static site\n" {
		t.Errorf("static GET / = %q", got)
	}
	if got := httpGet(t, siteNetns, "http://127.0.0.1:80/sub/"); strings.Contains(got, "secret.txt") {
		t.Errorf("static site lists a directory: %q", got)
	}
	checkSandbox(t, sst.MainPID, 1<<10) // CAP_NET_BIND_SERVICE only
	// The root on disk holds no file but the bind mount's target (and empty mount points).
	var files []string
	err = filepath.WalkDir(sspec.Root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, strings.TrimPrefix(p, sspec.Root))
		}
		return err
	})
	if err != nil || strings.Join(files, " ") != StaticBinary {
		t.Errorf("static root holds %v, %v; want only %s", files, err, StaticBinary)
	}

	// A hostile image from the same registry is refused.
	hostile := busyboxImage(t, tarOf(t,
		entry{name: "evil", typ: tar.TypeSymlink, link: "/etc"},
		entry{name: "evil/onionpod-pwned", body: "pwned"}))
	push(t, reg+"/apps/hostile:1", hostile)
	if _, err := store.Pull(ctx, reg+"/apps/hostile:1", nil); !errors.Is(err, ErrHostileLayer) {
		t.Errorf("hostile image: %v, want ErrHostileLayer", err)
	}
	if _, err := os.Stat("/etc/onionpod-pwned"); err == nil {
		t.Errorf("/etc/onionpod-pwned appeared")
	}

	apps, err := sd.Apps(ctx)
	if err != nil || strings.Join(apps, " ") != "blog site" {
		t.Errorf("Apps = %v, %v", apps, err)
	}
}

func TestInsideAfterReboot(t *testing.T) {
	store, sd := inside(t)
	ctx := t.Context()
	// Both pods came back by themselves, network included.
	st := waitRunning(t, sd, blogApp, 0)
	if got := httpGet(t, blogNetns, "http://127.0.0.1:8080/"); got != indexPage {
		t.Errorf("after reboot GET / = %q", got)
	}
	checkSandbox(t, st.MainPID, 0)
	if b, err := os.ReadFile(filepath.Join(VolumeHostDir(blogApp, "data"), "kept")); err != nil || string(b) != "across reboots" {
		t.Errorf("volume after reboot: %q, %v", b, err)
	}
	waitRunning(t, sd, siteApp, 0)
	if got := httpGet(t, siteNetns, "http://127.0.0.1:80/"); got != "static site\n" {
		t.Errorf("static after reboot GET / = %q", got)
	}
	checkUpgradeReloadsOnce(t, store, sd)

	// Remove: units gone, network torn down; again is fine. Removing reads no unit again (a
	// daemon-reload takes 2 s with 1000 apps): a unit whose file changed on disk still says so.
	marker := unitChangedOnDisk(t)
	for _, app := range []string{blogApp, siteApp} {
		if err := sd.Remove(ctx, app); err != nil {
			t.Fatal(err)
		}
		if err := sd.Remove(ctx, app); err != nil {
			t.Errorf("second Remove(%s): %v", app, err)
		}
		if _, err := sd.Status(ctx, app); !errors.Is(err, ErrNotFound) {
			t.Errorf("Status(%s) after Remove = %v, want ErrNotFound", app, err)
		}
	}
	if got := unitProperty(t, marker, "NeedDaemonReload"); got != "yes" {
		t.Errorf("after the removals %s has NeedDaemonReload=%s: a removal reloaded systemd", marker, got)
	}
	if !sd.ReloadOwed() {
		t.Errorf("units removed, and no reload owed")
	}
	// A daemon started now (a restart) finds the units systemd still holds.
	sd2, err := Connect(ctx, "/etc/systemd/system")
	if err != nil {
		t.Fatal(err)
	}
	defer sd2.Close()
	if !sd2.ReloadOwed() {
		t.Errorf("a new connection does not see the removed units systemd holds")
	}
	sd = sd2
	// Created again at once under its name, on another port: its new units run, not the ones
	// systemd still holds from before the removal. Its namespace is made first, as the daemon
	// attaches a pod's network before it starts the pod: systemd skips the network unit (no
	// network command runs), and the pod runs in that namespace.
	os.Remove(netUpRan(siteNetns))
	makeNetns(t, siteNetns)
	runSite(t, store, sd, 81)
	waitRunning(t, sd, siteApp, 0)
	if got := httpGet(t, siteNetns, "http://127.0.0.1:81/"); got != "static site\n" {
		t.Errorf("the site created again: GET :81 = %q", got)
	}
	if _, err := os.Stat(netUpRan(siteNetns)); err == nil {
		t.Errorf("the network unit ran its command where the namespace existed")
	}
	if got := unitProperty(t, NetUnitName(siteApp), "ConditionResult"); got != "no" {
		t.Errorf("network unit where the namespace existed: ConditionResult=%s, want no (skipped)", got)
	}
	// Without its namespace (a boot, or a holder lost), starting the pod runs the network unit.
	if err := sd.Stop(ctx, siteApp); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "del", siteNetns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v\n%s", err, out)
	}
	if err := sd.Start(ctx, siteApp); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, sd, siteApp, 0)
	if _, err := os.Stat(netUpRan(siteNetns)); err != nil {
		t.Errorf("the namespace gone, starting the pod did not run the network unit: %v", err)
	}
	if got := httpGet(t, siteNetns, "http://127.0.0.1:81/"); got != "static site\n" {
		t.Errorf("the site in the namespace its network unit made: GET :81 = %q", got)
	}
	if err := sd.Remove(ctx, siteApp); err != nil {
		t.Fatal(err)
	}
	// Tidy pays the reload owed: systemd forgets the removed units.
	if reloaded, err := sd.Tidy(ctx); err != nil || !reloaded {
		t.Fatalf("Tidy with a reload owed: reloaded %v, %v", reloaded, err)
	}
	if sd.ReloadOwed() || unitProperty(t, marker, "NeedDaemonReload") != "no" {
		t.Errorf("after Tidy: reload owed %v, %s NeedDaemonReload=%s", sd.ReloadOwed(), marker, unitProperty(t, marker, "NeedDaemonReload"))
	}
	removed := []string{PodUnitName(blogApp), NetUnitName(blogApp), PodUnitName(siteApp), NetUnitName(siteApp)}
	if out, err := exec.Command("systemctl", append([]string{"list-units", "--all", "--plain", "--no-legend"}, removed...)...).Output(); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("after Tidy systemd still lists removed units: %s, %v", out, err)
	}
	for _, ns := range []string{blogNetns, siteNetns} {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			t.Errorf("netns %s left after Remove", ns)
		}
	}
	units, err := sd.Units(ctx)
	if err != nil || len(units) != 0 {
		t.Errorf("Units after Remove = %v, %v", units, err)
	}
	if _, err := os.Lstat(filepath.Join("/etc/systemd/system/multi-user.target.wants", PodUnitName(blogApp))); err == nil {
		t.Errorf("enable symlink left after Remove")
	}
}

// runSite applies the units of the static site app serving on port, in its own netns.
func runSite(t *testing.T, store *ImageStore, sd *Systemd, port uint16) Spec {
	t.Helper()
	spec, units := siteUnits(t, store, siteApp, siteNetns, port)
	if err := sd.Apply(t.Context(), units...); err != nil {
		t.Fatal(err)
	}
	return spec
}

// siteUnits renders the units of a static site app serving on port, in the netns named netns.
func siteUnits(t *testing.T, store *ImageStore, app, netns string, port uint16) (Spec, []Unit) {
	t.Helper()
	spec, err := store.StaticSpec(app, os.Getenv(envSite), os.Getenv(envStaticBin), port)
	if err != nil {
		t.Fatal(err)
	}
	spec.Netns = "/run/netns/" + netns
	spec.NetUp, spec.NetDown = netCommands(netns)
	units, err := PodUnits(spec)
	if err != nil {
		t.Fatal(err)
	}
	return spec, units
}

// checkUpgradeReloadsOnce plays an upgrade that changes every app's units on the site and a
// second one: the units of both are written (Write) before either is applied. The first Apply
// reloads systemd, which reads the second app's new file too; the second Apply reloads nothing
// more; each running pod restarts with its new unit.
func checkUpgradeReloadsOnce(t *testing.T, store *ImageStore, sd *Systemd) {
	t.Helper()
	ctx := t.Context()
	const second, secondNetns = "site2", "onionpod-site2"
	_, old := siteUnits(t, store, second, secondNetns, 80)
	if err := sd.Apply(ctx, old...); err != nil {
		t.Fatal(err)
	}
	defer sd.Remove(ctx, second)
	running := map[string]int{siteApp: waitRunning(t, sd, siteApp, 0).MainPID, second: waitRunning(t, sd, second, 0).MainPID}

	_, site := siteUnits(t, store, siteApp, siteNetns, 82)
	_, site2 := siteUnits(t, store, second, secondNetns, 83)
	for _, units := range [][]Unit{site, site2} {
		if err := sd.Write(units...); err != nil {
			t.Fatal(err)
		}
		if sd.Current(t.Context(), units) {
			t.Errorf("%s: Current right after Write, before an Apply restarted it", units[1].Name)
		}
	}
	if got := unitProperty(t, PodUnitName(second), "NeedDaemonReload"); got != "yes" {
		t.Fatalf("%s rewritten: NeedDaemonReload=%s, want yes", PodUnitName(second), got)
	}
	// A daemon killed here (files written, no pod restarted yet): the next one must not take
	// the new files for what runs.
	next, err := Connect(ctx, sd.unitDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, units := range [][]Unit{site, site2} {
		if next.Current(t.Context(), units) {
			t.Errorf("%s: Current for a new process after another's Write, before an Apply restarted it", units[1].Name)
		}
	}
	next.Close()
	if err := sd.Apply(ctx, site...); err != nil {
		t.Fatal(err)
	}
	if got := unitProperty(t, PodUnitName(second), "NeedDaemonReload"); got != "no" {
		t.Errorf("after the first Apply, %s still has NeedDaemonReload=%s: its reload did not cover the second app", PodUnitName(second), got)
	}
	marker := unitChangedOnDisk(t)
	if err := sd.Apply(ctx, site2...); err != nil {
		t.Fatal(err)
	}
	if got := unitProperty(t, marker, "NeedDaemonReload"); got != "yes" {
		t.Errorf("the second Apply reloaded systemd again (%s NeedDaemonReload=%s)", marker, got)
	}
	for app, netns := range map[string]string{siteApp: siteNetns, second: secondNetns} {
		waitRunning(t, sd, app, running[app])
		port := map[string]int{siteApp: 82, second: 83}[app]
		if got := httpGet(t, netns, fmt.Sprintf("http://127.0.0.1:%d/", port)); got != "static site\n" {
			t.Errorf("%s after the upgrade: GET :%d = %q", app, port, got)
		}
	}
	if !sd.Current(t.Context(), site) || !sd.Current(t.Context(), site2) {
		t.Errorf("not Current after Apply")
	}
	for _, name := range []string{PodUnitName(siteApp), PodUnitName(second)} {
		if _, err := os.Stat(filepath.Join(RewrittenDir, name)); err == nil {
			t.Errorf("%s still recorded as rewritten after its restart", name)
		}
	}
}

// unitChangedOnDisk starts a unit of its own and changes its file on disk after:
// systemd says NeedDaemonReload=yes until a daemon-reload.
func unitChangedOnDisk(t *testing.T) string {
	t.Helper()
	const name = "test-marker.service"
	file := filepath.Join("/etc/systemd/system", name)
	if err := os.WriteFile(file, []byte("[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("systemctl", "stop", name).Run()
		os.Remove(file)
	})
	// Active after its start (RemainAfterExit): systemd keeps it loaded.
	if out, err := exec.Command("systemctl", "start", name).CombinedOutput(); err != nil {
		t.Fatalf("systemctl start %s: %v\n%s", name, err, out)
	}
	if err := os.WriteFile(file, []byte("[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := unitProperty(t, name, "NeedDaemonReload"); got != "yes" {
		t.Fatalf("%s changed on disk: NeedDaemonReload=%s, want yes", name, got)
	}
	return name
}

func unitProperty(t *testing.T, unit, prop string) string {
	t.Helper()
	out, err := exec.Command("systemctl", "show", "--value", "-p", prop, unit).Output()
	if err != nil {
		t.Fatalf("systemctl show %s: %v", unit, err)
	}
	return strings.TrimSpace(string(out))
}

// waitRunning waits until app's pod is active/running with a main PID other than notPID.
func waitRunning(t *testing.T, sd *Systemd, app string, notPID int) Status {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := sd.Status(t.Context(), app)
		if err == nil && st.ActiveState == "active" && st.SubState == "running" && st.MainPID != 0 && st.MainPID != notPID {
			return st
		}
		if time.Now().After(deadline) {
			out, _ := exec.Command("systemctl", "status", "--no-pager", PodUnitName(app), NetUnitName(app)).CombinedOutput()
			t.Fatalf("%s not running: %+v, %v\n%s", app, st, err, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func httpGet(t *testing.T, netns, url string) string {
	t.Helper()
	var out []byte
	var err error
	for range 50 { // the server may still be binding its socket
		out, err = exec.Command("nsenter", "--net=/run/netns/"+netns, "curl", "-sS", "--max-time", "2", url).Output()
		if err == nil {
			return string(out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("GET %s in %s: %v", url, netns, err)
	return ""
}

// checkSandbox asserts that pid runs as a non-root user with exactly the effective capabilities
// wantCaps.
func checkSandbox(t *testing.T, pid int, wantCaps uint64) {
	t.Helper()
	if uid := procUID(t, pid); uid == 0 {
		t.Errorf("pod %d runs as root", pid)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil || caps != wantCaps {
				t.Errorf("pod %d CapEff = %s, want %x", pid, strings.TrimSpace(v), wantCaps)
			}
		}
		if v, ok := strings.CutPrefix(line, "NoNewPrivs:"); ok && strings.TrimSpace(v) != "1" {
			t.Errorf("pod %d NoNewPrivs = %s", pid, strings.TrimSpace(v))
		}
	}
}

func procUID(t *testing.T, pid int) int {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(v)
			uid, _ := strconv.Atoi(f[0])
			return uid
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return -1
}
