package network

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// AddressChange reports a LAN pod's usable addresses after they changed: when its SLAAC address
// finished DAD, when the router advertised a new prefix (LAN moves) and deprecated the old one
// (it goes to Deprecated), when DHCP gave or changed IPv4. DNS publishes LAN and IPv4.
type AddressChange struct {
	App string
	// LAN is the pod's best usable IPv6 LAN address: not tentative, not deprecated, global
	// addresses before router-advertised ULAs, then the longest preferred lifetime. Invalid if none.
	LAN netip.Addr
	// IPv4 is the pod's IPv4 address on the LAN link, if any.
	IPv4 netip.Addr
	// Deprecated are addresses still on the link whose prefix the router withdrew: not to publish.
	Deprecated []netip.Addr
}

// Watch reports address changes of every LAN pod, attached now or later, by this Manager or by
// another process on the state dir, until ctx ends; then the channel is closed. It follows the
// lease files (inotify on the leases dir: a pod attached by `net-up` is followed from the moment
// its attach ends) and netlink address events inside each pod's namespace (no polling), and
// resynchronizes from a fresh dump if the kernel drops events. A slow reader delays events, it
// does not lose the latest state.
func (m *Manager) Watch(ctx context.Context) <-chan AddressChange {
	w := &watcher{out: make(chan AddressChange, 64), ula: m.cfg.ULAPrefix, leases: m.leases, pods: map[string]*follower{}}
	notify, notifyErr := openLeaseNotify(m.leases.dir) // before the first scan: no change slips between
	m.mu.Lock()
	m.watchers[w] = struct{}{}
	m.mu.Unlock()
	w.resync()
	go func() {
		if notifyErr == nil {
			notify.run(ctx, w.syncAll, w.resync)
		} else {
			rescanUntil(ctx, w.resync) // no inotify (out of instances): look again now and then
		}
		m.mu.Lock()
		delete(m.watchers, w)
		m.mu.Unlock()
		w.close()
	}()
	return w.out
}

// syncWatchers makes every watcher of this process follow app as its lease on disk now says.
func (m *Manager) syncWatchers(app string) {
	for _, w := range m.currentWatchers() {
		w.sync(app)
	}
}

// unwatchPod stops following app at once (its namespace is going: let go of it).
func (m *Manager) unwatchPod(app string) {
	for _, w := range m.currentWatchers() {
		w.stop(app)
	}
}

func (m *Manager) currentWatchers() []*watcher {
	m.mu.Lock()
	defer m.mu.Unlock()
	ws := make([]*watcher, 0, len(m.watchers))
	for w := range m.watchers {
		ws = append(ws, w)
	}
	return ws
}

type watcher struct {
	out    chan AddressChange
	ula    netip.Prefix
	leases leaseStore

	mu     sync.Mutex // also makes syncs one at a time, so the last one's view of the disk wins
	pods   map[string]*follower
	closed bool
	wg     sync.WaitGroup
}

// follower follows one attach of a LAN pod: the one whose lease file is inode ino.
type follower struct {
	ino   uint64
	netns string
	stop  chan struct{}
	kick  chan struct{} // try subscribing again now (the attach finished)
}

// sync makes the watcher follow app as its lease file says now: a LAN lease it does not follow yet
// (or a new one: a re-attach, whose namespace is new) gets a fresh follower; a lease it follows
// already is a nudge (its attach finished: subscribe now); no lease, or an onion-only one, stops it.
func (w *watcher) sync(app string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	l, ino, err := w.leases.loadWithInode(app)
	if err != nil {
		return // unreadable now; the next change of the file brings us back
	}
	f := w.pods[app]
	if l == nil || l.OnionOnly {
		if f != nil {
			close(f.stop)
			delete(w.pods, app)
		}
		return
	}
	if f != nil && f.ino == ino && f.netns == l.Netns {
		select {
		case f.kick <- struct{}{}:
		default:
		}
		return
	}
	if f != nil {
		close(f.stop)
	}
	f = &follower{ino: ino, netns: l.Netns, stop: make(chan struct{}), kick: make(chan struct{}, 1)}
	w.pods[app] = f
	w.wg.Add(1)
	go w.follow(app, f)
}

func (w *watcher) syncAll(apps []string) {
	for _, app := range apps {
		w.sync(app)
	}
}

// resync syncs every app with a lease file and every app followed: the first scan, and the
// recovery when inotify dropped events.
func (w *watcher) resync() {
	apps, _ := w.leases.apps()
	w.mu.Lock()
	for app := range w.pods {
		apps = append(apps, app)
	}
	w.mu.Unlock()
	w.syncAll(apps)
}

func (w *watcher) stop(app string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if f, ok := w.pods[app]; ok {
		close(f.stop)
		delete(w.pods, app)
	}
}

func (w *watcher) close() {
	w.mu.Lock()
	w.closed = true
	for app, f := range w.pods {
		close(f.stop)
		delete(w.pods, app)
	}
	w.mu.Unlock()
	w.wg.Wait()
	close(w.out)
}

// Follower retries: at once when nudged, else after a second, doubling up to maxRetry while the
// namespace is not there (a lease whose pod is not attached yet, as after a reboot).
const maxRetry = 30 * time.Second

// follow reports app's address changes until stopped; it subscribes again after errors (the
// namespace or its link not there yet, or the kernel dropping events under load).
func (w *watcher) follow(app string, f *follower) {
	defer w.wg.Done()
	var last podAddrs
	retry := time.Second
	for {
		wait := retry
		if w.subscribe(app, f.netns, f.stop, &last) {
			wait, retry = time.Second, time.Second
		} else {
			retry = min(2*retry, maxRetry)
		}
		timer := time.NewTimer(wait)
		select {
		case <-f.stop:
			timer.Stop()
			return
		case <-f.kick:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// subscribe follows the pod's link until stop or an error; it reports whether it got as far as
// following (false: the namespace or the link is not there).
func (w *watcher) subscribe(app, path string, stop chan struct{}, last *podAddrs) bool {
	nsh, err := netns.GetFromPath(path)
	if err != nil {
		return false
	}
	ifindex := 0
	err = withHandle(nsh, func(h *netlink.Handle) error {
		link, err := h.LinkByName(podIfName)
		if err == nil {
			ifindex = link.Attrs().Index
		}
		return err
	})
	if err != nil {
		nsh.Close()
		return false
	}
	updates := make(chan netlink.AddrUpdate, 256)
	done := make(chan struct{})
	err = netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{
		Namespace: &nsh, ListExisting: true, ReceiveBufferSize: 1 << 20,
	})
	nsh.Close()
	if err != nil {
		return false
	}
	defer func() {
		close(done)
		for range updates { // let the reader see the closed socket and end
		}
	}()
	seen := map[netip.Addr]addrInfo{}
	for {
		select {
		case <-stop:
			return true
		case u, ok := <-updates:
			if !ok {
				return true
			}
			if u.LinkIndex != ifindex {
				continue
			}
			ip, ok := netip.AddrFromSlice(u.LinkAddress.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if u.NewAddr {
				seen[ip] = addrInfo{flags: u.Flags, scope: u.Scope, preferred: u.PreferedLft}
			} else {
				delete(seen, ip)
			}
			if len(updates) > 0 {
				continue // report the state after the burst, not every step of it
			}
			now := usable(seen, w.ula)
			if now.equal(*last) {
				continue
			}
			select {
			case w.out <- AddressChange{App: app, LAN: now.LAN, IPv4: now.IPv4, Deprecated: now.Deprecated}:
				*last = now
			case <-stop:
				return true
			}
		}
	}
}
