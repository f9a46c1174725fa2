package network_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/network/nettest"
)

// An IPv4 pod gets a DHCP lease from the LAN through the CNI DHCP daemon, is reachable on it,
// and the lease is released (gone from the DHCP server) on detach.
func TestIPv4LeaseObtainedAndReleased(t *testing.T) {
	t.Parallel()
	socket := filepath.Join(t.TempDir(), "dhcp.sock")
	e := newEnv(t, nettest.Options{IPv4: true}, func(c *network.Config) { c.DHCPSocket = socket })
	e.waitForBox(t)
	startDHCPDaemon(t, e.lan.BoxNetns(), socket)

	res := e.attach(t, network.Attachment{App: "legacy", IPv4: true})
	if !netip.MustParsePrefix("192.0.2.0/24").Contains(res.IPv4) {
		t.Fatalf("IPv4 = %v, want an address in 192.0.2.0/24", res.IPv4)
	}
	leases, err := e.lan.DHCPLeases()
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 1 || leases[0].Addr != res.IPv4 || leases[0].MAC.String() != res.MAC.String() {
		t.Fatalf("dnsmasq leases = %+v, want one for %s %s", leases, res.MAC, res.IPv4)
	}
	if again, err := e.m.Addresses(context.Background(), "legacy"); err != nil || again.IPv4 != res.IPv4 {
		t.Fatalf("Addresses = %+v, %v; want IPv4 %s", again, err, res.IPv4)
	}
	if err := e.m.Check(context.Background(), "legacy"); err != nil {
		t.Fatalf("Check of an IPv4 pod: %v", err)
	}
	serveHTTP(t, res.Netns, "over IPv4")
	if _, err := e.lan.ClientExec(context.Background(), "busybox", "ip", "addr", "add", "192.0.2.9/24", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	fetchEventually(t, e.lan.ClientNetns(), httpURL(res.IPv4), "over IPv4")

	e.detach(t, "legacy")
	deadline := time.Now().Add(3 * time.Second)
	for {
		leases, err := e.lan.DHCPLeases()
		if err != nil {
			t.Fatal(err)
		}
		if len(leases) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease not released after detach: %+v", leases)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// If the DHCP daemon died (and its leases with it), Detach still cleans up everything.
func TestDetachWithoutDHCPDaemon(t *testing.T) {
	t.Parallel()
	socket := filepath.Join(t.TempDir(), "dhcp.sock")
	e := newEnv(t, nettest.Options{IPv4: true}, func(c *network.Config) { c.DHCPSocket = socket })
	e.waitForBox(t)
	stop := startDHCPDaemon(t, e.lan.BoxNetns(), socket)
	e.attach(t, network.Attachment{App: "legacy", IPv4: true})
	stop()
	e.detach(t, "legacy") // newEnv's cleanup checks that nothing is left
}
