package atomicfile

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func openDir(t *testing.T, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestWriteFileAt(t *testing.T) {
	dir := t.TempDir()
	fd := openDir(t, dir)
	if changed, err := WriteFileAt(fd, "a", []byte("one"), 0o600); err != nil || !changed {
		t.Fatalf("first write: changed=%v err=%v", changed, err)
	}
	if changed, err := WriteFileAt(fd, "a", []byte("one"), 0o600); err != nil || changed {
		t.Fatalf("same content rewritten: changed=%v err=%v", changed, err)
	}
	if changed, err := WriteFileAt(fd, "a", []byte("two"), 0o640); err != nil || !changed {
		t.Fatalf("new content: changed=%v err=%v", changed, err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "a")); string(got) != "two" {
		t.Fatalf("content %q", got)
	}
	if st, _ := os.Stat(filepath.Join(dir, "a")); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
	for _, bad := range []string{"", ".", "..", "x/y", "/abs"} {
		if _, err := WriteFileAt(fd, bad, nil, 0o600); err == nil {
			t.Errorf("WriteFileAt(%q) accepted", bad)
		}
	}
}

func TestAtFunctionsNeverFollowSymlinks(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	victim := filepath.Join(outside, "victim")
	os.WriteFile(victim, []byte("keep"), 0o600)
	os.Symlink(victim, filepath.Join(dir, "link"))
	fd := openDir(t, dir)

	if err := WriteNewAt(fd, "link", []byte("evil"), 0o600); err == nil {
		t.Error("WriteNewAt wrote through an existing symlink")
	}
	if _, err := WriteFileAt(fd, "link", []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Lstat(filepath.Join(dir, "link")); st.Mode()&fs.ModeSymlink != 0 {
		t.Error("the symlink is still there")
	}
	if got, _ := os.ReadFile(victim); string(got) != "keep" {
		t.Errorf("the symlink's target was changed: %q", got)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("files appeared outside: %v", entries)
	}
}
