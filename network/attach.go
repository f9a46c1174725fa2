package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/onionpod/onionpod/network/internal/netnsfile"
)

// undoTimeout bounds the cleanup of a failed attach, which runs even if the caller's context is done.
const undoTimeout = 30 * time.Second

// Attach makes app's network exist as asked and returns where the pod is. Attaching an app that is
// already attached the same way returns its current addresses and changes nothing; attached
// differently (or half-attached after a crash), it is detached first. On error nothing is left.
func (m *Manager) Attach(ctx context.Context, a Attachment) (_ Result, err error) {
	if err := validApp(a.App); err != nil {
		return Result{}, fmt.Errorf("network: attach: %w", err)
	}
	if a.OnionOnly && a.IPv4 {
		return Result{}, fmt.Errorf("network: attach %q: an onion-only pod has no LAN link for IPv4: %w", a.App, ErrBadInput)
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("network: attach %q: %w", a.App, err)
		}
	}()
	unlock, err := m.lock(ctx, a.App)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	if err := m.settled(ctx, a.App); err != nil {
		return Result{}, err
	}

	m.mu.Lock()
	old := m.held[a.App]
	m.mu.Unlock()
	if old != nil && m.same(old, a) && podLinkReady(old) {
		return m.result(old), nil
	}
	if old != nil || netnsfile.Exists(m.netnsPath(a.App)) {
		if err := m.teardown(ctx, a.App, old, false); err != nil {
			return Result{}, fmt.Errorf("clear previous attach: %w", err)
		}
		if err := m.settled(ctx, a.App); err != nil {
			return Result{}, err
		}
	}

	l, err := m.prepareLease(ctx, a)
	if err != nil {
		return Result{}, err
	}
	saved := func() error { return nil }
	defer func() {
		if err != nil {
			saved() // the undo removes the lease file: let the write land first
			undoCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
			defer cancel()
			err = errors.Join(err, m.teardown(undoCtx, a.App, l, true))
		}
	}()
	if saved, err = m.hold(l); err != nil {
		return Result{}, err
	}
	if !l.OnionOnly {
		if err := m.ensureShim(ctx, l.Uplink); err != nil {
			return Result{}, err
		}
	}
	var podH *netlink.Handle
	if err := netnsfile.Create(l.Netns, setupPod(l.OnionOnly, &podH)); err != nil {
		return Result{}, err
	}
	defer podH.Close()
	if l.OnionOnly {
		if err := m.addHostVeth(l, podH); err != nil {
			return Result{}, err
		}
	} else {
		l.cniStarted = true
		if err := m.cniAdd(ctx, l); err != nil {
			return Result{}, err
		}
		if err := addULA(podH, l.ULA); err != nil {
			return Result{}, err
		}
	}
	if err := saved(); err != nil {
		return Result{}, err
	}
	m.watchPod(l)
	return m.resultWith(l, podH), nil
}

// same reports whether lease l is what attachment a asks for. An "auto" uplink is not resolved
// again: a pod stays where it is until Check finds its uplink gone.
func (m *Manager) same(l *lease, a Attachment) bool {
	if l.OnionOnly != a.OnionOnly || l.IPv4 != a.IPv4 {
		return false
	}
	return l.OnionOnly || m.cfg.Uplink == autoUplink || m.cfg.Uplink == l.Uplink
}

// prepareLease checks what the attach needs (plugins, uplink, DHCP daemon) and builds the lease:
// MAC from the name (refused if another held app has it), a free ULA, the conflist.
func (m *Manager) prepareLease(ctx context.Context, a Attachment) (*lease, error) {
	l := &lease{Version: leaseVersion, App: a.App, OnionOnly: a.OnionOnly, IPv4: a.IPv4, Netns: m.netnsPath(a.App)}
	mac := PredictMAC(a.App)
	l.MAC = mac.String()
	if !a.OnionOnly {
		plugins := []string{"macvlan"}
		if a.IPv4 {
			plugins = append(plugins, "dhcp")
		}
		if err := m.findPlugins(plugins...); err != nil {
			return nil, err
		}
		uplink, err := m.resolveUplink()
		if err != nil {
			return nil, err
		}
		if err := m.checkUplink(uplink); err != nil {
			return nil, err
		}
		dhcpSocket := ""
		if a.IPv4 {
			if err := m.probeDHCP(ctx); err != nil {
				return nil, err
			}
			dhcpSocket = m.cfg.DHCPSocket
		}
		l.Uplink = uplink
		l.Conflist = Conflist(uplink, mac, dhcpSocket)
	}
	return l, nil
}

// hold picks the lease's ULA and holds the lease, under the Manager's lock so two attaches never
// pick the same ULA or MAC. The lease file is written (and fsynced) in the background while the
// attach goes on; saved waits for that write and returns its error.
func (m *Manager) hold(l *lease) (saved func() error, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	taken := map[netip.Addr]bool{}
	for app, other := range m.held {
		if app == l.App {
			continue
		}
		if other.MAC == l.MAC {
			return nil, fmt.Errorf("apps %q and %q derive the same MAC %s; rename one: %w", l.App, app, l.MAC, ErrMACCollision)
		}
		taken[other.ULA] = true
	}
	for try := 0; ; try++ {
		if ula := ulaFor(m.cfg.ULAPrefix, l.App, try); !taken[ula] {
			l.ULA = ula
			break
		}
	}
	m.held[l.App] = l
	done := make(chan error, 1)
	go func() { done <- m.leases.save(l) }()
	return sync.OnceValue(func() error {
		if err := <-done; err != nil {
			return fmt.Errorf("store lease: %w", err)
		}
		return nil
	}), nil
}

// Detach removes app's network: the namespace, the links, the ULA lease, the DHCP lease (CNI DEL).
// Already gone is success. It returns without waiting for the kernel to finish deleting the links;
// an Attach of the same app waits for that.
func (m *Manager) Detach(ctx context.Context, app string) (err error) {
	if err := validApp(app); err != nil {
		return fmt.Errorf("network: detach: %w", err)
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("network: detach %q: %w", app, err)
		}
	}()
	unlock, err := m.lock(ctx, app)
	if err != nil {
		return err
	}
	defer unlock()
	m.mu.Lock()
	l := m.held[app]
	m.mu.Unlock()
	return m.teardown(ctx, app, l, false)
}

// teardown undoes an attach, complete or not, in an order that never blocks on the kernel: the
// namespace is unmounted first (but held open by us), so CNI DEL finds no namespace and only
// releases IPAM state (the DHCP daemon releases the lease from inside the namespace, whose link
// still exists); then the lease goes, and the links are deleted in the background. If CNI DEL fails
// the lease is kept so a later Detach retries it, unless force (the undo of a failed attach, which
// must leave nothing).
func (m *Manager) teardown(ctx context.Context, app string, l *lease, force bool) error {
	path := m.netnsPath(app)
	if l != nil {
		path = l.Netns
	}
	var held netns.NsHandle = -1
	if netnsfile.Exists(path) {
		if h, err := netns.GetFromPath(path); err == nil {
			held = h
		}
	}
	reap := func() {
		if held >= 0 {
			m.background(app, func() { deleteLinks(held) })
		}
	}
	if err := netnsfile.Remove(path); err != nil {
		reap()
		return err
	}
	m.unwatchPod(app)
	if l == nil {
		reap()
		return nil
	}
	var delErr error
	if !l.OnionOnly && (l.cniStarted || !force) {
		delErr = m.cniDel(ctx, l, path, l.Conflist)
		if delErr != nil && l.IPv4 && m.probeDHCP(ctx) != nil {
			// The daemon is gone, and the leases it kept in memory with it: nothing left to
			// release here (the server's lease expires). DEL without IPAM clears the CNI cache.
			delErr = m.cniDel(ctx, l, path, Conflist(l.Uplink, l.mac(), ""))
		}
	}
	reap()
	if delErr != nil && !force {
		return delErr
	}
	m.mu.Lock()
	err := m.leases.remove(app)
	if err == nil {
		delete(m.held, app)
	}
	m.mu.Unlock()
	if err != nil {
		return errors.Join(delErr, fmt.Errorf("remove lease: %w", err))
	}
	if !l.OnionOnly {
		m.releaseShim()
	}
	return delErr
}

// result is where the pod of lease l is now.
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

// Addresses returns where an attached pod is now.
func (m *Manager) Addresses(app string) (Result, error) {
	if err := validApp(app); err != nil {
		return Result{}, fmt.Errorf("network: addresses: %w", err)
	}
	m.mu.Lock()
	l := m.held[app]
	m.mu.Unlock()
	if l == nil {
		return Result{}, fmt.Errorf("network: addresses %q: %w", app, ErrNotFound)
	}
	return m.result(l), nil
}

// Check verifies that app's attachment is still as Attach left it: namespace, link, MAC and ULA
// (CNI CHECK for LAN pods), and the host side (shim or veth). Errors wrap ErrNotFound or ErrDrift;
// on drift, the caller detaches and attaches again.
func (m *Manager) Check(ctx context.Context, app string) error {
	if err := validApp(app); err != nil {
		return fmt.Errorf("network: check: %w", err)
	}
	m.mu.Lock()
	l := m.held[app]
	m.mu.Unlock()
	if l == nil {
		return fmt.Errorf("network: check %q: %w", app, ErrNotFound)
	}
	drift := func(err error) error { return fmt.Errorf("network: check %q: %w: %w", app, ErrDrift, err) }
	if !netnsfile.Exists(l.Netns) {
		return drift(fmt.Errorf("namespace %s is gone", l.Netns))
	}
	if !podLinkReady(l) {
		return drift(fmt.Errorf("%s is missing, down or without %s", podIfName, l.ULA))
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
