package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
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

func (s leaseStore) loadAll() (map[string]*lease, error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	leases := map[string]*lease{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || validApp(name) != nil {
			continue // temp files and strangers
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var l lease
		if err := json.Unmarshal(b, &l); err != nil {
			return nil, fmt.Errorf("lease %s: %w", e.Name(), err)
		}
		if l.Version != leaseVersion || l.App != name {
			return nil, fmt.Errorf("lease %s: unknown version %d or app %q", e.Name(), l.Version, l.App)
		}
		leases[name] = &l
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
