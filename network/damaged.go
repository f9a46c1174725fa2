package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/netnsfile"
)

// A damaged lease file (cut short by a full disk, garbled by a bad sector or a slip of an editor)
// is its app's problem alone:
//
//   - every other app's Attach, Detach and net-up goes on as usual: reading all the leases (to
//     allocate a ULA, or to decide the shim's fate) skips it, while still keeping for its app what
//     is sure to be its (the MAC derived from its name, the ULA its live pod shows, and the first
//     ULA its name derives), and keeping the shim;
//   - the app's Addresses fail with ErrDamagedLease, and Check with ErrDrift and ErrDamagedLease;
//   - the app's next Attach (or Detach) moves the file aside as NAME.json.damaged-TIME (kept for
//     the operator; DamagedLeases lists it) and goes on. If the pod is still up as asked, its
//     lease is rebuilt from what its namespace and libcni's cache show: the pod keeps its ULA and
//     runs on untouched. Otherwise (after a reboot, say) it is attached afresh: same MAC, so the
//     same LAN address, and the first free ULA its name derives, which is its old one unless
//     another app holds it now (then the ULA changes, and so does its onion service's target).

// DamagedLease is a lease file found damaged.
type DamagedLease struct {
	// App is the app whose lease it was.
	App string
	// File is where the file is now: NAME.json while still in place, NAME.json.damaged-TIME once
	// set aside.
	File string
	// Quarantined reports that the file was set aside (by the app's Attach or Detach, which then
	// went on without it); false: still in place, the app's Addresses fail until its next Attach.
	Quarantined bool
	// Time is when it was set aside, or, while in place, when the file was last written.
	Time time.Time
}

const damagedSuffix = ".damaged-"

// DamagedLeases lists the damaged lease files, set aside or not yet, sorted by app then time:
// what status shows until the operator deletes the files set aside.
//
// The answer is kept while the leases directory is unchanged (no lease written, removed or set
// aside), for up to damagedRescan: a lease damaged in place is found at once by its app's
// Addresses and set aside by its next Attach, which changes the directory.
func (m *Manager) DamagedLeases() ([]DamagedLease, error) {
	var dirSt unix.Stat_t
	dirOK := unix.Stat(m.leases.dir, &dirSt) == nil
	m.damaged.mu.Lock()
	defer m.damaged.mu.Unlock()
	if d := &m.damaged; dirOK && d.valid && d.dir == idOfStat(&dirSt) && time.Since(d.at) < damagedRescan {
		return slices.Clone(d.leases), nil
	}
	out, err := m.scanDamaged()
	if err == nil && dirOK {
		m.damaged.valid, m.damaged.dir, m.damaged.at, m.damaged.leases = true, idOfStat(&dirSt), time.Now(), out
	}
	return slices.Clone(out), err
}

// damagedRescan bounds how long DamagedLeases keeps its answer while the leases directory is
// unchanged.
const damagedRescan = time.Minute

// damagedScan is DamagedLeases' last answer, with the identity of the leases directory then.
type damagedScan struct {
	mu     sync.Mutex
	valid  bool
	dir    fileID
	at     time.Time
	leases []DamagedLease
}

// scanDamaged reads every lease file (through the cache) and the files set aside.
func (m *Manager) scanDamaged() ([]DamagedLease, error) {
	set, err := m.leases.loadAll(&m.cache)
	if err != nil {
		return nil, fmt.Errorf("network: damaged leases: %w", err)
	}
	var out []DamagedLease
	for app, why := range set.bad {
		if !errors.Is(why, ErrDamagedLease) {
			continue
		}
		d := DamagedLease{App: app, File: m.leases.path(app)}
		if st, err := os.Stat(d.File); err == nil {
			d.Time = st.ModTime()
		}
		out = append(out, d)
	}
	entries, err := os.ReadDir(m.leases.dir)
	if err != nil {
		return nil, fmt.Errorf("network: damaged leases: %w", err)
	}
	for _, e := range entries {
		if d, ok := quarantinedLease(e.Name()); ok {
			d.File = filepath.Join(m.leases.dir, e.Name())
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].App != out[j].App {
			return out[i].App < out[j].App
		}
		return out[i].Time.Before(out[j].Time)
	})
	return out, nil
}

// quarantinedLease reads a file name atomicfile.Quarantine gave a lease: APP.json.damaged-UNIX
// (or -UNIX-N).
func quarantinedLease(name string) (DamagedLease, bool) {
	base, stamp, ok := strings.Cut(name, damagedSuffix)
	app, isLease := leaseApp(base)
	if !ok || !isLease {
		return DamagedLease{}, false
	}
	secs, _, _ := strings.Cut(stamp, "-")
	unix, err := strconv.ParseInt(secs, 10, 64)
	if err != nil {
		return DamagedLease{}, false
	}
	return DamagedLease{App: app, Quarantined: true, Time: time.Unix(unix, 0)}, true
}

// quarantine sets app's damaged lease file aside. Call it holding the app's lock.
func (s leaseStore) quarantine(app string) error {
	if _, err := atomicfile.Quarantine(s.path(app), time.Now().Unix()); err != nil {
		return fmt.Errorf("set the damaged lease aside: %w", err)
	}
	return nil
}

// currentLease is app's lease as the last process left it (the caller holds the app's lock). A
// damaged file is set aside first; then, if the pod is still up as the attachment asks, its lease is rebuilt
// from the live pod and stored again, and returned; otherwise there is no lease (nil), and the
// attach starts afresh, as after a crash before the lease was stored.
func (m *Manager) currentLease(ctx context.Context, a Attachment) (*lease, error) {
	l, err := m.leases.load(a.App)
	if !errors.Is(err, ErrDamagedLease) {
		return l, err
	}
	if err := m.leases.quarantine(a.App); err != nil {
		return nil, err
	}
	rec := m.recoverLease(a.App)
	if rec == nil || !m.same(rec, a) || !podLinkReady(rec) {
		return nil, nil
	}
	// Stored before Attach looks at the host side (the shim stays while a LAN lease is on disk).
	saved, err := m.hold(ctx, rec) // keeps rec's ULA, unless another lease holds it now
	if err == nil {
		err = saved()
	}
	if err != nil {
		return nil, nil // not safely its own: start afresh
	}
	return rec, nil
}

// leaseForDetach is app's lease for Detach: a damaged file is set aside, and the pod then torn
// down as an orphan (by its namespace's path, and libcni's cache for CNI DEL).
func (m *Manager) leaseForDetach(app string) (*lease, error) {
	l, err := m.leases.load(app)
	if errors.Is(err, ErrDamagedLease) {
		return nil, m.leases.quarantine(app)
	}
	return l, err
}

// recoverLease rebuilds app's lease from its live pod: the namespace at the usual path, whose
// eth0 carries the app's MAC and one ULA of the prefix; a LAN pod's uplink and DHCP from the
// conflist libcni cached at ADD, an onion-only pod when there is none (reusable then checks its
// host veth). Nil when the pod does not show all of that: nothing is guessed.
func (m *Manager) recoverLease(app string) *lease {
	l := &lease{Version: leaseVersion, App: app, MAC: PredictMAC(app).String(), Netns: m.netnsPath(app)}
	l.ULA = m.liveULA(app)
	if !l.ULA.IsValid() {
		return nil
	}
	if conf := m.cachedConflist(l); conf != nil {
		c, err := parseConflist(conf)
		if err != nil {
			return nil
		}
		l.Uplink, l.IPv4, l.Conflist = c.Plugins[0].Master, c.Plugins[0].IPAM != nil, conf
	} else {
		l.OnionOnly = true
	}
	if l.validate(app) != nil {
		return nil
	}
	return l
}

// liveULA is the ULA app's live pod has on eth0 (which must carry the app's MAC): invalid if the
// pod is not up, or shows none or several.
func (m *Manager) liveULA(app string) netip.Addr {
	path := m.netnsPath(app)
	if !netnsfile.Exists(path) {
		return netip.Addr{}
	}
	var found []netip.Addr
	inPod(path, func(h *netlink.Handle) error {
		link, err := h.LinkByName(podIfName)
		if err != nil || link.Attrs().HardwareAddr.String() != PredictMAC(app).String() {
			return err
		}
		addrs, err := h.AddrList(link, netlink.FAMILY_V6)
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && m.cfg.ULAPrefix.Contains(ip) && ip != hostULA(m.cfg.ULAPrefix) {
				found = append(found, ip)
			}
		}
		return err
	})
	if len(found) != 1 {
		return netip.Addr{}
	}
	return found[0]
}

// heldByUnreadable is what an app whose lease file cannot be read may hold, kept from every other
// app: the ULA its live pod shows, and the first one its name derives (what its next attach takes).
func (m *Manager) heldByUnreadable(app string) []netip.Addr {
	held := []netip.Addr{ulaFor(m.cfg.ULAPrefix, app, 0)}
	if live := m.liveULA(app); live.IsValid() {
		held = append(held, live)
	}
	return held
}
