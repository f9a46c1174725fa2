package network_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/network/nettest"
)

// TestWatchHostIPv4: the box's own IPv4 address on the uplink is reported at once, and again
// within moments when the LAN's DHCP server (here: the test, as a DHCP client would) changes it.
func TestWatchHostIPv4(t *testing.T) {
	e := newEnv(t, nettest.Options{}, func(c *network.Config) { c.Uplink = "" })
	e.cfg.Uplink = e.lan.Uplink()
	m, err := network.New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := m.WatchHostIPv4(ctx)
	expect := func(want string) {
		t.Helper()
		start := time.Now()
		for {
			select {
			case got := <-ch:
				if want == "" && !got.IsValid() || got.String() == want {
					t.Logf("%s reported after %v", want, time.Since(start).Round(time.Millisecond))
					return
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%q not reported", want)
			}
		}
	}
	expect("")
	ip := func(args ...string) {
		t.Helper()
		if out, err := nettest.Exec(ctx, e.lan.BoxNetns(), append([]string{"ip"}, args...)...); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	ip("addr", "add", "192.0.2.2/24", "dev", e.lan.Uplink())
	ip("addr", "add", "169.254.7.7/16", "dev", e.lan.Uplink())
	expect("192.0.2.2")
	ip("addr", "del", "192.0.2.2/24", "dev", e.lan.Uplink()) // the lease changed
	expect("")
	ip("addr", "add", "192.0.2.3/24", "dev", e.lan.Uplink())
	expect("192.0.2.3")
	if got, _ := m.HostIPv4(); got != netip.MustParseAddr("192.0.2.3") {
		t.Errorf("HostIPv4 = %v", got)
	}
}
