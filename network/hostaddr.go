package network

import (
	"context"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// HostIPv4 is the box's own IPv4 address on the uplink: its primary global address (invalid if it
// has none). A box usually has one, often dynamic, shared by every app (the edge serves it).
func (m *Manager) HostIPv4() (netip.Addr, error) {
	uplink, err := m.resolveUplink()
	if err != nil {
		return netip.Addr{}, err
	}
	var best netip.Addr
	err = m.inBox(func(h *netlink.Handle) error {
		link, err := h.LinkByName(uplink)
		if err != nil {
			return err
		}
		addrs, err := h.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if !ip.Is4() || !ip.IsGlobalUnicast() || ip.IsLinkLocalUnicast() || a.Scope != unix.RT_SCOPE_UNIVERSE {
				continue
			}
			if a.Flags&unix.IFA_F_SECONDARY == 0 {
				best = ip // the primary address wins
				return nil
			}
			if !best.IsValid() {
				best = ip
			}
		}
		return nil
	})
	return best, err
}

// WatchHostIPv4 reports HostIPv4 at once and after every change, until ctx ends (then the channel
// is closed). It follows the kernel's address events in the box (a DHCP renewal that changes the
// address is seen within milliseconds), and looks again every 30 s (an "auto" uplink whose default
// route moved to another link).
func (m *Manager) WatchHostIPv4(ctx context.Context) <-chan netip.Addr {
	out := make(chan netip.Addr, 1)
	go func() {
		defer close(out)
		sub := make(chan netlink.AddrUpdate, 64)
		updates := sub
		done := make(chan struct{})
		nsh := netns.NsHandle(m.box.Fd())
		subscribed := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{
			Namespace: &nsh, ReceiveBufferSize: 1 << 20,
		}) == nil
		if subscribed {
			defer func() {
				close(done)
				for range sub { // let the reader see the closed socket and end
				}
			}()
		} else {
			updates = nil // the ticker alone
		}
		tick := time.NewTicker(30 * time.Second)
		defer tick.Stop()
		var last netip.Addr
		first := true
		for {
			if cur, err := m.HostIPv4(); err == nil && (first || cur != last) {
				select {
				case out <- cur:
					last, first = cur, false
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case _, ok := <-updates:
				if !ok {
					updates = nil
				}
				for len(updates) > 0 { // the state after the burst
					<-updates
				}
			case <-tick.C:
			}
		}
	}()
	return out
}
