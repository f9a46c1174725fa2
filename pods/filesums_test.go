package pods

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/onionpod/onionpod/internal/dirwatch"
)

// Current remembers what it read of each file by the file's identity: a file rewritten (a new
// inode), edited in place to content of the same size, removed, or replaced by a symlink is
// read (or refused) again, never answered from what it held before.
func TestFileSumsFollowTheDisk(t *testing.T) {
	t.Run("stat", func(t *testing.T) { testFileSums(t, nil) })
	w, err := dirwatch.New()
	if err != nil {
		t.Skipf("no inotify: %v", err)
	}
	defer w.Close()
	t.Run("watch", func(t *testing.T) { testFileSums(t, w) })
}

func testFileSums(t *testing.T, w *dirwatch.Watch) {
	c := fileSums{watch: w}
	path := filepath.Join(t.TempDir(), "unit.service")
	a, b := []byte("[Service]\nExecStart=/a\n"), []byte("[Service]\nExecStart=/b\n")
	if c.holds(t.Context(), path, a) || !c.holds(t.Context(), path, nil) {
		t.Fatal("no file: holds no content, and holds nothing")
	}
	if err := os.WriteFile(path, a, 0o644); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if !c.holds(t.Context(), path, a) || c.holds(t.Context(), path, b) || c.holds(t.Context(), path, nil) {
			t.Fatal("holds a, not b, not nothing")
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil { // in place, same size
		t.Fatal(err)
	}
	if c.holds(t.Context(), path, a) || !c.holds(t.Context(), path, b) {
		t.Fatal("edited in place: holds b now")
	}
	tmp := path + ".tmp"
	os.WriteFile(tmp, a, 0o644)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	if !c.holds(t.Context(), path, a) || c.holds(t.Context(), path, b) {
		t.Fatal("replaced: holds a again")
	}
	os.Remove(path)
	if err := os.Symlink(tmp, path); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(tmp, a, 0o644)
	if c.holds(t.Context(), path, a) {
		t.Fatal("a symlink is not a unit file of onionpod's")
	}
}

// Current answers for an app's units at once from the watch while nothing happened to their
// files, and looks again at every file once something did.
func TestCurrentFollowsTheDisk(t *testing.T) {
	s := followingSystemd(t)
	units := []Unit{
		{Name: "onionpod-net-blog.service", Content: []byte("[Service]\nExecStart=/net\n")},
		{Name: "onionpod-pod-blog.service", Content: []byte("[Service]\nExecStart=/pod\n")},
	}
	if s.Current(t.Context(), units) {
		t.Fatal("current with no unit files")
	}
	for _, u := range units {
		if err := os.WriteFile(filepath.Join(s.unitDir, u.Name), u.Content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		if !s.Current(t.Context(), units) {
			t.Fatalf("ask %d: not current", i)
		}
	}
	pod := filepath.Join(s.unitDir, units[1].Name)
	if err := os.WriteFile(pod, []byte("[Service]\nExecStart=/bad\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s.Current(t.Context(), units) {
		t.Fatal("current after the pod's unit was edited in place")
	}
	if err := os.WriteFile(pod, units[1].Content, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if !s.Current(t.Context(), units) {
			t.Fatalf("ask %d: not current once put back", i)
		}
	}
	os.Remove(filepath.Join(s.unitDir, units[0].Name))
	if s.Current(t.Context(), units) {
		t.Fatal("current without its network unit")
	}
}

// Units answers from its last read while nothing happened in the unit directory, and reads it
// again once a unit file was created, removed or renamed there.
func TestUnitsFollowTheDisk(t *testing.T) {
	s := followingSystemd(t)
	want := func(what string, names ...string) {
		t.Helper()
		for range 3 {
			got, err := s.Units(t.Context())
			if err != nil || !slices.Equal(got, names) {
				t.Fatalf("%s: Units = %q, %v; want %q", what, got, err, names)
			}
		}
	}
	write := func(name string) {
		if err := os.WriteFile(filepath.Join(s.unitDir, name), []byte("[Service]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want("empty")
	write("onionpod-pod-blog.service")
	write("other.service")
	want("one unit", "onionpod-pod-blog.service")
	write("onionpod-net-blog.service")
	want("two units", "onionpod-net-blog.service", "onionpod-pod-blog.service")
	tmp := filepath.Join(s.unitDir, ".tmp")
	os.WriteFile(tmp, nil, 0o644)
	if err := os.Rename(tmp, filepath.Join(s.unitDir, "onionpod-pod-wiki.service")); err != nil {
		t.Fatal(err)
	}
	want("renamed into place", "onionpod-net-blog.service", "onionpod-pod-blog.service", "onionpod-pod-wiki.service")
	os.Remove(filepath.Join(s.unitDir, "onionpod-pod-blog.service"))
	want("removed", "onionpod-net-blog.service", "onionpod-pod-wiki.service")
	got, _ := s.Units(t.Context())
	got[0] = "changed by the caller"
	want("a caller's change is its own", "onionpod-net-blog.service", "onionpod-pod-wiki.service")
}

// followingSystemd is a Systemd (no connection) over a new unit directory, following it with a
// watch of its own.
func followingSystemd(t *testing.T) *Systemd {
	t.Helper()
	w, err := dirwatch.New()
	if err != nil {
		t.Skipf("no inotify: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	s := &Systemd{unitDir: t.TempDir()}
	s.FollowFiles(w)
	return s
}

// Writing a pod's environment file keeps its directory 0700 without touching the directory
// when it already is: a chmod is an event on the directory (in its parent's watch), after which
// the watch vouches for no environment file in it, and a pass at 1000 apps looks at every one.
func TestEnvFileWriteLeavesItsDirectoryAlone(t *testing.T) {
	w, err := dirwatch.New()
	if err != nil {
		t.Skipf("no inotify: %v", err)
	}
	defer w.Close()
	dir := filepath.Join(t.TempDir(), "env")
	other := filepath.Join(dir, "onionpod-pod-other.env")
	if _, err := writeEnvFile(other, []byte("A=1\n")); err != nil {
		t.Fatal(err)
	}
	w.Unchanged(w.Mark(), other) // watched from now on
	mark := w.Mark()
	if changed, err := writeEnvFile(filepath.Join(dir, "onionpod-pod-app.env"), []byte("B=2\n")); err != nil || !changed {
		t.Fatalf("write: changed %v, %v", changed, err)
	}
	if !w.Unchanged(mark, other) {
		t.Error("another pod's environment file is no longer vouched for after a write beside it")
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("env dir: %v, %v; want 0700", fi, err)
	}

	if err := os.Chmod(dir, 0o755); err != nil { // loosened by hand: the next write tightens it
		t.Fatal(err)
	}
	if _, err := writeEnvFile(filepath.Join(dir, "onionpod-pod-app.env"), []byte("B=3\n")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("env dir after a write: %v, %v; want 0700 again", fi, err)
	}
}

// Files of one unit set that were first looked at at different marks, their directories
// watched in between (a unit file and its environment file, in two directories), come to be
// answered for together by the watch: a look that finds one quiet moves its mark forward.
// Before, the set was asked about at the oldest mark, older than the second directory's watch,
// and every pass at 1000 apps looked at 4000 files one by one.
func TestFilesSeenAtDifferentMarksAreVouchedForTogether(t *testing.T) {
	w, err := dirwatch.New()
	if err != nil {
		t.Skipf("no inotify: %v", err)
	}
	defer w.Close()
	c := fileSums{watch: w}
	root := t.TempDir()
	paths := []string{filepath.Join(root, "units", "onionpod-pod-blog.service"), filepath.Join(root, "env", "onionpod-pod-blog.env")}
	contents := [][]byte{[]byte("[Service]\nExecStart=/pod\n"), []byte("A=1\n")}
	for i, p := range paths {
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, contents[i], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rounds := 0
	for ; rounds < 4; rounds++ {
		if held, known := c.vouched(t.Context(), paths, contents); known {
			if !held {
				t.Fatal("vouched for, yet not holding what was written")
			}
			break
		}
		for i, p := range paths { // what Current does when the watch cannot answer for the set
			if !c.holds(t.Context(), p, contents[i]) {
				t.Fatalf("%s does not hold what was written", p)
			}
		}
	}
	if rounds > 2 {
		t.Fatalf("the watch answered for the set only after %d rounds of one-by-one looks (want at most 2)", rounds)
	}
	if err := os.WriteFile(paths[1], []byte("A=2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if held, known := c.vouched(t.Context(), paths, contents); known && held {
		t.Fatal("vouched for after the environment file changed")
	}
}
