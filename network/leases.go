package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// lease is the stored record of an attached pod: what it holds (MAC, ULA) and what is needed to
// undo the attach (the conflist CNI ADD ran with). It is written before anything is created, so
// a crash mid-attach leaves a record that Attached reports and Detach cleans up.
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

	cniStarted bool // this process ran CNI ADD for it (an undo needs DEL)
}

const leaseVersion = 1

func (l *lease) mac() net.HardwareAddr {
	mac, _ := net.ParseMAC(l.MAC)
	return mac
}

// leaseStore keeps one JSON file per app under dir, written atomically (0600 in a 0700 dir).
type leaseStore struct{ dir string }

func (s leaseStore) path(app string) string { return filepath.Join(s.dir, app+".json") }

// load reads app's lease: nil if there is none. The file is always whole (written by rename), so
// reading it needs no lock: what another process stored is what this one sees.
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

func parseLease(app string, b []byte) (*lease, error) {
	var l lease
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("lease %s: %w", app, err)
	}
	if l.Version != leaseVersion || l.App != app {
		return nil, fmt.Errorf("lease %s: unknown version %d or app %q", app, l.Version, l.App)
	}
	return &l, nil
}

// apps lists the apps that have a lease file, unsorted (temp files and strangers are skipped).
func (s leaseStore) apps() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	apps := make([]string, 0, len(entries))
	for _, e := range entries {
		if app, ok := leaseApp(e.Name()); ok {
			apps = append(apps, app)
		}
	}
	return apps, nil
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
}

type cachedLease struct {
	id    fileID
	lease *lease
}

type fileID struct {
	ino, size            uint64
	mtimeNsec, ctimeNsec int64
}

func idOfStat(st *unix.Stat_t) fileID {
	return fileID{ino: st.Ino, size: uint64(st.Size), mtimeNsec: st.Mtim.Nano(), ctimeNsec: st.Ctim.Nano()}
}

// loadAll reads every lease now on disk (including those other processes wrote), through the
// cache: a stat per file (relative to the open dir), a read only for files new or changed.
func (s leaseStore) loadAll(c *leaseCache) (map[string]*lease, error) {
	dir, err := os.Open(s.dir)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.files == nil {
		c.files = map[string]cachedLease{}
	}
	leases := make(map[string]*lease, len(names))
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
			return nil, fmt.Errorf("lease %s: %w", app, err)
		}
		id := idOfStat(&st)
		if cached, ok := c.files[app]; ok && cached.id == id {
			leases[app] = cached.lease
			continue
		}
		l, err := s.load(app)
		if err != nil {
			return nil, err
		}
		if l == nil {
			continue
		}
		leases[app] = l
		c.files[app] = cachedLease{id: id, lease: l}
	}
	for app := range c.files {
		if leases[app] == nil {
			delete(c.files, app)
		}
	}
	return leases, nil
}

func (s leaseStore) save(l *lease) error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(s.path(l.App), append(b, '\n'))
}

func (s leaseStore) remove(app string) error {
	if err := os.Remove(s.path(app)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// writeFileAtomic replaces path with data: temp file in the same directory, fsync, rename, fsync
// of the directory. The file is 0600.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
