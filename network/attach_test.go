package network_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/network/nettest"
)

// A LAN client fetches a page from the pod by its SLAAC address, and the box fetches it by the
// pod's ULA through the shim. The LAN address is the one predicted from the MAC.
func TestLANPodReachable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nettest.Options{})
	e.waitForBox(t)
	res := e.attach(t, network.Attachment{App: "blog"})

	want := network.SLAACAddress(e.lan.Prefix(), network.PredictMAC("blog"))
	if res.LAN != want {
		t.Errorf("Attach predicted LAN %s, want %s", res.LAN, want)
	}
	if !e.cfg.ULAPrefix.Contains(res.ULA) {
		t.Errorf("ULA %s not in %s", res.ULA, e.cfg.ULAPrefix)
	}
	serveHTTP(t, res.Netns, "hello from blog")

	t.Run("client reaches the SLAAC address", func(t *testing.T) {
		lan := e.waitLAN(t, "blog")
		if lan != want {
			t.Fatalf("pod configured %s, want %s", lan, want)
		}
		fetchEventually(t, e.lan.ClientNetns(), httpURL(lan), "hello from blog")
	})
	t.Run("box reaches the ULA through the shim", func(t *testing.T) {
		fetchEventually(t, e.lan.BoxNetns(), httpURL(res.ULA), "hello from blog")
	})
	t.Run("any port without a capability", func(t *testing.T) {
		out, err := nettest.Exec(context.Background(), res.Netns, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start")
		if err != nil || strings.TrimSpace(string(out)) != "0" {
			t.Fatalf("ip_unprivileged_port_start in the pod = %q, %v; want 0", out, err)
		}
	})
	t.Run("check passes", func(t *testing.T) {
		if err := e.m.Check(context.Background(), "blog"); err != nil {
			t.Fatal(err)
		}
	})
}

// Detach then attach again gives the same MAC, ULA and LAN address, at once.
func TestReattachKeepsAddresses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nettest.Options{})
	e.waitForBox(t)
	first := e.attach(t, network.Attachment{App: "wiki"})
	lan1 := e.waitLAN(t, "wiki")

	e.detach(t, "wiki")
	start := time.Now()
	second := e.attach(t, network.Attachment{App: "wiki"})
	t.Logf("re-attach right after detach took %v", time.Since(start))
	lan2 := e.waitLAN(t, "wiki")

	if first.MAC.String() != second.MAC.String() || first.ULA != second.ULA || lan1 != lan2 {
		t.Fatalf("addresses changed: %v %s %s -> %v %s %s", first.MAC, first.ULA, lan1, second.MAC, second.ULA, lan2)
	}
	out, err := nettest.Exec(context.Background(), second.Netns, "ip", "-o", "link", "show", "eth0")
	if err != nil || !strings.Contains(string(out), "link/ether "+first.MAC.String()) {
		t.Fatalf("pod link MAC is not %s: %v\n%s", first.MAC, err, out)
	}
	serveHTTP(t, second.Netns, "wiki")
	fetchEventually(t, e.lan.ClientNetns(), httpURL(lan2), "wiki")
}

// Attaching an attached pod again changes nothing and reports the same place.
func TestAttachIsIdempotent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nettest.Options{})
	e.waitForBox(t)
	first := e.attach(t, network.Attachment{App: "app"})
	serveHTTP(t, first.Netns, "still here")
	second := e.attach(t, network.Attachment{App: "app"})
	if first.Netns != second.Netns || first.ULA != second.ULA || first.MAC.String() != second.MAC.String() {
		t.Fatalf("second attach differs: %+v vs %+v", first, second)
	}
	// The namespace (and the server in it) survived: the second attach did not rebuild it.
	fetchEventually(t, e.lan.BoxNetns(), httpURL(first.ULA), "still here")
}

// Debian's packaged plugins (1.1.1) work with the generated conflist too: same pinned MAC, host
// path through the shim.
func TestDebianPlugins(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/usr/lib/cni/macvlan"); err != nil {
		t.Skip("Debian's containernetworking-plugins not installed")
	}
	e := newEnv(t, nettest.Options{}, func(c *network.Config) { c.CNIPaths = []string{"/usr/lib/cni"} })
	e.waitForBox(t)
	res := e.attach(t, network.Attachment{App: "debian"})
	out, err := nettest.Exec(context.Background(), res.Netns, "ip", "-o", "link", "show", "eth0")
	if err != nil || !strings.Contains(string(out), "link/ether "+network.PredictMAC("debian").String()) {
		t.Fatalf("pod link does not carry the pinned MAC: %v\n%s", err, out)
	}
	serveHTTP(t, res.Netns, "debian")
	fetchEventually(t, e.lan.BoxNetns(), httpURL(res.ULA), "debian")
	if err := e.m.Check(context.Background(), "debian"); err != nil {
		t.Fatal(err)
	}
}
