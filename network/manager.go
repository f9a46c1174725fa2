package network

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/dirwatch"
)

// Manager attaches pods to the network. Create it with New; Close it to wait for background
// teardown. Several Managers, in one process or in several, may work on one state dir at once:
// the lease files are the truth, read again under a lock before every change (see lock.go), so a
// pod attached or detached by one Manager is attached or detached for all of them.
type Manager struct {
	cfg       Config
	box       ns.NetNS        // held open for the Manager's life
	boxH      *netlink.Handle // netlink in the box; safe for concurrent use
	cni       *libcni.CNIConfig
	leases    leaseStore
	cache     leaseCache    // parsed lease files, checked against the disk at each use
	lockFile  lockFile      // cross-process locks
	stateTurn chan struct{} // this process's turn at the state lock

	mu       sync.Mutex
	busy     map[string]chan struct{} // app -> closed when the running Attach/Detach/Check ends
	pending  map[string]chan struct{} // app or shimName -> closed when background teardown ends
	watchers map[*watcher]struct{}
	// firewalls are the pods' firewalls as last read, while a watch follows their nftables
	// events (see Addresses).
	firewalls map[string]cachedFirewall
	damaged   damagedScan  // DamagedLeases' last answer
	wireless  map[int]bool // uplink ifindex -> is wireless (checked once)
	bg        sync.WaitGroup

	// leaseDir and netnsDir are the leases and namespaces directories as Attached read them
	// last (read again after a change in them, with a watch: see FollowFiles).
	leaseDir, netnsDir dirwatch.Dir
}

// New checks the configuration, opens the box namespace and checks that the stored leases are
// readable. It changes nothing on the network.
func New(cfg Config) (*Manager, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	box, err := openBox(cfg.BoxNetns)
	if err != nil {
		return nil, fmt.Errorf("network: box netns %s: %w", cfg.BoxNetns, err)
	}
	m := &Manager{
		cfg:       cfg,
		box:       box,
		leases:    leaseStore{dir: filepath.Join(cfg.StateDir, "leases")},
		lockFile:  lockFile{path: filepath.Join(cfg.StateDir, "lock")},
		stateTurn: make(chan struct{}, 1),
		busy:      map[string]chan struct{}{},
		pending:   map[string]chan struct{}{},
		watchers:  map[*watcher]struct{}{},
		firewalls: map[string]cachedFirewall{},
		wireless:  map[int]bool{},
	}
	fail := func(what string, err error) (*Manager, error) {
		if m.boxH != nil {
			m.boxH.Close()
		}
		box.Close()
		return nil, fmt.Errorf("network: %s: %w", what, err)
	}
	if m.boxH, err = netlink.NewHandleAt(netns.NsHandle(box.Fd()), unix.NETLINK_ROUTE); err != nil {
		return fail("netlink in the box", err)
	}
	if err := os.MkdirAll(m.leases.dir, 0o700); err != nil {
		return fail("state dir", err)
	}
	// The leases dir must be readable; the leases themselves are read when needed (a net-up at
	// boot, one of many at once, reads its own).
	if _, err := m.leases.apps(); err != nil {
		return fail("leases", err)
	}
	m.cni = libcni.NewCNIConfigWithCacheDir(cfg.CNIPaths, filepath.Join(cfg.StateDir, "cni-cache"), &boxExec{box: box})
	return m, nil
}

// openBox opens the box namespace: the given path, or the calling thread's own namespace. Not
// /proc/self/ns/net: that is the main thread's, and a thread that created a pod namespace stays
// in it, locked (netnsfile.Create) — when that thread is the main one, /proc/self points into a
// pod. Threads free to run other goroutines are always in the process's own namespace.
func openBox(path string) (ns.NetNS, error) {
	if path != "" {
		return ns.GetNS(path)
	}
	return ns.GetCurrentNS()
}

// FollowFiles makes Addresses skip the stat of lease files nothing happened to since they were
// last read, and Attached the read of a leases or namespaces directory nothing happened in (w
// sees the directories' events). For a long-lived process (the daemon).
func (m *Manager) FollowFiles(w *dirwatch.Watch) {
	m.cache.mu.Lock()
	defer m.cache.mu.Unlock()
	m.cache.watch = w
}

// Close waits for background teardown (links being deleted after Detach) to finish and releases
// the box namespace. Watches end when their contexts do.
func (m *Manager) Close() error {
	m.bg.Wait()
	m.boxH.Close()
	return m.box.Close()
}

// Attached lists the apps that hold a lease or a namespace now (whichever process attached them),
// sorted: what the reconciler compares with the desired state to find orphans.
func (m *Manager) Attached(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("network: attached: %w", err)
	}
	set := map[string]bool{}
	leased, err := m.leasedApps()
	if err != nil {
		return nil, fmt.Errorf("network: attached: %w", err)
	}
	for _, app := range leased {
		set[app] = true
	}
	entries, err := m.netnsDir.ReadDir(m.watch(), m.cfg.NetnsDir)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("network: attached: %w", err)
	}
	for _, e := range entries {
		if app, ok := strings.CutPrefix(e.Name(), netnsPrefix); ok && validApp(app) == nil {
			set[app] = true
		}
	}
	apps := make([]string, 0, len(set))
	for app := range set {
		apps = append(apps, app)
	}
	sort.Strings(apps)
	return apps, nil
}

// watch is the watch FollowFiles gave (nil: none).
func (m *Manager) watch() *dirwatch.Watch {
	m.cache.mu.Lock()
	defer m.cache.mu.Unlock()
	return m.cache.watch
}

// leasedApps are the apps with a lease file, unsorted, the directory read again only after a
// change in it (with a watch: see FollowFiles).
func (m *Manager) leasedApps() ([]string, error) {
	entries, err := m.leaseDir.ReadDir(m.watch(), m.leases.dir)
	if err != nil {
		return nil, err
	}
	return leaseApps(entries), nil
}

func (m *Manager) netnsPath(app string) string {
	return NetnsPath(m.cfg.NetnsDir, app)
}

// PodNetns is where an attach from nothing names app's pod namespace (an attach kept from an
// earlier config keeps the path its lease has).
func (m *Manager) PodNetns(app string) string { return m.netnsPath(app) }

// NetnsPath is where app's pod namespace is named in dir (network.netns_dir): what its units'
// NetworkNamespacePath= say.
func NetnsPath(dir, app string) string {
	return filepath.Join(dir, netnsPrefix+app)
}

// lock serializes Attach, Detach and Check of one app, among this process's goroutines and then
// among processes (the app's byte of the lock file); other apps proceed in parallel.
func (m *Manager) lock(ctx context.Context, app string) (unlock func(), err error) {
	for {
		m.mu.Lock()
		ch, taken := m.busy[app]
		if !taken {
			ch = make(chan struct{})
			m.busy[app] = ch
			m.mu.Unlock()
			unbusy := func() {
				m.mu.Lock()
				delete(m.busy, app)
				m.mu.Unlock()
				close(ch)
			}
			unlockFile, err := m.lockFile.lock(ctx, appLockOffset(app))
			if err != nil {
				unbusy()
				return nil, err
			}
			return func() {
				unlockFile()
				unbusy()
			}, nil
		}
		m.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// background runs fn (a teardown the caller must not wait for) and marks key pending until it ends.
func (m *Manager) background(key string, fn func()) {
	done := make(chan struct{})
	m.mu.Lock()
	prev := m.pending[key]
	m.pending[key] = done
	m.mu.Unlock()
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		if prev != nil {
			<-prev
		}
		fn()
		m.mu.Lock()
		if m.pending[key] == done {
			delete(m.pending, key)
		}
		m.mu.Unlock()
		close(done)
	}()
}

// settled waits until no background teardown of key is running.
func (m *Manager) settled(ctx context.Context, key string) error {
	m.mu.Lock()
	done := m.pending[key]
	m.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// inBox runs fn with the netlink handle of the box namespace.
func (m *Manager) inBox(fn func(h *netlink.Handle) error) error {
	return fn(m.boxH)
}

// boxDo runs fn on a thread inside the box namespace (for sysctls and /proc/thread-self/net).
func (m *Manager) boxDo(fn func() error) error {
	return m.box.Do(func(ns.NetNS) error { return fn() })
}

func withHandle(nsh netns.NsHandle, fn func(h *netlink.Handle) error) error {
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	return fn(h)
}

// inPod runs fn with a netlink handle in the pod namespace at path.
func inPod(path string, fn func(h *netlink.Handle) error) error {
	nsh, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open pod netns: %w", err)
	}
	defer nsh.Close()
	return withHandle(nsh, fn)
}
