package network_test

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/netnsfile"
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
	if got, _ := e.m.Addresses(context.Background(), "blog"); got.LAN != want {
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

// A watch follows every pod with sockets, not goroutines (three goroutines per pod held a 64 kB
// buffer each: 0.2 MB of the daemon per app), and while it runs Addresses answers from what it
// follows: the same as reading the pod afresh, and never behind a change made before the call
// (a firewall flushed by hand is seen at once, and so are the addresses of a pod attached again).
func TestWatchFollowsPodsWithoutGoroutines(t *testing.T) {
	// Not parallel: it counts the process's goroutines, and other tests' would be counted too
	// (CI's race run saw 44 more with 12 pods).
	e := newEnv(t, nettest.Options{})
	e.waitForBox(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := e.m.Watch(ctx)
	go func() {
		for range changes {
		}
	}()
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	const pods = 12
	ports := []network.PortMap{{Public: 80, Target: 8080}}
	var apps []string
	for i := range pods {
		app := fmt.Sprintf("w%02d", i)
		apps = append(apps, app)
		a := network.Attachment{App: app, Ports: ports, OnionOnly: i%4 == 3}
		e.attach(t, a)
	}
	for _, app := range apps[:3] {
		e.waitLAN(t, app)
	}
	// Goroutines of the attaches themselves (a plugin's exec, a timer) may take a moment to end.
	grew := runtime.NumGoroutine() - before
	for deadline := time.Now().Add(10 * time.Second); grew >= pods && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		grew = runtime.NumGoroutine() - before
	}
	if grew >= pods {
		t.Errorf("%d goroutines more with %d pods followed: want fewer than one per pod", grew, pods)
	}

	fresh, err := network.New(e.cfg) // a Manager with no watch reads every pod afresh
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	// Asked alone, or in a look settled now (one drain for many pods, as a reconcile pass's
	// observation does): the same as afresh either way.
	same := func(app string) network.Result {
		t.Helper()
		want, err := fresh.Addresses(context.Background(), app)
		if err != nil {
			t.Fatalf("Addresses(%s) afresh: %v", app, err)
		}
		var got network.Result
		for _, ctx := range []context.Context{e.m.Settled(context.Background()), context.Background()} {
			got, err = e.m.Addresses(ctx, app)
			if err != nil {
				t.Fatalf("Addresses(%s): %v", app, err)
			}
			if got.LAN != want.LAN || got.IPv4 != want.IPv4 || got.ULA != want.ULA || got.Netns != want.Netns ||
				got.Firewall != want.Firewall || !slices.Equal(got.Ports, want.Ports) {
				t.Errorf("Addresses(%s) = %+v from the watch (settled: %v), %+v afresh", app, got, ctx != context.Background(), want)
			}
		}
		return got
	}
	for _, app := range apps {
		if r := same(app); !r.Publishes(ports) {
			t.Errorf("%s: %+v does not publish %v", app, r, ports)
		}
	}
	for _, app := range []string{apps[1], apps[3]} { // a LAN pod, an onion-only one
		r, _ := e.m.Addresses(context.Background(), app)
		flushFirewallByHand(t, r.Netns)
		if r := same(app); r.Firewall || r.Publishes(ports) {
			t.Errorf("%s: firewall flushed by hand, yet Addresses = %+v", app, r)
		}
		e.attach(t, network.Attachment{App: app, Ports: ports, OnionOnly: app == apps[3]})
		if r := same(app); !r.Publishes(ports) {
			t.Errorf("%s: attached again, yet Addresses = %+v", app, r)
		}
	}
	e.detach(t, apps[0])
	e.attach(t, network.Attachment{App: apps[0], Ports: ports})
	same(apps[0])
	e.waitLAN(t, apps[0])
	same(apps[0])

	// The namespace gone and made again on the same lease by another process, as the network
	// unit does after a reboot (the lease file untouched): the new one is followed, not the old
	// one (which the watch's sockets keep alive): its firewall flushed by hand is seen.
	r, _ := e.m.Addresses(context.Background(), apps[2])
	if out, err := nettest.Exec(context.Background(), r.Netns, "ip", "link", "del", "eth0"); err != nil { // its MAC is the new one's
		t.Fatalf("ip link del: %v %s", err, out)
	}
	if err := netnsfile.Remove(r.Netns); err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithTimeout(context.Background(), time.Minute)
	defer acancel()
	if _, err := fresh.Attach(actx, network.Attachment{App: apps[2], Ports: ports}); err != nil {
		t.Fatal(err)
	}
	e.waitLAN(t, apps[2])
	if r := same(apps[2]); !r.Publishes(ports) {
		t.Errorf("%s: its namespace made again, yet Addresses = %+v", apps[2], r)
	}
	flushFirewallByHand(t, r.Netns)
	if r := same(apps[2]); r.Firewall {
		t.Errorf("%s: the new namespace's firewall flushed by hand, yet Addresses = %+v", apps[2], r)
	}
}
