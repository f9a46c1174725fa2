package network

import (
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestUsable(t *testing.T) {
	own := netip.MustParsePrefix("fd00:aaaa:bbbb:cccc::/64")
	a := netip.MustParseAddr
	global := unix.RT_SCOPE_UNIVERSE
	tests := []struct {
		name  string
		addrs map[netip.Addr]addrInfo
		want  podAddrs
	}{
		{"nothing yet", map[netip.Addr]addrInfo{
			a("fe80::1"):                   {scope: unix.RT_SCOPE_LINK, preferred: 100},
			a("fd00:aaaa:bbbb:cccc::1234"): {scope: global, preferred: -1},
		}, podAddrs{}},
		{"tentative is not usable", map[netip.Addr]addrInfo{
			a("2001:db8:1::5054:ff:fe12:3456"): {scope: global, preferred: 14400, flags: unix.IFA_F_TENTATIVE | unix.IFA_F_OPTIMISTIC},
		}, podAddrs{}},
		{"slaac done", map[netip.Addr]addrInfo{
			a("2001:db8:1::5054:ff:fe12:3456"): {scope: global, preferred: 14400},
			a("192.0.2.100"):                   {scope: global, preferred: -1},
		}, podAddrs{LAN: a("2001:db8:1::5054:ff:fe12:3456"), IPv4: a("192.0.2.100")}},
		{"prefix change", map[netip.Addr]addrInfo{
			a("2001:db8:1::5054:ff:fe12:3456"): {scope: global, preferred: 0, flags: unix.IFA_F_DEPRECATED},
			a("2001:db8:2::5054:ff:fe12:3456"): {scope: global, preferred: 14400},
		}, podAddrs{LAN: a("2001:db8:2::5054:ff:fe12:3456"), Deprecated: []netip.Addr{a("2001:db8:1::5054:ff:fe12:3456")}}},
		{"global before a router's ULA", map[netip.Addr]addrInfo{
			a("fd99::5054:ff:fe12:3456"):       {scope: global, preferred: 90000},
			a("2001:db8:1::5054:ff:fe12:3456"): {scope: global, preferred: 100},
		}, podAddrs{LAN: a("2001:db8:1::5054:ff:fe12:3456")}},
		{"longest preferred lifetime", map[netip.Addr]addrInfo{
			a("2001:db8:1::5054:ff:fe12:3456"): {scope: global, preferred: 100},
			a("2001:db8:3::5054:ff:fe12:3456"): {scope: global, preferred: 200},
		}, podAddrs{LAN: a("2001:db8:3::5054:ff:fe12:3456")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := usable(tt.addrs, own)
			if got.LAN != tt.want.LAN || got.IPv4 != tt.want.IPv4 || !slices.Equal(got.Deprecated, tt.want.Deprecated) {
				t.Errorf("usable = %+v, want %+v", got, tt.want)
			}
		})
	}
}
