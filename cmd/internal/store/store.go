package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/dirwatch"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
)

// SchemaVersion is the version of the record format this build writes. Records of a newer schema
// are refused rather than misread; records of schema 1 (one image per app) are read as apps of
// one container named like the app, and written as schema 2 on their next change.
const SchemaVersion = 2

// damagedSuffix marks a quarantined copy of a damaged record: NAME.json.damaged-UNIXTIME.
const damagedSuffix = ".json.damaged-"

// Store is the desired-state directory: DIR/apps/NAME.json, a copy of each record in
// DIR/apps/.last/NAME.json (what a held app's damaged record described), DIR/lock.
type Store struct {
	dir   string
	cache recordCache
	// records and copied are the records directory and that of their copies as List and Copied
	// read them last (read again after a change in them, with a watch: see FollowFiles).
	records, copied dirwatch.Dir
}

// recordCache keeps the records decoded, each with the identity of the file it was read from
// (inode, size, times): every write is a new file (a rename), so reading a record again costs a
// stat when it did not change, not a read, a decode and a validation. Records are handed out as
// clones (App.Clone): a caller changing its copy changes nothing here.
type recordCache struct {
	mu    sync.Mutex
	files map[string]cachedRecord
	watch *dirwatch.Watch // see FollowFiles
}

type cachedRecord struct {
	id   fileID
	app  App
	mark uint64 // the watch's mark before the file was last checked (0: none)
}

// FollowFiles makes reading a record nothing happened to since it was last read cost no stat,
// and List and Copied the read of a directory nothing happened in (w sees the records
// directory's events). For a long-lived process (the daemon).
func (s *Store) FollowFiles(w *dirwatch.Watch) {
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	s.cache.watch = w
}

func (s *Store) watch() *dirwatch.Watch {
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	return s.cache.watch
}

// fileID is what tells one file from another at one path: a new inode, or the same one changed.
type fileID struct {
	ino, size            uint64
	mtimeNsec, ctimeNsec int64
}

func idOfStat(st *unix.Stat_t) fileID {
	return fileID{ino: st.Ino, size: uint64(st.Size), mtimeNsec: st.Mtim.Nano(), ctimeNsec: st.Ctim.Nano()}
}

// record is the on-disk envelope of an App.
type record struct {
	Schema int `json:"schema"`
	App    App `json:"app"`
}

// recordV1 is a record of schema 1: an app of one image (or static directory), whose fields are
// now its container's.
type recordV1 struct {
	Schema int   `json:"schema"`
	App    appV1 `json:"app"`
}

type appV1 struct {
	App
	Image   string   `json:"image,omitempty"`
	Source  string   `json:"source,omitempty"`
	Static  string   `json:"static,omitempty"`
	Env     []string `json:"env,omitempty"`
	Volumes []Volume `json:"volumes,omitempty"`
}

// app is the schema-2 app of a schema-1 record: one container named like the app, holding the
// image (an uploaded image's ID is also what runs), environment and volumes; its ports are that
// container's.
func (r recordV1) app() App {
	a := r.App.App
	c := Container{Name: a.Name, Image: r.App.Image, Source: r.App.Source, Static: r.App.Static,
		Env: r.App.Env, Volumes: r.App.Volumes}
	if imageID.MatchString(c.Image) {
		c.ImageID = c.Image
	}
	a.Containers = []Container{c}
	return a
}

// Open creates (0700) or opens the state dir's app records.
func Open(stateDir string) (*Store, error) {
	s := &Store{dir: stateDir}
	for _, d := range []string{stateDir, s.appsDir(), s.copyDir()} {
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

// copyDir holds a copy of every record, written with it: when a record is found damaged, its
// copy says what the app was (the daemon keeps serving that while it holds the app).
func (s *Store) copyDir() string { return filepath.Join(s.appsDir(), ".last") }

func (s *Store) copyPath(name string) string { return filepath.Join(s.copyDir(), name+".json") }

// lock takes the state dir's exclusive lock, waiting for it until ctx ends. Call the returned
// func to release it.
func (s *Store) lock(ctx context.Context) (unlock func(), err error) {
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

// Tx is a transaction on the store: it holds the state dir's exclusive lock, and is the only way
// to change records. It is valid only inside the Update call that made it.
type Tx struct {
	s *Store
}

// Update runs fn in a transaction: under the state dir's exclusive lock, which every writer of
// the state dir (records, onion keys) holds while writing.
func (s *Store) Update(ctx context.Context, fn func(tx *Tx) error) error {
	unlock, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	tx := &Tx{s: s}
	defer func() { tx.s = nil }() // a Tx kept past Update fails loudly
	return fn(tx)
}

// Held is an app whose record cannot be used: damaged (Quarantine moves it aside, and its
// copies are kept for the user), of a newer schema, or unreadable just now. Nothing may be
// changed or removed of a held app on the strength of its missing record.
type Held struct {
	Name    string
	Damaged bool     // the record is damaged for good (not merely unreadable now)
	Record  bool     // NAME.json is still there (Quarantine it when Damaged)
	Copies  []string // quarantined copies of damaged records, oldest first
	Err     error    // what is wrong (of the record, or of the copies' first record)
	// Last is the app as its last good record described it (from the copy written with every
	// record), or nil when there is no good copy.
	Last *App
}

func (h *Held) Error() string {
	if h.Record || len(h.Copies) == 0 {
		return fmt.Sprintf("store: app %q: %v", h.Name, h.Err)
	}
	return fmt.Sprintf("store: app %q: its record was damaged (kept as %s)", h.Name, h.Copies[len(h.Copies)-1])
}

func (h *Held) Unwrap() error { return h.Err }

// ErrDamaged is in the error of a record that cannot be decoded or does not hold a valid app.
var ErrDamaged = errors.New("damaged record")

// Get reads one app's record. A record that cannot be used is a *Held error; an app with no
// record and no damaged copy is ErrNotFound.
func (s *Store) Get(name string) (App, error) { return s.get(context.Background(), name) }

// get is Get, checking the record's file with the watch in ctx's view (see dirwatch.Settled).
func (s *Store) get(ctx context.Context, name string) (App, error) {
	if err := names.App(name); err != nil {
		return App{}, err
	}
	app, err := s.read(ctx, name)
	if !errors.Is(err, ErrNotFound) {
		return app, err
	}
	if copies := s.copies(name); len(copies) > 0 {
		return App{}, &Held{Name: name, Damaged: true, Copies: copies, Err: ErrDamaged, Last: s.lastGood(name)}
	}
	return App{}, err
}

// lastGood is the app as the copy of its record has it, or nil.
func (s *Store) lastGood(name string) *App {
	data, err := os.ReadFile(s.copyPath(name))
	if err != nil {
		return nil
	}
	app, err := decode(name, data)
	if err != nil {
		return nil
	}
	return &app
}

// read reads NAME.json (through the cache: decoded again only when the file changed).
func (s *Store) read(ctx context.Context, name string) (App, error) {
	if app, ok := s.cache.vouched(ctx, name, s.path(name)); ok {
		return app, nil // nothing happened to the file: no syscall but the watch's read
	}
	mark := s.cache.mark()
	var st unix.Stat_t
	if err := unix.Stat(s.path(name), &st); err == nil {
		if app, ok := s.cache.lookup(name, idOfStat(&st), mark); ok {
			return app, nil // the one syscall of an unchanged record
		}
	}
	data, id, err := readFile(s.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return App{}, errkind.NotFoundf("store: app %q: no such app", name)
	}
	if err != nil {
		return App{}, &Held{Name: name, Record: true, Err: err, Copies: s.copies(name), Last: s.lastGood(name)}
	}
	app, err := decode(name, data)
	if err != nil {
		h := &Held{Name: name, Record: true, Damaged: errors.Is(err, ErrDamaged), Err: err, Copies: s.copies(name), Last: s.lastGood(name)}
		return App{}, h
	}
	s.cache.put(name, id, app, mark)
	return app, nil
}

// readFile reads a file and the identity of the file it read.
func readFile(path string) ([]byte, fileID, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fileID{}, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fileID{}, err
	}
	data, err := io.ReadAll(f)
	return data, idOfStat(&st), err
}

// lookup returns a clone of the record cached for the file of identity id (checked after mark).
func (c *recordCache) lookup(name string, id fileID, mark uint64) (App, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.files[name]
	if !ok || r.id != id {
		return App{}, false
	}
	r.mark = mark
	c.files[name] = r
	return r.app.Clone(), true
}

// vouched returns a clone of the record cached for name when the watch saw nothing happen to
// its file since it was checked.
func (c *recordCache) vouched(ctx context.Context, name, path string) (App, bool) {
	c.mu.Lock()
	r, ok := c.files[name]
	watch := c.watch
	c.mu.Unlock()
	if !ok || r.mark == 0 || !watch.UnchangedIn(ctx, r.mark, path) {
		return App{}, false
	}
	return r.app.Clone(), true
}

// mark is the watch's mark now (0 without a watch).
func (c *recordCache) mark() uint64 {
	c.mu.Lock()
	watch := c.watch
	c.mu.Unlock()
	return watch.Mark()
}

func (c *recordCache) put(name string, id fileID, app App, mark uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.files == nil {
		c.files = map[string]cachedRecord{}
	}
	c.files[name] = cachedRecord{id: id, app: app.Clone(), mark: mark}
}

// keepOnly drops the records of apps no longer listed.
func (c *recordCache) keepOnly(names map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name := range c.files {
		if !names[name] {
			delete(c.files, name)
		}
	}
}

func decode(name string, data []byte) (App, error) {
	var r record
	var version struct {
		Schema int `json:"schema"`
	}
	if err := json.Unmarshal(data, &version); err != nil {
		return App{}, fmt.Errorf("%w: %w", ErrDamaged, err)
	}
	switch v := version.Schema; {
	case v > SchemaVersion:
		return App{}, fmt.Errorf("record schema %d is newer than this onionpod (%d): upgrade onionpod", v, SchemaVersion)
	case v <= 1:
		var old recordV1
		if err := json.Unmarshal(data, &old); err != nil {
			return App{}, fmt.Errorf("%w: %w", ErrDamaged, err)
		}
		r = record{Schema: v, App: old.app()}
	default:
		if err := json.Unmarshal(data, &r); err != nil {
			return App{}, fmt.Errorf("%w: %w", ErrDamaged, err)
		}
	}
	if r.App.Name != name {
		return App{}, fmt.Errorf("%w: it names app %q", ErrDamaged, r.App.Name)
	}
	if err := r.App.Validate(); err != nil {
		return App{}, fmt.Errorf("%w: %w", ErrDamaged, err)
	}
	if r.App.Generation < 1 {
		r.App.Generation = 1 // written before generations: its first
	}
	return r.App, nil
}

// copies are the quarantined copies of name's damaged records, oldest first.
func (s *Store) copies(name string) []string {
	matches, _ := filepath.Glob(filepath.Join(s.appsDir(), name+damagedSuffix+"*"))
	sort.Strings(matches)
	return matches
}

// List returns every app, sorted by name, and the held ones (records that cannot be used, and
// damaged copies with no record beside them). Its error is only for the directory itself:
// then nothing is known of any app.
func (s *Store) List() (apps []App, held []*Held, err error) {
	entries, err := s.records.ReadDir(s.watch(), s.appsDir())
	if err != nil {
		return nil, nil, fmt.Errorf("store: %w", err)
	}
	// One read of the watch's queue for every record: the list is of the records as they were
	// when it began, or later.
	look := s.watch().Settled(context.Background())
	seen := make(map[string]bool, len(entries))
	apps = make([]App, 0, len(entries))
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			name, _, ok = strings.Cut(e.Name(), damagedSuffix)
		}
		if !ok || !names.IsApp(name) || seen[name] {
			continue // temp files and strangers
		}
		seen[name] = true
		app, err := s.get(look, name)
		var h *Held
		switch {
		case err == nil:
			apps = append(apps, app)
		case errors.As(err, &h):
			held = append(held, h)
		}
		// Otherwise deleted meanwhile.
	}
	s.cache.keepOnly(seen)
	sort.Slice(apps, func(i, j int) bool { return apps[i].Name < apps[j].Name })
	sort.Slice(held, func(i, j int) bool { return held[i].Name < held[j].Name })
	return apps, held, nil
}

// Copied lists the apps whose record has its copy (see HasCopy), in one read of the directory.
func (s *Store) Copied() (map[string]bool, error) {
	entries, err := s.copied.ReadDir(s.watch(), s.copyDir())
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	out := make(map[string]bool, len(entries))
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			out[name] = true
		}
	}
	return out, nil
}

// Get reads one app's record inside the transaction (see Store.Get).
func (tx *Tx) Get(name string) (App, error) { return tx.s.Get(name) }

// Put validates and writes one app's record atomically, and then its copy.
func (tx *Tx) Put(app App) error {
	if err := app.Validate(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(record{Schema: SchemaVersion, App: app}, "", "  ")
	if err != nil {
		return fmt.Errorf("store: app %q: %w", app.Name, err)
	}
	data = append(data, '\n')
	for _, p := range []string{tx.s.path(app.Name), tx.s.copyPath(app.Name)} {
		if _, err := atomicfile.WriteFile(p, data, 0o600); err != nil {
			return fmt.Errorf("store: app %q: %w", app.Name, err)
		}
	}
	return nil
}

// Delete removes one app's record and the quarantined copies of its damaged records; it reports
// whether there was anything to remove.
func (tx *Tx) Delete(name string) (existed bool, err error) {
	if err := names.App(name); err != nil {
		return false, err
	}
	if err := os.Remove(tx.s.copyPath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("store: app %q: %w", name, err)
	}
	for _, p := range append([]string{tx.s.path(name)}, tx.s.copies(name)...) {
		err := os.Remove(p)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return existed, fmt.Errorf("store: app %q: %w", name, err)
		}
		existed = existed || err == nil
	}
	if !existed {
		return false, nil
	}
	if err := atomicfile.SyncDir(tx.s.copyDir()); err != nil {
		return true, err
	}
	return true, atomicfile.SyncDir(tx.s.appsDir())
}

// HasCopy reports whether the app's record has its copy (records written before copies existed
// have none: Tx.Copy writes it).
func (s *Store) HasCopy(name string) bool {
	_, err := os.Stat(s.copyPath(name))
	return err == nil
}

// Copy writes the copy of a good record that has none.
func (tx *Tx) Copy(name string) error {
	app, err := tx.Get(name)
	if err != nil {
		return err
	}
	return tx.Put(app)
}

// Quarantine moves a damaged record aside (NAME.json.damaged-UNIXTIME), keeping it for the user,
// and returns the copy's path. Only a record Get reports as damaged is moved.
func (tx *Tx) Quarantine(name string, now time.Time) (string, error) {
	_, err := tx.s.read(context.Background(), name)
	var h *Held
	if !errors.As(err, &h) || !h.Damaged {
		return "", fmt.Errorf("store: app %q: the record is not damaged: %w", name, errkind.Conflict)
	}
	p, err := atomicfile.Quarantine(tx.s.path(name), now.Unix())
	if err != nil {
		return "", fmt.Errorf("store: app %q: %w", name, err)
	}
	return p, nil
}
