package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/onionpod/onionpod/network/internal/netnsfile"
)

// undoTimeout bounds the cleanup of a failed attach, which runs even if the caller's context is done.
const undoTimeout = 30 * time.Second

// Attach makes app's network exist as asked and returns where the pod is. Attaching an app that is
// already attached the same way (by this Manager or by another process on the state dir) returns
// its current addresses and changes nothing; attached differently (or half-attached after a crash),
// it is detached first. On error nothing is left.
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

	old, err := m.leases.load(a.App) // as the last process left it: we hold the app's lock
	if err != nil {
		return Result{}, err
	}
	if old != nil && m.same(old, a) && podLinkReady(old) && m.hostSideReady(ctx, old) {
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
	if saved, err = m.hold(ctx, l); err != nil {
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
	m.announce(l.App)
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

// hold picks the lease's ULA and stores the lease, under the state lock, so that no two attaches
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

// pickULA refuses a MAC another lease has and gives l the first candidate ULA no other lease holds.
// Call it under the state lock.
func (m *Manager) pickULA(l *lease) error {
	all, err := m.leases.loadAll(&m.cache)
	if err != nil {
		return fmt.Errorf("read leases: %w", err)
	}
	taken := map[netip.Addr]bool{}
	for app, other := range all {
		if app == l.App {
			continue
		}
		if other.MAC == l.MAC {
			return fmt.Errorf("apps %q and %q derive the same MAC %s; rename one: %w", l.App, app, l.MAC, ErrMACCollision)
		}
		taken[other.ULA] = true
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
