package network

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/onionpod/onionpod/internal/genvalue"
	"github.com/onionpod/onionpod/internal/netnsfile"
)

// undoTimeout bounds the cleanup of a failed attach, which runs even if the caller's context is done.
const undoTimeout = 30 * time.Second

// Attach makes app's network exist as asked and returns where the pod is. Attaching an app that is
// already attached the same way (by this Manager or by another process on the state dir) returns
// its current addresses and changes nothing but its firewall, if its published ports changed (in
// place: the namespace and the pod in it stay); attached differently (or half-attached after a
// crash), it is detached first. On error nothing is left.
func (m *Manager) Attach(ctx context.Context, a Attachment) (_ Result, err error) {
	if err := checkAttachment(a); err != nil {
		return Result{}, fmt.Errorf("network: attach: %w", err)
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
	old, err := m.currentLease(ctx, a) // as the last process left it: we hold the app's lock
	if err != nil {
		return Result{}, err
	}
	if m.reusable(ctx, old, a) {
		return m.keep(old, a)
	}
	if r, ok, err := m.rebuild(ctx, old, a); ok {
		return r, err
	}
	if err := m.clearPrevious(ctx, a.App, old); err != nil {
		return Result{}, err
	}
	return m.attachFresh(ctx, a)
}

// reusable reports whether the attach that lease l records is finished and is what a asks for
// (published ports aside: keep changes those in place).
func (m *Manager) reusable(ctx context.Context, l *lease, a Attachment) bool {
	return l != nil && m.same(l, a) && podLinkReady(l) && m.hostSideReady(ctx, l)
}

// keep returns an attached pod as it is, with its firewall made to publish a's ports.
func (m *Manager) keep(l *lease, a Attachment) (Result, error) {
	if err := ensureFirewall(l.Netns, m.firewallFor(l, a.Ports)); err != nil {
		return Result{}, err
	}
	return m.result(l), nil
}

// clearPrevious detaches what an earlier attach of app left (a lease or a namespace), and waits
// until its links are gone.
func (m *Manager) clearPrevious(ctx context.Context, app string, old *lease) error {
	if old == nil && !netnsfile.Exists(m.netnsPath(app)) {
		return nil
	}
	if err := m.teardown(ctx, app, old, false); err != nil {
		return fmt.Errorf("clear previous attach: %w", err)
	}
	return m.settled(ctx, app)
}

// attachFresh attaches a from nothing: the lease (stored while the rest goes on), the shim, the
// namespace with its firewall, then its links. On error it undoes all of it.
func (m *Manager) attachFresh(ctx context.Context, a Attachment) (_ Result, err error) {
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
	if saved, err = m.hold(ctx, l); err != nil {
		return Result{}, err
	}
	if !l.OnionOnly {
		if err := m.ensureShim(ctx, l.Uplink); err != nil {
			return Result{}, err
		}
		if err := m.ensureNeighbourRoom(); err != nil {
			return Result{}, err
		}
	}
	podH, err := m.createPod(l, a.Ports)
	if err != nil {
		return Result{}, err
	}
	defer podH.Close()
	if err := m.wirePod(ctx, l, podH); err != nil {
		return Result{}, err
	}
	if err := saved(); err != nil {
		return Result{}, err
	}
	m.announce(l.App)
	return m.resultWith(l, podH), nil
}

// rebuild attaches a again on its lease old when the pod's namespace is gone but its lease is
// whole and still what a asks for: the pod's namespace went with the box's /run (a reboot: every
// network unit does this at boot, at once). The lease stays as it is (its MAC, its ULA: no other
// attach can have taken the ULA while the lease held it), so neither every lease on disk nor the
// state lock is needed, and CNI DEL has nothing to release (no DHCP lease: an IPv4 pod is
// attached afresh). ok is false when it does not apply; on error nothing is left (as
// attachFresh).
func (m *Manager) rebuild(ctx context.Context, old *lease, a Attachment) (_ Result, ok bool, err error) {
	if old == nil || old.IPv4 || !m.same(old, a) || netnsfile.Exists(old.Netns) {
		return Result{}, false, nil
	}
	fresh, err := m.prepareLease(ctx, a)
	if err != nil || fresh.Uplink != old.Uplink || !sameJSON(fresh.Conflist, old.Conflist) || fresh.Netns != old.Netns {
		return Result{}, false, nil // attached afresh: that says what is wrong
	}
	m.unwatchPod(a.App) // let go of the old namespace, if this process still holds it
	l := old.stored()   // a copy: the cached lease is shared
	defer func() {
		if err != nil {
			undoCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
			defer cancel()
			err = errors.Join(err, m.teardown(undoCtx, a.App, &l, true))
		}
	}()
	if !l.OnionOnly {
		if err := m.ensureShim(ctx, l.Uplink); err != nil {
			return Result{}, true, err
		}
		if err := m.ensureNeighbourRoom(); err != nil {
			return Result{}, true, err
		}
	}
	podH, err := m.createPod(&l, a.Ports)
	if err != nil {
		return Result{}, true, err
	}
	defer podH.Close()
	if err := m.wirePod(ctx, &l, podH); err != nil {
		return Result{}, true, err
	}
	m.announce(l.App)
	return m.resultWith(&l, podH), true, nil
}

// sameJSON reports whether a and b are the same JSON but for white space (a lease holds its
// conflist re-indented).
func sameJSON(a, b []byte) bool {
	var ca, cb bytes.Buffer
	return json.Compact(&ca, a) == nil && json.Compact(&cb, b) == nil && bytes.Equal(ca.Bytes(), cb.Bytes())
}

// createPod creates the pod's namespace and its firewall, before any link exists, and returns a
// netlink handle in it (the caller closes it).
func (m *Manager) createPod(l *lease, ports []PortMap) (*netlink.Handle, error) {
	var podH *netlink.Handle
	if err := netnsfile.Create(l.Netns, setupPod(l.OnionOnly, &podH)); err != nil {
		return nil, err
	}
	if err := applyFirewall(l.Netns, m.firewallFor(l, ports), false); err != nil {
		podH.Close()
		return nil, err
	}
	return podH, nil
}

// wirePod gives the pod its links: an onion-only pod its veth to the host, a LAN pod its macvlan
// (CNI ADD) and its ULA.
func (m *Manager) wirePod(ctx context.Context, l *lease, podH *netlink.Handle) error {
	if l.OnionOnly {
		return m.addHostVeth(l, podH)
	}
	l.cniStarted = true
	if err := m.cniAdd(ctx, l); err != nil {
		return err
	}
	return addULA(podH, l.ULA)
}

// same reports whether lease l is what attachment a asks for. An "auto" uplink is not resolved
// again: a pod stays where it is until Check finds its uplink gone.
func (m *Manager) same(l *lease, a Attachment) bool {
	if l.OnionOnly != a.OnionOnly || l.IPv4 != a.IPv4 {
		return false
	}
	return l.OnionOnly || m.cfg.Uplink == autoUplink || m.cfg.Uplink == l.Uplink
}

// hostSideReady makes sure the host's end of an attached pod is there: for a LAN pod the shim
// (recreated if someone deleted it), for an onion-only pod its host veth.
func (m *Manager) hostSideReady(ctx context.Context, l *lease) bool {
	if l.OnionOnly {
		return m.checkHostVeth(l) == nil
	}
	return m.ensureShim(ctx, l.Uplink) == nil
}

// prepareLease checks what the attach needs (plugins, uplink, DHCP daemon) and builds the lease:
// MAC from the name (refused if another held app has it), a free ULA, the conflist.
func (m *Manager) prepareLease(ctx context.Context, a Attachment) (*lease, error) {
	l := &lease{Version: leaseVersion, App: a.App, OnionOnly: a.OnionOnly, IPv4: a.IPv4, Netns: m.netnsPath(a.App)}
	if err := genvalue.Path("netns", l.Netns); err != nil {
		return nil, err
	}
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
		if err := checkIfName("uplink", uplink); err != nil {
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

// hold picks the lease's ULA (see pickULA) and stores the lease, under the state lock, so that no two attaches
// (in this process or another) pick the same ULA or share a MAC: every lease on disk counts. The
// lease file is written (and fsynced) in the background while the attach goes on, and the state
// lock is released when it has landed; saved waits for that and returns the write's error.
func (m *Manager) hold(ctx context.Context, l *lease) (saved func() error, err error) {
	unlock, err := m.lockState(ctx)
	if err != nil {
		return nil, err
	}
	if err := m.pickULA(l); err != nil {
		unlock()
		return nil, err
	}
	done := make(chan error, 1)
	go func() {
		defer unlock()
		done <- m.leases.save(l)
	}()
	return sync.OnceValue(func() error {
		if err := <-done; err != nil {
			return fmt.Errorf("store lease: %w", err)
		}
		return nil
	}), nil
}

// pickULA refuses a MAC another lease has and gives l the first candidate ULA no other lease
// holds; a lease rebuilt from a live pod (l.ULA set) keeps its ULA, or is refused if another lease
// holds it. Apps whose lease file cannot be read keep what they may hold. Call it under the state
// lock.
func (m *Manager) pickULA(l *lease) error {
	set, err := m.leases.loadAll(&m.cache)
	if err != nil {
		return fmt.Errorf("read leases: %w", err)
	}
	taken := map[netip.Addr]bool{}
	holds := func(app, mac string, ulas ...netip.Addr) error {
		if app == l.App {
			return nil
		}
		if mac == l.MAC {
			return fmt.Errorf("apps %q and %q derive the same MAC %s; rename one: %w", l.App, app, l.MAC, ErrMACCollision)
		}
		for _, ula := range ulas {
			taken[ula] = true
		}
		return nil
	}
	for app, other := range set.leases {
		if err := holds(app, other.MAC, other.ULA); err != nil {
			return err
		}
	}
	for app := range set.bad {
		if err := holds(app, PredictMAC(app).String(), m.heldByUnreadable(app)...); err != nil {
			return err
		}
	}
	if l.ULA.IsValid() {
		if taken[l.ULA] {
			return fmt.Errorf("ULA %s is leased to another app", l.ULA)
		}
		return nil
	}
	for try := 0; ; try++ {
		if ula := ulaFor(m.cfg.ULAPrefix, l.App, try); !taken[ula] {
			l.ULA = ula
			return nil
		}
	}
}

// announce tells watchers, here and in other processes, that app's attach has finished: the lease
// file's times are touched (an inotify IN_ATTRIB; nothing to fsync), and this process's watchers
// are told directly.
func (m *Manager) announce(app string) {
	now := time.Now()
	os.Chtimes(m.leases.path(app), now, now) // best effort: watchers also retry on their own
	m.syncWatchers(app)
}
