// Package multihome builds, for tests, a multi-homed host: two network
// namespaces the test creates, a "server" and a "client", joined by a veth
// pair. The server's end has two addresses of every kind (global IPv6, IPv4,
// link-local IPv6), as a box with a static address and a SLAAC one has: a
// server bound to the wildcard address must answer each query from the
// address it was sent to, or the client drops the answer. Nothing outside
// the two namespaces is touched; t.Cleanup removes them.
package multihome

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/netnsfile"
)

// Interface names of the veth pair's ends.
const (
	ServerLink = "srv0"
	ClientLink = "cli0"
)

// Net is the pair of namespaces.
type Net struct {
	// Server and Client are the namespaces' paths (netnsfile).
	Server, Client string
	// V6, V4 and LinkLocal are the server's addresses: each pair on one
	// interface, in one prefix (2001:db8:1::/64, 192.0.2.0/24, fe80::/64);
	// V4[1] is a secondary address. LinkLocal carries the client's zone
	// (ClientLink), for dialing from the client namespace.
	V6, V4, LinkLocal [2]netip.Addr
	// ClientV6 and ClientV4 are the client's addresses.
	ClientV6, ClientV4 netip.Addr
}

// New creates the namespaces, or skips the test when it cannot (not root).
func New(t testing.TB) *Net {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("multihome: needs root (network namespaces)")
	}
	dir := t.TempDir()
	n := &Net{
		Server:    filepath.Join(dir, "server"),
		Client:    filepath.Join(dir, "client"),
		V6:        [2]netip.Addr{netip.MustParseAddr("2001:db8:1::53"), netip.MustParseAddr("2001:db8:1::99")},
		V4:        [2]netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("192.0.2.99")},
		LinkLocal: [2]netip.Addr{netip.MustParseAddr("fe80::53%" + ClientLink), netip.MustParseAddr("fe80::99%" + ClientLink)},
		ClientV6:  netip.MustParseAddr("2001:db8:1::2"),
		ClientV4:  netip.MustParseAddr("192.0.2.2"),
	}
	if err := netnsfile.Create(n.Client, quietIPv6); err != nil {
		t.Fatalf("multihome: %v", err)
	}
	t.Cleanup(func() { _ = netnsfile.Remove(n.Client) })
	client, err := os.Open(n.Client)
	if err != nil {
		t.Fatalf("multihome: %v", err)
	}
	defer client.Close()
	err = netnsfile.Create(n.Server, func() error {
		if err := quietIPv6(); err != nil {
			return err
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ServerLink}, PeerName: ClientLink, PeerNamespace: netlink.NsFd(int(client.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		return configure(ServerLink, prefix(n.V6[0], 64), prefix(n.V6[1], 64), prefix(n.V4[0], 24), prefix(n.V4[1], 24),
			prefix(n.LinkLocal[0].WithZone(""), 64), prefix(n.LinkLocal[1].WithZone(""), 64))
	})
	if err != nil {
		t.Fatalf("multihome: %v", err)
	}
	t.Cleanup(func() { _ = netnsfile.Remove(n.Server) })
	err = netnsfile.Do(n.Client, func() error {
		return configure(ClientLink, prefix(n.ClientV6, 64), prefix(n.ClientV4, 24), netip.MustParsePrefix("fe80::2/64"))
	})
	if err != nil {
		t.Fatalf("multihome: %v", err)
	}
	return n
}

// Do runs fn in the namespace at path (n.Server or n.Client): sockets
// opened by fn stay in it.
func (n *Net) Do(path string, fn func() error) error { return netnsfile.Do(path, fn) }

func prefix(a netip.Addr, bits int) netip.Prefix { return netip.PrefixFrom(a, bits) }

// quietIPv6 makes the namespace's interfaces skip DAD and make no
// link-local address of their own (the test gives them theirs).
func quietIPv6() error {
	for _, kv := range [][2]string{{"accept_dad", "0"}, {"addr_gen_mode", "1"}} {
		if err := netnsfile.Sysctl("net/ipv6/conf/default/"+kv[0], kv[1]); err != nil {
			return err
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	return netlink.LinkSetUp(lo)
}

// configure adds the addresses to the link (in the calling thread's
// namespace) and sets it up.
func configure(name string, addrs ...netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, a); err != nil {
			return fmt.Errorf("add %s to %s: %w", p, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}
