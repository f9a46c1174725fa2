package dirwatch

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
)

// A file counts as unchanged only while nothing happened to it (or to its directory) since the
// mark: written in place, replaced by a rename, removed, its directory replaced or removed; and
// a directory not watched since before the mark vouches for nothing.
func TestUnchanged(t *testing.T) {
	w, err := New()
	if err != nil {
		t.Skipf("no inotify here: %v", err)
	}
	defer w.Close()
	root := t.TempDir()
	app := filepath.Join(root, "blog")
	if err := os.Mkdir(app, 0o700); err != nil {
		t.Fatal(err)
	}
	file, other := filepath.Join(app, "key"), filepath.Join(app, "other")
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(file, "a")
	write(other, "b")

	m := w.Mark()
	if w.Unchanged(m, file) {
		t.Fatal("a directory not watched before the mark vouched for its file")
	}
	m = w.Mark() // watched from now on
	if !w.Unchanged(m, file) {
		t.Fatal("nothing happened, yet changed")
	}
	os.ReadFile(file) // reading is nothing
	if !w.Unchanged(m, file) {
		t.Fatal("a read counted as a change")
	}
	write(other, "c") // another file
	if !w.Unchanged(m, file) || w.Unchanged(m, other) {
		t.Fatal("a write to another file: only that one changed")
	}
	for what, change := range map[string]func(){
		"written in place":   func() { write(file, "z") },
		"chmod":              func() { os.Chmod(file, 0o644) },
		"replaced by rename": func() { write(file+".tmp", "y"); os.Rename(file+".tmp", file) },
		"removed":            func() { os.Remove(file) },
		"directory replaced": func() {
			staged := filepath.Join(root, ".stage")
			os.Mkdir(staged, 0o700)
			write(filepath.Join(staged, "key"), "new")
			os.Rename(app, filepath.Join(root, ".old"))
			os.Rename(staged, app)
			os.RemoveAll(filepath.Join(root, ".old"))
		},
		"directory removed": func() { os.RemoveAll(app) },
	} {
		os.MkdirAll(app, 0o700)
		write(file, "a")
		w.Unchanged(w.Mark(), file) // (re)watch what is there now
		m := w.Mark()
		if !w.Unchanged(m, file) {
			t.Fatalf("%s: changed before the change", what)
		}
		change()
		if w.Unchanged(m, file) {
			t.Errorf("%s: still unchanged", what)
		}
	}

	// A directory's listing: unchanged until an entry comes or goes.
	os.MkdirAll(app, 0o700)
	w.UnchangedDir(w.Mark(), app)
	m = w.Mark()
	if !w.UnchangedDir(m, app) {
		t.Fatal("an untouched directory changed")
	}
	write(filepath.Join(app, "new.auth"), "x")
	if w.UnchangedDir(m, app) {
		t.Error("a file added, yet the directory is unchanged")
	}
	w.Close()
	if w.Unchanged(w.Mark(), file) {
		t.Error("a closed watch vouched for a file")
	}
}

// Dir.ReadDir answers from its last read only while nothing happened in the directory: an entry
// created, removed or renamed, or the directory itself replaced, is read again; without a watch
// it always reads.
func TestDirReadDir(t *testing.T) {
	w, err := New()
	if err != nil {
		t.Skipf("no inotify here: %v", err)
	}
	defer w.Close()
	for _, watch := range []*Watch{w, nil} {
		root := t.TempDir()
		path := filepath.Join(root, "leases")
		if err := os.Mkdir(path, 0o700); err != nil {
			t.Fatal(err)
		}
		var d Dir
		want := func(what string, names ...string) {
			t.Helper()
			for range 3 {
				entries, err := d.ReadDir(watch, path)
				var got []string
				for _, e := range entries {
					got = append(got, e.Name())
				}
				if err != nil || !slices.Equal(got, names) {
					t.Fatalf("watch %v: %s: ReadDir = %q, %v; want %q", watch != nil, what, got, err, names)
				}
			}
		}
		want("empty")
		os.WriteFile(filepath.Join(path, "a"), nil, 0o600)
		want("created", "a")
		os.WriteFile(filepath.Join(root, "b"), nil, 0o600)
		if err := os.Rename(filepath.Join(root, "b"), filepath.Join(path, "b")); err != nil {
			t.Fatal(err)
		}
		want("renamed in", "a", "b")
		os.Remove(filepath.Join(path, "a"))
		want("removed", "b")
		entries, _ := d.ReadDir(watch, path)
		entries[0] = nil
		want("a caller's change is its own", "b")
		if err := os.Rename(path, path+".old"); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(path, 0o700); err != nil {
			t.Fatal(err)
		}
		want("the directory replaced")
		os.RemoveAll(path)
		if _, err := d.ReadDir(watch, path); !os.IsNotExist(err) {
			t.Fatalf("watch %v: a removed directory: %v", watch != nil, err)
		}
	}
}

// Callers asking at once share reads of the queue, yet each one sees every change made before
// it asked: here a writer changes a file and tells a checker (a channel: the change happens
// before the question), while other goroutines keep asking about other files; the checker must
// find the file changed every time.
func TestConcurrentAskersSeeEveryEarlierChange(t *testing.T) {
	w, err := New()
	if err != nil {
		t.Skipf("no inotify here: %v", err)
	}
	defer w.Close()
	dir := t.TempDir()
	file, quiet := filepath.Join(dir, "record"), filepath.Join(dir, "quiet")
	for _, p := range []string{file, quiet} {
		if err := os.WriteFile(p, []byte("0"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w.Unchanged(w.Mark(), file) // watched from now on

	stop := make(chan struct{})
	var busy sync.WaitGroup
	for range 4 {
		busy.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					w.Unchanged(w.Mark(), quiet)
				}
			}
		})
	}
	changed := make(chan uint64)
	go func() {
		defer close(changed)
		for i := range 500 {
			mark := w.Mark()
			if err := os.WriteFile(file, []byte(strconv.Itoa(i)), 0o600); err != nil {
				t.Error(err)
				return
			}
			changed <- mark
		}
	}()
	missed := 0
	for mark := range changed {
		if w.Unchanged(mark, file) {
			missed++
		}
	}
	close(stop)
	busy.Wait()
	if missed > 0 {
		t.Errorf("%d of 500 writes made before the question were not seen", missed)
	}
	if m := w.Mark(); !w.Unchanged(m, quiet) {
		t.Error("a file nobody wrote is not vouched for")
	}
}

// Still answers as Unchanged and gives a later mark that vouches for the file as well: kept in
// place of the old one, it still sees the next change.
func TestStillMovesTheMarkForward(t *testing.T) {
	w, err := New()
	if err != nil {
		t.Skipf("no inotify here: %v", err)
	}
	defer w.Close()
	dir := t.TempDir()
	file, other := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(file, []byte("1"), 0o600)
	w.Unchanged(w.Mark(), file)
	mark := w.Mark()
	os.WriteFile(other, []byte("x"), 0o600) // moves the watch's mark on, not file's
	now, still := w.Still(mark, file)
	if !still || now <= mark {
		t.Fatalf("Still = %d, %v; want a mark after %d, unchanged", now, still, mark)
	}
	if !w.Unchanged(now, file) {
		t.Fatal("the later mark does not vouch for the file")
	}
	os.WriteFile(file, []byte("2"), 0o600)
	if _, still := w.Still(now, file); still {
		t.Fatal("a change after the later mark went unseen")
	}
}

// A settled context answers from the events read when it was settled (or since): a change made
// before it was settled is seen in it; one made after may not be, but every check outside it,
// and the next settled context, sees it.
func TestSettled(t *testing.T) {
	w, err := New()
	if err != nil {
		t.Skipf("no inotify here: %v", err)
	}
	defer w.Close()
	file := filepath.Join(t.TempDir(), "lease")
	os.WriteFile(file, []byte("1"), 0o600)
	w.Unchanged(w.Mark(), file)
	mark := w.Mark()

	os.WriteFile(file, []byte("2"), 0o600) // before the look begins
	look := w.Settled(t.Context())
	if w.UnchangedIn(look, mark, file) {
		t.Fatal("a change made before the context was settled went unseen in it")
	}
	mark = w.Mark()
	look = w.Settled(t.Context())
	if !w.UnchangedIn(look, mark, file) {
		t.Fatal("nothing happened, yet changed")
	}
	os.WriteFile(file, []byte("3"), 0o600) // during the look
	if w.UnchangedIn(t.Context(), mark, file) || w.Unchanged(mark, file) {
		t.Fatal("a check outside the settled context missed the change")
	}
	if w.UnchangedIn(w.Settled(t.Context()), mark, file) {
		t.Fatal("the next look missed the change")
	}
	var none *Watch
	if none.Settled(t.Context()) != t.Context() || none.UnchangedIn(look, mark, file) {
		t.Fatal("a nil watch vouches for nothing and settles nothing")
	}
}

// TestSettledDir is TestSettled for a directory's entries (UnchangedDirIn).
func TestSettledDir(t *testing.T) {
	w, err := New()
	if err != nil {
		t.Skipf("no inotify here: %v", err)
	}
	defer w.Close()
	dir := filepath.Join(t.TempDir(), "authorized_clients")
	os.Mkdir(dir, 0o700)
	w.UnchangedDir(w.Mark(), dir)
	mark := w.Mark()

	os.WriteFile(filepath.Join(dir, "alice.auth"), []byte("1"), 0o600) // before the look begins
	if w.UnchangedDirIn(w.Settled(t.Context()), mark, dir) {
		t.Fatal("an entry made before the context was settled went unseen in it")
	}
	mark = w.Mark()
	if !w.UnchangedDirIn(w.Settled(t.Context()), mark, dir) {
		t.Fatal("nothing happened, yet changed")
	}
	os.Remove(filepath.Join(dir, "alice.auth")) // during the look
	if w.UnchangedDirIn(t.Context(), mark, dir) || w.UnchangedDir(mark, dir) {
		t.Fatal("a check outside the settled context missed the removal")
	}
	if w.UnchangedDirIn(w.Settled(t.Context()), mark, dir) {
		t.Fatal("the next look missed the removal")
	}
	var none *Watch
	if none.UnchangedDirIn(t.Context(), mark, dir) {
		t.Fatal("a nil watch vouches for nothing")
	}
}
