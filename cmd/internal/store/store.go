package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// SchemaVersion is the version of the record format this build writes. Records of a newer schema
// are refused rather than misread.
const SchemaVersion = 1

// Store is the desired-state directory: DIR/apps/NAME.json, DIR/lock.
type Store struct {
	dir string
}

// record is the on-disk envelope of an App.
type record struct {
	Schema int `json:"schema"`
	App    App `json:"app"`
}

// Open creates (0700) or opens the state dir's app records.
func Open(stateDir string) (*Store, error) {
	s := &Store{dir: stateDir}
	for _, d := range []string{stateDir, s.appsDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	return s, nil
}

// Dir is the state dir.
func (s *Store) Dir() string { return s.dir }

func (s *Store) appsDir() string { return filepath.Join(s.dir, "apps") }

func (s *Store) path(name string) string { return filepath.Join(s.appsDir(), name+".json") }

// Lock takes the state dir's exclusive lock, waiting for it until ctx ends. Every writer of the
// state dir (records, onion keys) holds it while writing. Call the returned func to release it.
func (s *Store) Lock(ctx context.Context) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: lock: %w", err)
	}
	for delay := time.Millisecond; ; delay = min(delay*2, 100*time.Millisecond) {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("store: lock: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("store: lock %s is held by another onionpod process: %w", filepath.Join(s.dir, "lock"), ctx.Err())
		case <-time.After(delay):
		}
	}
}

// Update runs fn under the lock. Put and Delete must only be called from inside Update.
func (s *Store) Update(ctx context.Context, fn func() error) error {
	unlock, err := s.Lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	return fn()
}

// Get reads one app's record.
func (s *Store) Get(name string) (App, error) {
	if err := ValidateName(name); err != nil {
		return App{}, err
	}
	data, err := os.ReadFile(s.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return App{}, fmt.Errorf("store: app %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return App{}, fmt.Errorf("store: app %q: %w", name, err)
	}
	return decode(name, data)
}

func decode(name string, data []byte) (App, error) {
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return App{}, fmt.Errorf("store: app %q: damaged record: %w", name, err)
	}
	if r.Schema > SchemaVersion {
		return App{}, fmt.Errorf("store: app %q: record schema %d is newer than this onionpod (%d): upgrade onionpod", name, r.Schema, SchemaVersion)
	}
	if r.App.Name != name {
		return App{}, fmt.Errorf("store: app %q: record names app %q", name, r.App.Name)
	}
	return r.App, nil
}

// List returns every app, sorted by name.
func (s *Store) List() ([]App, error) {
	entries, err := os.ReadDir(s.appsDir())
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	var apps []App
	var errs []error
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || ValidateName(name) != nil {
			continue // temp files and strangers
		}
		app, err := s.Get(name)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		apps = append(apps, app)
	}
	sort.Slice(apps, func(i, j int) bool { return apps[i].Name < apps[j].Name })
	return apps, errors.Join(errs...)
}

// Put validates and writes one app's record atomically. Call it inside Update.
func (s *Store) Put(app App) error {
	if err := app.Validate(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(record{Schema: SchemaVersion, App: app}, "", "  ")
	if err != nil {
		return fmt.Errorf("store: app %q: %w", app.Name, err)
	}
	if err := WriteFileAtomic(s.path(app.Name), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("store: app %q: %w", app.Name, err)
	}
	return nil
}

// Delete removes one app's record; a missing record is not an error. Call it inside Update.
func (s *Store) Delete(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	err := os.Remove(s.path(name))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: app %q: %w", name, err)
	}
	return syncDir(s.appsDir())
}
