package lan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/netnsfile"
)

// withHandle runs fn with a netlink handle bound to the namespace at path.
func withHandle(path string, fn func(h *netlink.Handle) error) error {
	nsh, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", path, err)
	}
	defer h.Close()
	return fn(h)
}

// buildLinks wires the namespaces: br0 in lan, veths lan<->box (uplink) and lan<->client.
// Every link is created inside the LAN's own namespaces; the box end is created directly in the box.
func (l *LAN) buildLinks() error {
	if err := l.fixtureSysctls(); err != nil {
		return err
	}
	if err := l.wireBridge(); err != nil {
		return err
	}
	if err := withHandle(l.client, func(h *netlink.Handle) error { return setUp(h, "lo", clientIfName) }); err != nil {
		return fmt.Errorf("lan: client links: %w", err)
	}
	return l.raiseUplink()
}

// fixtureSysctls sets the lan and client namespaces' sysctls before their links exist, so the
// links inherit them: the router forwards (radvd requires it); the client configures itself by
// SLAAC; fixture links skip DAD so addresses are usable at once.
func (l *LAN) fixtureSysctls() error {
	err := netnsfile.Do(l.lanNS, func() error {
		return errors.Join(
			netnsfile.Sysctl("net/ipv6/conf/all/forwarding", "1"),
			netnsfile.Sysctl("net/ipv6/conf/default/accept_dad", "0"),
			netnsfile.Sysctl("net/ipv6/conf/all/accept_dad", "0"),
		)
	})
	if err != nil {
		return fmt.Errorf("lan: lan sysctls: %w", err)
	}
	err = netnsfile.Do(l.client, func() error {
		return errors.Join(
			netnsfile.Sysctl("net/ipv6/conf/default/accept_dad", "0"),
			netnsfile.Sysctl("net/ipv6/conf/default/accept_ra", "1"),
			netnsfile.Sysctl("net/ipv6/conf/default/autoconf", "1"),
			netnsfile.Sysctl("net/ipv6/conf/default/use_tempaddr", "0"),
		)
	})
	if err != nil {
		return fmt.Errorf("lan: client sysctls: %w", err)
	}
	return nil
}

// wireBridge makes, inside the lan namespace, the bridge with the router's addresses and the two
// veths on it whose other ends are created directly in the box (the uplink) and the client.
func (l *LAN) wireBridge() error {
	boxNS, err := netns.GetFromPath(l.box)
	if err != nil {
		return fmt.Errorf("lan: open box: %w", err)
	}
	defer boxNS.Close()
	clientNS, err := netns.GetFromPath(l.client)
	if err != nil {
		return fmt.Errorf("lan: open client: %w", err)
	}
	defer clientNS.Close()
	err = withHandle(l.lanNS, func(h *netlink.Handle) error {
		off := false
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}, MulticastSnooping: &off}
		if err := h.LinkAdd(br); err != nil {
			return fmt.Errorf("add %s: %w", bridgeName, err)
		}
		if err := addPort(h, br, lanBoxPort, l.uplink, boxNS); err != nil {
			return fmt.Errorf("add uplink veth %s/%s: %w", lanBoxPort, l.uplink, err)
		}
		l.madeLink = true
		if err := addPort(h, br, lanCliPort, clientIfName, clientNS); err != nil {
			return fmt.Errorf("add client veth: %w", err)
		}
		if err := addAddr(h, bridgeName, netip.PrefixFrom(l.RouterAddr(), 64)); err != nil {
			return err
		}
		if l.ipv4 {
			if err := addAddr(h, bridgeName, netip.PrefixFrom(RouterIPv4, ipv4Prefix.Bits())); err != nil {
				return err
			}
		}
		return setUp(h, "lo", bridgeName, lanBoxPort, lanCliPort)
	})
	if err != nil {
		return fmt.Errorf("lan: lan links: %w", err)
	}
	return nil
}

// addPort adds a veth whose end name sits on the bridge br and whose peer is created in peerNS.
func addPort(h *netlink.Handle, br *netlink.Bridge, name, peer string, peerNS netns.NsHandle) error {
	return h.LinkAdd(&netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: name, MasterIndex: br.Index},
		PeerName:      peer,
		PeerNamespace: netlink.NsFd(peerNS),
	})
}

// raiseUplink sets the box's end of the uplink up, without DAD. The box may be someone else's
// namespace: only the uplink just created is changed (and lo, when the box is the LAN's own).
func (l *LAN) raiseUplink() error {
	err := netnsfile.Do(l.box, func() error {
		return netnsfile.Sysctl("net/ipv6/conf/"+l.uplink+"/accept_dad", "0")
	})
	if err != nil {
		return fmt.Errorf("lan: box uplink sysctl: %w", err)
	}
	err = withHandle(l.box, func(h *netlink.Handle) error {
		if l.ownBox {
			return setUp(h, "lo", l.uplink)
		}
		return setUp(h, l.uplink)
	})
	if err != nil {
		return fmt.Errorf("lan: box links: %w", err)
	}
	return nil
}

func setUp(h *netlink.Handle, names ...string) error {
	for _, name := range names {
		link, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("link %s: %w", name, err)
		}
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", name, err)
		}
	}
	return nil
}

func addAddr(h *netlink.Handle, name string, p netip.Prefix) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("add %s to %s: %w", p, name, err)
	}
	return nil
}

// deleteLinkIn deletes a link inside the namespace at path; a missing link or namespace is fine.
func deleteLinkIn(path, name string) error {
	if !netnsfile.Exists(path) {
		return nil
	}
	return withHandle(path, func(h *netlink.Handle) error {
		link, err := h.LinkByName(name)
		if err != nil {
			var notFound netlink.LinkNotFoundError
			if errors.As(err, &notFound) {
				return nil
			}
			return err
		}
		return h.LinkDel(link)
	})
}
