package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/netnsfile"
)

// A macvlan master cannot talk to its own macvlan children, so the host reaches LAN pods through
// a macvlan "shim" of its own on the uplink (mode bridge: macvlan siblings switch to each other),
// holding prefix::1/64 of the ULA prefix. It ignores router advertisements: it exists only for
// the ULA. It is created by the first LAN pod's attach and removed after the last one's detach,
// whichever processes those were: it exists while any LAN lease is on disk. Both decisions are
// taken under the state lock, and a LAN pod's lease is stored (under that lock) before its attach
// looks at the shim, so a removal either sees the lease and keeps the shim, or comes before the
// attach looks and the attach creates it again.

// ensureShim makes the shim exist on uplink with the host's ULA, up. Call it after the lease of the
// LAN pod that needs it is stored (or while its write holds the state lock).
func (m *Manager) ensureShim(ctx context.Context, uplink string) error {
	if m.checkShim(uplink) == nil {
		return nil // the usual case, and no removal can come while our lease is on disk
	}
	unlock, err := m.lockState(ctx)
	if err != nil {
		return fmt.Errorf("shim: %w", err)
	}
	defer unlock()
	var lowerIndex, shimLower int
	exists := false
	err = m.inBox(func(h *netlink.Handle) error {
		lower, err := h.LinkByName(uplink)
		if err != nil {
			return fmt.Errorf("uplink %s: %w", uplink, err)
		}
		lowerIndex = lower.Attrs().Index
		if shim, err := h.LinkByName(shimName); err == nil {
			exists, shimLower = true, shim.Attrs().ParentIndex
			if shimLower != lowerIndex || shim.Type() != "macvlan" {
				// the uplink changed (or a stranger took the name): start over
				if err := h.LinkDel(shim); err != nil {
					return fmt.Errorf("replace %s: %w", shimName, err)
				}
				exists = false
			}
		}
		if exists {
			return nil
		}
		mv := &netlink.Macvlan{
			LinkAttrs: netlink.LinkAttrs{Name: shimName, ParentIndex: lowerIndex,
				HardwareAddr: PredictMAC("onionpod shim " + m.cfg.ULAPrefix.String())},
			Mode: netlink.MACVLAN_MODE_BRIDGE,
		}
		if err := h.LinkAdd(mv); err != nil {
			return fmt.Errorf("add %s on %s: %w", shimName, uplink, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("shim: %w", err)
	}
	// Before it goes up (so it never autoconfigures), and also on a shim an older onionpod made.
	err = m.boxDo(func() error {
		return errors.Join(
			netnsfile.Sysctl("net/ipv6/conf/"+shimName+"/accept_ra", "0"),
			netnsfile.Sysctl("net/ipv6/conf/"+shimName+"/autoconf", "0"),
			netnsfile.Sysctl("net/ipv6/conf/"+shimName+"/accept_dad", "0"),
			// Linux answers ARP on any link for any of the host's addresses: without this the
			// pods would reach the host's IPv4 addresses through the shim (see firewall.go).
			netnsfile.Sysctl("net/ipv4/conf/"+shimName+"/arp_ignore", "1"),
		)
	})
	if err != nil {
		return fmt.Errorf("shim sysctls: %w", err)
	}
	err = m.inBox(func(h *netlink.Handle) error {
		shim, err := h.LinkByName(shimName)
		if err != nil {
			return err
		}
		addr := &netlink.Addr{IPNet: ipNet(hostULA(m.cfg.ULAPrefix), 64), Flags: unix.IFA_F_NODAD}
		if err := h.AddrReplace(shim, addr); err != nil {
			return fmt.Errorf("address %s: %w", addr.IPNet, err)
		}
		if shim.Attrs().Flags&unix.IFF_UP == 0 {
			return h.LinkSetUp(shim)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("shim: %w", err)
	}
	return nil
}

// releaseShim removes the shim in the background when no LAN pod holds a lease any more, in this
// process or another. The removal looks at the leases again under the state lock and holds it
// while the link goes (the kernel takes some 20 ms), so that no attach sees a shim that is about
// to vanish.
func (m *Manager) releaseShim() {
	if m.lanLeaseExists() {
		return
	}
	m.background(shimName, func() {
		unlock, err := m.lockState(context.Background())
		if err != nil {
			return
		}
		defer unlock()
		if m.lanLeaseExists() {
			return // a LAN pod attached meanwhile
		}
		m.inBox(func(h *netlink.Handle) error {
			if shim, err := h.LinkByName(shimName); err == nil {
				return h.LinkDel(shim)
			}
			return nil
		})
	})
}

// lanLeaseExists reports whether a LAN pod's lease is on disk; when the leases cannot be read (or
// one of them, which may be a LAN pod's) it says yes: keeping the shim is the safe mistake.
func (m *Manager) lanLeaseExists() bool {
	set, err := m.leases.loadAll(&m.cache)
	if err != nil || len(set.bad) > 0 {
		return true
	}
	for _, l := range set.leases {
		if !l.OnionOnly {
			return true
		}
	}
	return false
}

// checkShim verifies the shim is up on uplink with the host's ULA.
func (m *Manager) checkShim(uplink string) error {
	err := m.inBox(func(h *netlink.Handle) error {
		shim, err := h.LinkByName(shimName)
		if err != nil {
			return fmt.Errorf("shim %s missing", shimName)
		}
		lower, err := h.LinkByName(uplink)
		if err != nil {
			return fmt.Errorf("uplink %s missing", uplink)
		}
		if shim.Attrs().ParentIndex != lower.Attrs().Index || shim.Attrs().Flags&unix.IFF_UP == 0 {
			return fmt.Errorf("shim %s is not up on %s", shimName, uplink)
		}
		addrs, err := h.AddrList(shim, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip == hostULA(m.cfg.ULAPrefix) {
				return nil
			}
		}
		return fmt.Errorf("shim %s lacks %s", shimName, hostULA(m.cfg.ULAPrefix))
	})
	if err != nil {
		return err
	}
	return m.boxDo(func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + shimName + "/arp_ignore")
		if err != nil || strings.TrimSpace(string(b)) != "1" {
			return fmt.Errorf("shim %s answers ARP for the host's addresses", shimName)
		}
		return nil
	})
}
