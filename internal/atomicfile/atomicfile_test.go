package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.json")
	changed, err := WriteFile(p, []byte("one"), 0o600)
	if err != nil || !changed {
		t.Fatalf("first write: changed=%v err=%v", changed, err)
	}
	if got, _ := os.ReadFile(p); string(got) != "one" {
		t.Fatalf("content %q", got)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	if changed, err := WriteFile(p, []byte("one"), 0o600); err != nil || changed {
		t.Errorf("same content rewritten: changed=%v err=%v", changed, err)
	}
	if changed, err := WriteFile(p, []byte("one"), 0o644); err != nil || !changed {
		t.Errorf("mode change not written: changed=%v err=%v", changed, err)
	}
	if changed, _ := WriteFile(p, []byte("two"), 0o644); !changed {
		t.Error("new content not written")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
}

func TestWriteFileReplacesSymlinkWithoutFollowing(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("keep"), 0o600)
	link := filepath.Join(dir, "link")
	os.Symlink(victim, link)
	if _, err := WriteFile(link, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Lstat(link); st.Mode()&fs.ModeSymlink != 0 {
		t.Error("the symlink is still there: the same-content check followed it")
	}
	if got, _ := os.ReadFile(victim); string(got) != "keep" {
		t.Errorf("the symlink's target was changed: %q", got)
	}
}

func TestWriteFileFailsCleanly(t *testing.T) {
	if _, err := WriteFile(filepath.Join(t.TempDir(), "no", "such", "dir"), []byte("x"), 0o600); err == nil ||
		!strings.HasPrefix(err.Error(), "atomicfile: ") {
		t.Errorf("err = %v", err)
	}
}

func TestWriteNew(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := WriteNew(p, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteNew(p, []byte("other"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second WriteNew = %v, want exists", err)
	}
	os.Symlink(filepath.Join(dir, "elsewhere"), filepath.Join(dir, "planted"))
	if err := WriteNew(filepath.Join(dir, "planted"), []byte("x"), 0o600); err == nil {
		t.Error("WriteNew followed a planted symlink")
	}
	if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); err == nil {
		t.Error("a file was created at the symlink's target")
	}
}

func TestQuarantine(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "zone.json")
	os.WriteFile(p, []byte("{trunc"), 0o600)
	dst, err := Quarantine(p, 1700000000)
	if err != nil {
		t.Fatal(err)
	}
	if dst != p+".damaged-1700000000" {
		t.Errorf("dst = %s", dst)
	}
	if got, _ := os.ReadFile(dst); string(got) != "{trunc" {
		t.Errorf("kept %q", got)
	}
	os.WriteFile(p, []byte("{again"), 0o600)
	dst2, err := Quarantine(p, 1700000000)
	if err != nil || dst2 == dst {
		t.Fatalf("second quarantine: %s, %v", dst2, err)
	}
	if got, _ := os.ReadFile(dst); string(got) != "{trunc" {
		t.Error("the first damaged copy was overwritten")
	}
}

func TestJSON(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.json")
	type state struct{ A int }
	if changed, err := WriteJSON(p, state{7}, 0o600); err != nil || !changed {
		t.Fatalf("WriteJSON: %v %v", changed, err)
	}
	if changed, _ := WriteJSON(p, state{7}, 0o600); changed {
		t.Error("an unchanged value was rewritten")
	}
	var got state
	if err := ReadJSON(p, &got); err != nil || got.A != 7 {
		t.Fatalf("ReadJSON = %+v, %v", got, err)
	}
	os.WriteFile(p, []byte("{trunc"), 0o600)
	if err := ReadJSON(p, &got); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("a damaged file: %v", err)
	}
	if err := ReadJSON(p+".missing", &got); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
}
