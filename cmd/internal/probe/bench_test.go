package probe

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/onionpod/onionpod/onion"
	"github.com/onionpod/onionpod/onion/oniontest"
)

// cpuSelf is this process's CPU time (user + system).
func cpuSelf() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuOf is a process's CPU time from /proc/PID/stat (utime + stime, in clock ticks of 10 ms).
func cpuOf(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// BenchmarkProbeRound100 probes 100 apps' .onion once each, as one round of the Monitor (8 at
// a time) through a tor from onionpod's managed torrc on the private Tor network (the tor that
// also hosts the 100 services), and reports the CPU this process (the daemon's part) and that
// tor (client and service sides of every circuit) spent, and what it comes to at the default
// interval (5 min): the target is under 1% of one core for the daemon. Run it with
// -benchtime 1x (each call builds its own tor and 100 services).
func BenchmarkProbeRound100(b *testing.B) {
	network := torNet.Get(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := oniontest.TempDir(b)
	socks := freePort(b)
	opts := onion.TorrcOptions{DataDir: filepath.Join(dir, "data"), ControlSocket: filepath.Join(dir, "ctl", "control.sock"),
		SocksPort: socks, Extra: network.JoinTorrc()}
	if err := onion.PrepareManagedDirs(opts); err != nil {
		b.Fatal(err)
	}
	torrc, _ := onion.ManagedTorrc(opts)
	host, err := oniontest.Start(ctx, oniontest.Options{Dir: dir, Torrc: torrc, ControlSocket: opts.ControlSocket})
	if err != nil {
		b.Fatal(err)
	}
	defer host.Close()
	m := onion.NewManager(onion.ManagedControl(opts))
	mctx, mcancel := context.WithCancel(ctx)
	defer mcancel()
	go m.Run(mctx)
	target := serve(b, 200, "ok")
	var services []onion.Service
	var targets []Target
	// Batches of ten: a hundred descriptors at once stall publication (FIELD-NOTES).
	for i := range 100 {
		k, err := onion.GenerateKey(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		app := fmt.Sprintf("app%03d", i)
		services = append(services, onion.Service{App: app, Key: k, Ports: []onion.Port{{Virtual: 80, Target: target}}})
		targets = append(targets, Target{App: app, Onion: k.Address()})
		if len(services)%10 == 0 {
			if err := m.Set(ctx, services); err != nil {
				b.Fatal(err)
			}
			time.Sleep(2 * time.Second)
		}
	}
	if err := network.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	for {
		n := 0
		for _, s := range m.Status() {
			if s.Uploaded {
				n++
			}
		}
		if n == 100 {
			break
		}
		select {
		case <-ctx.Done():
			b.Fatalf("%d of 100 descriptors uploaded", n)
		case <-time.After(time.Second):
		}
	}
	p := &Prober{Socks: "127.0.0.1:" + strconv.Itoa(int(socks))}
	// A first round warms tor up (descriptors fetched, circuits built), as a daemon's rounds after
	// the first find them.
	parallel := 8
	if v, err := strconv.Atoi(os.Getenv("PROBE_PARALLEL")); err == nil && v > 0 {
		parallel = v
	}
	round := func() (ok int, took time.Duration) {
		mon := &Monitor{Prober: p}
		start := time.Now()
		sem := make(chan struct{}, parallel)
		results := make(chan Result, len(targets))
		for _, t := range targets {
			sem <- struct{}{}
			go func() { defer func() { <-sem }(); results <- mon.ProbeNow(ctx, t)[0] }()
		}
		hops := map[string]int{}
		for range targets {
			if r := <-results; r.OK {
				ok++
			} else {
				hops[r.Hop]++
			}
		}
		if len(hops) > 0 {
			b.Logf("failures by hop: %v", hops)
		}
		return ok, time.Since(start)
	}
	// Warm-up rounds until every probe succeeds (at most five): a young private network's HSDirs
	// answer "descriptor not found" for a while, which costs tor retries a settled network does
	// not have. Those rounds are reported too.
	for i := range 5 {
		self0, tor0 := cpuSelf(), cpuOf(host.PID())
		ok, took := round()
		b.Logf("warm-up round %d: %d/100 ok in %v; daemon %v CPU, tor %v CPU", i+1, ok, took, cpuSelf()-self0, cpuOf(host.PID())-tor0)
		if ok == 100 {
			break
		}
		time.Sleep(10 * time.Second)
	}
	var ok int
	var took time.Duration
	b.ResetTimer()
	for range b.N {
		self0, tor0 := cpuSelf(), cpuOf(host.PID())
		ok, took = round()
		self, tor := cpuSelf()-self0, cpuOf(host.PID())-tor0
		b.ReportMetric(float64(self.Milliseconds()), "daemon_cpu_ms/round")
		b.ReportMetric(float64(tor.Milliseconds()), "tor_cpu_ms/round")
		b.ReportMetric(100*self.Seconds()/DefaultInterval.Seconds(), "daemon_%core@5m")
		b.ReportMetric(100*tor.Seconds()/DefaultInterval.Seconds(), "tor_%core@5m")
		b.ReportMetric(float64(ok), "ok/100")
		b.Logf("round: %d/100 ok in %v; daemon %v CPU, tor %v CPU", ok, took, self, tor)
	}
}
