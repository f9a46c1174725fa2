// Package dirwatch tells whether a file may have changed since a moment, from inotify events on
// its directory and on that directory's parent. A cache that validates what it holds by the
// identity of each file (a stat per file per use) can then skip the stat of every file nothing
// happened to: a daemon that checks the unit, key and record files of 1000 apps on every
// reconcile pass asks the kernel one read of its inotify queue per check instead (shared by the
// checks asked at once), or one for a whole look that writes nothing (Settled).
//
// Anything the watch cannot vouch for counts as changed: a directory not watched since before
// the moment (it is watched from then on), events lost (queue overflow), a directory moved,
// replaced or deleted. A Watch is safe for concurrent use.
package dirwatch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Watch follows the directories of the files it is asked about.
//
// Every answer first has the events queued before the question read and applied. Callers
// asking at once share reads: one that began after a question was asked answers it (a
// reconcile pass asks thousands of questions on a few workers; each read is a syscall). The
// answers themselves are looked up side by side, under a read lock.
type Watch struct {
	// readMu is held across a read of the queue; begun counts the reads begun, done is the
	// number of the last read whose events are applied.
	readMu      sync.Mutex
	begun, done atomic.Uint64
	buf         []byte // under readMu

	mu   sync.RWMutex // the fields below
	fd   int
	dirs map[string]*dir // by clean path
	wds  map[int32]*dir
	seq  uint64 // events read so far; a Mark is a value of it
	lost uint64 // seq when events were last lost: nothing before it can be vouched for
}

// dir is one watched directory.
type dir struct {
	path  string
	wd    int32
	since uint64            // seq when the watch was added
	self  uint64            // seq of the last event on the directory itself (moved, deleted)
	any   uint64            // seq of the last event on any name in it
	names map[string]uint64 // seq of the last event on each name in it
}

const events = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_CLOSE_WRITE |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// New opens an inotify instance (one per process is enough: share it).
func New() (*Watch, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("dirwatch: %w", err)
	}
	return &Watch{fd: fd, dirs: map[string]*dir{}, wds: map[int32]*dir{}, seq: 1, buf: make([]byte, 64<<10)}, nil
}

// Close releases the inotify instance; a closed Watch (or a nil one) vouches for nothing.
func (w *Watch) Close() error {
	w.readMu.Lock()
	defer w.readMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd < 0 {
		return nil
	}
	err := unix.Close(w.fd)
	w.fd = -1
	return err
}

// Mark reads every event queued and returns the moment now. Take it before checking a file:
// Unchanged(path, mark) then says whether anything happened to the file since the check.
func (w *Watch) Mark() uint64 {
	if w == nil {
		return 0
	}
	w.catchUp()
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.seq
}

// settledKey marks a context in which a watch's queue was read (see Settled).
type settledKey struct{ w *Watch }

// Settled reads every event queued now and returns ctx noting it: StillIn and UnchangedIn
// given that context answer from the events read by then (or since, by anyone) without reading
// the queue again. For a look at many files that writes none of them, such as a reconcile
// pass's observation: it then sees each file as it was when it began, or later (as any look
// that takes time does), for one read instead of one per file. A process that changed a file
// before the look began is always seen; one changing it during the look may not be.
func (w *Watch) Settled(ctx context.Context) context.Context {
	if w == nil {
		return ctx
	}
	w.catchUp()
	return context.WithValue(ctx, settledKey{w}, true)
}

// catchUpOutside reads the events queued unless ctx is one w settled.
func (w *Watch) catchUpOutside(ctx context.Context) {
	if settled, _ := ctx.Value(settledKey{w}).(bool); !settled {
		w.catchUp()
	}
}

// StillIn is Still, without a read of the queue in a context w settled (see Settled).
func (w *Watch) StillIn(ctx context.Context, mark uint64, paths ...string) (now uint64, unchanged bool) {
	if w == nil {
		return 0, false
	}
	w.catchUpOutside(ctx)
	return w.answer(mark, paths)
}

// UnchangedIn is Unchanged, without a read of the queue in a context w settled (see Settled).
func (w *Watch) UnchangedIn(ctx context.Context, mark uint64, paths ...string) bool {
	_, unchanged := w.StillIn(ctx, mark, paths...)
	return unchanged
}

// Unchanged reports whether nothing happened to any of paths since mark, as far as the watch
// can tell (see the package doc). It reads the events queued first (one read when there are
// none), and watches from now on the directories it was not watching.
func (w *Watch) Unchanged(mark uint64, paths ...string) bool {
	_, unchanged := w.Still(mark, paths...)
	return unchanged
}

// Still is Unchanged, also returning the watch's mark at the answer: when unchanged, nothing
// happened to paths up to that later mark either, and a caller may keep it in place of mark.
// Files checked at different marks then come to share one (a caller asking for several files
// at once at the oldest of their marks is answered from the watch again).
func (w *Watch) Still(mark uint64, paths ...string) (now uint64, unchanged bool) {
	if w == nil {
		return 0, false
	}
	w.catchUp()
	return w.answer(mark, paths)
}

// answer is Still from the events applied so far.
func (w *Watch) answer(mark uint64, paths []string) (now uint64, unchanged bool) {
	w.mu.RLock()
	unchanged, unwatched := w.fd >= 0 && w.lost <= mark, []string(nil)
	for _, p := range paths {
		p = filepath.Clean(p)
		d, name := filepath.Split(p)
		d = filepath.Clean(d)
		parent, dirName := filepath.Split(d)
		// Both lookups run (and unwatched directories are watched) even when the answer is
		// known: the next ask can then be answered.
		if !w.quietRLocked(d, name, mark, &unwatched) {
			unchanged = false
		}
		if parent != "" && dirName != "" && !w.quietRLocked(filepath.Clean(parent), dirName, mark, &unwatched) {
			unchanged = false // the directory itself was replaced, moved or removed
		}
	}
	now = w.seq
	w.mu.RUnlock()
	w.watch(unwatched)
	return now, unchanged
}

// UnchangedDir reports whether nothing happened in the directory at path since mark: no entry
// created, removed, renamed or changed in it, and the directory itself not replaced (see
// Unchanged).
func (w *Watch) UnchangedDir(mark uint64, path string) bool {
	return w.UnchangedDirIn(context.Background(), mark, path)
}

// UnchangedDirIn is UnchangedDir, without a read of the queue in a context w settled (see
// Settled).
func (w *Watch) UnchangedDirIn(ctx context.Context, mark uint64, path string) bool {
	if w == nil {
		return false
	}
	w.catchUpOutside(ctx)
	path = filepath.Clean(path)
	w.mu.RLock()
	unchanged, unwatched := w.fd >= 0 && w.lost <= mark, []string(nil)
	if d := w.dirs[path]; d == nil {
		unwatched = append(unwatched, path)
		unchanged = false
	} else if d.since > mark || d.self > mark || d.any > mark {
		unchanged = false
	}
	if parent, name := filepath.Split(path); parent != "" && name != "" && !w.quietRLocked(filepath.Clean(parent), name, mark, &unwatched) {
		unchanged = false
	}
	w.mu.RUnlock()
	w.watch(unwatched)
	return unchanged
}

// quietRLocked reports whether no event touched name in dir path since mark (path being
// watched since before mark); a path not watched is added to unwatched.
func (w *Watch) quietRLocked(path, name string, mark uint64, unwatched *[]string) bool {
	d := w.dirs[path]
	if d == nil {
		*unwatched = append(*unwatched, path)
		return false
	}
	return d.since <= mark && d.self <= mark && d.names[name] <= mark
}

// watch starts watching the directories at paths that are not watched yet.
func (w *Watch) watch(paths []string) {
	if len(paths) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range paths {
		if w.fd >= 0 && w.dirs[p] == nil {
			w.addLocked(p)
		}
	}
}

// addLocked starts watching path (a directory that does not exist is looked at again next time).
func (w *Watch) addLocked(path string) *dir {
	wd, err := unix.InotifyAddWatch(w.fd, path, events)
	if err != nil {
		return nil
	}
	if old := w.wds[int32(wd)]; old != nil { // the same directory under another path
		delete(w.dirs, old.path)
	}
	w.seq++
	d := &dir{path: path, wd: int32(wd), since: w.seq, names: map[string]uint64{}}
	w.dirs[path], w.wds[int32(wd)] = d, d
	return d
}

// catchUp returns once a read of the queue that began after it was called has applied its
// events: every event queued before the call is then applied. A read begun by another caller
// in the meantime counts, so callers asking at once share one.
func (w *Watch) catchUp() {
	want := w.begun.Load() + 1 // reads numbered from want on begin after this point
	w.readMu.Lock()
	defer w.readMu.Unlock()
	if w.done.Load() >= want {
		return
	}
	n := w.begun.Add(1)
	w.mu.RLock()
	fd := w.fd
	w.mu.RUnlock()
	if fd >= 0 { // Close waits for readMu: fd stays open while it is held
		w.readAll(fd)
	}
	w.done.Store(n)
}

// readAll reads every queued event and applies them (under readMu).
func (w *Watch) readAll(fd int) {
	for {
		n, err := unix.Read(fd, w.buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			if err != nil && !errors.Is(err, unix.EAGAIN) {
				w.mu.Lock()
				w.seq++
				w.lost = w.seq // a broken queue: vouch for nothing before now
				w.mu.Unlock()
			}
			return
		}
		w.mu.Lock()
		w.apply(w.buf[:n])
		w.mu.Unlock()
	}
}

// apply applies a buffer of events (under mu).
func (w *Watch) apply(buf []byte) {
	for len(buf) >= unix.SizeofInotifyEvent {
		wd := int32(binary.NativeEndian.Uint32(buf[0:4]))
		mask := binary.NativeEndian.Uint32(buf[4:8])
		nameLen := int(binary.NativeEndian.Uint32(buf[12:16]))
		end := unix.SizeofInotifyEvent + nameLen
		if end > len(buf) {
			break
		}
		name := strings.TrimRight(string(buf[unix.SizeofInotifyEvent:end]), "\x00")
		buf = buf[end:]
		w.seq++
		if mask&unix.IN_Q_OVERFLOW != 0 {
			w.lost = w.seq
			continue
		}
		d := w.wds[wd]
		if d == nil {
			continue
		}
		switch {
		case mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED|unix.IN_UNMOUNT) != 0:
			d.self = w.seq
			if mask&unix.IN_IGNORED != 0 || mask&unix.IN_MOVE_SELF != 0 {
				// Gone (or elsewhere): whatever is at its path now is watched afresh when asked.
				if mask&unix.IN_MOVE_SELF != 0 {
					unix.InotifyRmWatch(w.fd, uint32(wd))
				}
				delete(w.wds, wd)
				if w.dirs[d.path] == d {
					delete(w.dirs, d.path)
				}
			}
		case name != "":
			d.names[name], d.any = w.seq, w.seq
		default:
			d.self = w.seq
		}
	}
}

// Dir is a directory's entries as last read: ReadDir reads the directory again only after the
// watch saw something happen in it (an entry created, removed, renamed or changed) or could not
// vouch for it. The zero Dir holds nothing; a Dir is safe for concurrent use.
type Dir struct {
	mu      sync.Mutex
	path    string
	entries []os.DirEntry
	mark    uint64 // the watch's mark before entries were read (0: nothing kept)
}

// ReadDir is os.ReadDir(path), answered from the last read while w (nil: none) vouches that
// nothing happened in the directory since. The slice returned is the caller's.
func (d *Dir) ReadDir(w *Watch, path string) ([]os.DirEntry, error) {
	path = filepath.Clean(path)
	d.mu.Lock()
	entries, mark, same := d.entries, d.mark, d.path == path
	d.mu.Unlock()
	if same && mark != 0 && w.UnchangedDir(mark, path) {
		return slices.Clone(entries), nil
	}
	mark = w.Mark() // before the read: a change during it shows next time
	entries, err := os.ReadDir(path)
	if err != nil || mark == 0 {
		return entries, err
	}
	d.mu.Lock()
	d.path, d.entries, d.mark = path, slices.Clone(entries), mark
	d.mu.Unlock()
	return entries, nil
}
