package network_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/network/nettest"
)

// A published port answers on the pod's LAN address as it does on the .onion: a LAN client
// connecting to [LAN]:PUBLIC reaches the app listening on TARGET, while the host (as tor does)
// reaches [ULA]:TARGET. Only the published ports are open from the LAN; the host reaches every
// port. A change of ports is applied in place (same namespace, same running servers), and a
// firewall flushed by hand is noticed (Check, Result.Firewall) and put back by Attach.
func TestPublishedPortsAnswerOnTheLAN(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nettest.Options{})
	e.waitForBox(t)
	ctx := context.Background()
	ports := []network.PortMap{{Public: 443, Target: 443}, {Public: 80, Target: 8080}}
	res := e.attach(t, network.Attachment{App: "site", Ports: ports})
	if !res.Firewall || !res.Publishes(ports) || !slices.Equal(res.Ports, []network.PortMap{{Public: 80, Target: 8080}, {Public: 443, Target: 443}}) {
		t.Fatalf("Attach reports ports %v, firewall %t; want %v in place", res.Ports, res.Firewall, ports)
	}
	serveHTTPOn(t, res.Netns, 8080, "site on 8080")
	serveHTTPOn(t, res.Netns, 443, "site on 443")
	serveHTTPOn(t, res.Netns, 9090, "admin on 9090") // not published
	lan := e.waitLAN(t, "site")
	client, box := e.lan.ClientNetns(), e.lan.BoxNetns()

	fetchEventually(t, client, httpURLPort(lan, 80), "site on 8080")
	fetchEventually(t, client, httpURLPort(lan, 443), "site on 443")
	for _, port := range []uint16{9090, 8080} { // unpublished; a target is not a public port
		assertRefused(t, client, httpURLPort(lan, port))
	}
	// The host, as tor does, reaches the targets on the ULA (and every other port); its own
	// connections are never redirected.
	fetchEventually(t, box, httpURLPort(res.ULA, 8080), "site on 8080")
	fetchEventually(t, box, httpURLPort(res.ULA, 9090), "admin on 9090")
	assertRefused(t, box, httpURLPort(res.ULA, 80))

	t.Run("ports change in place", func(t *testing.T) {
		changed := []network.PortMap{{Public: 80, Target: 9090}}
		again := e.attach(t, network.Attachment{App: "site", Ports: changed})
		if again.Netns != res.Netns || again.ULA != res.ULA || !again.Publishes(changed) || again.Publishes(ports) {
			t.Fatalf("re-attach with new ports: %+v", again)
		}
		fetchEventually(t, client, httpURLPort(lan, 80), "admin on 9090") // the same servers: the same namespace
		assertRefused(t, client, httpURLPort(lan, 443))
		if now, err := e.m.Addresses(context.Background(), "site"); err != nil || !now.Publishes(changed) {
			t.Fatalf("Addresses = %+v, %v; want ports %v", now, err, changed)
		}
		if err := e.m.Check(ctx, "site"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a flushed firewall is noticed and put back", func(t *testing.T) {
		flushFirewallByHand(t, res.Netns)
		changed := []network.PortMap{{Public: 80, Target: 9090}}
		if now, err := e.m.Addresses(context.Background(), "site"); err != nil || now.Firewall || now.Publishes(changed) {
			t.Fatalf("Addresses after a flush = %+v, %v; want no firewall", now, err)
		}
		if err := e.m.Check(ctx, "site"); !errors.Is(err, network.ErrDrift) {
			t.Fatalf("Check after a flush = %v, want ErrDrift", err)
		}
		back := e.attach(t, network.Attachment{App: "site", Ports: changed})
		if back.Netns != res.Netns || !back.Publishes(changed) {
			t.Fatalf("Attach after a flush: %+v", back)
		}
		fetchEventually(t, client, httpURLPort(lan, 80), "admin on 9090")
		assertRefused(t, client, httpURLPort(lan, 8080))
	})
}

// Over IPv4 too: a LAN client reaches the app's target through the public port on the DHCP
// address, and (Debian's plugins or not) the DHCP lease is obtained and released with the
// firewall in place.
func TestPublishedPortsAnswerOverIPv4(t *testing.T) {
	t.Parallel()
	socket := filepath.Join(t.TempDir(), "dhcp.sock")
	e := newEnv(t, nettest.Options{IPv4: true}, func(c *network.Config) { c.DHCPSocket = socket })
	e.waitForBox(t)
	startDHCPDaemon(t, e.lan.BoxNetns(), socket)
	ports := []network.PortMap{{Public: 80, Target: 8080}}
	res := e.attach(t, network.Attachment{App: "legacy", IPv4: true, Ports: ports})
	if !res.IPv4.IsValid() || !res.Publishes(ports) {
		t.Fatalf("Attach = %+v; want an IPv4 address and ports %v", res, ports)
	}
	serveHTTPOn(t, res.Netns, 8080, "v4 on 8080")
	if _, err := e.lan.ClientExec(context.Background(), "busybox", "ip", "addr", "add", "192.0.2.9/24", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	fetchEventually(t, e.lan.ClientNetns(), httpURLPort(res.IPv4, 80), "v4 on 8080")
	assertRefused(t, e.lan.ClientNetns(), httpURLPort(res.IPv4, 8080))
	fetchEventually(t, e.lan.ClientNetns(), httpURLPort(e.waitLAN(t, "legacy"), 80), "v4 on 8080")
}

func TestBadPorts(t *testing.T) {
	t.Parallel()
	m, err := network.New(network.Config{ULAPrefix: randomULA(), StateDir: t.TempDir(), NetnsDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, ports := range [][]network.PortMap{{{Public: 0, Target: 80}}, {{Public: 80, Target: 0}}, {{Public: 80, Target: 80}, {Public: 80, Target: 81}}} {
		_, err := m.Attach(context.Background(), network.Attachment{App: "x", Ports: ports})
		if !errors.Is(err, network.ErrBadInput) || !strings.Contains(err.Error(), "ports[") {
			t.Errorf("Attach with ports %v: %v, want ErrBadInput naming the port", ports, err)
		}
	}
}

// assertRefused fails unless a GET of url from the namespace cannot connect (curl's exit code 7:
// a TCP reset, what a closed port answers; not a time-out).
func assertRefused(t testing.TB, netnsPath, url string) {
	t.Helper()
	out, err := fetch(netnsPath, url)
	if err == nil {
		t.Errorf("GET %s from %s answered %q; want it refused", url, filepath.Base(netnsPath), out)
	} else if !strings.Contains(err.Error(), "exit status 7:") {
		t.Errorf("GET %s from %s: %v; want a refusal", url, filepath.Base(netnsPath), err)
	}
}
