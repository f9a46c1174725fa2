package appbackup

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/onionpod/onionpod/internal/errkind"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// An app the box has already is replaced only with force: without it, errkind.Conflict and
// nothing written; with it, the volumes hold the backup's data, the old data is gone, and the
// report says replaced.
func TestExistingAppNeedsForce(t *testing.T) {
	src := newTestBox(t)
	addr := src.addApp(t, "notes", []Volume{dataVolume})
	writeFile(t, filepath.Join(src.volumeDir("notes", "data"), "note"), "from the backup")
	rcpt, id := x25519(t)
	archive, _ := src.backup(t, rcpt, "notes")

	dst := newTestBox(t)
	dst.addApp(t, "notes", []Volume{dataVolume})
	writeFile(t, filepath.Join(dst.volumeDir("notes", "data"), "note"), "on the box")
	writeFile(t, filepath.Join(dst.volumeDir("notes", "data"), "only-here"), "x")
	before := listTree(t, dst.dir)
	oldKey, _ := dst.keys.Store.Load("notes")

	_, err := Restore(t.Context(), bytes.NewReader(archive), dst, dst.keys, false, id)
	if !errors.Is(err, errkind.Conflict) {
		t.Fatalf("restore over an existing app = %v, want Conflict", err)
	}
	if after := listTree(t, dst.dir); !slices.Equal(before, after) {
		t.Errorf("a refused restore changed the box: %v -> %v", before, after)
	}
	if k, _ := dst.keys.Store.Load("notes"); !k.Equal(oldKey) {
		t.Errorf("a refused restore changed the key")
	}

	reps, err := Restore(t.Context(), bytes.NewReader(archive), dst, dst.keys, true, id)
	if err != nil {
		t.Fatal(err)
	}
	if !reps[0].Replaced || reps[0].Address != addr {
		t.Errorf("report %+v: want replaced, %s", reps[0], addr)
	}
	if got := readFile(t, filepath.Join(dst.volumeDir("notes", "data"), "note")); got != "from the backup" {
		t.Errorf("note = %q", got)
	}
	if _, err := os.Stat(filepath.Join(dst.volumeDir("notes", "data"), "only-here")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the box's old data is still in the volume: %v", err)
	}
	if k, _ := dst.keys.Store.Load("notes"); k == nil || k.Address() != addr {
		t.Errorf("key not replaced")
	}
	if want := []string{"quiesce notes", "commit notes", "resume notes"}; !slices.Equal(dst.events, want) {
		t.Errorf("events %q, want %q", dst.events, want)
	}
	entries, _ := os.ReadDir(filepath.Dir(dst.volumeDir("notes", "data")))
	if len(entries) != 1 {
		t.Errorf("beside the volume: %v (the old data should be removed)", entries)
	}
}

// A failure while committing undoes everything: the second app's record is refused, so the first
// app's key, volumes and record are taken back, and an app the box had is back as it was (its
// data, its key) and runs again.
func TestCommitFailureUndoesEverything(t *testing.T) {
	src := newTestBox(t)
	src.addApp(t, "notes", []Volume{dataVolume})
	src.addApp(t, "wiki", []Volume{dataVolume})
	writeFile(t, filepath.Join(src.volumeDir("notes", "data"), "note"), "backup")
	writeFile(t, filepath.Join(src.volumeDir("wiki", "data"), "page"), "backup")
	rcpt, id := x25519(t)
	archive, _ := src.backup(t, rcpt, "notes", "wiki")

	dst := newTestBox(t)
	wikiAddr := dst.addApp(t, "wiki", []Volume{dataVolume}, "carol")
	writeFile(t, filepath.Join(dst.volumeDir("wiki", "data"), "page"), "box")
	dst.failOn = "wiki"
	before := listTree(t, dst.dir)
	wikiRecord := dst.records["wiki"]

	_, err := Restore(t.Context(), bytes.NewReader(archive), dst, dst.keys, true, id)
	if err == nil || !strings.Contains(err.Error(), "commit refused by the test") {
		t.Fatalf("restore = %v, want the commit's failure", err)
	}
	if after := listTree(t, dst.dir); !slices.Equal(before, after) {
		t.Errorf("a failed restore changed the box:\n%v\n->\n%v", before, after)
	}
	if _, ok := dst.records["notes"]; ok || !bytes.Equal(dst.records["wiki"], wikiRecord) {
		t.Errorf("records after a failed restore: %v", dst.records)
	}
	if k, err := dst.keys.Store.Load("wiki"); err != nil || k.Address() != wikiAddr {
		t.Errorf("wiki's key after a failed restore: %v, %v", k, err)
	}
	if cl, _ := dst.keys.Store.Clients("wiki"); len(cl) != 1 || cl[0].Name != "carol" {
		t.Errorf("wiki's clients after a failed restore: %v", cl)
	}
	if _, err := dst.keys.Store.Load("notes"); !errors.Is(err, errkind.NotFound) {
		t.Errorf("notes' key after a failed restore: %v", err)
	}
	if got := readFile(t, filepath.Join(dst.volumeDir("wiki", "data"), "page")); got != "box" {
		t.Errorf("wiki's page = %q, want the box's", got)
	}
	if want := []string{"quiesce notes", "quiesce wiki", "commit notes", "undo notes", "resume wiki", "resume notes"}; !slices.Equal(dst.events, want) {
		t.Errorf("events %q, want %q", dst.events, want)
	}
}

// A dump that does not load (the database refuses it) undoes the restore too, once the app ran.
func TestLoadFailureUndoesEverything(t *testing.T) {
	src := newTestBox(t)
	src.addApp(t, "notes", []Volume{dataVolume, dbVolume})
	src.dumps["notes/db"] = []byte("not sql")
	rcpt, id := x25519(t)
	archive, _ := src.backup(t, rcpt, "notes")

	dst := newTestBox(t)
	dst.failLoad = errors.New("psql: syntax error")
	_, err := Restore(t.Context(), bytes.NewReader(archive), dst, dst.keys, false, id)
	if err == nil || !strings.Contains(err.Error(), "syntax error") {
		t.Fatalf("restore = %v", err)
	}
	if l := listTree(t, dst.dir); !slices.Equal(l, emptyBox) {
		t.Errorf("left %v", l)
	}
	if len(dst.records) != 0 {
		t.Errorf("records %v", dst.records)
	}
	want := []string{"quiesce notes", "commit notes", "resume notes", "load notes/db", "quiesce notes", "undo notes", "resume notes"}
	if !slices.Equal(dst.events, want) {
		t.Errorf("events %q, want %q", dst.events, want)
	}
}

// hostileArchive encrypts a tar stream built by hand: what someone holding the passphrase could
// craft. Every entry is checked as the engine's own writer would never write it.
func hostileArchive(t *testing.T, r age.Recipient, entries func(tw *countingWriter)) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc, err := age.Encrypt(&buf, r)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(enc)
	aw := &archiveWriter{tw: tw, buf: make([]byte, 1024)}
	h := header{Format: formatName, Version: formatVersion, Created: time.Now(), Apps: []headerApp{{Name: "notes", Volumes: []headerVolume{{Name: "data"}}}}}
	if err := aw.writeJSON(headerName, h); err != nil {
		t.Fatal(err)
	}
	aw.tr = trailer{Apps: 1}
	if err := aw.writeBytes(recordName("notes"), []byte(`{"image":"x","volumes":[{"Name":"data"}]}`)); err != nil {
		t.Fatal(err)
	}
	if err := aw.header(&tar.Header{Name: volumePrefix("notes", "data"), Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	entries(&countingWriter{aw})
	if err := aw.writeJSON(trailerName, aw.tr); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// countingWriter writes entries counted in the trailer, so that the entry under test is the only
// thing wrong with a crafted archive.
type countingWriter struct{ aw *archiveWriter }

func (c *countingWriter) WriteHeader(h *tar.Header) error { return c.aw.header(h) }
func (c *countingWriter) Write(b []byte) (int, error)     { return c.aw.tw.Write(b) }

// Crafted archives cannot write outside the volume's staging directory: names with "..", absolute
// names, a symlink to outside followed by a file "through" it, a hard link to a file outside, a
// file given twice, a device node. Each is refused as bad input; nothing is written, outside or
// in the box.
func TestHostileArchiveRefused(t *testing.T) {
	outside := t.TempDir()
	v := volumePrefix("notes", "data")
	reg := func(tw *countingWriter, name, content string) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))}); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, content)
	}
	link := func(tw *countingWriter, typ byte, name, target string) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: typ, Linkname: target, Mode: 0o777}); err != nil {
			t.Fatal(err)
		}
	}
	cases := map[string]func(tw *countingWriter){
		"dot-dot":         func(tw *countingWriter) { reg(tw, v+"../../../../escape", "x") },
		"dot-dot inside":  func(tw *countingWriter) { reg(tw, v+"a/../../escape", "x") },
		"absolute":        func(tw *countingWriter) { reg(tw, "/"+outside+"/escape", "x") },
		"another app":     func(tw *countingWriter) { reg(tw, "apps/other/volumes/data/x", "x") },
		"through symlink": func(tw *countingWriter) { link(tw, tar.TypeSymlink, v+"out", outside); reg(tw, v+"out/escape", "x") },
		"symlink parent":  func(tw *countingWriter) { link(tw, tar.TypeSymlink, v+"up", ".."); reg(tw, v+"up/escape", "x") },
		"hard link out":   func(tw *countingWriter) { link(tw, tar.TypeLink, v+"shadow", "/etc/shadow") },
		"hard link later": func(tw *countingWriter) { link(tw, tar.TypeLink, v+"a", v+"b"); reg(tw, v+"b", "x") },
		"twice":           func(tw *countingWriter) { reg(tw, v+"f", "x"); reg(tw, v+"f", "y") },
		"file over link":  func(tw *countingWriter) { link(tw, tar.TypeSymlink, v+"f", outside+"/escape"); reg(tw, v+"f", "x") },
		"device": func(tw *countingWriter) {
			tw.WriteHeader(&tar.Header{Name: v + "sda", Typeflag: tar.TypeBlock, Mode: 0o600})
		},
		"sparse beyond":    func(tw *countingWriter) { sparseEntry(t, tw, v+"s", "0,10", "5") },
		"sparse unordered": func(tw *countingWriter) { sparseEntry(t, tw, v+"s", "100,5,0,5", "200") },
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			rcpt, id := x25519(t)
			archive := hostileArchive(t, rcpt, entries)
			dst := newTestBox(t)
			_, err := Restore(t.Context(), bytes.NewReader(archive), dst, dst.keys, false, id)
			if err == nil {
				t.Fatal("a hostile archive was restored")
			}
			if errors.Is(err, ErrDecrypt) || strings.Contains(err.Error(), "trailer") {
				t.Fatalf("restore = %v: the archive itself is authentic and complete", err)
			}
			t.Log(err)
			if l := listTree(t, dst.dir); !slices.Equal(l, emptyBox) {
				t.Errorf("left %v", l)
			}
			if l := listTree(t, outside); len(l) != 1 {
				t.Errorf("wrote outside: %v", l)
			}
			if len(dst.records) != 0 {
				t.Errorf("records %v", dst.records)
			}
		})
	}
}

func sparseEntry(t *testing.T, tw *countingWriter, name, m, size string) {
	t.Helper()
	h := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: 10,
		PAXRecords: map[string]string{paxSparseMap: m, paxSparseSize: size}}
	if err := tw.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	tw.Write(make([]byte, 10))
}

// Bad input to Backup: no recipient, no app, a bad name, an unknown app (NotFound); nothing is
// written to the output.
func TestBackupBadInput(t *testing.T) {
	b := newTestBox(t)
	b.addApp(t, "notes", nil)
	rcpt, _ := x25519(t)
	for _, c := range []struct {
		apps []string
		rs   []age.Recipient
		kind error
	}{
		{[]string{"notes"}, nil, errkind.BadInput},
		{nil, []age.Recipient{rcpt}, errkind.BadInput},
		{[]string{"Not_An_App"}, []age.Recipient{rcpt}, errkind.BadInput},
		{[]string{"notes", "ghost"}, []age.Recipient{rcpt}, errkind.NotFound},
	} {
		var out bytes.Buffer
		_, err := Backup(t.Context(), &out, b, b.keys, c.apps, c.rs...)
		if !errors.Is(err, c.kind) {
			t.Errorf("Backup(%q) = %v, want %v", c.apps, err, c.kind)
		}
		if out.Len() != 0 {
			t.Errorf("Backup(%q) wrote %d bytes", c.apps, out.Len())
		}
	}
}

// A backup that fails half-way (the dump hook fails after writing some of its dump) leaves an
// unfinished age stream: restoring what was written is refused as not authentic.
func TestFailedBackupNeverRestores(t *testing.T) {
	b := newTestBox(t)
	b.addApp(t, "notes", []Volume{dataVolume, dbVolume})
	rcpt, id := x25519(t)
	var out bytes.Buffer
	_, err := Backup(t.Context(), &out, failingDump{b}, b.keys, []string{"notes"}, rcpt)
	if err == nil || !strings.Contains(err.Error(), "pg_dump died") {
		t.Fatalf("Backup = %v", err)
	}
	dst := newTestBox(t)
	if _, err := Restore(t.Context(), bytes.NewReader(out.Bytes()), dst, dst.keys, false, id); !errors.Is(err, ErrDecrypt) {
		t.Errorf("restoring a failed backup = %v, want ErrDecrypt", err)
	}
}

type failingDump struct{ *testBox }

func (f failingDump) Dump(ctx context.Context, app, vol string, w io.Writer) error {
	w.Write(bytes.Repeat([]byte("x"), 5<<20))
	return errors.New("pg_dump died")
}
