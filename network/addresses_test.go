package network

import (
	"net"
	"net/netip"
	"testing"
)

func TestPredictMAC(t *testing.T) {
	seen := map[string]string{}
	for _, app := range []string{"blog", "wiki", "a", "blog-2", "x1234567890"} {
		mac := PredictMAC(app)
		if len(mac) != 6 {
			t.Fatalf("%s: MAC %v is not 6 bytes", app, mac)
		}
		if mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
			t.Errorf("%s: MAC %v must be locally administered and unicast", app, mac)
		}
		if again := PredictMAC(app); again.String() != mac.String() {
			t.Errorf("%s: MAC not stable: %v then %v", app, mac, again)
		}
		if other, dup := seen[mac.String()]; dup {
			t.Errorf("%s and %s share MAC %v", app, other, mac)
		}
		seen[mac.String()] = app
	}
}

func TestSLAACAddress(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	tests := []struct {
		prefix string
		want   string
	}{
		{"2001:db8:1::/64", "2001:db8:1::5054:ff:fe12:3456"},
		{"2001:db8:1:2:ffff::/64", "2001:db8:1:2:5054:ff:fe12:3456"}, // host bits of the prefix ignored
		{"2001:db8::/48", ""}, // SLAAC needs a /64
		{"192.0.2.0/24", ""},
	}
	for _, tt := range tests {
		got := SLAACAddress(netip.MustParsePrefix(tt.prefix), mac)
		if (tt.want == "" && got.IsValid()) || (tt.want != "" && got != netip.MustParseAddr(tt.want)) {
			t.Errorf("SLAACAddress(%s) = %v, want %q", tt.prefix, got, tt.want)
		}
	}
	// The universal/local bit flips: a locally administered MAC gives an identifier with it clear.
	local := PredictMAC("blog")
	addr := SLAACAddress(netip.MustParsePrefix("2001:db8:1::/64"), local)
	if addr.As16()[8]&0x02 != 0 {
		t.Errorf("EUI-64 of locally administered %v should have the u bit clear: %v", local, addr)
	}
}

func TestULAForAvoidsHostAndStaysInPrefix(t *testing.T) {
	prefix := netip.MustParsePrefix("fd12:3456:789a:1::/64")
	seen := map[netip.Addr]bool{}
	for try := range 1000 {
		ula := ulaFor(prefix, "blog", try)
		if !prefix.Contains(ula) || ula == hostULA(prefix) || ula == prefix.Addr() {
			t.Fatalf("try %d: bad ULA %s", try, ula)
		}
		if seen[ula] {
			t.Fatalf("try %d repeats %s", try, ula)
		}
		seen[ula] = true
	}
	if first, again := ulaFor(prefix, "blog", 0), ulaFor(prefix, "blog", 0); first != again {
		t.Fatal("ULA not stable for a name")
	}
}

func TestHostVethName(t *testing.T) {
	name := hostVethName("a-very-long-app-name-that-is-still-a-valid-dns-label-of-63-chars")
	if len(name) > 15 {
		t.Fatalf("%q exceeds IFNAMSIZ", name)
	}
	if hostVethName("blog") == hostVethName("wiki") {
		t.Fatal("host veth names collide")
	}
}
