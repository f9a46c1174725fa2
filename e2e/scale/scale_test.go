// Package scale_test measures onionpod with many apps on one box (issue 14, "1000 apps on the
// seed's box"): BenchmarkScale brings up a lab of its own (a real systemd as the box's PID 1, a
// simulated IPv6 LAN, real CNI plugins, the built-in DNS server and onionpod's managed tor
// OFFLINE: DisableNetwork 1, so onion services are added but never published), grows it to 10,
// 100 and 1000 apps (busybox httpd pods of one image, each with an onion service and a DNS name),
// and prints at each size: the daemon's and tor's memory, one reconcile pass with nothing to do
// and with one change, a reboot of the box to every app running again, `expose` of one more app
// and its `rm`, `ls` and `status`; then each figure's slope per app. Nothing is asserted but
// bounds a loaded machine never reaches: the figures are for reading (e2e/bench/scale.sh runs it).
package scale_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
	"github.com/onionpod/onionpod/internal/lab/hostcheck"
	"github.com/onionpod/onionpod/network"
)

// Targets at 1000 apps (issue 14).
var targets = map[string]string{
	"daemon RSS": "< 60 MB", "daemon RSS, after use": "< 60 MB", "tor RSS": "< 60 MB", "pass, nothing to do": "< 50 ms",
	"pass, one change": "< 100 ms", "boot to all running": "< 30 s", "expose one more": "<= at 10",
	"ls": "< 100 ms", "status": "< 100 ms",
}

// figure is one measured quantity at one size.
type figure struct {
	name, unit string
	value      float64
}

// sizes are the app counts measured, in order: ONIONPOD_SCALE_SIZES ("10,100,1000" by default).
func sizes(b *testing.B) []int {
	spec := os.Getenv("ONIONPOD_SCALE_SIZES")
	if spec == "" {
		spec = "10,100,1000"
	}
	var out []int
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || (len(out) > 0 && n <= out[len(out)-1]) {
			b.Fatalf("ONIONPOD_SCALE_SIZES=%q: want growing counts, e.g. 10,100,1000", spec)
		}
		out = append(out, n)
	}
	return out
}

// BenchmarkScale: see the package doc.
//
//	ONIONPOD_SCALE_SIZES=10,100,1000 go test -run '^$' -bench '^BenchmarkScale$' -benchtime 1x -timeout 3h ./e2e/scale
func BenchmarkScale(b *testing.B) {
	if testing.Short() {
		b.Skip("-short: the lab and 1000 apps take half an hour")
	}
	counts := sizes(b)
	roomForNeighbours(b, counts[len(counts)-1]+50) // the extra apps of the expose figure, too
	s := newScaleLab(b)
	fmt.Printf("machine: %d cores, %s, %s; tor offline (DisableNetwork 1); probes every 30 s (the lab's config)\n",
		runtime.NumCPU(), memTotal(), runtime.Version())
	results := map[int][]figure{}
	for _, n := range counts {
		b.Run(fmt.Sprintf("apps=%d", n), func(b *testing.B) {
			for b.Loop() {
				results[n] = s.measure(b, n)
			}
			prev := 0
			for _, m := range counts {
				if m < n && results[m] != nil {
					prev = m
				}
			}
			for _, f := range results[n] {
				b.ReportMetric(f.value, f.unit+"-"+strings.ReplaceAll(f.name, " ", "-"))
			}
			for i, f := range results[n] {
				if prev > 0 && i < len(results[prev]) {
					slope := (f.value - results[prev][i].value) / float64(n-prev)
					b.ReportMetric(slope, f.unit+"/app-"+strings.ReplaceAll(f.name, " ", "-"))
				}
			}
		})
	}
	printTable(counts, results)
}

// roomForNeighbours raises this host's neighbour table limits for pods LAN pods, as onionpod
// raises its box's on a real box: the kernel keeps one table for every network namespace, and the
// lab's box is a namespace, whose limits are the host's. Without it, at 1000 apps some pods never
// get their SLAAC address ("neighbor table overflow" in the kernel log). The limits are put back
// at the end, unless the lab stays up.
func roomForNeighbours(b *testing.B, pods int) {
	saved := map[string][]byte{}
	for _, family := range []string{"ipv6", "ipv4"} {
		for _, name := range []string{"gc_thresh2", "gc_thresh3"} {
			path := filepath.Join(network.NeighbourLimitsDir(family), name)
			if v, err := os.ReadFile(path); err == nil {
				saved[path] = v
			}
		}
	}
	if err := network.EnsureNeighbourRoom(pods); err != nil {
		b.Fatal(err)
	}
	var now []string
	for path, was := range saved {
		v, _ := os.ReadFile(path)
		if !bytes.Equal(v, was) {
			now = append(now, fmt.Sprintf("%s %s -> %s", strings.TrimPrefix(path, "/proc/sys/"), bytes.TrimSpace(was), bytes.TrimSpace(v)))
		}
	}
	slices.Sort(now)
	if len(now) > 0 {
		fmt.Printf("host neighbour table limits raised for %d pods: %s\n", pods, strings.Join(now, ", "))
	}
	if os.Getenv("ONIONPOD_SCALE_KEEP") == "1" {
		return
	}
	b.Cleanup(func() {
		for path, was := range saved {
			if err := os.WriteFile(path, was, 0o644); err != nil {
				b.Logf("putting back %s: %v", path, err)
			}
		}
	})
}

// printTable prints each figure at each size and its slope per app between sizes.
func printTable(counts []int, results map[int][]figure) {
	var done []int
	for _, n := range counts {
		if results[n] != nil {
			done = append(done, n)
		}
	}
	if len(done) == 0 {
		return
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "\n%-30s %-10s", "figure (unit)", "target")
	for _, n := range done {
		fmt.Fprintf(&buf, " %11s", fmt.Sprintf("%d apps", n))
	}
	for i := 1; i < len(done); i++ {
		fmt.Fprintf(&buf, " %14s", fmt.Sprintf("/app %d-%d", done[i-1], done[i]))
	}
	buf.WriteString("\n")
	for i, f := range results[done[0]] {
		target := targets[f.name]
		if target == "" {
			target = "-"
		}
		fmt.Fprintf(&buf, "%-30s %-10s", f.name+" ("+f.unit+")", target)
		for _, n := range done {
			fmt.Fprintf(&buf, " %11.2f", results[n][i].value)
		}
		for j := 1; j < len(done); j++ {
			a, z := results[done[j-1]][i].value, results[done[j]][i].value
			fmt.Fprintf(&buf, " %14.4f", (z-a)/float64(done[j]-done[j-1]))
		}
		buf.WriteString("\n")
	}
	os.Stdout.Write(buf.Bytes())
}

// scaleLab is the benchmark's lab and what it knows of its apps.
type scaleLab struct {
	l        *lab.Lab
	image    string         // the demo image archive, where the box sees it
	template map[string]any // the first app's record: the others are copies of it
	apps     []string
	client   *http.Client
	extra    int // apps exposed by the expose figure so far
}

// newScaleLab brings up the benchmark's lab; with ONIONPOD_SCALE_KEEP=1 it stays up after the
// benchmark (its directory is printed), and ONIONPOD_SCALE_LAB=DIR takes such a lab over, with
// the apps it has, instead of bringing one up: how to look at a box of 1000 apps at leisure.
func newScaleLab(b *testing.B) *scaleLab {
	opts := lab.Options{Name: "scale" + randomHex(3), TorNetwork: false, IPv4: false,
		Log: func(format string, args ...any) { fmt.Fprintf(os.Stderr, "scale lab: "+format+"\n", args...) }}
	needs := append(lab.Needs(opts), hostcheck.Busybox)
	if err := hostcheck.Missing(needs...); err != nil {
		b.Skip(err.Error() + " (bash .ci/install-deps installs what is missing)")
	}
	if dir := os.Getenv("ONIONPOD_SCALE_LAB"); dir != "" {
		return openScaleLab(b, dir)
	}
	keep := os.Getenv("ONIONPOD_SCALE_KEEP") == "1"
	dir, err := os.MkdirTemp("", "onionpod-scale-")
	if err != nil {
		b.Fatal(err)
	}
	if keep {
		fmt.Printf("the lab stays up: ONIONPOD_SCALE_LAB=%s takes it over; onionpod lab down --dir %s tears it down\n", filepath.Join(dir, "lab"), filepath.Join(dir, "lab"))
		opts.Persist = true
	} else {
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	// ONIONPOD_SCALE_BINARY measures a build made before (say, of another commit, for a
	// before/after); by default this tree is built.
	bin := os.Getenv("ONIONPOD_SCALE_BINARY")
	if bin == "" {
		bin = filepath.Join(dir, "onionpod")
		build := exec.Command("go", "build", "-o", bin, "../../cmd/onionpod")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			b.Fatalf("building onionpod: %v\n%s", err, out)
		}
	}
	opts.Dir, opts.Binary = filepath.Join(dir, "lab"), bin
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, opts)
	if err != nil {
		b.Fatalf("lab up: %v", err)
	}
	if !keep {
		b.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := l.Down(ctx); err != nil {
				b.Logf("lab down: %v", err)
			}
		})
	}
	s := newClient(l, filepath.Join(dir, "scale.tar"))
	if err := lab.WriteDemoImage(s.image, "scale\n"); err != nil {
		b.Fatal(err)
	}
	return s
}

func newClient(l *lab.Lab, image string) *scaleLab {
	s := &scaleLab{l: l, image: image}
	s.client = &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			// The box's /run, through its PID 1 (a new one after each reboot).
			sock := fmt.Sprintf("/proc/%d/root/run/onionpod/api.sock", s.boxPID())
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	return s
}

// boxPID is the box's PID 1 (as the host sees it).
func (s *scaleLab) boxPID() int {
	if box := s.l.Box(); box != nil {
		return box.PID
	}
	raw, _ := os.ReadFile(filepath.Join(s.l.State().Dir, "box", "pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	return pid
}

// openScaleLab takes over a lab kept up by an earlier run, with its apps.
func openScaleLab(b *testing.B, dir string) *scaleLab {
	l, err := lab.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	s := newClient(l, filepath.Join(filepath.Dir(dir), "scale.tar"))
	var list []struct {
		App map[string]any `json:"app"`
	}
	s.getJSON(b, "/v1/apps", &list)
	for _, a := range list {
		name, _ := a.App["name"].(string)
		if strings.HasPrefix(name, "scale") {
			s.apps = append(s.apps, name)
			if s.template == nil {
				s.template = a.App
			}
		}
	}
	fmt.Printf("took over the lab in %s with %d apps\n", dir, len(s.apps))
	return s
}

// measure grows the box to n apps, then takes every figure.
func (s *scaleLab) measure(b *testing.B, n int) []figure {
	grew := s.grow(b, n)
	fmt.Printf("apps=%d: %d new apps running in %.1f s (load %s)\n", n, grew.added, grew.took.Seconds(), loadavg())
	var figs []figure
	add := func(name, unit string, v float64) {
		figs = append(figs, figure{name, unit, v})
		fmt.Printf("apps=%d: %-26s %10.2f %s (load %s)\n", n, name, v, unit, loadavg())
	}
	// ONIONPOD_SCALE_FIGURES=pass,change,expose,ls,status,boot,memory (the default: all) picks.
	only := os.Getenv("ONIONPOD_SCALE_FIGURES")
	want := func(what string) bool { return only == "" || slices.Contains(strings.Split(only, ","), what) }
	if want("pass") {
		idle := s.passes(b, 7)
		add("pass, nothing to do", "ms", ms(idle.Took))
		fmt.Printf("apps=%d:   phases: desired %.1f ms, observe %.1f ms, apply %.1f ms, status %.1f ms\n",
			n, ms(idle.Desired), ms(idle.Observe), ms(idle.Apply), ms(idle.Status))
	}
	if want("change") {
		change := s.changePasses(b, 3)
		add("pass, one change", "ms", ms(change.Took))
		fmt.Printf("apps=%d:   phases: desired %.1f ms, observe %.1f ms, apply %.1f ms, status %.1f ms\n",
			n, ms(change.Desired), ms(change.Observe), ms(change.Apply), ms(change.Status))
	}
	if want("expose") {
		expose, rm, steps := s.expose(b, 3)
		add("expose one more", "ms", ms(expose))
		add("rm of that one", "ms", ms(rm))
		fmt.Printf("apps=%d:   expose's steps (medians, from its status):", n)
		for _, name := range slices.Sorted(maps.Keys(steps)) {
			fmt.Printf(" %s %.1f ms", name, ms(median(steps[name])))
		}
		fmt.Println()
	}
	if want("ls") {
		ls, lsAPI, lsBytes := s.ls(b, 5)
		add("ls", "ms", ms(ls))
		add("ls, API only", "ms", ms(lsAPI))
		add("ls --json size", "kB", float64(lsBytes)/1000)
	}
	if want("status") {
		st, stAPI := s.status(b, 5)
		add("status", "ms", ms(st))
		add("status, API only", "ms", ms(stAPI))
	}
	if want("memory") && want("boot") {
		// The daemon as the figures above left it (their lists, exposes and removals), before the
		// reboot starts it afresh: the memory figures below are of a daemon just booted.
		add("daemon RSS, after use", "MB", s.memory(b).daemonRSS)
	}
	if want("boot") {
		boot := s.reboot(b)
		add("boot to all running", "s", boot.allRunning.Seconds())
		add("boot to daemon ready", "s", boot.daemon.Seconds())
		add("boot to systemd done", "s", boot.systemd.Seconds())
		fmt.Printf("apps=%d:   last changing pass after boot: %.0f ms (desired %.0f, observe %.0f, apply %.0f, status %.0f)\n", n,
			ms(boot.first.Took), ms(boot.first.Desired), ms(boot.first.Observe), ms(boot.first.Apply), ms(boot.first.Status))
		time.Sleep(10 * time.Second) // settled after the boot
	}
	if want("memory") {
		mem := s.memory(b)
		add("daemon RSS", "MB", mem.daemonRSS)
		add("daemon RSS, its own (anon)", "MB", mem.daemonAnon)
		add("daemon Go heap in use", "MB", mem.heapInuse)
		add("tor RSS", "MB", mem.torRSS)
		add("systemd (PID 1) RSS", "MB", mem.pid1RSS)
		add("daemon CPU while idle", "%", s.idleCPU(b, 20*time.Second))
	}
	return figs
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type grown struct {
	added int
	took  time.Duration
}

// grow adds apps until there are n, and waits until every one runs. The first app is made
// with the CLI (which sends the image); the others are copies of its record, put through the
// API eight at a time.
func (s *scaleLab) grow(b *testing.B, n int) grown {
	start := time.Now()
	var names []string
	for i := len(s.apps); i < n; i++ {
		names = append(names, fmt.Sprintf("scale%04d", i))
	}
	if len(names) == 0 {
		return grown{}
	}
	if s.template == nil {
		first := names[0]
		names = names[1:]
		s.cli(b, "onionpod", "run", first, "--image", s.image, "--port", "80", "--onion")
		var st struct {
			App map[string]any `json:"app"`
		}
		s.getJSON(b, "/v1/apps/"+first, &st)
		s.template = st.App
		s.apps = append(s.apps, first)
	}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	errs := make(chan error, len(names))
	for _, name := range names {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, _, err := s.call(http.MethodPut, "/v1/apps/"+name, s.record(name)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	s.apps = append(s.apps, names...)
	s.waitAllRunning(b, 30*time.Minute)
	return grown{added: len(names), took: time.Since(start)}
}

// record is a new app's record: the template's, renamed.
func (s *scaleLab) record(name string) map[string]any {
	raw, _ := json.Marshal(s.template)
	var rec map[string]any
	json.Unmarshal(raw, &rec)
	rec["name"] = name
	for _, k := range []string{"generation", "created", "updated"} {
		delete(rec, k)
	}
	for _, c := range rec["containers"].([]any) {
		c.(map[string]any)["name"] = name
	}
	return rec
}

// waitAllRunning polls the apps' states until every app runs.
func (s *scaleLab) waitAllRunning(b *testing.B, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for {
		notRunning, sample := s.notRunning()
		if notRunning == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d apps not running after %v, e.g. %s", notRunning, limit, sample)
		}
		time.Sleep(time.Duration(100+len(s.apps)/2) * time.Millisecond)
	}
}

// notRunning counts the apps that do not run (-1 while the daemon does not answer).
func (s *scaleLab) notRunning() (int, string) {
	body, _, err := s.call(http.MethodGet, "/v1/apps", nil)
	if err != nil {
		return -1, err.Error()
	}
	var list []struct {
		App struct {
			Name string `json:"name"`
		} `json:"app"`
		State     string `json:"state"`
		LastError string `json:"last_error"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return -1, err.Error()
	}
	state := map[string]string{}
	sample := ""
	for _, a := range list {
		state[a.App.Name] = a.State
		if a.State != "running" && sample == "" {
			sample = a.App.Name + " " + a.State + ": " + a.LastError
		}
	}
	n := 0
	for _, app := range s.apps {
		if state[app] != "running" {
			n++
		}
	}
	return n, sample
}

// passTimes is the daemon's report of its passes (api.PassTimes, read as a client would).
type passTimes struct {
	Ended   time.Time     `json:"ended"`
	Took    time.Duration `json:"took_ns"`
	Desired time.Duration `json:"desired_ns"`
	Observe time.Duration `json:"observe_ns"`
	Apply   time.Duration `json:"apply_ns"`
	Status  time.Duration `json:"status_ns"`
	Changed int           `json:"changed"`
}

func (p passTimes) started() time.Time { return p.Ended.Add(-p.Took) }

type daemonStatus struct {
	Pass       passTimes `json:"pass"`
	LastChange passTimes `json:"last_change"`
}

// passes asks for a pass n times (nothing changed) and returns the median one.
func (s *scaleLab) passes(b *testing.B, n int) passTimes {
	var out []passTimes
	for range n {
		t0 := time.Now()
		if _, _, err := s.call(http.MethodPost, "/v1/sync", struct{}{}); err != nil {
			b.Fatal(err)
		}
		out = append(out, s.waitPass(b, t0, false))
	}
	return medianPass(out)
}

// waitPass waits for a pass that started after t0, or with change, for a pass that changed
// something and ended after t0 (it may have begun a moment before the change came, and read it).
func (s *scaleLab) waitPass(b *testing.B, t0 time.Time, change bool) passTimes {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		var st daemonStatus
		s.getJSON(b, "/v1/status", &st)
		if !change && st.Pass.started().After(t0) {
			return st.Pass
		}
		if change && st.LastChange.Ended.After(t0) {
			return st.LastChange
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatalf("no pass after %v", t0)
	return passTimes{}
}

// changePasses stops and starts one app n times each and returns the median of those passes.
func (s *scaleLab) changePasses(b *testing.B, n int) passTimes {
	app := s.apps[len(s.apps)/2]
	var out []passTimes
	for range n {
		for _, verb := range []string{"stop", "start"} {
			t0 := time.Now()
			if _, _, err := s.call(http.MethodPost, "/v1/apps/"+app+"/"+verb, struct{}{}); err != nil {
				b.Fatal(err)
			}
			out = append(out, s.waitPass(b, t0, true))
		}
		s.waitAllRunning(b, 2*time.Minute)
	}
	return medianPass(out)
}

func medianPass(ps []passTimes) passTimes {
	slices.SortFunc(ps, func(a, b passTimes) int { return int(a.Took - b.Took) })
	return ps[len(ps)/2]
}

// expose exposes n new apps with the CLI (as a user would: the archive is sent, the command
// returns once the pod runs, its onion service is added and its name published), then removes
// them (`rm --purge-key`: it returns once nothing of the app is left), and returns the median
// times of both, and each expose's reconcile steps as its status shows them right after it (a
// later pass, which had nothing to do for the app, may have cleared them).
func (s *scaleLab) expose(b *testing.B, n int) (expose, rm time.Duration, steps map[string][]time.Duration) {
	var took, removed []time.Duration
	var made []string
	steps = map[string][]time.Duration{}
	for range n {
		app := fmt.Sprintf("extra%03d", s.extra)
		s.extra++
		made = append(made, app)
		took = append(took, s.cli(b, "onionpod", "expose", app, "--image", s.image, "--port", "80", "--no-wait"))
		var st struct {
			Steps []struct {
				Name     string        `json:"name"`
				Duration time.Duration `json:"duration_ns"`
			} `json:"steps"`
		}
		s.getJSON(b, "/v1/apps/"+app, &st)
		for _, step := range st.Steps {
			steps[step.Name] = append(steps[step.Name], step.Duration)
		}
	}
	for _, app := range made {
		removed = append(removed, s.cli(b, "onionpod", "rm", "--purge-key", app))
	}
	return median(took), median(removed), steps
}

// ls times `onionpod ls` and GET /v1/apps n times each; it returns the medians and the size of
// the JSON.
func (s *scaleLab) ls(b *testing.B, n int) (cli, api time.Duration, size int) {
	var c, a []time.Duration
	for range n {
		c = append(c, s.cli(b, "onionpod", "ls"))
		body, took, err := s.call(http.MethodGet, "/v1/apps", nil)
		if err != nil {
			b.Fatal(err)
		}
		a, size = append(a, took), len(body)
	}
	return median(c), median(a), size
}

// status times `onionpod status APP` and GET /v1/apps/APP n times each.
func (s *scaleLab) status(b *testing.B, n int) (cli, api time.Duration) {
	app := s.apps[len(s.apps)/3]
	var c, a []time.Duration
	for range n {
		c = append(c, s.cli(b, "onionpod", "status", app))
		_, took, err := s.call(http.MethodGet, "/v1/apps/"+app, nil)
		if err != nil {
			b.Fatal(err)
		}
		a = append(a, took)
	}
	return median(c), median(a)
}

type booted struct {
	// From the box's systemd starting: the daemon ready (onionpod.service active: it answers),
	// systemd done starting every unit (the pods' included), every app shown running.
	daemon, systemd, allRunning time.Duration
	first                       passTimes // the daemon's last pass that changed anything
}

// reboot reboots the box and measures, from its systemd starting, the daemon ready, systemd's
// start of every unit done, and every app running again.
func (s *scaleLab) reboot(b *testing.B) booted {
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	defer cancel()
	if err := s.l.Reboot(ctx); err != nil {
		b.Fatal(err)
	}
	r := booted{systemd: s.sinceBoxBoot(b), daemon: s.activeAfterBoot(b, "onionpod.service")}
	s.waitAllRunning(b, 20*time.Minute)
	r.allRunning = s.sinceBoxBoot(b)
	var st daemonStatus
	s.getJSON(b, "/v1/status", &st)
	r.first = st.LastChange
	return r
}

// activeAfterBoot is lab.ActiveAfterBoot, failing the benchmark on an error.
func (s *scaleLab) activeAfterBoot(b *testing.B, unit string) time.Duration {
	d, err := s.l.ActiveAfterBoot(b.Context(), unit)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// sinceBoxBoot is lab.SinceBoot, failing the benchmark on an error.
func (s *scaleLab) sinceBoxBoot(b *testing.B) time.Duration {
	d, err := s.l.SinceBoot(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	return d
}

type memory struct {
	daemonRSS, heapInuse, torRSS, pid1RSS float64 // MB
	// daemonAnon is the daemon's anonymous resident memory: VmRSS less the pages of its binary
	// and libraries (file-backed, shared with the page cache and every other onionpod process).
	daemonAnon float64
}

// memory reads the resident memory of the daemon, tor and the box's systemd, and the daemon's
// Go heap in use.
func (s *scaleLab) memory(b *testing.B) memory {
	var m memory
	m.daemonRSS = s.rss(b, "$(systemctl show -P MainPID onionpod.service)")
	m.daemonAnon = s.statusMB(b, "$(systemctl show -P MainPID onionpod.service)", "RssAnon")
	m.torRSS = s.rss(b, "$(systemctl show -P MainPID onionpod-tor.service)")
	m.pid1RSS = s.rss(b, "1")
	body, _, err := s.call(http.MethodGet, "/debug/pprof/heap?debug=1", nil)
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "# HeapInuse = "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			m.heapInuse = n / 1e6
		}
	}
	return m
}

// rss is VmRSS of the process pid (a shell word) in the box, in MB.
func (s *scaleLab) rss(b *testing.B, pid string) float64 { return s.statusMB(b, pid, "VmRSS") }

// statusMB is the field of /proc/PID/status (a size in kB) of the process pid in the box, in MB.
func (s *scaleLab) statusMB(b *testing.B, pid, field string) float64 {
	out := s.boxOutput(b, "sh", "-c", "grep '^"+field+":' /proc/"+pid+"/status")
	f := strings.Fields(out)
	if len(f) < 2 {
		b.Fatalf("%s of %s: %q", field, pid, out)
	}
	kb, _ := strconv.ParseFloat(f[1], 64)
	return kb / 1000
}

// idleCPU is the daemon's CPU use over d with nothing asked of it, in percent of one core.
func (s *scaleLab) idleCPU(b *testing.B, d time.Duration) float64 {
	ticks := func() float64 {
		out := s.boxOutput(b, "sh", "-c", "cut -d' ' -f14,15 /proc/$(systemctl show -P MainPID onionpod.service)/stat")
		var u, k float64
		fmt.Sscan(out, &u, &k)
		return u + k
	}
	t0, start := ticks(), time.Now()
	time.Sleep(d)
	return (ticks() - t0) / 100 / time.Since(start).Seconds() * 100 // USER_HZ = 100
}

// cli runs argv in the box, fails the benchmark on error, and returns how long it took.
func (s *scaleLab) cli(b *testing.B, argv ...string) time.Duration {
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := s.l.Command(ctx, lab.InBox, argv...).CombinedOutput()
	took := time.Since(start)
	if err != nil {
		b.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return took
}

func (s *scaleLab) boxOutput(b *testing.B, argv ...string) string {
	out, err := s.l.Command(b.Context(), lab.InBox, argv...).Output()
	if err != nil {
		b.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
	return string(out)
}

// call sends one request to the daemon's API and returns the body and how long it took.
func (s *scaleLab) call(method, path string, body any) ([]byte, time.Duration, error) {
	var r io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return nil, 0, err
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, "http://onionpod"+path, r)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	took := time.Since(start)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, out)
	}
	return out, took, err
}

func (s *scaleLab) getJSON(b *testing.B, path string, v any) {
	body, _, err := s.call(http.MethodGet, path, nil)
	if err == nil {
		err = json.Unmarshal(body, v)
	}
	if err != nil {
		b.Fatal(err)
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return fmt.Sprintf("%.0f GB", kb/1e6)
		}
	}
	return "? GB"
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
