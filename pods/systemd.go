package pods

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/dirwatch"
	"github.com/onionpod/onionpod/internal/errkind"
)

// Systemd manages onionpod's units through systemd's D-Bus API. It must run in systemd's pid and
// mount namespaces (as a service of that systemd, or entered with nsenter). Safe for concurrent use.
type Systemd struct {
	unitDir string

	mu   sync.Mutex
	conn *sddbus.Conn

	sums   fileSums     // what Current read
	listed dirwatch.Dir // the unit directory as Units read it last

	// removed are the units whose files were removed since systemd last read them all:
	// RemoveUnits does not reload (with 1000 apps a daemon-reload takes 2 s), so systemd may
	// still hold them, loaded from their old files. Tidy reloads.
	removed nameSet
	// rewritten are the units whose files Write or Apply replaced while systemd may hold the
	// older ones, not yet looked at by an Apply (which reloads if one is stale, and restarts
	// the running ones): a pass writes every app's changed units before it starts any, so that
	// one reload covers them all (one per app took an hour for 1000 apps). Kept in RewrittenDir
	// too, for the next process if this one is killed.
	rewritten rewrittenSet
	// reloadMu makes Applies running side by side ask about stale units and reload one at a
	// time: the first reloads, the others find their units read again.
	reloadMu sync.Mutex
}

// nameSet is a set of unit names, safe for concurrent use.
type nameSet struct {
	mu    sync.Mutex
	names map[string]bool
}

func (n *nameSet) add(names ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.names == nil {
		n.names = map[string]bool{}
	}
	for _, name := range names {
		n.names[name] = true
	}
}

func (n *nameSet) has(name string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.names[name]
}

func (n *nameSet) remove(names ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, name := range names {
		delete(n.names, name)
	}
}

func (n *nameSet) empty() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.names) == 0
}

// take empties the set and returns what it held.
func (n *nameSet) take() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	taken := slices.Collect(maps.Keys(n.names))
	n.names = nil
	return taken
}

// fileSums remembers the SHA-256 of the files Current read, each with the identity of the file
// (inode, size, times): a file that did not change is not read again (a reconcile pass asks
// whether every unit of every app is current). Every write is a rename (a new inode), and a file
// changed in place changes its times. With a watch (FollowFiles), a file nothing happened to
// since it was last checked is not even stat'ed.
type fileSums struct {
	mu    sync.Mutex
	files map[string]fileSum
	watch *dirwatch.Watch
}

type fileSum struct {
	id     fileID
	sum    [sha256.Size]byte
	absent bool   // no file there
	other  bool   // not a regular file: holds no content of ours
	mark   uint64 // the watch's mark before the file was checked (0: none)
	// matched is the last content found to be the file's: asked again about the same slice
	// (the daemon renders an app's units once and asks with them at every pass), no hashing.
	matched []byte
}

type fileID struct {
	ino, size            uint64
	mtimeNsec, ctimeNsec int64
}

func idOfStat(st *unix.Stat_t) fileID {
	return fileID{ino: st.Ino, size: uint64(st.Size), mtimeNsec: st.Mtim.Nano(), ctimeNsec: st.Ctim.Nano()}
}

func (f *fileSum) holds(content []byte) bool {
	switch {
	case f.absent:
		return content == nil
	case f.other || content == nil || f.id.size != uint64(len(content)):
		return false
	case len(content) > 0 && len(f.matched) == len(content) && &f.matched[0] == &content[0]:
		return true // the very slice found to match before (units are never changed)
	}
	if f.sum != sha256.Sum256(content) {
		return false
	}
	f.matched = content
	return true
}

// vouched answers for all of paths at once (known) when the watch saw nothing happen to any of
// them since each was last checked: whether each holds its content.
func (c *fileSums) vouched(ctx context.Context, paths []string, contents [][]byte) (held, known bool) {
	c.mu.Lock()
	watch := c.watch
	known = watch != nil
	oldest := uint64(0)
	found := make([]fileSum, len(paths))
	for i, p := range paths {
		f, ok := c.files[p]
		if !known || !ok || f.mark == 0 {
			known = false
			break
		}
		found[i] = f
		if oldest == 0 || f.mark < oldest {
			oldest = f.mark
		}
	}
	c.mu.Unlock()
	if !known || !watch.UnchangedIn(ctx, oldest, paths...) { // one read of the watch for them all
		return false, false
	}
	held = true
	for i := range found {
		matched := found[i].matched
		if !found[i].holds(contents[i]) {
			held = false
		} else if !sameSlice(matched, found[i].matched) { // hashed: remember the slice that matched
			c.remember(paths[i], found[i])
		}
	}
	return held, true
}

// sameSlice reports whether a and b are the same slice of the same array.
func sameSlice(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// holds reports whether the regular file at path holds exactly content; with content nil,
// whether there is no file there.
func (c *fileSums) holds(ctx context.Context, path string, content []byte) bool {
	c.mu.Lock()
	f, ok := c.files[path]
	watch := c.watch
	c.mu.Unlock()
	if ok && f.mark != 0 {
		if now, still := watch.StillIn(ctx, f.mark, path); still {
			f.mark = now // its neighbours, checked at other marks, then share one (see vouched)
			if f.holds(content) {
				c.remember(path, f)
				return true
			}
			return false
		}
	}
	mark := watch.Mark() // before the look: a change during it shows next time
	f, ok = c.check(path, f, ok)
	if !ok {
		return false
	}
	f.mark = mark
	held := f.holds(content)
	c.remember(path, f)
	return held
}

// remember keeps what is known of the file at path.
func (c *fileSums) remember(path string, f fileSum) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.files == nil {
		c.files = map[string]fileSum{}
	}
	if cur, ok := c.files[path]; ok && cur.mark > f.mark {
		return // a later look at the file won
	}
	c.files[path] = f
}

// check looks at the file at path now (reading it only when it is not the file known: known,
// when had). ok is false when it cannot be told (an error, or a file changing while read).
func (c *fileSums) check(path string, known fileSum, had bool) (fileSum, bool) {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	if errors.Is(err, unix.ENOENT) {
		return fileSum{absent: true}, true
	}
	if err != nil {
		return fileSum{}, false
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fileSum{other: true, id: idOfStat(&st)}, true
	}
	id := idOfStat(&st)
	if had && !known.absent && !known.other && known.id == id {
		return known, true
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fileSum{}, false
	}
	var after unix.Stat_t
	if unix.Lstat(path, &after) != nil || idOfStat(&after) != id { // not the file stat'ed
		return fileSum{}, false
	}
	return fileSum{id: id, sum: sha256.Sum256(data)}, true
}

// forget drops what is known of files that are removed.
func (c *fileSums) forget(paths ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range paths {
		delete(c.files, p)
	}
}

// Status is what systemd says about a unit.
type Status struct {
	Unit        string    // e.g. onionpod-pod-blog.service
	ActiveState string    // active, inactive, failed, activating, deactivating
	SubState    string    // running, dead, auto-restart, exited, ...
	MainPID     int       // 0 when not running
	Restarts    int       // automatic restarts since the unit was last started by hand
	Since       time.Time // when ActiveState last changed
	Result      string    // success, exit-code, signal, core-dump, timeout, ...
	Enabled     bool      // starts at boot
}

// Connect connects to systemd (the system bus, or systemd's private socket as root). unitDir is
// where unit files are written, normally /etc/systemd/system.
func Connect(ctx context.Context, unitDir string) (*Systemd, error) {
	s := &Systemd{unitDir: unitDir, rewritten: rewrittenSet{dir: RewrittenDir}}
	if err := s.rewritten.load(); err != nil {
		return nil, err
	}
	conn, err := s.connection(ctx)
	if err != nil {
		return nil, err
	}
	// Units an earlier onionpod removed without a reload: systemd still holds them.
	units, err := conn.ListUnitsByPatternsContext(ctx, nil, []string{UnitPrefix + "pod-*.service", UnitPrefix + "net-*.service"})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("pods: list units: %w", err)
	}
	var lingering []string
	for _, u := range units {
		if u.LoadState != "not-found" && !s.exists(u.Name) {
			lingering = append(lingering, u.Name)
		}
	}
	s.removed.add(lingering...)
	return s, nil
}

// Close closes the D-Bus connection.
func (s *Systemd) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	return nil
}

// connection returns a live connection, reconnecting when systemd went away (daemon-reexec).
func (s *Systemd) connection(ctx context.Context) (*sddbus.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && s.conn.Connected() {
		return s.conn, nil
	}
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	conn, err := sddbus.NewWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("pods: connect to systemd: %w", err)
	}
	s.conn = conn
	return conn, nil
}

func checkUnitName(name string) error {
	if !strings.HasPrefix(name, UnitPrefix) || !strings.HasSuffix(name, ".service") ||
		strings.ContainsAny(name, "/ \t\n\\") || len(name) > 255 {
		return errkind.BadInputf("pods: unit %q: not an onionpod service", name)
	}
	return nil
}

// Apply makes the given units match: each file is written (atomically) only when its content
// changed, a unit's environment file (Unit.Env) root-only before the unit (Write); systemd
// reloads once, and only when a changed unit (changed here or by an earlier Write) was already
// loaded (new units are loaded on demand, so creating a pod needs no reload); units with an
// [Install] section are enabled (the multi-user.target.wants symlink `systemctl enable` makes)
// and started, and a changed one that was running (its unit or its environment) is restarted.
// Units without one (network units) start as dependencies of their pod.
func (s *Systemd) Apply(ctx context.Context, units ...Unit) error {
	conn, wasActive, err := s.install(ctx, units)
	if err != nil {
		return err
	}
	var errs []error
	for _, u := range units {
		if !installable(u) {
			continue
		}
		job := conn.StartUnitContext
		if wasActive[u.Name] {
			job = conn.RestartUnitContext
		}
		if err := runJob(ctx, u.Name, job); err != nil {
			// A unit that failed too often hits its start rate limit: forget that, retry once.
			if rerr := conn.ResetFailedUnitContext(ctx, u.Name); rerr == nil {
				err = runJob(ctx, u.Name, job)
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Install writes units and enables those with an [Install] section, and reloads systemd where
// it holds one of them from an older file, without starting any: for a unit that runs at boot
// only (the apps' networks of onionpod-networks.service).
func (s *Systemd) Install(ctx context.Context, units ...Unit) error {
	_, _, err := s.install(ctx, units)
	return err
}

// install is Install, returning the connection and the units that ran from an older file (for
// Apply to start and restart).
func (s *Systemd) install(ctx context.Context, units []Unit) (_ *sddbus.Conn, wasActive map[string]bool, err error) {
	conn, err := s.connection(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := s.Write(units...); err != nil {
		return nil, nil, err
	}
	wasActive, err = s.settle(ctx, conn, units)
	return conn, wasActive, err
}

// Write writes units (each only when changed, a unit's environment file root-only before the
// unit) and enables those with an [Install] section, without starting any: Apply then starts
// them, and restarts the changed ones that run. A pass writes every app's changed units first,
// so that systemd reads them all again in one reload.
func (s *Systemd) Write(units ...Unit) error {
	for _, u := range units {
		if r, ok := ParsePodUnit(u.Name); ok {
			if err := MigrateVolumes(r.App, u.Volumes); err != nil {
				return err
			}
		}
		if err := s.write(u); err != nil {
			return err
		}
	}
	var enable []string
	for _, u := range units {
		if installable(u) && !s.enabled(u.Name) {
			enable = append(enable, u.Name)
		}
	}
	if err := s.enable(enable); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(s.unitDir); err != nil {
		return fmt.Errorf("pods: sync %s: %w", s.unitDir, err)
	}
	return nil
}

// settle looks at the units of units that were rewritten (by this Apply or an earlier Write):
// it reloads systemd if it holds one from an older file, and reports those that were running
// (to be restarted).
func (s *Systemd) settle(ctx context.Context, conn *sddbus.Conn, units []Unit) (wasActive map[string]bool, err error) {
	var replaced []string
	for _, u := range units {
		if s.rewritten.has(u.Name) {
			replaced = append(replaced, u.Name)
		}
	}
	if len(replaced) == 0 {
		return nil, nil
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	wasActive = map[string]bool{}
	reload := false
	for _, name := range replaced {
		// Two properties, not all of them.
		need, err := conn.GetUnitPropertyContext(ctx, name, "NeedDaemonReload")
		if err != nil {
			return nil, fmt.Errorf("pods: %s: %w", name, err)
		}
		if b, _ := need.Value.Value().(bool); b {
			reload = true
		}
		active, err := conn.GetUnitPropertyContext(ctx, name, "ActiveState")
		if err != nil {
			return nil, fmt.Errorf("pods: %s: %w", name, err)
		}
		if st, _ := active.Value.Value().(string); st == "active" || st == "activating" || st == "reloading" {
			wasActive[name] = true
		}
	}
	if reload {
		if err := s.reload(ctx, conn); err != nil {
			return nil, err
		}
	}
	s.rewritten.remove(replaced...)
	return wasActive, nil
}

// MigrateVolumes moves the app's volumes that are still where an older onionpod kept them
// (/var/lib/private/onionpod/APP/VOLUME) to VolumeHostDir, and removes the public symlink systemd
// made to the old place; a volume already at its place is left alone. Call it before a unit
// mounting them is written.
func MigrateVolumes(app string, volumes []string) error {
	for _, v := range volumes {
		if !volumeName.MatchString(v) || ValidApp(app) != nil {
			return fmt.Errorf("pods: app %q: volume %q: %w", app, v, ErrBadInput)
		}
		old, dst := legacyVolumeHostDir(app, v), VolumeHostDir(app, v)
		st, err := os.Lstat(old)
		if err != nil || !st.IsDir() {
			continue
		}
		if _, err := os.Lstat(dst); err == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("pods: app %q: volume %s: %w", app, v, err)
		}
		if err := os.Rename(old, dst); err != nil {
			return fmt.Errorf("pods: app %q: volume %s: %w", app, v, err)
		}
		if err := atomicfile.SyncDir(filepath.Dir(dst)); err != nil {
			return err
		}
		link := legacyVolumeLink(app, v)
		if target, err := os.Readlink(link); err == nil && filepath.Join(filepath.Dir(link), target) == old {
			os.Remove(link)
		}
	}
	return nil
}

// write writes a unit's environment file (or removes a stale one) and then its unit file, each
// only when changed. A unit that systemd may hold loaded from an older file (or run) is recorded
// as rewritten before its files change: one whose file is there, or was removed since systemd's
// last reload. A new unit is not: asking systemd about it loads it, and it would be loaded again
// to start.
func (s *Systemd) write(u Unit) error {
	if err := checkUnitName(u.Name); err != nil {
		return err
	}
	file := filepath.Join(s.unitDir, u.Name)
	old, err := os.ReadFile(file)
	existed := err == nil
	if (existed && (!bytes.Equal(old, u.Content) || !envHolds(EnvFile(u.Name), u.Env))) || (!existed && s.removed.has(u.Name)) {
		if err := s.rewritten.add(u.Name); err != nil {
			return err
		}
	}
	if _, err := writeEnvFile(EnvFile(u.Name), u.Env); err != nil {
		return fmt.Errorf("pods: write the environment of %s: %w", u.Name, err)
	}
	if _, err := atomicfile.WriteFileNoDirSync(file, u.Content, 0o644); err != nil {
		return fmt.Errorf("pods: write %s: %w", u.Name, err)
	}
	return nil
}

// envHolds reports whether the environment file is content (nil: there is none).
func envHolds(file string, content []byte) bool {
	old, err := os.ReadFile(file)
	if content == nil {
		return errors.Is(err, os.ErrNotExist)
	}
	return err == nil && bytes.Equal(old, content)
}

// writeEnvFile writes an environment file root-only (0600, in a 0700 directory), atomically; nil
// content removes it. It reports whether the file changed.
func writeEnvFile(file string, content []byte) (bool, error) {
	if content == nil {
		err := os.Remove(file)
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return err == nil, err
	}
	dir := filepath.Dir(file)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil { // /etc/onionpod: readable
		return false, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return false, err
	}
	if err := keepMode(dir, 0o700); err != nil {
		return false, err
	}
	return atomicfile.WriteFile(file, content, 0o600)
}

// keepMode gives the directory at dir the permissions perm, changing them only when they
// differ: a chmod is an event on the directory for every watch of its parent, and a file watch
// (dirwatch) then vouches for none of the files in it (every unit's environment file, at a pod
// write each).
func keepMode(dir string, perm os.FileMode) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if fi.Mode().Perm() == perm {
		return nil
	}
	return os.Chmod(dir, perm)
}

// FollowFiles makes Current skip the stat of unit and environment files nothing happened to
// since it last looked, and Units the read of a unit directory nothing happened in (w sees
// their directories' events). For a long-lived process.
func (s *Systemd) FollowFiles(w *dirwatch.Watch) {
	s.sums.mu.Lock()
	defer s.sums.mu.Unlock()
	s.sums.watch = w
}

// Current reports whether the unit files, and their environment files, on disk are exactly
// units (and so Apply would change nothing on disk), and none of them was replaced by a Write
// that no Apply followed yet. A file that did not change since Current last read it costs an
// lstat.
func (s *Systemd) Current(ctx context.Context, units []Unit) bool {
	paths := make([]string, 0, 2*len(units))
	contents := make([][]byte, 0, 2*len(units))
	for _, u := range units {
		// A unit Write replaced that no Apply looked at since may run its old file.
		if checkUnitName(u.Name) != nil || u.Content == nil || s.rewritten.has(u.Name) {
			return false
		}
		paths = append(paths, filepath.Join(s.unitDir, u.Name), EnvFile(u.Name))
		contents = append(contents, u.Content, u.Env)
	}
	if held, known := s.sums.vouched(ctx, paths, contents); known {
		return held && len(units) > 0
	}
	for i, p := range paths {
		if !s.sums.holds(ctx, p, contents[i]) {
			return false
		}
	}
	return len(units) > 0
}

func installable(u Unit) bool { return bytes.Contains(u.Content, []byte("\n[Install]\n")) }

func (s *Systemd) wantsDir() string { return filepath.Join(s.unitDir, "multi-user.target.wants") }

// enabled reports whether a unit is linked into multi-user.target.
func (s *Systemd) enabled(name string) bool {
	_, err := os.Lstat(filepath.Join(s.wantsDir(), name))
	return err == nil
}

// enable links units into multi-user.target.wants (what `systemctl enable` does for
// WantedBy=multi-user.target), each symlink created under a temp name and renamed into place.
func (s *Systemd) enable(names []string) error {
	if len(names) == 0 {
		return nil
	}
	if err := os.MkdirAll(s.wantsDir(), 0o755); err != nil {
		return fmt.Errorf("pods: enable: %w", err)
	}
	for _, n := range names {
		link := filepath.Join(s.wantsDir(), n)
		tmp := link + ".tmp-onionpod"
		_ = os.Remove(tmp)
		if err := os.Symlink(filepath.Join(s.unitDir, n), tmp); err != nil {
			return fmt.Errorf("pods: enable %s: %w", n, err)
		}
		if err := os.Rename(tmp, link); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("pods: enable %s: %w", n, err)
		}
	}
	return atomicfile.SyncDir(s.wantsDir())
}

type jobFunc func(ctx context.Context, name, mode string, ch chan<- string) (int, error)

// runJob queues a job and waits for its result.
func runJob(ctx context.Context, name string, job jobFunc) error {
	done := make(chan string, 1)
	if _, err := job(ctx, name, "replace", done); err != nil {
		return fmt.Errorf("pods: %s: %w", name, err)
	}
	select {
	case r := <-done:
		if r != "done" {
			return fmt.Errorf("pods: %s: job %s", name, r)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("pods: %s: %w", name, ctx.Err())
	}
}

// Start starts an app's pod: every container (and so its network).
func (s *Systemd) Start(ctx context.Context, app string) error {
	return s.appJob(ctx, app, func(c *sddbus.Conn) jobFunc { return c.StartUnitContext })
}

// Stop stops an app's pod: every container. Its network unit stays up.
func (s *Systemd) Stop(ctx context.Context, app string) error {
	return s.appJob(ctx, app, func(c *sddbus.Conn) jobFunc { return c.StopUnitContext })
}

// Restart restarts an app's pod: every container.
func (s *Systemd) Restart(ctx context.Context, app string) error {
	return s.appJob(ctx, app, func(c *sddbus.Conn) jobFunc { return c.RestartUnitContext })
}

func (s *Systemd) appJob(ctx context.Context, app string, pick func(*sddbus.Conn) jobFunc) error {
	if err := ValidApp(app); err != nil {
		return err
	}
	units, err := s.appUnits(app)
	if err != nil {
		return err
	}
	if len(units) == 0 {
		return fmt.Errorf("pods: %s: %w", app, ErrNotFound)
	}
	conn, err := s.connection(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range units {
		errs = append(errs, runJob(ctx, name, pick(conn)))
	}
	return errors.Join(errs...)
}

// appUnits lists the unit files of an app's containers, sorted.
func (s *Systemd) appUnits(app string) ([]string, error) {
	refs, err := s.PodUnits(context.Background())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range refs {
		if r.App == app {
			out = append(out, r.Unit())
		}
	}
	return out, nil
}

// ApplyApp is Apply for every unit of one app, which also stops, disables and deletes the
// app's container units that units no longer has (a container taken out of the app).
func (s *Systemd) ApplyApp(ctx context.Context, app string, units []Unit) error {
	if err := checkAppUnits(app, units); err != nil {
		return err
	}
	stale, err := s.staleUnits(app, units)
	if err != nil {
		return err
	}
	if len(stale) > 0 {
		if err := s.RemoveUnits(ctx, stale...); err != nil {
			return err
		}
	}
	return s.Apply(ctx, units...)
}

// WriteApp is Write for units of one app: ApplyApp then starts them (and removes the units of
// containers the app no longer has).
func (s *Systemd) WriteApp(app string, units []Unit) error {
	if err := checkAppUnits(app, units); err != nil {
		return err
	}
	return s.Write(units...)
}

// LoadApp is WriteApp, then has systemd load the units that start at boot (and so what they
// require: the network unit) without starting any. A unit systemd has not loaded yet makes it
// read its unit directories again when it is first asked for (about 11 µs per unit file: 20-40
// ms beside the 2000 files of 1000 apps); the daemon has that done while a new app's network is
// attached, and ApplyApp then only starts them. A unit that cannot be loaded is an error (its
// start would fail the same way).
func (s *Systemd) LoadApp(ctx context.Context, app string, units []Unit) error {
	if err := s.WriteApp(app, units); err != nil {
		return err
	}
	conn, err := s.connection(ctx)
	if err != nil {
		return err
	}
	for _, u := range units {
		if !installable(u) {
			continue
		}
		// A unit's object is loaded by being looked up (what `systemctl show` does).
		v, err := conn.GetUnitPropertyContext(ctx, u.Name, "LoadState")
		if err != nil {
			return fmt.Errorf("pods: load %s: %w", u.Name, err)
		}
		if st, _ := v.Value.Value().(string); st != "loaded" {
			return fmt.Errorf("pods: load %s: systemd says %q", u.Name, st)
		}
	}
	return nil
}

// checkAppUnits checks that units are app's own.
func checkAppUnits(app string, units []Unit) error {
	if err := ValidApp(app); err != nil {
		return err
	}
	for _, u := range units {
		if r, ok := ParsePodUnit(u.Name); ok && r.App != app || !ok && u.Name != NetUnitName(app) {
			return fmt.Errorf("pods: app %q: unit %s is not one of its own", app, u.Name) // a bug, not input
		}
	}
	return nil
}

// staleUnits are the app's container units on disk that units does not have.
func (s *Systemd) staleUnits(app string, units []Unit) ([]string, error) {
	have, err := s.appUnits(app)
	if err != nil {
		return nil, err
	}
	var stale []string
	for _, name := range have {
		if !slices.ContainsFunc(units, func(u Unit) bool { return u.Name == name }) {
			stale = append(stale, name)
		}
	}
	return stale, nil
}

// CurrentApp is Current for an app's units, and also false when the app has a container unit
// that units does not (a container to remove).
func (s *Systemd) CurrentApp(ctx context.Context, app string, units []Unit) bool {
	stale, err := s.staleUnits(app, units)
	return err == nil && len(stale) == 0 && s.Current(ctx, units)
}

// StartUnit, StopUnit and RestartUnit act on any onionpod unit by name (e.g. a HostService's).
func (s *Systemd) StartUnit(ctx context.Context, name string) error {
	return s.unitJob(ctx, name, func(c *sddbus.Conn) jobFunc { return c.StartUnitContext })
}

// StopUnit stops an onionpod unit; see StartUnit.
func (s *Systemd) StopUnit(ctx context.Context, name string) error {
	return s.unitJob(ctx, name, func(c *sddbus.Conn) jobFunc { return c.StopUnitContext })
}

// RestartUnit restarts an onionpod unit; see StartUnit.
func (s *Systemd) RestartUnit(ctx context.Context, name string) error {
	return s.unitJob(ctx, name, func(c *sddbus.Conn) jobFunc { return c.RestartUnitContext })
}

func (s *Systemd) unitJob(ctx context.Context, name string, pick func(*sddbus.Conn) jobFunc) error {
	if err := checkUnitName(name); err != nil {
		return err
	}
	if !s.exists(name) {
		return fmt.Errorf("pods: %s: %w", name, ErrNotFound)
	}
	conn, err := s.connection(ctx)
	if err != nil {
		return err
	}
	return runJob(ctx, name, pick(conn))
}

func (s *Systemd) exists(name string) bool {
	_, err := os.Stat(filepath.Join(s.unitDir, name))
	return err == nil
}

// Remove stops, disables and deletes an app's container and network units and the containers'
// environment files. It is idempotent: an app that is already gone is success. The app's volumes
// (VolumeHostDir) are kept.
func (s *Systemd) Remove(ctx context.Context, app string) error {
	if err := ValidApp(app); err != nil {
		return err
	}
	units, err := s.appUnits(app)
	if err != nil {
		return err
	}
	if !slices.Contains(units, PodUnitName(app)) {
		units = append(units, PodUnitName(app)) // stopped (and its environment removed) even without a file
	}
	return s.RemoveUnits(ctx, append(units, NetUnitName(app))...)
}

// RemoveUnits stops, disables and deletes onionpod units (and their environment files) by name:
// stops in order, files in reverse order; idempotent.
func (s *Systemd) RemoveUnits(ctx context.Context, names ...string) error {
	for _, n := range names {
		if err := checkUnitName(n); err != nil {
			return err
		}
	}
	conn, err := s.connection(ctx)
	if err != nil {
		return err
	}
	var errs []error
	var present []string
	for _, n := range names {
		if err := runJob(ctx, n, conn.StopUnitContext); err != nil && !isNoSuchUnit(err) {
			errs = append(errs, err)
		}
		if s.exists(n) || s.enabled(n) {
			present = append(present, n)
		}
	}
	// The environments (they may hold secrets) go before their units, also one left by an
	// Apply cut short: a removal cut short then leaves a unit, which is removed again, never a
	// lone environment file.
	for _, n := range names {
		if err := os.Remove(EnvFile(n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("pods: remove %s: %w", EnvFile(n), err))
		}
	}
	if len(present) > 0 {
		// The files go last-named first: Remove names an app's container units before its
		// network unit, so a removal cut short (the daemon killed) leaves a container unit,
		// which the next pass sees and removes again, rather than a lone network unit.
		for _, n := range slices.Backward(present) {
			for _, f := range []string{filepath.Join(s.wantsDir(), n), filepath.Join(s.unitDir, n)} {
				if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, fmt.Errorf("pods: remove %s: %w", f, err))
				}
			}
		}
		// No daemon-reload here: it reads every unit again (2 s with 1000 apps). A stopped unit
		// whose file is gone harms nothing until Tidy reloads, and Apply reloads first if a new
		// file would meet it.
		if err := atomicfile.SyncDir(s.unitDir); err != nil {
			errs = append(errs, err)
		}
		s.removed.add(present...)
	}
	s.rewritten.remove(names...)
	for _, n := range names {
		s.sums.forget(filepath.Join(s.unitDir, n), EnvFile(n))
		_ = conn.ResetFailedUnitContext(ctx, n) // forget a failed state; "not loaded" is fine
	}
	return errors.Join(errs...)
}

// ReloadOwed reports whether unit files were removed since systemd last read them all.
func (s *Systemd) ReloadOwed() bool { return !s.removed.empty() }

// Tidy runs the daemon-reload the removals since the last one owe, if any (reloaded: it ran):
// systemd then forgets the removed units (until then it lists them "loaded inactive dead", warns
// that their files changed on disk, and multi-user.target still wants them). The daemon calls it
// when the box is quiet; a reload makes systemd answer nothing else for its duration.
func (s *Systemd) Tidy(ctx context.Context) (reloaded bool, err error) {
	if !s.ReloadOwed() {
		return false, nil
	}
	conn, err := s.connection(ctx)
	if err != nil {
		return false, err
	}
	return true, s.reload(ctx, conn)
}

// reload runs a daemon-reload, which pays what the removals before it owe.
func (s *Systemd) reload(ctx context.Context, conn *sddbus.Conn) error {
	owed := s.removed.take()
	if err := conn.ReloadContext(ctx); err != nil {
		s.removed.add(owed...)
		return fmt.Errorf("pods: daemon-reload: %w", err)
	}
	return nil
}

func isNoSuchUnit(err error) bool {
	var dErr dbus.Error
	if errors.As(err, &dErr) {
		return dErr.Name == "org.freedesktop.systemd1.NoSuchUnit"
	}
	return strings.Contains(err.Error(), "not loaded")
}

// Status returns the state of an app's own container's unit (onionpod-pod-APP.service);
// ErrNotFound when the app has no such unit.
func (s *Systemd) Status(ctx context.Context, app string) (Status, error) {
	return s.ContainerStatus(ctx, app, app)
}

// ContainerStatus returns the state of a container's unit; ErrNotFound when it has none.
func (s *Systemd) ContainerStatus(ctx context.Context, app, container string) (Status, error) {
	if err := ValidApp(app); err != nil {
		return Status{}, err
	}
	if err := ValidApp(container); err != nil {
		return Status{}, err
	}
	return s.UnitStatus(ctx, ContainerUnitName(app, container))
}

// UnitStatus returns the state of any onionpod service unit; ErrNotFound when it does not exist.
func (s *Systemd) UnitStatus(ctx context.Context, name string) (Status, error) {
	if err := checkUnitName(name); err != nil {
		return Status{}, err
	}
	conn, err := s.connection(ctx)
	if err != nil {
		return Status{}, err
	}
	props, err := conn.GetUnitPropertiesContext(ctx, name)
	if err != nil {
		return Status{}, fmt.Errorf("pods: status %s: %w", name, err)
	}
	if ls, _ := props["LoadState"].(string); ls == "not-found" || !s.exists(name) {
		return Status{}, fmt.Errorf("pods: %s: %w", name, ErrNotFound)
	}
	st := Status{Unit: name}
	st.ActiveState, _ = props["ActiveState"].(string)
	st.SubState, _ = props["SubState"].(string)
	if us, _ := props["UnitFileState"].(string); us == "enabled" {
		st.Enabled = true
	}
	if ts, _ := props["StateChangeTimestamp"].(uint64); ts > 0 {
		st.Since = time.UnixMicro(int64(ts))
	}
	svc, err := conn.GetUnitTypePropertiesContext(ctx, name, "Service")
	if err != nil {
		return Status{}, fmt.Errorf("pods: status %s: %w", name, err)
	}
	if pid, ok := svc["MainPID"].(uint32); ok {
		st.MainPID = int(pid)
	}
	if n, ok := svc["NRestarts"].(uint32); ok {
		st.Restarts = int(n)
	}
	st.Result, _ = svc["Result"].(string)
	return st, nil
}

// PodStates returns, in one call to systemd, the active and sub state of every container unit
// that systemd has loaded, by app and container (Status's other fields are left zero: ask
// ContainerStatus for them). A container unit that is not loaded is inactive.
func (s *Systemd) PodStates(ctx context.Context) (map[PodRef]Status, error) {
	conn, err := s.connection(ctx)
	if err != nil {
		return nil, err
	}
	units, err := conn.ListUnitsByPatternsContext(ctx, nil, []string{UnitPrefix + "pod-*.service"})
	if err != nil {
		return nil, fmt.Errorf("pods: list pod units: %w", err)
	}
	return podStatuses(units, make(map[PodRef]Status, len(units))), nil
}

// PodStatesOf is PodStates for some container units only (loaded to be asked, if systemd had
// not): one call to systemd, whatever their number. A unit that does not exist is left out.
func (s *Systemd) PodStatesOf(ctx context.Context, refs []PodRef) (map[PodRef]Status, error) {
	out := make(map[PodRef]Status, len(refs))
	if len(refs) == 0 {
		return out, nil
	}
	conn, err := s.connection(ctx)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(refs))
	for i, r := range refs {
		names[i] = r.Unit()
	}
	units, err := conn.ListUnitsByNamesContext(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("pods: list pod units: %w", err)
	}
	return podStatuses(units, out), nil
}

// podStatuses adds to out the states of the container units among units that exist.
func podStatuses(units []sddbus.UnitStatus, out map[PodRef]Status) map[PodRef]Status {
	for _, u := range units {
		ref, ok := ParsePodUnit(u.Name)
		if u.LoadState == "not-found" || !ok {
			continue
		}
		out[ref] = Status{Unit: u.Name, ActiveState: u.ActiveState, SubState: u.SubState}
	}
	return out
}

// Units lists the onionpod unit files present (pods, networks, helper services), sorted: the
// reconciler compares them with the desired state to find orphans. With a watch (FollowFiles)
// the directory is read again only after something happened in it.
func (s *Systemd) Units(ctx context.Context) ([]string, error) {
	s.sums.mu.Lock()
	watch := s.sums.watch
	s.sums.mu.Unlock()
	entries, err := s.listed.ReadDir(watch, s.unitDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("pods: list units: %w", err)
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, UnitPrefix) && strings.HasSuffix(n, ".service") && !e.IsDir() {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Apps lists the apps that have a container unit file, sorted, each once.
func (s *Systemd) Apps(ctx context.Context) ([]string, error) {
	refs, err := s.PodUnits(ctx)
	if err != nil {
		return nil, err
	}
	var apps []string
	for _, r := range refs {
		if len(apps) == 0 || apps[len(apps)-1] != r.App {
			apps = append(apps, r.App)
		}
	}
	return apps, nil
}

// NetUnitApps lists the apps that have a network unit file, sorted.
func (s *Systemd) NetUnitApps(ctx context.Context) ([]string, error) {
	return parsedUnits(ctx, s, ParseNetUnit)
}

// PodUnits lists the container unit files present, sorted by app then unit name.
func (s *Systemd) PodUnits(ctx context.Context) ([]PodRef, error) {
	refs, err := parsedUnits(ctx, s, ParsePodUnit)
	sort.SliceStable(refs, func(i, j int) bool { return refs[i].App < refs[j].App })
	return refs, err
}

// parsedUnits is what parse makes of each unit file present that it takes, in the order of
// Units.
func parsedUnits[T any](ctx context.Context, s *Systemd, parse func(unit string) (T, bool)) ([]T, error) {
	units, err := s.Units(ctx)
	if err != nil {
		return nil, err
	}
	var out []T
	for _, u := range units {
		if v, ok := parse(u); ok {
			out = append(out, v)
		}
	}
	return out, nil
}

// Logs writes an app's journal to w, with `journalctl`: all its containers' and its network
// unit's, or one container's when container is not "". With follow it keeps writing new lines
// until ctx is done (which is then not an error).
func (s *Systemd) Logs(ctx context.Context, app, container string, follow bool, w io.Writer) error {
	if err := ValidApp(app); err != nil {
		return err
	}
	units, err := s.appUnits(app)
	if err != nil {
		return err
	}
	if container != "" {
		if err := ValidApp(container); err != nil {
			return err
		}
		units = slices.DeleteFunc(units, func(u string) bool { return u != ContainerUnitName(app, container) })
	}
	if len(units) == 0 {
		return fmt.Errorf("pods: logs %s: %w", app, ErrNotFound)
	}
	if container == "" {
		units = append(units, NetUnitName(app))
	}
	args := []string{"--no-pager", "--output=short-iso"}
	for _, u := range units {
		args = append(args, "--unit="+u)
	}
	if follow {
		args = append(args, "--follow", "--lines=all")
	}
	cmd := exec.CommandContext(ctx, "journalctl", args...)
	cmd.Stdout = w
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if err != nil && follow && ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pods: logs %s: %w: %s", app, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
