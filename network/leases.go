package network

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/dirwatch"
	"github.com/onionpod/onionpod/internal/genvalue"
)

// lease is the stored record of an attached pod: what it holds (MAC, ULA) and what is needed to
// undo the attach (the conflist CNI ADD ran with). It is written before anything is created, so
// a crash mid-attach leaves a record that Attached reports and Detach cleans up.
//
// A lease file that cannot be read back as a lease (cut short, garbled) is damaged: see
// parseLease, which checks the JSON, every field against what it must be for its app, and the
// checksum; and damaged.go for what is done with it.
type lease struct {
	Version   int             `json:"version"`
	App       string          `json:"app"`
	MAC       string          `json:"mac"`
	ULA       netip.Addr      `json:"ula"`
	OnionOnly bool            `json:"onionOnly,omitempty"`
	IPv4      bool            `json:"ipv4,omitempty"`
	Uplink    string          `json:"uplink,omitempty"`
	Netns     string          `json:"netns"`
	Conflist  json.RawMessage `json:"conflist,omitempty"`
	// Sum is the SHA-256 of the lease as compact JSON without it: garbling that still parses is
	// caught too. Leases written before it existed have none (their fields are still checked).
	Sum string `json:"sum,omitempty"`

	cniStarted bool // this process ran CNI ADD for it (an undo needs DEL)
}

const leaseVersion = 1

func (l *lease) mac() net.HardwareAddr {
	mac, _ := net.ParseMAC(l.MAC)
	return mac
}

// stored is a copy of the fields the file holds, without Sum; it never reads cniStarted, which
// the attach in progress writes while the lease is being saved.
func (l *lease) stored() lease {
	return lease{Version: l.Version, App: l.App, MAC: l.MAC, ULA: l.ULA, OnionOnly: l.OnionOnly,
		IPv4: l.IPv4, Uplink: l.Uplink, Netns: l.Netns, Conflist: l.Conflist}
}

// checksum is what Sum must be.
func (l *lease) checksum() string {
	c := l.stored()
	b, err := json.Marshal(&c)
	if err != nil {
		return "" // a Conflist that is not JSON: never matches a stored sum
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// damaged is the error of a lease file that is not a valid lease: it matches ErrDamagedLease.
func damaged(app, format string, args ...any) error {
	return fmt.Errorf("lease %s: %w: %s", app, ErrDamagedLease, fmt.Sprintf(format, args...))
}

// parseLease reads b as app's lease; any fault is a damaged lease.
func parseLease(app string, b []byte) (*lease, error) {
	var l lease
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, damaged(app, "%v", err)
	}
	if l.Sum != "" && l.Sum != l.checksum() {
		return nil, damaged(app, "checksum mismatch")
	}
	if err := l.validate(app); err != nil {
		return nil, damaged(app, "%v", err)
	}
	return &l, nil
}

// validate checks every field of a lease read back for app against what it must be.
func (l *lease) validate(app string) error {
	switch {
	case l.Version != leaseVersion:
		return fmt.Errorf("unknown version %d", l.Version)
	case l.App != app:
		return fmt.Errorf("it names app %q", l.App)
	case l.MAC != PredictMAC(app).String():
		return fmt.Errorf("MAC %q is not the app's", l.MAC)
	case !l.ULA.Is6() || !localULA.Contains(l.ULA) || l.ULA.Zone() != "" || hostPart(l.ULA) <= 1:
		return fmt.Errorf("ULA %q is not a pod's unique local address", l.ULA)
	case genvalue.Path("netns", l.Netns) != nil || filepath.Base(l.Netns) != netnsPrefix+app:
		return fmt.Errorf("netns %q is not the app's", l.Netns)
	}
	if l.OnionOnly {
		if l.IPv4 || l.Uplink != "" || len(l.Conflist) > 0 {
			return errors.New("an onion-only lease with a LAN link")
		}
		return nil
	}
	if err := checkIfName("uplink", l.Uplink); err != nil {
		return err
	}
	c, err := parseConflist(l.Conflist)
	if err != nil {
		return err
	}
	if mv := c.Plugins[0]; mv.Master != l.Uplink || mv.MAC != l.MAC || (mv.IPAM != nil) != l.IPv4 {
		return errors.New("the conflist does not match the lease")
	}
	return nil
}

// hostPart is the low 64 bits of an IPv6 address.
func hostPart(a netip.Addr) uint64 {
	b := a.As16()
	return binary.BigEndian.Uint64(b[8:])
}

// leaseStore keeps one JSON file per app under dir, written atomically (0600 in a 0700 dir).
type leaseStore struct{ dir string }

func (s leaseStore) path(app string) string { return filepath.Join(s.dir, app+".json") }

// load reads app's lease: nil if there is none; an error matching ErrDamagedLease if the file is
// not a valid lease. The file is always whole (written by rename), so reading it needs no lock:
// what another process stored is what this one sees.
func (s leaseStore) load(app string) (*lease, error) {
	b, err := os.ReadFile(s.path(app))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lease %s: %w", app, err)
	}
	return parseLease(app, b)
}

// loadWithInode is load, and the inode of the file it read (each store is a new file, so a new
// inode is a new attach).
func (s leaseStore) loadWithInode(app string) (*lease, uint64, error) {
	f, err := os.Open(s.path(app))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("lease %s: %w", app, err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, 0, fmt.Errorf("lease %s: %w", app, err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, 0, fmt.Errorf("lease %s: %w", app, err)
	}
	l, err := parseLease(app, b)
	return l, st.Ino, err
}

// apps lists the apps that have a lease file, unsorted (temp files and strangers are skipped).
func (s leaseStore) apps() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	return leaseApps(entries), nil
}

// leaseApps are the apps whose lease files are among a listing of the leases dir.
func leaseApps(entries []os.DirEntry) []string {
	apps := make([]string, 0, len(entries))
	for _, e := range entries {
		if app, ok := leaseApp(e.Name()); ok {
			apps = append(apps, app)
		}
	}
	return apps
}

// leaseApp is the app a file name in the leases dir is the lease of.
func leaseApp(name string) (string, bool) {
	app, ok := strings.CutSuffix(name, ".json")
	return app, ok && validApp(app) == nil
}

// leaseCache remembers the parsed lease files, each with the identity of the file it was read from
// (inode, size, times), so that reading every lease (which a ULA allocation needs) costs a stat
// per file rather than a read and a JSON parse: every write is a rename, so a new inode.
type leaseCache struct {
	mu    sync.Mutex
	files map[string]cachedLease
	watch *dirwatch.Watch // see Manager.FollowFiles
	// all is loadAll's last whole set, kept while the watch vouches that nothing happened in the
	// leases directory since allMark (0: none kept): an attach then reads no lease file's stat.
	all     leaseSet
	allMark uint64
}

type cachedLease struct {
	id    fileID
	lease *lease
	err   error  // why the file is not a lease (damaged)
	mark  uint64 // the watch's mark before loadCached last checked the file (0: none)
}

type fileID struct {
	ino, size            uint64
	mtimeNsec, ctimeNsec int64
}

func idOfStat(st *unix.Stat_t) fileID {
	return fileID{ino: st.Ino, size: uint64(st.Size), mtimeNsec: st.Mtim.Nano(), ctimeNsec: st.Ctim.Nano()}
}

// leaseSet is every lease file on disk at one moment.
type leaseSet struct {
	leases map[string]*lease
	// bad are the apps whose lease file cannot be read as a lease now (damaged, or an I/O error),
	// with the reason. They are no one else's business: skipped, but what they may hold (their
	// MAC, their ULA) is not given to another app.
	bad map[string]error
}

// loadAll reads every lease now on disk (including those other processes wrote), through the
// cache: nothing at all while the watch vouches that nothing happened in the directory since the
// last whole read that found every file a lease; else a stat per file (relative to the open dir),
// a read only for files new or changed. Only a fault of the directory itself is an error: a file
// that cannot be read goes to the set's bad. The set's leases are shared: never change them.
func (s leaseStore) loadAll(c *leaseCache) (leaseSet, error) {
	c.mu.Lock()
	last, lastMark, watch := c.all, c.allMark, c.watch
	c.mu.Unlock()
	if lastMark != 0 && watch.UnchangedDir(lastMark, s.dir) {
		return leaseSet{leases: maps.Clone(last.leases), bad: map[string]error{}}, nil
	}
	mark := watch.Mark() // before the listing: a change during it shows next time
	set, err := s.readAll(c)
	if err != nil {
		return set, err
	}
	c.mu.Lock()
	c.all, c.allMark = leaseSet{}, 0
	if len(set.bad) == 0 { // a bad file may be an I/O error that passes: read it again next time
		c.all, c.allMark = leaseSet{leases: maps.Clone(set.leases)}, mark
	}
	c.mu.Unlock()
	return set, nil
}

// readAll is loadAll from the directory: a stat per file, a read for files new or changed.
func (s leaseStore) readAll(c *leaseCache) (leaseSet, error) {
	dir, err := os.Open(s.dir)
	if err != nil {
		return leaseSet{}, err
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return leaseSet{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.files == nil {
		c.files = map[string]cachedLease{}
	}
	set := leaseSet{leases: make(map[string]*lease, len(names)), bad: map[string]error{}}
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		app, ok := leaseApp(name)
		if !ok {
			continue
		}
		var st unix.Stat_t
		err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) {
			continue // removed since the listing
		}
		if err != nil {
			set.bad[app] = fmt.Errorf("lease %s: %w", app, err)
			continue
		}
		id := idOfStat(&st)
		cached, ok := c.files[app]
		if !ok || cached.id != id {
			l, err := s.load(app)
			if l == nil && err == nil {
				continue // removed since the stat
			}
			if err != nil && !errors.Is(err, ErrDamagedLease) {
				set.bad[app] = err // not cached: an I/O error may pass
				continue
			}
			cached = cachedLease{id: id, lease: l, err: err}
			c.files[app] = cached
		}
		seen[app] = true
		if cached.err != nil {
			set.bad[app] = cached.err
		} else {
			set.leases[app] = cached.lease
		}
	}
	for app := range c.files {
		if !seen[app] {
			delete(c.files, app)
		}
	}
	return set, nil
}

// loadCached is load through the cache (a stat when the file did not change), with the file's
// inode. A cached lease is shared: never change it.
func (s leaseStore) loadCached(ctx context.Context, c *leaseCache, app string) (*lease, uint64, error) {
	c.mu.Lock()
	cached, ok := c.files[app]
	watch := c.watch
	c.mu.Unlock()
	if ok && cached.mark != 0 && watch.UnchangedIn(ctx, cached.mark, s.path(app)) {
		return cached.lease, cached.id.ino, cached.err // nothing happened to the file
	}
	mark := watch.Mark()
	var st unix.Stat_t
	err := unix.Lstat(s.path(app), &st)
	if errors.Is(err, unix.ENOENT) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("lease %s: %w", app, err)
	}
	id := idOfStat(&st)
	if ok && cached.id == id {
		cached.mark = mark
		c.mu.Lock()
		c.files[app] = cached
		c.mu.Unlock()
		return cached.lease, id.ino, cached.err
	}
	l, ino, err := s.loadWithInode(app)
	if err != nil && !errors.Is(err, ErrDamagedLease) || l == nil && err == nil {
		return l, ino, err // an I/O error may pass: not cached
	}
	if ino == id.ino { // the file stat'ed is the one read
		c.mu.Lock()
		if c.files == nil {
			c.files = map[string]cachedLease{}
		}
		c.files[app] = cachedLease{id: id, lease: l, err: err, mark: mark}
		c.mu.Unlock()
	}
	return l, ino, err
}

// save stores l (with its checksum) in place of app's lease file.
func (s leaseStore) save(l *lease) error {
	c := l.stored()
	c.Sum = c.checksum()
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return err
	}
	_, err = atomicfile.WriteFile(s.path(l.App), append(b, '\n'), 0o600)
	return err
}

func (s leaseStore) remove(app string) error {
	if err := os.Remove(s.path(app)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
