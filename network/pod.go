package network

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/netnsfile"
)

// setupPod runs inside a new pod namespace (see netnsfile.Create): it sets the IPv6 defaults the
// pod's link will inherit when CNI creates it, brings loopback up (what the CNI loopback plugin
// would do, without the cost of one more plugin process), and opens a netlink handle in the pod
// for the rest of the attach (*h; the caller closes it). A LAN pod forms its address by SLAAC from
// the pinned MAC (EUI-64, no temporary addresses) with optimistic DAD; an onion-only pod ignores
// router advertisements and skips DAD on its point-to-point link. Every pod may bind any port
// without a capability (net.ipv4.ip_unprivileged_port_start=0 in its namespace).
func setupPod(onionOnly bool, h **netlink.Handle) func() error {
	return func() error {
		set := [][2]string{
			{"default/accept_ra", sysctlBool(!onionOnly)},
			{"default/autoconf", sysctlBool(!onionOnly)},
			{"default/use_tempaddr", "0"},
			{"default/addr_gen_mode", "0"},
			{"default/optimistic_dad", "1"},
			{"default/use_optimistic", "1"},
		}
		if onionOnly {
			// DAD runs unless both "all" and the link say no
			set = append(set, [2]string{"default/accept_dad", "0"}, [2]string{"all/accept_dad", "0"})
		}
		var errs []error
		for _, kv := range set {
			errs = append(errs, netnsfile.Sysctl("net/ipv6/conf/"+kv[0], kv[1]))
		}
		// Any port may be bound without a capability in the pod's own namespace (the sysctl is
		// per network namespace): a pod serving on port 80 runs with an empty capability set.
		errs = append(errs, netnsfile.Sysctl("net/ipv4/ip_unprivileged_port_start", "0"))
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("pod sysctls: %w", err)
		}
		handle, err := netlink.NewHandle(unix.NETLINK_ROUTE) // this thread's namespace: the pod's
		if err != nil {
			return fmt.Errorf("netlink in the pod: %w", err)
		}
		lo, err := handle.LinkByName("lo")
		if err == nil {
			err = handle.LinkSetUp(lo)
		}
		if err != nil {
			handle.Close()
			return fmt.Errorf("loopback up: %w", err)
		}
		*h = handle
		return nil
	}
}

// addULA gives the pod's link its ULA (/64, so the host's prefix::1 is on-link), without DAD:
// the lease makes it unique, and the host path must work the moment Attach returns.
func addULA(h *netlink.Handle, ula netip.Addr) error {
	link, err := h.LinkByName(podIfName)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: ipNet(ula, 64), Flags: unix.IFA_F_NODAD}
	if err := h.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("add ULA %s: %w", ula, err)
	}
	return h.LinkSetUp(link)
}

// addHostVeth wires an onion-only pod: a veth pair whose host end (in the box) holds prefix::1/128
// and routes the pod's ULA/128, and whose pod end is eth0 with the pod's MAC and ULA. Nothing else:
// no LAN link, no default route, and the host does not forward for it.
func (m *Manager) addHostVeth(l *lease, podH *netlink.Handle) error {
	podNS, err := netns.GetFromPath(l.Netns)
	if err != nil {
		return fmt.Errorf("open pod netns: %w", err)
	}
	defer podNS.Close()
	host := hostVethName(l.App)
	err = m.inBox(func(h *netlink.Handle) error {
		if old, err := h.LinkByName(host); err == nil {
			h.LinkDel(old) // left by a crash: its pod is gone, or we would not be attaching
		}
		veth := &netlink.Veth{
			LinkAttrs:        netlink.LinkAttrs{Name: host},
			PeerName:         podIfName,
			PeerHardwareAddr: l.mac(),
			PeerNamespace:    netlink.NsFd(podNS),
		}
		if err := h.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth %s: %w", host, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = m.boxDo(func() error {
		return errors.Join(
			netnsfile.Sysctl("net/ipv6/conf/"+host+"/accept_ra", "0"),
			netnsfile.Sysctl("net/ipv6/conf/"+host+"/autoconf", "0"),
			netnsfile.Sysctl("net/ipv6/conf/"+host+"/accept_dad", "0"),
		)
	})
	if err != nil {
		return fmt.Errorf("host veth sysctls: %w", err)
	}
	err = m.inBox(func(h *netlink.Handle) error {
		link, err := h.LinkByName(host)
		if err != nil {
			return err
		}
		addr := &netlink.Addr{IPNet: ipNet(hostULA(m.cfg.ULAPrefix), 128), Flags: unix.IFA_F_NODAD}
		if err := h.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("host veth address: %w", err)
		}
		if err := h.LinkSetUp(link); err != nil {
			return err
		}
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(l.ULA, 128), Scope: netlink.SCOPE_LINK}
		if err := h.RouteReplace(route); err != nil {
			return fmt.Errorf("route to %s: %w", l.ULA, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return addULA(podH, l.ULA)
}

// podLinkReady reports whether the pod's namespace has its link with the ULA: the cheap test that
// a stored lease is a finished attach.
func podLinkReady(l *lease) bool {
	if !netnsfile.Exists(l.Netns) {
		return false
	}
	ready := false
	inPod(l.Netns, func(h *netlink.Handle) error {
		link, err := h.LinkByName(podIfName)
		if err != nil || link.Attrs().Flags&unix.IFF_UP == 0 {
			return nil
		}
		addrs, err := h.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			return nil
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip == l.ULA {
				ready = true
			}
		}
		return nil
	})
	return ready
}

// deleteLinks deletes every link but loopback in the namespace held by nsh, then closes nsh. Run
// in the background: each delete waits for the kernel's RCU grace period (about 18 ms here), and
// once it returns the pod's MAC (and, for onion-only pods, the host veth name) is free again.
func deleteLinks(nsh netns.NsHandle) {
	defer nsh.Close()
	withHandle(nsh, func(h *netlink.Handle) error {
		links, err := h.LinkList()
		if err != nil {
			return err
		}
		for _, link := range links {
			if link.Attrs().Flags&unix.IFF_LOOPBACK == 0 {
				h.LinkDel(link)
			}
		}
		return nil
	})
}
