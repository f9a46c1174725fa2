package e2e

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
)

// TestIPv4FromTheLANsDHCP: an app that asks for IPv4 gets a lease from the LAN's DHCP server
// through the CNI DHCP daemon onionpod runs as a unit (started on demand), is published with an A
// record and answers on it; rm releases the lease.
func TestIPv4FromTheLANsDHCP(t *testing.T) {
	l := needLab(t)
	onionpod(t, "run", "v4", "--image", demoImage(t, "v4", "over ipv4\n"), "--port", "80", "--ipv4")
	var st appStatus
	waitFor(t, 30*time.Second, "given an IPv4 address", func() bool {
		st = status(t, "v4")
		return st.Network.IPv4 != ""
	})
	addr := netip.MustParseAddr(st.Network.IPv4)
	if !netip.MustParsePrefix("192.0.2.0/24").Contains(addr) {
		t.Fatalf("IPv4 %s is not from the LAN's DHCP range", addr)
	}
	if out, err := run(t, t.Context(), lab.InBox, "systemctl", "is-active", "onionpod-dhcp.service"); err != nil || strings.TrimSpace(out) != "active" {
		t.Errorf("the CNI DHCP daemon unit is not active: %q %v", out, err)
	}
	waitFor(t, 30*time.Second, "published with an A record", func() bool {
		out, _ := run(t, t.Context(), lab.InClient, "dig", "+short", "A", "v4.box.example", "@"+lab.BoxLANIP.String())
		return strings.TrimSpace(out) == addr.String()
	})
	if got := fetch(t, lab.InClient, "http://"+addr.String()+"/", 30*time.Second); got != "over ipv4\n" {
		t.Errorf("over IPv4: %q", got)
	}
	held := func() bool {
		leases, err := l.LAN().DHCPLeases()
		if err != nil {
			t.Fatal(err)
		}
		for _, le := range leases {
			if le.Addr == addr {
				return true
			}
		}
		return false
	}
	if !held() {
		t.Fatalf("dnsmasq holds no lease for %s", addr)
	}
	onionpod(t, "rm", "v4")
	waitFor(t, time.Minute, "the lease released", func() bool { return !held() })
}
