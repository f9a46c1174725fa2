package pods

import (
	"os"
	"path/filepath"
	"testing"
)

// Current remembers what it read of each file by the file's identity: a file rewritten (a new
// inode), edited in place to content of the same size, removed, or replaced by a symlink is
// read (or refused) again, never answered from what it held before.
func TestFileSumsFollowTheDisk(t *testing.T) {
	var c fileSums
	path := filepath.Join(t.TempDir(), "unit.service")
	a, b := []byte("[Service]\nExecStart=/a\n"), []byte("[Service]\nExecStart=/b\n")
	if c.holds(path, a) || !c.holds(path, nil) {
		t.Fatal("no file: holds no content, and holds nothing")
	}
	if err := os.WriteFile(path, a, 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
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
