package network

import (
	"errors"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// addrInfo is what matters of one address on the pod's LAN link.
type addrInfo struct {
	flags     int
	scope     int
	preferred int // seconds left; 0 = deprecated
}

// podAddrs is the usable view of a pod's LAN link.
type podAddrs struct {
	LAN        netip.Addr
	IPv4       netip.Addr
	Deprecated []netip.Addr
}

func (p podAddrs) equal(q podAddrs) bool {
	return p.LAN == q.LAN && p.IPv4 == q.IPv4 && slices.Equal(p.Deprecated, q.Deprecated)
}

var routerULA = netip.MustParsePrefix("fc00::/7")

// usable picks the pod's publishable addresses from what is on its LAN link. Pure.
func usable(addrs map[netip.Addr]addrInfo, ownULA netip.Prefix) podAddrs {
	var p podAddrs
	var best addrInfo
	for ip, a := range addrs {
		if a.scope != unix.RT_SCOPE_UNIVERSE || a.flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			continue
		}
		if ip.Is4() {
			if !p.IPv4.IsValid() || ip.Less(p.IPv4) {
				p.IPv4 = ip
			}
			continue
		}
		if ownULA.Contains(ip) || ip.IsLinkLocalUnicast() {
			continue
		}
		if a.preferred == 0 || a.flags&unix.IFA_F_DEPRECATED != 0 {
			p.Deprecated = append(p.Deprecated, ip)
			continue
		}
		if !p.LAN.IsValid() || better(ip, a, p.LAN, best) {
			p.LAN, best = ip, a
		}
	}
	slices.SortFunc(p.Deprecated, func(a, b netip.Addr) int { return a.Compare(b) })
	return p
}

// better orders LAN candidates: global before ULA, then longer preferred lifetime, then lower address.
func better(ip netip.Addr, a addrInfo, than netip.Addr, b addrInfo) bool {
	if ipULA, thanULA := routerULA.Contains(ip), routerULA.Contains(than); ipULA != thanULA {
		return thanULA
	}
	if pa, pb := uint32(a.preferred), uint32(b.preferred); pa != pb {
		return pa > pb
	}
	return ip.Less(than)
}

// podAddresses reads the usable addresses of the pod's LAN link now, through a handle in the pod.
func podAddresses(h *netlink.Handle, ownULA netip.Prefix) (podAddrs, error) {
	link, err := h.LinkByName(podIfName)
	if err != nil {
		return podAddrs{}, err
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return podAddrs{}, err
	}
	seen := map[netip.Addr]addrInfo{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			seen[ip.Unmap()] = addrInfo{flags: a.Flags, scope: a.Scope, preferred: a.PreferedLft}
		}
	}
	return usable(seen, ownULA), nil
}

// advertisedPrefix is the /64 the router advertises on uplink, as the box itself sees it: the
// prefix of the box's best autoconfigured address there, or else a route the RA installed.
func (m *Manager) advertisedPrefix(uplink string) (netip.Prefix, bool) {
	var prefix netip.Prefix
	m.inBox(func(h *netlink.Handle) error {
		link, err := h.LinkByName(uplink)
		if err != nil {
			return err
		}
		addrs, err := h.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		seen := map[netip.Addr]addrInfo{}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			ones, _ := a.Mask.Size()
			if ok && ones == 64 && a.ValidLft > 0 && uint32(a.ValidLft) != infinityLifetime {
				// tentative is fine here: the prefix is what we want
				seen[ip] = addrInfo{flags: a.Flags &^ unix.IFA_F_TENTATIVE, scope: a.Scope, preferred: a.PreferedLft}
			}
		}
		if best := usable(seen, m.cfg.ULAPrefix).LAN; best.IsValid() {
			prefix = netip.PrefixFrom(best, 64).Masked()
			return nil
		}
		routes, err := h.RouteList(link, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Protocol != unix.RTPROT_RA || r.Dst == nil {
				continue
			}
			if ones, _ := r.Dst.Mask.Size(); ones != 64 {
				continue
			}
			if p, ok := netip.AddrFromSlice(r.Dst.IP); ok && !m.cfg.ULAPrefix.Contains(p) {
				prefix = netip.PrefixFrom(p, 64)
				return nil
			}
		}
		return errors.New("no advertised prefix")
	})
	return prefix, prefix.IsValid()
}

const infinityLifetime = 0xffffffff
