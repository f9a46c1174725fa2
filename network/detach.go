package network

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netns"

	"github.com/onionpod/onionpod/internal/netnsfile"
)

// Detach removes app's network: the namespace, the links, the ULA lease, the DHCP lease (CNI DEL).
// Already gone (also: detached by another process) is success; a damaged lease file is set aside
// (see DamagedLeases) and the pod torn down by its namespace's path. It returns without waiting for the
// kernel to finish deleting the links; an Attach of the same app waits for that (in another
// process, CNI ADD retries while the kernel still holds the pod's MAC).
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
	l, err := m.leaseForDetach(app) // as the last process left it: we hold the app's lock
	if err != nil {
		return err
	}
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
		if held >= 0 {
			held.Close()
		}
		return err
	}
	m.unwatchPod(app)
	if l == nil {
		// An orphan (a crash before its lease was stored): CNI DEL with the configuration libcni
		// cached at ADD, if it got that far, releases what the plugins hold. It may have been the
		// last LAN pod: the shim goes if no LAN lease is left.
		defer m.releaseShim()
		defer reap()
		orphan := &lease{App: app, Netns: path}
		if conf := m.cachedConflist(orphan); conf != nil {
			return m.cniDel(ctx, orphan, path, conf)
		}
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
	if err := m.leases.remove(app); err != nil {
		return errors.Join(delErr, fmt.Errorf("remove lease: %w", err))
	}
	m.syncWatchers(app)
	if !l.OnionOnly {
		m.releaseShim()
	}
	return delErr
}
