package probe

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onionpod/onionpod/dns"
)

// TestMonitorSchedules: apps present at the start are probed once each over the first interval;
// an app that appears later is probed soon after; history is bounded; a removed app's history
// is forgotten. Real HTTP on loopback, names at the real built-in DNS server.
func TestMonitorSchedules(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	addr := serve(t, 200, "ok")
	ap := netip.MustParseAddrPort(addr)
	zone, err := dns.NewServer(dns.ServerConfig{Zone: "box.example", Listen: []string{"127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := zone.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer zone.Close()
	var recs []dns.Record
	for _, n := range []string{"a", "b", "c"} {
		recs = append(recs, dns.Record{Name: n + ".box.example.", Addr: ap.Addr()})
	}
	if err := zone.Set(ctx, recs); err != nil {
		t.Fatal(err)
	}
	target := func(app string) Target {
		return Target{App: app, Name: app + ".box.example.", IPv4: true, Port: ap.Port()}
	}
	var mu sync.Mutex
	targets := []Target{target("a"), target("b")}
	var results atomic.Int32
	m := &Monitor{
		Prober:   &Prober{Resolver: ZoneResolver{Server: zone.Addrs()[0].String()}, LAN: &net.Dialer{}},
		Interval: 4 * time.Second, Refresh: 100 * time.Millisecond, Keep: 3,
		Targets: func(context.Context) ([]Target, error) {
			mu.Lock()
			defer mu.Unlock()
			return append([]Target(nil), targets...), nil
		},
		OnResult: func(string, Result) { results.Add(1) },
	}
	done := make(chan struct{})
	mctx, stop := context.WithCancel(ctx)
	go func() { m.Run(mctx); close(done) }()
	wait := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("%s: never", what)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	wait("a and b probed", func() bool { return len(m.Latest("a")) == 1 && len(m.Latest("b")) == 1 })
	if r := m.Latest("a")[0]; !r.OK || r.Status != 200 || r.Addr != "127.0.0.1:"+strconv.Itoa(int(ap.Port())) {
		t.Errorf("a: %+v", r)
	}
	mu.Lock()
	targets = append(targets, target("c"))
	mu.Unlock()
	added := time.Now()
	wait("c probed", func() bool { return len(m.Latest("c")) == 1 })
	t.Logf("c probed %v after it appeared (interval 4 s)", time.Since(added))
	wait("a probed four times", func() bool { return results.Load() >= 9 })
	if h := m.History("a")[PathIPv4]; len(h) > 3 {
		t.Errorf("history of a holds %d results, want at most 3", len(h))
	}
	mu.Lock()
	targets = targets[1:]
	mu.Unlock()
	wait("a forgotten", func() bool { return len(m.History("a")) == 0 })
	stop()
	<-done
}
