package network

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"

	"github.com/onionpod/onionpod/internal/netnsfile"
)

// result is where the pod of lease l is now, and what its firewall holds.
func (m *Manager) result(l *lease) Result {
	var r Result
	err := inPod(l.Netns, func(h *netlink.Handle) error {
		r = m.resultWith(l, h)
		return nil
	})
	if err != nil {
		r = m.resultWith(l, nil)
	}
	return r
}

// resultWith is result with a netlink handle in the pod (nil: the pod's addresses are unknown).
func (m *Manager) resultWith(l *lease, podH *netlink.Handle) Result {
	r := Result{Netns: l.Netns, MAC: l.mac(), ULA: l.ULA}
	if st, err := readFirewall(l.Netns); err == nil && st.present {
		r.Ports, r.Firewall = st.ports, st.holds(m.firewallFor(l, st.ports))
	}
	if l.OnionOnly {
		return r
	}
	if podH == nil {
		return m.predict(l, r)
	}
	now, err := podAddresses(podH, m.cfg.ULAPrefix)
	if err == nil {
		r.LAN, r.IPv4 = now.LAN, now.IPv4
	}
	return m.predict(l, r)
}

// predict fills what the pod does not have yet: the LAN address from the prefix the box sees
// advertised, IPv4 from the CNI result.
func (m *Manager) predict(l *lease, r Result) Result {
	if !r.LAN.IsValid() {
		if prefix, ok := m.advertisedPrefix(l.Uplink); ok {
			r.LAN = SLAACAddress(prefix, l.mac())
		}
	}
	if l.IPv4 && !r.IPv4.IsValid() {
		r.IPv4 = m.cachedIPv4(l)
	}
	return r
}

// Addresses returns where an attached pod is now, whichever process attached it (its lease file and
// its namespace, read now), and the ports its firewall publishes. It takes no lock: during another
// process's attach it may see the lease before the namespace, and then reports the addresses the
// pod will have. A damaged lease file is an error matching ErrDamagedLease (Attach repairs it).
//
// While a Watch follows the pod, its addresses are those its netlink events left, and its
// firewall is read again only after an nftables event in its namespace: asking for every pod of
// a big box then costs a stat of each lease file, not a netlink conversation with each pod.
func (m *Manager) Addresses(ctx context.Context, app string) (Result, error) {
	if err := validApp(app); err != nil {
		return Result{}, fmt.Errorf("network: addresses: %w", err)
	}
	l, ino, err := m.leases.loadCached(ctx, &m.cache, app)
	if err != nil {
		return Result{}, fmt.Errorf("network: addresses: %w", err)
	}
	if l == nil {
		return Result{}, fmt.Errorf("network: addresses %q: %w", app, ErrNotFound)
	}
	if r, ok := m.followed(ctx, l, ino); ok {
		return r, nil
	}
	return m.result(l), nil
}

// cachedFirewall is a pod's firewall as read during one subscription to its nftables events,
// before the event numbered epoch.
type cachedFirewall struct {
	sub, epoch uint64
	st         firewallState
	// lease is the lease whose firewall st was last compared with (holds: whether st is that
	// firewall): a lease file read again is a new lease, compared again.
	lease *lease
	holds bool
}

// followed is the result of lease l (file inode ino) from what a watch follows of it; ok false
// when no watch follows that attach (yet).
func (m *Manager) followed(ctx context.Context, l *lease, ino uint64) (Result, bool) {
	settled, _ := ctx.Value(settledKey{m}).(bool)
	for _, w := range m.currentWatchers() {
		v, ok := w.view(l.App, ino, settled)
		if !ok {
			continue
		}
		r := Result{Netns: l.Netns, MAC: l.mac(), ULA: l.ULA}
		m.mu.Lock()
		fw, ok := m.firewalls[l.App]
		m.mu.Unlock()
		stale := !ok || fw.sub != v.sub || fw.epoch != v.fwEpoch // the firewall read is not the namespace's now
		if stale || fw.lease != l {
			if stale {
				st, err := readFirewall(l.Netns) // after the epoch was taken: a change meanwhile makes it stale
				if err != nil {
					return Result{}, false
				}
				fw = cachedFirewall{sub: v.sub, epoch: v.fwEpoch, st: st}
			}
			fw.lease, fw.holds = l, fw.st.holds(m.firewallFor(l, fw.st.ports))
			m.mu.Lock()
			m.firewalls[l.App] = fw
			m.mu.Unlock()
		}
		if fw.st.present {
			r.Ports, r.Firewall = fw.st.ports, fw.holds
		}
		if l.OnionOnly {
			return r, true
		}
		r.LAN, r.IPv4 = v.addrs.LAN, v.addrs.IPv4
		return m.predict(l, r), true
	}
	return Result{}, false
}

// Check verifies that app's attachment is still as Attach left it: namespace, link, MAC and ULA
// (CNI CHECK for LAN pods), its firewall, and the host side (shim or veth). Errors wrap
// ErrNotFound or ErrDrift (with ErrDamagedLease when the lease file is damaged); on drift, the
// caller attaches again (which repairs in place what it can). It waits for an Attach or Detach of the app
// running in this process or another, and checks what that left.
func (m *Manager) Check(ctx context.Context, app string) error {
	if err := validApp(app); err != nil {
		return fmt.Errorf("network: check: %w", err)
	}
	unlock, err := m.lock(ctx, app) // CNI CHECK must not run alongside ADD or DEL of the pod
	if err != nil {
		return fmt.Errorf("network: check %q: %w", app, err)
	}
	defer unlock()
	drift := func(err error) error { return fmt.Errorf("network: check %q: %w: %w", app, ErrDrift, err) }
	l, err := m.leases.load(app)
	if errors.Is(err, ErrDamagedLease) {
		return drift(err)
	}
	if err != nil {
		return fmt.Errorf("network: check: %w", err)
	}
	if l == nil {
		return fmt.Errorf("network: check %q: %w", app, ErrNotFound)
	}
	if !netnsfile.Exists(l.Netns) {
		return drift(fmt.Errorf("namespace %s is gone", l.Netns))
	}
	if !podLinkReady(l) {
		return drift(fmt.Errorf("%s is missing, down or without %s", podIfName, l.ULA))
	}
	if st, err := readFirewall(l.Netns); err != nil || !st.holds(m.firewallFor(l, st.ports)) {
		return drift(errors.New("the pod's firewall is missing or not as written"))
	}
	if l.OnionOnly {
		if err := m.checkHostVeth(l); err != nil {
			return drift(err)
		}
		return nil
	}
	if err := m.cniCheck(ctx, l); err != nil {
		return drift(err)
	}
	if err := m.checkShim(l.Uplink); err != nil {
		return drift(err)
	}
	return nil
}

func (m *Manager) checkHostVeth(l *lease) error {
	var mac net.HardwareAddr
	err := inPod(l.Netns, func(h *netlink.Handle) error {
		link, err := h.LinkByName(podIfName)
		if err != nil {
			return err
		}
		mac = link.Attrs().HardwareAddr
		return nil
	})
	if err != nil {
		return err
	}
	if mac.String() != l.MAC {
		return fmt.Errorf("%s has MAC %s, want %s", podIfName, mac, l.MAC)
	}
	return m.inBox(func(h *netlink.Handle) error {
		if _, err := h.LinkByName(hostVethName(l.App)); err != nil {
			return fmt.Errorf("host veth %s missing", hostVethName(l.App))
		}
		return nil
	})
}
