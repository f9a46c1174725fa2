package network

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/onionpod/onionpod/network/nettest"
)

// BenchmarkMissingDHCPDaemon measures how fast Attach of an IPv4 app reports that the CNI DHCP
// daemon is not running (target: at once, under 2 s, not after a plugin's timeout), side by side
// with its alternative, the attach that works: the same app attached IPv6-only (and detached).
// Reported per attach, medians: missing-ms, attach-ms, x-attach (missing/attach) and x-target
// (missing/2 s: under 1 meets the target).
//
//	go test -run '^$' -bench MissingDHCPDaemon -benchtime 10x ./network/
func BenchmarkMissingDHCPDaemon(b *testing.B) {
	if why := nettest.Missing(false); why != "" {
		b.Skip(why)
	}
	lan := nettest.New(b, nettest.Options{})
	m, err := New(Config{
		Uplink: lan.Uplink(), ULAPrefix: randomULAPrefix(), StateDir: b.TempDir(), NetnsDir: b.TempDir(),
		BoxNetns: lan.BoxNetns(), DHCPSocket: filepath.Join(b.TempDir(), "dhcp.sock"),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	waitBoxPrefix(b, m, lan.Uplink())
	ctx := context.Background()
	var missing, attach []float64
	for b.Loop() {
		t0 := time.Now()
		if _, err := m.Attach(ctx, Attachment{App: "blog", IPv4: true}); !errors.Is(err, ErrDHCPDaemon) {
			b.Fatalf("Attach with no DHCP daemon: %v, want ErrDHCPDaemon", err)
		}
		missing = append(missing, ms(time.Since(t0)))
		if err := m.Detach(ctx, "blog"); err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		if _, err := m.Attach(ctx, Attachment{App: "blog"}); err != nil {
			b.Fatal(err)
		}
		attach = append(attach, ms(time.Since(t0)))
		if err := m.Detach(ctx, "blog"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(median(missing), "missing-ms")
	b.ReportMetric(median(attach), "attach-ms")
	b.ReportMetric(median(missing)/median(attach), "x-attach")
	b.ReportMetric(median(missing)/2000, "x-target")
}
