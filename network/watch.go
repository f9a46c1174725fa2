package network

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/onionpod/onionpod/internal/netnsfile"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
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
//
// While a Watch runs, the Manager also answers Addresses from what it follows: the addresses
// the pod's events left, and its firewall as last read (every nftables change in the pod's
// namespace, by anyone, is an event that makes the next Addresses read it again). A pass over
// many pods then asks the kernel nothing about pods that did not change.
//
// Every followed pod costs two netlink sockets (addresses, nftables events) and no goroutine:
// one goroutine waits on all the sockets at once (epoll) and reads them with one buffer.
func (m *Manager) Watch(ctx context.Context) <-chan AddressChange {
	w, err := newWatcher(m.cfg.ULAPrefix, m.leases, netnsfile.MountTable(m.cfg.NetnsDir))
	if err != nil {
		// No epoll instance (out of file descriptors): a watch that reports nothing until ctx
		// ends; Addresses reads the pods as without a watch.
		out := make(chan AddressChange)
		go func() { <-ctx.Done(); close(out) }()
		return out
	}
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
	m.mu.Lock()
	delete(m.firewalls, app)
	m.mu.Unlock()
}

// settledKey marks a context in which a Manager's watches were drained (see Settled).
type settledKey struct{ m *Manager }

// Settled reads every event the Manager's watches have queued now and returns ctx noting it:
// Addresses given that context answers from what was read by then (or since) without reading
// the pods' sockets again. For a look at many pods, such as a reconcile pass's observation (one
// poll instead of one per pod): it sees each pod as it was when the look began, or later.
func (m *Manager) Settled(ctx context.Context) context.Context {
	if m == nil {
		return ctx
	}
	for _, w := range m.currentWatchers() {
		w.mu.Lock()
		w.drainLocked()
		w.mu.Unlock()
	}
	return context.WithValue(ctx, settledKey{m}, true)
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
	epfd   int // every followed pod's sockets
	wakeFD int // an eventfd in epfd: the loop ends when closed is set
	// mountsFD is the mountinfo of the mount table the pods' namespaces are named in (this
	// process's, or the namespace holder's), polled (with epfd, in one call) by every view: it
	// signals a change of the mount table, which any change of what a pod's namespace path
	// names is (an unmount, a new bind mount). -1: not open (every view stats the path).
	mountsFD int

	mu      sync.Mutex // also makes syncs one at a time, so the last one's view of the disk wins
	pods    map[string]*follower
	byFD    map[int32]*follower
	closed  bool
	nextSub uint64
	mounts  uint64                   // counts the mount table changes the views saw
	pending map[string]AddressChange // reports not yet taken by the reader (the latest per app)
	queued  chan struct{}            // capacity 1: pending has something
	buf     []byte                   // what the sockets are read into
	ended   chan struct{}            // closed by close: the sender stops
	wg      sync.WaitGroup           // the loop and the sender
}

// follower follows one attach of a pod: the one whose lease file is inode ino.
type follower struct {
	app   string
	ino   uint64
	netns string
	lan   bool // a LAN pod: its addresses are followed (an onion-only pod: its firewall only)
	sub   *podSub
	last  podAddrs // what was reported last
	retry time.Duration
	timer *time.Timer // the next subscription attempt, while not subscribed
}

// podSub is one subscription to a pod's events: the sockets in its namespace, and what they told.
type podSub struct {
	id      uint64 // unique among the watcher's subscriptions: a cached view names it
	nsIno   uint64 // the namespace subscribed to (a pod attached again has a new one at the same path)
	ifindex int
	addrFD  int // address events of the pod's link (-1: an onion-only pod)
	fwFD    int // nftables events of the pod's namespace
	dumped  bool
	seen    map[netip.Addr]addrInfo
	fwEpoch uint64 // counts nftables events (a firewall read before the last one is stale)
	// mounts is the watcher's count of mount table changes when the namespace path was last
	// found to be this namespace (0: not yet).
	mounts uint64
}

// liveView is what a watcher knows of a followed pod now.
type liveView struct {
	sub     uint64
	fwEpoch uint64
	addrs   podAddrs // of a LAN pod
}

const dumpSeq = 1

// mountTable is the mount table where the pods' namespaces are named (netnsfile.MountTable).
func newWatcher(ula netip.Prefix, leases leaseStore, mountTable string) (*watcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, err
	}
	w := &watcher{out: make(chan AddressChange, 64), ula: ula, leases: leases, epfd: epfd, wakeFD: wake,
		pods: map[string]*follower{}, byFD: map[int32]*follower{}, pending: map[string]AddressChange{},
		queued: make(chan struct{}, 1), ended: make(chan struct{}), buf: make([]byte, 64<<10), mounts: 1}
	w.mountsFD, err = unix.Open(mountTable, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		w.mountsFD = -1
	}
	w.wg.Add(2)
	go w.loop()
	go w.send()
	return w, nil
}

// sync makes the watcher follow app as its lease file says now: a lease it does not follow yet
// (or a new one: a re-attach, whose namespace is new) gets a fresh follower; a lease it follows
// already is a nudge (its attach finished: subscribe now); no lease stops it.
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
	if l == nil {
		if f != nil {
			w.dropLocked(f)
		}
		return
	}
	if f != nil && f.ino == ino && f.netns == l.Netns {
		if f.sub == nil || !f.sub.current(f.netns) {
			w.unsubscribeLocked(f)
			w.trySubscribeLocked(f)
		}
		return
	}
	if f != nil {
		w.dropLocked(f)
	}
	f = &follower{app: app, ino: ino, netns: l.Netns, lan: !l.OnionOnly, retry: time.Second}
	w.pods[app] = f
	w.trySubscribeLocked(f)
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
		w.dropLocked(f)
	}
}

// view is what the watcher follows of app's attach whose lease file is inode ino: ok only while
// its sockets are open and (for a LAN pod) the first dump of its addresses has been read. Every
// event the kernel queued before the call is read first (before the look began, when settled:
// see Manager.Settled): the view is never behind a change made before it was asked for.
func (w *watcher) view(app string, ino uint64, settled bool) (liveView, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !settled {
		w.drainLocked()
	}
	f := w.pods[app]
	if f == nil || f.ino != ino || f.sub == nil {
		return liveView{}, false
	}
	if !w.currentLocked(f.sub, f.netns) { // the pod was attached again on the same lease (after a reboot)
		w.unsubscribeLocked(f)
		w.trySubscribeLocked(f)
		return liveView{}, false
	}
	if f.lan && !f.sub.dumped {
		return liveView{}, false
	}
	v := liveView{sub: f.sub.id, fwEpoch: f.sub.fwEpoch}
	if f.lan {
		v.addrs = usable(f.sub.seen, w.ula)
	}
	return v, true
}

func (w *watcher) close() {
	w.mu.Lock()
	w.closed = true
	for _, f := range w.pods {
		w.dropLocked(f)
	}
	w.mu.Unlock()
	one := binary.NativeEndian.AppendUint64(nil, 1)
	unix.Write(w.wakeFD, one) // wakes the loop, which sees closed
	close(w.ended)
	w.wg.Wait()
	unix.Close(w.wakeFD)
	unix.Close(w.epfd)
	if w.mountsFD >= 0 {
		unix.Close(w.mountsFD)
	}
	close(w.out)
}

// dropLocked stops following f: its sockets closed, its retry cancelled.
func (w *watcher) dropLocked(f *follower) {
	if f.timer != nil {
		f.timer.Stop()
		f.timer = nil
	}
	w.unsubscribeLocked(f)
	if w.pods[f.app] == f {
		delete(w.pods, f.app)
	}
}

func (w *watcher) unsubscribeLocked(f *follower) {
	if f.sub == nil {
		return
	}
	for _, fd := range []int{f.sub.addrFD, f.sub.fwFD} {
		if fd >= 0 {
			delete(w.byFD, int32(fd))
			unix.Close(fd) // also takes it out of epfd
		}
	}
	f.sub = nil
}

// Follower retries: at once when nudged, else after a second, doubling up to maxRetry while the
// namespace is not there (a lease whose pod is not attached yet, as after a reboot).
const maxRetry = 30 * time.Second

// trySubscribeLocked subscribes f now, or schedules the next attempt.
func (w *watcher) trySubscribeLocked(f *follower) {
	if f.timer != nil {
		f.timer.Stop()
		f.timer = nil
	}
	sub, err := w.subscribe(f)
	if err != nil {
		delay := f.retry
		f.retry = min(2*f.retry, maxRetry)
		f.timer = time.AfterFunc(delay, func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if !w.closed && w.pods[f.app] == f && f.sub == nil {
				w.trySubscribeLocked(f)
			}
		})
		return
	}
	f.sub, f.retry = sub, time.Second
	for _, fd := range []int{sub.addrFD, sub.fwFD} {
		if fd >= 0 {
			w.byFD[int32(fd)] = f
		}
	}
}

// subscribe opens f's sockets in the pod's namespace, asks for a dump of its addresses and adds
// the sockets to epfd.
func (w *watcher) subscribe(f *follower) (_ *podSub, err error) {
	podNS, err := ns.GetNS(f.netns)
	if err != nil {
		return nil, err
	}
	defer podNS.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(podNS.Fd()), &st); err != nil {
		return nil, err
	}
	w.nextSub++
	sub := &podSub{id: w.nextSub, nsIno: st.Ino, addrFD: -1, fwFD: -1, seen: map[netip.Addr]addrInfo{}}
	defer func() {
		if err != nil {
			for _, fd := range []int{sub.addrFD, sub.fwFD} {
				if fd >= 0 {
					unix.Close(fd)
				}
			}
		}
	}()
	err = podNS.Do(func(ns.NetNS) error {
		if f.lan {
			link, err := netlink.LinkByName(podIfName)
			if err != nil {
				return err
			}
			sub.ifindex = link.Attrs().Index
			if sub.addrFD, err = eventSocket(unix.NETLINK_ROUTE, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR); err != nil {
				return err
			}
		}
		sub.fwFD, err = eventSocket(unix.NETLINK_NETFILTER, unix.NFNLGRP_NFTABLES)
		return err
	})
	if err != nil {
		return nil, err
	}
	if sub.addrFD >= 0 {
		if err := requestAddrDump(sub.addrFD); err != nil {
			return nil, err
		}
	}
	for _, fd := range []int{sub.addrFD, sub.fwFD} {
		if fd < 0 {
			continue
		}
		if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			return nil, err
		}
	}
	return sub, nil
}

// currentLocked is sub.current(path), without looking at the path again while the mount table
// did not change since it last did (drainLocked counts the changes).
func (w *watcher) currentLocked(sub *podSub, path string) bool {
	if w.mountsFD >= 0 && sub.mounts == w.mounts {
		return true
	}
	if !sub.current(path) {
		return false
	}
	sub.mounts = w.mounts
	return true
}

// current reports whether the namespace at path is still the one sub follows.
func (sub *podSub) current(path string) bool {
	var st unix.Stat_t
	return unix.Stat(path, &st) == nil && st.Ino == sub.nsIno
}

// eventSocket opens a non-blocking netlink socket of protocol in the calling thread's namespace,
// member of groups.
func eventSocket(protocol int, groups ...int) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, protocol)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	for _, g := range groups {
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, g); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	// Room for a burst (a prefix change touches every pod at once); only used when queued.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	return fd, nil
}

// requestAddrDump asks the kernel for every address in the socket's namespace (the replies carry
// dumpSeq; the last is NLMSG_DONE).
func requestAddrDump(fd int) error {
	msg := make([]byte, unix.SizeofNlMsghdr+unix.SizeofIfAddrmsg)
	binary.NativeEndian.PutUint32(msg[0:4], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:6], unix.RTM_GETADDR)
	binary.NativeEndian.PutUint16(msg[6:8], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(msg[8:12], dumpSeq)
	msg[unix.SizeofNlMsghdr] = unix.AF_UNSPEC
	return unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

// drainLocked reads every socket that has something queued now, and counts a change of the
// mount table since the last look (one poll of both when nothing happened).
func (w *watcher) drainLocked() {
	if w.closed {
		return
	}
	if w.mountsFD >= 0 {
		fds := []unix.PollFd{{Fd: int32(w.epfd), Events: unix.POLLIN}, {Fd: int32(w.mountsFD), Events: unix.POLLPRI}}
		for {
			_, err := unix.Poll(fds, 0)
			if !errors.Is(err, unix.EINTR) {
				if err != nil {
					fds[0].Revents, fds[1].Revents = unix.POLLIN, unix.POLLPRI // unsure: look
				}
				break
			}
		}
		if fds[1].Revents&(unix.POLLPRI|unix.POLLERR) != 0 {
			w.mounts++ // (polling it reset it: the next change signals again)
		}
		if fds[0].Revents&unix.POLLIN == 0 {
			return
		}
	}
	var events [32]unix.EpollEvent
	for {
		n, err := unix.EpollWait(w.epfd, events[:], 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			return
		}
		for _, ev := range events[:n] {
			if f := w.byFD[ev.Fd]; f != nil {
				w.readLocked(f, int(ev.Fd))
			}
		}
		if n < len(events) {
			return
		}
	}
}

// loop waits for events on every followed pod's sockets and reads them, until close.
func (w *watcher) loop() {
	defer w.wg.Done()
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return
		}
		for _, ev := range events[:n] {
			if f := w.byFD[ev.Fd]; f != nil {
				w.readLocked(f, int(ev.Fd))
			}
		}
		w.mu.Unlock()
	}
}

// readLocked reads what is queued on one of f's sockets, and reports f's addresses if that
// changed them. A socket that failed (the kernel dropped events: ENOBUFS) is opened again, with
// a fresh dump.
func (w *watcher) readLocked(f *follower, fd int) {
	sub, buf := f.sub, w.buf
	if sub == nil || fd != sub.addrFD && fd != sub.fwFD {
		return
	}
	for {
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil || n <= 0 {
			w.unsubscribeLocked(f)
			w.trySubscribeLocked(f)
			return
		}
		if fd == sub.fwFD {
			sub.fwEpoch++ // any nftables change: the firewall is read again when asked
			continue
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			continue
		}
		for i := range msgs {
			w.addrMessage(sub, &msgs[i])
		}
	}
	if fd != sub.addrFD || !sub.dumped {
		return
	}
	now := usable(sub.seen, w.ula)
	if now.equal(f.last) {
		return
	}
	f.last = now
	w.pending[f.app] = AddressChange{App: f.app, LAN: now.LAN, IPv4: now.IPv4, Deprecated: now.Deprecated}
	select {
	case w.queued <- struct{}{}:
	default:
	}
}

// addrMessage applies one netlink message of the address socket to what sub has seen.
func (w *watcher) addrMessage(sub *podSub, m *syscall.NetlinkMessage) {
	switch m.Header.Type {
	case unix.NLMSG_DONE:
		if m.Header.Seq == dumpSeq {
			sub.dumped = true
		}
		return
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
	default:
		return
	}
	if len(m.Data) < unix.SizeofIfAddrmsg {
		return
	}
	if int(binary.NativeEndian.Uint32(m.Data[4:8])) != sub.ifindex {
		return
	}
	attrs, err := syscall.ParseNetlinkRouteAttr(m)
	if err != nil {
		return
	}
	info := addrInfo{flags: int(m.Data[2]), scope: int(m.Data[3])}
	var local, address []byte
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.IFA_LOCAL:
			local = a.Value
		case unix.IFA_ADDRESS:
			address = a.Value
		case unix.IFA_FLAGS:
			if len(a.Value) >= 4 {
				info.flags = int(binary.NativeEndian.Uint32(a.Value))
			}
		case unix.IFA_CACHEINFO:
			if len(a.Value) >= 4 {
				info.preferred = int(binary.NativeEndian.Uint32(a.Value))
			}
		}
	}
	raw := address
	if local != nil {
		raw = local // IPv4 sends the local address as IFA_LOCAL (IFA_ADDRESS may be a peer)
	}
	ip, ok := netip.AddrFromSlice(raw)
	if !ok {
		return
	}
	ip = ip.Unmap()
	if m.Header.Type == unix.RTM_NEWADDR {
		sub.seen[ip] = info
	} else {
		delete(sub.seen, ip)
	}
}

// send hands the pending reports to the reader, the latest per app, until close.
func (w *watcher) send() {
	defer w.wg.Done()
	for {
		select {
		case <-w.ended:
			return
		case <-w.queued:
		}
		w.mu.Lock()
		batch := make([]AddressChange, 0, len(w.pending))
		for _, c := range w.pending {
			batch = append(batch, c)
		}
		clear(w.pending)
		w.mu.Unlock()
		slices.SortFunc(batch, func(a, b AddressChange) int {
			if a.App < b.App {
				return -1
			}
			if a.App > b.App {
				return 1
			}
			return 0
		})
		for _, c := range batch {
			select {
			case w.out <- c:
			case <-w.ended:
				return
			}
		}
	}
}
