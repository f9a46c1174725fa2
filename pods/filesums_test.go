package pods

import (
	"os"
	"path/filepath"
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
	if c.holds(path, a) || !c.holds(path, nil) {
		t.Fatal("no file: holds no content, and holds nothing")
	}
	if err := os.WriteFile(path, a, 0o644); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if !c.holds(path, a) || c.holds(path, b) || c.holds(path, nil) {
			t.Fatal("holds a, not b, not nothing")
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil { // in place, same size
		t.Fatal(err)
	}
	if c.holds(path, a) || !c.holds(path, b) {
		t.Fatal("edited in place: holds b now")
	}
	tmp := path + ".tmp"
	os.WriteFile(tmp, a, 0o644)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	if !c.holds(path, a) || c.holds(path, b) {
		t.Fatal("replaced: holds a again")
	}
	os.Remove(path)
	if err := os.Symlink(tmp, path); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(tmp, a, 0o644)
	if c.holds(path, a) {
		t.Fatal("a symlink is not a unit file of onionpod's")
	}
}

// Current answers for an app's units at once from the watch while nothing happened to their
// files, and looks again at every file once something did.
func TestCurrentFollowsTheDisk(t *testing.T) {
	w, err := dirwatch.New()
	if err != nil {
		t.Skipf("no inotify: %v", err)
	}
	defer w.Close()
	s := &Systemd{unitDir: t.TempDir()}
	s.FollowFiles(w)
	units := []Unit{
		{Name: "onionpod-net-blog.service", Content: []byte("[Service]\nExecStart=/net\n")},
		{Name: "onionpod-pod-blog.service", Content: []byte("[Service]\nExecStart=/pod\n")},
	}
	if s.Current(units) {
		t.Fatal("current with no unit files")
	}
	for _, u := range units {
		if err := os.WriteFile(filepath.Join(s.unitDir, u.Name), u.Content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		if !s.Current(units) {
			t.Fatalf("ask %d: not current", i)
		}
	}
	pod := filepath.Join(s.unitDir, units[1].Name)
	if err := os.WriteFile(pod, []byte("[Service]\nExecStart=/bad\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s.Current(units) {
		t.Fatal("current after the pod's unit was edited in place")
	}
	if err := os.WriteFile(pod, units[1].Content, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if !s.Current(units) {
			t.Fatalf("ask %d: not current once put back", i)
		}
	}
	os.Remove(filepath.Join(s.unitDir, units[0].Name))
	if s.Current(units) {
		t.Fatal("current without its network unit")
	}
}
