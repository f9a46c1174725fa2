package pods

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/onionpod/onionpod/pods/podstest"
)

// The pods-versus-podman benchmark (e2e/bench/pods.sh runs it):
//
//	go test -run '^$' -bench BenchmarkPodsVsPodman -benchtime 20x ./pods/
//
// Each iteration starts and stops one podman container and one pod (with the netns present, then
// again with a network unit creating it), so both sides share the machine's load. It reports
// medians and the ratios pods/podman, plus memory per running pod (20 of each).

const (
	envBenchArchive = "PODS_BENCH_ARCHIVE"
	envBenchOut     = "PODS_BENCH_OUT"
	envBenchCount   = "PODS_BENCH_COUNT"
	envBenchRound   = "PODS_BENCH_ROUND"
	benchMemPods    = 20
)

type benchResult struct {
	StartMs    []float64 `json:"start_ms"`     // Apply of the pod unit (netns present) to active(running)
	StartNetMs []float64 `json:"start_net_ms"` // the same with a network unit creating the netns
	StopMs     []float64 `json:"stop_ms"`
	// Memory stage.
	PID1RSSPerPodKB float64 `json:"pid1_rss_per_pod_kb"`
	PID1PSSPerPodKB float64 `json:"pid1_pss_per_pod_kb"`
	ExtraProcs      int     `json:"extra_procs"` // processes in pod cgroups besides the apps
	Pods            int     `json:"pods"`
}

func BenchmarkPodsVsPodman(b *testing.B) {
	if _, err := exec.LookPath("podman"); err != nil {
		b.Skip("podman needed for the comparison")
	}
	tag := "localhost/onionpod-bench-" + randHex(4) + ":1"
	box, work, archive := benchBox(b, tag)
	pm := newPodman(b, archive, tag)

	env := []string{envStore + "=" + filepath.Join(work, "store"), envBenchArchive + "=" + archive}
	run := func(test string, round, count int) benchResult {
		out := filepath.Join(work, fmt.Sprintf("%s-%d.json", test, round))
		e := append(env, envBenchOut+"="+out, envBenchCount+"="+strconv.Itoa(count), envBenchRound+"="+strconv.Itoa(round))
		var log strings.Builder
		if err := box.RunTest(context.Background(), test, &log, e...); err != nil {
			b.Fatalf("%v\n%s", err, log.String())
		}
		var r benchResult
		data, err := os.ReadFile(out)
		if err != nil {
			b.Fatal(err)
		}
		if err := json.Unmarshal(data, &r); err != nil {
			b.Fatal(err)
		}
		return r
	}

	var pods benchResult
	var pmStart, pmStop []float64
	round := 0
	for b.Loop() {
		s, t := pm.startStop(b, 1)
		pmStart, pmStop = append(pmStart, s...), append(pmStop, t...)
		r := run("TestInsideBenchStartStop", round, 1)
		pods.StartMs = append(pods.StartMs, r.StartMs...)
		pods.StartNetMs = append(pods.StartNetMs, r.StartNetMs...)
		pods.StopMs = append(pods.StopMs, r.StopMs...)
		round++
	}
	mem := run("TestInsideBenchMemory", 0, benchMemPods)
	pmPSS, pmRSS := pm.memory(b, benchMemPods)

	ps, pn, pt := median(pods.StartMs), median(pods.StartNetMs), median(pods.StopMs)
	ms, mt := median(pmStart), median(pmStop)
	b.ReportMetric(ps, "pod-start-ms")
	b.ReportMetric(pn, "pod-start-with-netns-ms")
	b.ReportMetric(ms, "podman-run-ms")
	b.ReportMetric(ps/ms, "start-ratio")
	b.ReportMetric(pt, "pod-stop-ms")
	b.ReportMetric(mt, "podman-stop-ms")
	b.ReportMetric(pt/mt, "stop-ratio")
	b.ReportMetric(mem.PID1PSSPerPodKB, "pid1-pss-kB/pod")
	b.ReportMetric(pmPSS, "conmon-pss-kB/ctr")
	fmt.Printf("\npods vs podman (%s), median of %d each, interleaved\n", pm.desc, round)
	fmt.Printf("  start to running  pods %7.1f ms   podman run -d %7.1f ms   ratio %.3f (target <= 0.25)\n", ps, ms, ps/ms)
	fmt.Printf("  start, netns made by the network unit  %7.1f ms   ratio %.3f\n", pn, pn/ms)
	fmt.Printf("  stop              pods %7.1f ms   podman stop   %7.1f ms   ratio %.3f (target: pods < 25 ms)\n", pt, mt, pt/mt)
	fmt.Printf("  memory per pod    systemd PID 1 %+.0f kB RSS / %+.0f kB PSS, %d extra processes in %d pods\n",
		mem.PID1RSSPerPodKB, mem.PID1PSSPerPodKB, mem.ExtraProcs, mem.Pods)
	fmt.Printf("                    podman: conmon %.0f kB PSS / %.0f kB RSS per container (target: pods < 100 kB)\n\n", pmPSS, pmRSS)
}

// benchBox boots the box a benchmark's inside phase runs in, with the busybox image written as a
// docker archive under tag in the benchmark's work directory.
func benchBox(b *testing.B, tag string) (box *podstest.System, work, archive string) {
	b.Helper()
	if podstest.Inside() {
		b.Skip("runs on the host")
	}
	if err := podstest.Available(); err != nil {
		b.Skip(err)
	}
	work = b.TempDir()
	archive = filepath.Join(work, "image.tar")
	writeDockerArchive(b, archive, tag, busyboxImage(b))
	return podstest.New(b, podstest.Options{}), work, archive
}

func TestInsideBenchStartStop(t *testing.T) {
	store, sd, img, count, round := benchInside(t)
	ctx := t.Context()
	argv, err := img.Command(nil)
	if err != nil {
		t.Fatal(err)
	}
	var res benchResult
	for i := range count {
		for _, withNet := range []bool{false, true} {
			app := fmt.Sprintf("bench-%d-%d", round, i)
			netns := "onionpod-" + app
			spec := Spec{App: app, Root: img.Root, Netns: "/run/netns/" + netns, Command: argv,
				Env: img.Config.Env, WorkingDir: img.Config.WorkingDir}
			if withNet {
				app += "-n"
				spec.App = app
				spec.NetUp = []string{"/usr/sbin/ip", "netns", "add", netns}
				spec.NetDown = []string{"/usr/sbin/ip", "netns", "del", netns}
			} else if out, err := exec.Command("ip", "netns", "add", netns).CombinedOutput(); err != nil {
				t.Fatalf("ip netns add: %v %s", err, out)
			}
			units, err := PodUnits(spec)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := sd.Apply(ctx, units...); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			if st, err := sd.Status(ctx, app); err != nil || st.ActiveState != "active" || st.SubState != "running" {
				t.Fatalf("%s after Apply: %+v %v", app, st, err)
			}
			start = time.Now()
			if err := sd.Stop(ctx, app); err != nil {
				t.Fatal(err)
			}
			stopped := time.Since(start)
			if withNet {
				res.StartNetMs = append(res.StartNetMs, ms(took))
			} else {
				res.StartMs = append(res.StartMs, ms(took))
				res.StopMs = append(res.StopMs, ms(stopped))
			}
			if err := sd.Remove(ctx, app); err != nil {
				t.Fatal(err)
			}
			_ = exec.Command("ip", "netns", "del", netns).Run()
		}
	}
	_ = store
	writeBench(t, res)
}

func TestInsideBenchMemory(t *testing.T) {
	_, sd, img, count, _ := benchInside(t)
	ctx := t.Context()
	argv, err := img.Command(nil)
	if err != nil {
		t.Fatal(err)
	}
	// Warm up PID 1 with one pod started and removed, then measure.
	apps := []string{"mem-warmup"}
	for i := range count {
		apps = append(apps, fmt.Sprintf("mem-%d", i))
	}
	var rss0, pss0 float64
	for i, app := range apps {
		if i == 1 {
			rss0, pss0 = smapsRollup(t, 1)
		}
		if out, err := exec.Command("ip", "netns", "add", "onionpod-"+app).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v %s", err, out)
		}
		units, err := PodUnits(Spec{App: app, Root: img.Root, Netns: "/run/netns/onionpod-" + app, Command: argv})
		if err != nil {
			t.Fatal(err)
		}
		if err := sd.Apply(ctx, units...); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if err := sd.Remove(ctx, app); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(200 * time.Millisecond)
	rss1, pss1 := smapsRollup(t, 1)
	res := benchResult{Pods: count, PID1RSSPerPodKB: (rss1 - rss0) / float64(count), PID1PSSPerPodKB: (pss1 - pss0) / float64(count)}
	for _, app := range apps[1:] {
		st, err := sd.Status(ctx, app)
		if err != nil || st.MainPID == 0 {
			t.Fatalf("%s: %+v %v", app, st, err)
		}
		procs, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/system.slice", PodUnitName(app), "cgroup.procs"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range strings.Fields(string(procs)) {
			if p != strconv.Itoa(st.MainPID) {
				res.ExtraProcs++
			}
		}
	}
	for _, app := range apps[1:] {
		if err := sd.Remove(ctx, app); err != nil {
			t.Error(err)
		}
		_ = exec.Command("ip", "netns", "del", "onionpod-"+app).Run()
	}
	writeBench(t, res)
}

func benchInside(t *testing.T) (*ImageStore, *Systemd, *Image, int, int) {
	t.Helper()
	store, sd, img := benchImage(t, "BenchmarkPodsVsPodman")
	count, _ := strconv.Atoi(os.Getenv(envBenchCount))
	round, _ := strconv.Atoi(os.Getenv(envBenchRound))
	return store, sd, img, count, round
}

// benchImage is the inside phase of the benchmark named from: its box's systemd and the image
// the benchmark wrote (envBenchArchive), loaded into the store. It skips outside a box, or when
// the benchmark did not start it (envBenchOut unset).
func benchImage(t *testing.T, from string) (*ImageStore, *Systemd, *Image) {
	t.Helper()
	if !podstest.Inside() || os.Getenv(envBenchOut) == "" {
		t.Skip("benchmark phase: runs inside a podstest box, from " + from)
	}
	store, sd := inside(t)
	img, err := store.LoadArchive(t.Context(), os.Getenv(envBenchArchive), nil)
	if err != nil {
		t.Fatal(err)
	}
	return store, sd, img
}

// writeBench hands the inside phase's result r to the benchmark, as JSON in envBenchOut.
func writeBench(t *testing.T, r any) {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(os.Getenv(envBenchOut), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// smapsRollup returns a process's RSS and PSS in kB.
func smapsRollup(t testing.TB, pid int) (rss, pss float64) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "Rss:":
			rss = v
		case "Pss:":
			pss = v
		}
	}
	return rss, pss
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// podman runs the same image with podman on the host, for comparison.
type podman struct {
	tag   string
	flags []string // global flags
	run   []string // extra `podman run` flags that this host needs
	desc  string
}

func newPodman(tb testing.TB, archive, tag string) *podman {
	tb.Helper()
	p := &podman{tag: tag, flags: []string{"--cgroup-manager=cgroupfs", "--runtime=runc"}}
	if out, err := exec.Command("podman", append(p.flags, "load", "-q", "-i", archive)...).CombinedOutput(); err != nil {
		tb.Skipf("podman load: %v %s", err, out)
	}
	tb.Cleanup(func() { _ = exec.Command("podman", append(p.flags, "rmi", "-f", tag)...).Run() })
	// Root without CAP_SYS_RESOURCE cannot take podman's default rlimits: try, then fall back to
	// this process's own limits.
	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	candidates := [][]string{nil, {"--ulimit", fmt.Sprintf("nofile=%d:%d", lim.Cur, lim.Max), "--ulimit", "nproc=32768:32768"}}
	var tried []string
	for _, extra := range candidates {
		name := "onionpod-bench-probe-" + randHex(4)
		args := append(append(append(append([]string{}, p.flags...), "run", "-d", "--network", "none", "--name", name), extra...), tag)
		out, err := exec.Command("podman", args...).CombinedOutput()
		_ = exec.Command("podman", append(p.flags, "rm", "-f", "-t", "0", name)...).Run()
		if err == nil {
			p.run = extra
			p.desc = "podman " + strings.Join(append(append([]string{}, p.flags...), extra...), " ") + ", --network none"
			return p
		}
		tried = append(tried, fmt.Sprintf("podman run %v: %v %s", extra, err, out))
	}
	tb.Skipf("podman cannot run containers here:\n%s", strings.Join(tried, "\n"))
	return nil
}

func (p *podman) cmd(args ...string) *exec.Cmd {
	return exec.Command("podman", append(append([]string{}, p.flags...), args...)...)
}

// startStop runs count containers one after the other: `podman run -d` (returns once the
// container runs), then `podman stop -t 0` (busybox httpd as PID 1 ignores SIGTERM: without -t 0
// podman waits 10 s; -t 0 is podman's fastest stop).
func (p *podman) startStop(tb testing.TB, count int) (starts, stops []float64) {
	tb.Helper()
	for range count {
		name := "onionpod-bench-" + randHex(4)
		args := append(append([]string{"run", "-d", "--network", "none", "--name", name}, p.run...), p.tag)
		start := time.Now()
		if out, err := p.cmd(args...).CombinedOutput(); err != nil {
			tb.Fatalf("podman run: %v %s", err, out)
		}
		starts = append(starts, ms(time.Since(start)))
		start = time.Now()
		if out, err := p.cmd("stop", "-t", "0", name).CombinedOutput(); err != nil {
			tb.Fatalf("podman stop: %v %s", err, out)
		}
		stops = append(stops, ms(time.Since(start)))
		_ = p.cmd("rm", "-f", name).Run()
	}
	return starts, stops
}

// memory runs count containers and returns conmon's mean PSS and RSS per container, in kB.
func (p *podman) memory(tb testing.TB, count int) (pss, rss float64) {
	tb.Helper()
	var names []string
	defer func() {
		for _, n := range names {
			_ = p.cmd("rm", "-f", "-t", "0", n).Run()
		}
	}()
	for range count {
		name := "onionpod-bench-mem-" + randHex(4)
		args := append(append([]string{"run", "-d", "--network", "none", "--name", name}, p.run...), p.tag)
		if out, err := p.cmd(args...).CombinedOutput(); err != nil {
			tb.Fatalf("podman run: %v %s", err, out)
		}
		names = append(names, name)
	}
	var n int
	for _, name := range names {
		out, err := p.cmd("inspect", "--format", "{{.State.ConmonPid}}", name).Output()
		if err != nil {
			tb.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil || pid == 0 {
			tb.Fatalf("conmon pid of %s: %q", name, out)
		}
		r, s := smapsRollup(tb, pid)
		rss, pss, n = rss+r, pss+s, n+1
	}
	return pss / float64(n), rss / float64(n)
}
