package onion

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cretz/bine/control"
	"github.com/onionpod/onionpod/onion/oniontest"
)

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkReAdd100AfterRestart restarts tor under a Manager holding 100 services and
// measures, side by side in each iteration:
//   - readd-ms: from the control port accepting the Manager's new connection to all 100
//     services added (authenticate, SETEVENTS, GETINFO onions/detached, 100 ADD_ONION);
//   - restart-to-added-ms: from the restarted tor answering to all added (adds the
//     reconnect backoff);
//   - floor-ms: 100 plain ADD_ONION on an open bare bine control connection, one after
//     another;
//   - fresh-floor-ms: the same right after a restart of a second tor, from dialing its
//     control port (bine authenticate included) to the 100th reply: what readd-ms does
//     minus the Manager's work;
//
// and reports readd/fresh-floor and readd/floor. Run: go test -run '^$' -bench ReAdd100 -benchtime 10x ./onion/
func BenchmarkReAdd100AfterRestart(b *testing.B) {
	tor := oniontest.NewOffline(b)
	m := startManager(b, tor, true)
	svcs := genServices(b, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := m.Set(ctx, svcs); err != nil {
		b.Fatal(err)
	}
	floorSvcs := genServices(b, 100)
	floorReqs := make([]*control.AddOnionRequest, len(floorSvcs))
	for i, s := range floorSvcs {
		key, err := control.ED25519KeyFromBlob(base64.StdEncoding.EncodeToString(s.Key.secret[:]))
		if err != nil {
			b.Fatal(err)
		}
		floorReqs[i] = &control.AddOnionRequest{Key: key, Flags: []string{"Detach"},
			Ports: []*control.KeyVal{control.NewKeyVal("80", s.Ports[0].Target), control.NewKeyVal("443", s.Ports[1].Target)}}
	}
	bare := oniontest.NewOffline(b)
	var readd, restartToAdded, floor, freshFloor []time.Duration
	for b.Loop() {
		before := m.Conn().Reconnects
		if err := tor.Restart(ctx); err != nil {
			b.Fatal(err)
		}
		up := time.Now()
		for {
			c := m.Conn()
			if c.Reconnects > before && allAdded(m, len(svcs)) {
				readd = append(readd, c.LastSync)
				restartToAdded = append(restartToAdded, time.Since(up))
				break
			}
			select {
			case <-m.Changes():
			case <-time.After(5 * time.Millisecond):
			case <-ctx.Done():
				b.Fatal("services not re-added")
			}
		}
		c, err := tor.Control(ctx)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		for _, r := range floorReqs {
			if _, err := c.AddOnion(r); err != nil {
				b.Fatal(err)
			}
		}
		floor = append(floor, time.Since(t0))
		for _, s := range floorSvcs {
			c.DelOnion(s.Key.ServiceID())
		}
		c.Close()

		if err := bare.Restart(ctx); err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		c, err = bare.Control(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range floorReqs {
			if _, err := c.AddOnion(r); err != nil {
				b.Fatal(err)
			}
		}
		freshFloor = append(freshFloor, time.Since(t0))
		c.Close()
	}
	b.ReportMetric(ms(median(readd)), "readd-ms")
	b.ReportMetric(ms(median(restartToAdded)), "restart-to-added-ms")
	b.ReportMetric(ms(median(floor)), "floor-ms")
	b.ReportMetric(ms(median(freshFloor)), "fresh-floor-ms")
	b.ReportMetric(float64(median(readd))/float64(median(floor)), "readd/floor")
	b.ReportMetric(float64(median(readd))/float64(median(freshFloor)), "readd/fresh-floor")
}

func allAdded(m *Manager, n int) bool {
	st := m.Status()
	if len(st) != n {
		return false
	}
	for _, s := range st {
		if !s.Added {
			return false
		}
	}
	return true
}

// BenchmarkManager1000Services measures the Manager's heap with 1000 services applied to an
// offline tor (keys are the caller's and not counted), its goroutines, the time to apply
// them, and tor's RSS.
func BenchmarkManager1000Services(b *testing.B) {
	const n = 1000
	tor := oniontest.NewOffline(b)
	svcs := genServices(b, n)
	var perService, goroutines, applyMs float64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		m := NewManager(ControlConfig{Network: "unix", Address: tor.ControlSocket(), Exclusive: true})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		t0 := time.Now()
		if err := m.Set(ctx, svcs); err != nil {
			b.Fatal(err)
		}
		applyMs = ms(time.Since(t0))
		runtime.GC()
		runtime.ReadMemStats(&after)
		perService = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
		goroutines = float64(runtime.NumGoroutine() - g0)
		if err := m.Set(ctx, nil); err != nil {
			b.Fatal(err)
		}
		cancel()
		<-done
	}
	b.ReportMetric(perService, "heap-B/service")
	b.ReportMetric(goroutines, "goroutines")
	b.ReportMetric(applyMs, "apply1000-ms")
	b.ReportMetric(torRSSMB(tor), "tor-rss-MB-after")
}

func torRSSMB(tor *oniontest.Tor) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tor.PID()))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return float64(kb) / 1024
		}
	}
	return 0
}
