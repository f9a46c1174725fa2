package network_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/network/nettest"
)

// The watch reports the pod's LAN address once DAD is done, then, when the router advertises a
// new prefix and withdraws the old one, the address in the new prefix with the old one deprecated.
func TestWatchReportsPrefixChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nettest.Options{})
	e.waitForBox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	changes := e.m.Watch(ctx)
	res := e.attach(t, network.Attachment{App: "blog"})
	mac := network.PredictMAC("blog")
	oldAddr := network.SLAACAddress(e.lan.Prefix(), mac)

	first := next(t, changes, func(c network.AddressChange) bool { return c.App == "blog" && c.LAN.IsValid() })
	if first.LAN != oldAddr || first.LAN != res.LAN {
		t.Fatalf("first report %+v, want LAN %s", first, oldAddr)
	}

	newPrefix := netip.MustParsePrefix("2001:db8:feed::/64")
	start := time.Now()
	if err := e.lan.ChangePrefix(ctx, newPrefix); err != nil {
		t.Fatal(err)
	}
	want := network.SLAACAddress(newPrefix, mac)
	moved := next(t, changes, func(c network.AddressChange) bool { return c.LAN == want })
	t.Logf("prefix change reported after %v: %+v", time.Since(start), moved)
	if !slices.Contains(moved.Deprecated, oldAddr) {
		t.Errorf("old address %s not reported deprecated: %+v", oldAddr, moved)
	}
	if got, _ := e.m.Addresses("blog"); got.LAN != want {
		t.Errorf("Addresses().LAN = %s after the change, want %s", got.LAN, want)
	}

	// Watches end with their context.
	cancel()
	for range changes {
	}
}

// next returns the first change matching ok, failing the test after 15 s.
func next(t *testing.T, changes <-chan network.AddressChange, ok func(network.AddressChange) bool) network.AddressChange {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case c, open := <-changes:
			if !open {
				t.Fatal("watch ended early")
			}
			t.Logf("change: %+v", c)
			if ok(c) {
				return c
			}
		case <-timeout:
			t.Fatal("no matching address change within 15 s")
		}
	}
}
