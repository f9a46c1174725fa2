package pods

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Where a pod's start time goes as the box fills up (issue 14: 1000 apps boot in 99-110 s):
//
//	go test -run '^$' -bench BenchmarkUnitStartOverMounts -benchtime 1x ./pods/
//
// It starts one pod unit, then the same unit without its file-system sandbox options, then
// without RootDirectory= too (so systemd makes no mount namespace for it), each with no other
// pod and then with 1000 more network namespaces bind-mounted under /run/netns (one per pod, as
// onionpod kept them before its namespace holder), and prints the medians and the cost per
// mount. The last row is what onionpod does now (onionpod-netns.service, netnsfile.Hold): the
// pod's namespace and the 1000 others bind-mounted in a holder process's own mount namespace
// (out of PID 1's mount table), the unit naming it as /proc/PID/root/....

// mountCostVariant is one shape of the pod unit, measured with and without the extra mounts.
type mountCostVariant struct {
	Name   string  `json:"name"`
	Before float64 `json:"before_ms"`
	After  float64 `json:"after_ms"`
}

func BenchmarkUnitStartOverMounts(b *testing.B) {
	box, work, archive := benchBox(b, "localhost/onionpod-mountcost:1")
	out := filepath.Join(work, "mountcost.json")
	for b.Loop() {
		var log strings.Builder
		if err := box.RunTest(context.Background(), "TestInsideBenchMountCost", &log,
			envStore+"="+filepath.Join(work, "store"), envBenchArchive+"="+archive, envBenchOut+"="+out); err != nil {
			b.Fatalf("%v\n%s", err, log.String())
		}
	}
	data, err := os.ReadFile(out)
	if err != nil {
		b.Fatal(err)
	}
	var res mountCostResult
	if err := json.Unmarshal(data, &res); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("\npod unit start to running, median of 7, with no other pod and with %d more netns mounts\n", res.Mounts)
	for _, v := range res.Variants {
		fmt.Printf("  %-50s %6.1f ms  %6.1f ms   %+.3f ms per mount\n", v.Name, v.Before, v.After, (v.After-v.Before)/float64(res.Mounts))
	}
	today, held := res.Variants[0], res.Variants[len(res.Variants)-1]
	fmt.Printf("  with %d more: the pod unit, netns held / under /run/netns: %.2fx\n", res.Mounts, held.After/today.After)
	b.ReportMetric(today.After-today.Before, "pod-unit-extra-ms")
	b.ReportMetric(held.After-held.Before, "held-pod-unit-extra-ms")
	b.ReportMetric(held.After/today.After, "held/today")
}

func TestInsideBenchMountCost(t *testing.T) {
	_, sd, img := benchImage(t, "BenchmarkUnitStartOverMounts")
	argv, err := img.Command(nil)
	if err != nil {
		t.Fatal(err)
	}
	const app, heldApp, mounts = "mountcost", "mountcost-held", 1000
	if out, err := exec.Command("ip", "netns", "add", "onionpod-"+app).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	holder := startNetnsHolder(t)
	holder.run(t, "", "ip", "netns", "add", "onionpod-"+heldApp)
	podUnit := func(app, netns string) Unit {
		units, err := PodUnits(Spec{App: app, Root: img.Root, Netns: netns, Command: argv, Env: img.Config.Env})
		if err != nil {
			t.Fatal(err)
		}
		return units[0]
	}
	unit := podUnit(app, "/run/netns/onionpod-"+app)
	held := podUnit(heldApp, holder.path("onionpod-"+heldApp))
	with := func(content string) Unit { u := unit; u.Content = []byte(content); return u }
	sandbox := []string{"ProtectSystem", "PrivateDevices", "PrivateTmp", "MountAPIVFS", "DynamicUser", "User"}
	type variant struct {
		name, app string
		unit      Unit
	}
	inPID1 := []variant{
		{"the pod unit", app, unit},
		{"without its file-system sandbox options", app, with(withoutKeys(string(unit.Content), sandbox...))},
		{"without them and RootDirectory= (no mount ns)", app, with(withoutKeys(string(unit.Content), append(sandbox, "RootDirectory")...) +
			"\n[Service]\nExecStart=\nExecStart=" + strings.Join(underRoot(img.Root, argv), " ") + "\n")},
	}
	inHolder := variant{"the pod unit, the 1000 and its netns in a holder", heldApp, held}
	measure := func(v variant) float64 {
		var d []float64
		for range 7 {
			start := time.Now()
			if err := sd.Apply(t.Context(), v.unit); err != nil {
				t.Fatalf("%s: %v", v.name, err)
			}
			d = append(d, ms(time.Since(start)))
			if st, err := sd.Status(t.Context(), v.app); err != nil || st.SubState != "running" {
				t.Fatalf("%s: %+v %v", v.name, st, err)
			}
			if err := sd.Stop(t.Context(), v.app); err != nil {
				t.Fatal(err)
			}
		}
		sort.Float64s(d)
		return d[len(d)/2]
	}
	var res mountCostResult
	res.Mounts = mounts
	for _, v := range append(inPID1, inHolder) {
		res.Variants = append(res.Variants, mountCostVariant{Name: v.name, Before: measure(v)})
	}
	// The namespaces held by the holder: PID 1's mount table does not grow.
	before := pid1Mounts(t)
	holder.run(t, netnsBatch(mounts), "ip", "-batch", "-")
	if grew := pid1Mounts(t) - before; grew != 0 {
		t.Fatalf("PID 1's mount table grew by %d with the namespaces in the holder", grew)
	}
	res.Variants[len(inPID1)].After = measure(inHolder)
	checkRunsIn(t, sd, held, heldApp, holder.path("onionpod-"+heldApp))
	// The same number under /run/netns, as onionpod keeps them today.
	add := exec.Command("ip", "-batch", "-")
	add.Stdin = strings.NewReader(netnsBatch(mounts))
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ip -batch: %v %s", err, out)
	}
	t.Cleanup(func() {
		for i := range mounts {
			exec.Command("ip", "netns", "del", "mountcost-"+strconv.Itoa(i)).Run()
		}
	})
	for i, v := range inPID1 {
		res.Variants[i].After = measure(v)
	}
	writeBench(t, res)
}

type mountCostResult struct {
	Mounts   int                `json:"mounts"`
	Variants []mountCostVariant `json:"variants"`
}

// netnsHolder is a process in a mount namespace of its own, with a private tmpfs at its
// /run/netns: the namespaces bind-mounted there are not in PID 1's mount table, and systemd
// reaches them as /proc/PID/root/run/netns/NAME.
type netnsHolder struct{ pid int }

func startNetnsHolder(t *testing.T) netnsHolder {
	t.Helper()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "infinity")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	h := netnsHolder{pid: cmd.Process.Pid}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", h.pid)); ns != "" && ns != self {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the holder did not get a mount namespace of its own")
		}
	}
	h.run(t, "", "sh", "-c", "mkdir -p /run/netns && mount -t tmpfs -o mode=755 netns-holder /run/netns")
	return h
}

// run runs argv in the holder's mount namespace, with stdin.
func (h netnsHolder) run(t *testing.T, stdin string, argv ...string) {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(h.pid), "-m", "--"}, argv...)...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("in the holder: %v: %v %s", argv, err, out)
	}
}

func (h netnsHolder) path(name string) string {
	return fmt.Sprintf("/proc/%d/root/run/netns/%s", h.pid, name)
}

func netnsBatch(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "netns add mountcost-%d\n", i)
	}
	return b.String()
}

func pid1Mounts(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/1/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// checkRunsIn starts the unit and checks that its process is in the network namespace at netns.
func checkRunsIn(t *testing.T, sd *Systemd, u Unit, app, netns string) {
	t.Helper()
	if err := sd.Apply(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	defer sd.Stop(t.Context(), app)
	st, err := sd.Status(t.Context(), app)
	if err != nil {
		t.Fatal(err)
	}
	var want, got unix.Stat_t
	if err := unix.Stat(netns, &want); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", st.MainPID), &got); err != nil {
		t.Fatal(err)
	}
	if got.Ino != want.Ino || got.Dev != want.Dev {
		t.Fatalf("%s runs in netns %d, not in the held one (%d)", app, got.Ino, want.Ino)
	}
}

// withoutKeys drops the unit file's lines that set any of keys.
func withoutKeys(unit string, keys ...string) string {
	var kept []string
	for _, line := range strings.Split(unit, "\n") {
		key, _, _ := strings.Cut(line, "=")
		drop := false
		for _, k := range keys {
			drop = drop || key == k
		}
		if !drop {
			kept = append(kept, line)
		}
	}
	return strings.Join(kept, "\n")
}

// underRoot is argv with each absolute path that exists under root (the image's) taken there:
// the same program and files, run without RootDirectory=.
func underRoot(root string, argv []string) []string {
	out := slices.Clone(argv)
	for i, a := range out {
		if _, err := os.Stat(filepath.Join(root, a)); strings.HasPrefix(a, "/") && err == nil {
			out[i] = filepath.Join(root, a)
		}
	}
	return out
}
