package network

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
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

// Watch reports address changes of every LAN pod, attached now or later, until ctx ends; then the
// channel is closed. It follows netlink address events inside each pod's namespace (no polling),
// and resynchronizes from a fresh dump if the kernel drops events. A slow reader delays events, it
// does not lose the latest state.
func (m *Manager) Watch(ctx context.Context) <-chan AddressChange {
	w := &watcher{out: make(chan AddressChange, 64), ula: m.cfg.ULAPrefix, pods: map[string]chan struct{}{}}
	m.mu.Lock()
	m.watchers[w] = struct{}{}
	var start []*lease
	for _, l := range m.held {
		if !l.OnionOnly {
			start = append(start, l)
		}
	}
	m.mu.Unlock()
	for _, l := range start {
		w.start(l.App, l.Netns)
	}
	go func() {
		<-ctx.Done()
		m.mu.Lock()
		delete(m.watchers, w)
		m.mu.Unlock()
		w.close()
	}()
	return w.out
}

// watchPod starts following a freshly attached LAN pod in every watcher.
func (m *Manager) watchPod(l *lease) {
	if l.OnionOnly {
		return
	}
	for _, w := range m.currentWatchers() {
		w.start(l.App, l.Netns)
	}
}

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
	out chan AddressChange
	ula netip.Prefix

	mu     sync.Mutex
	pods   map[string]chan struct{} // app -> closed to stop following it
	closed bool
	wg     sync.WaitGroup
}

func (w *watcher) start(app, path string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	if stop, ok := w.pods[app]; ok {
		close(stop) // a re-attach: follow the new namespace
	}
	stop := make(chan struct{})
	w.pods[app] = stop
	w.wg.Add(1)
	go w.follow(app, path, stop)
}

func (w *watcher) stop(app string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if stop, ok := w.pods[app]; ok {
		close(stop)
		delete(w.pods, app)
	}
}

func (w *watcher) close() {
	w.mu.Lock()
	w.closed = true
	for app, stop := range w.pods {
		close(stop)
		delete(w.pods, app)
	}
	w.mu.Unlock()
	w.wg.Wait()
	close(w.out)
}

// follow reports app's address changes until stop; it resubscribes after errors (the namespace
// not there yet, or the kernel dropping events under load), once a second at most.
func (w *watcher) follow(app, path string, stop chan struct{}) {
	defer w.wg.Done()
	var last podAddrs
	for {
		w.subscribe(app, path, stop, &last)
		select {
		case <-stop:
			return
		case <-time.After(time.Second):
		}
	}
}

func (w *watcher) subscribe(app, path string, stop chan struct{}, last *podAddrs) {
	nsh, err := netns.GetFromPath(path)
	if err != nil {
		return
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
		return
	}
	updates := make(chan netlink.AddrUpdate, 256)
	done := make(chan struct{})
	err = netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{
		Namespace: &nsh, ListExisting: true, ReceiveBufferSize: 1 << 20,
	})
	nsh.Close()
	if err != nil {
		return
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
			return
		case u, ok := <-updates:
			if !ok {
				return
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
				return
			}
		}
	}
}

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
