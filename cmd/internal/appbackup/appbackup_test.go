package appbackup

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/onion"
)

var (
	dataVolume = Volume{Name: "data"}
	dbVolume   = Volume{Name: "db", Dump: true}
)

// fillVolume puts one of everything a volume may hold into dir.
func fillVolume(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p := func(rel string) string { return filepath.Join(dir, rel) }
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	must(os.Mkdir(p("docs"), 0o700))
	must(os.WriteFile(p("docs/a.txt"), []byte("hello, notes\n"), 0o640))
	must(os.Link(p("docs/a.txt"), p("docs/b.txt")))
	must(os.WriteFile(p("empty"), nil, 0o600))
	must(os.Mkdir(p("tmp"), 0o777))
	must(os.Chmod(p("tmp"), 0o777|fs.ModeSticky))
	must(os.WriteFile(p("setuid"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Chmod(p("setuid"), 0o755|fs.ModeSetuid|fs.ModeSetgid))
	must(os.Symlink("docs/a.txt", p("link-rel")))
	must(os.Symlink("/etc/shadow", p("link-out")))
	must(os.Symlink("/etc", p("dir-link")))
	must(os.WriteFile(p("big"), randomBytes(t, 3<<20+17), 0o644))
	must(os.WriteFile(p("nobody"), []byte("owned by nobody"), 0o644))
	must(os.Lchown(p("nobody"), 65534, 65534))
	must(syscall.Mkfifo(p("fifo"), 0o600))
	// A sparse file: 100 MiB, 8 KiB of data in the middle and one byte at the end.
	f, err := os.Create(p("sparse"))
	must(err)
	_, err = f.WriteAt(randomBytes(t, 8192), 50<<20)
	must(err)
	_, err = f.WriteAt([]byte{7}, 100<<20-1)
	must(err)
	must(f.Close())
	// Owners as a dynamic user's, and old times.
	must(filepath.Walk(dir, func(path string, info fs.FileInfo, err error) error {
		if err != nil || filepath.Base(path) == "nobody" {
			return err
		}
		if err := os.Lchown(path, 61234, 61235); err != nil {
			return err
		}
		if info.Mode()&fs.ModeSymlink == 0 {
			return os.Chtimes(path, old, old)
		}
		return nil
	}))
	must(os.Chtimes(dir, old, old))
}

type fileState struct {
	mode   fs.FileMode
	uid    uint32
	gid    uint32
	mtime  int64
	size   int64
	blocks int64
	sum    [32]byte
	link   string
	ino    uint64
}

// treeState describes every entry under dir (not following symlinks).
func treeState(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.Walk(dir, func(path string, info fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		st := info.Sys().(*syscall.Stat_t)
		s := fileState{mode: info.Mode(), uid: st.Uid, gid: st.Gid, size: info.Size(), blocks: st.Blocks, ino: st.Ino}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			s.link, _ = os.Readlink(path)
		case info.Mode().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			s.sum = sha256.Sum256(b)
			s.mtime = info.ModTime().Unix()
		default:
			s.mtime = info.ModTime().Unix()
		}
		out[rel] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The round trip: two apps (files, a dump, a key with clients) backed up on one box and
// restored on another come back the same: records, .onion addresses, clients, every file's
// content, mode, owner and time, symlinks as symlinks (never followed: the one pointing at
// /etc/shadow is a link, not a copy), hard links as one inode, a sparse file still sparse; the
// FIFO is skipped and setuid/setgid are dropped. The app was quiesced while its files were
// copied, not while it was dumped.
func TestRoundTrip(t *testing.T) {
	src := newTestBox(t)
	addr := src.addApp(t, "notes", []Volume{dataVolume, dbVolume}, "alice", "bob")
	addr2 := src.addApp(t, "wiki", []Volume{{Name: "pages"}})
	fillVolume(t, src.volumeDir("notes", "data"))
	if err := os.WriteFile(filepath.Join(src.volumeDir("wiki", "pages"), "index.md"), []byte("# wiki\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dump := randomBytes(t, 2*dumpChunkBytes+12345) // three chunks
	src.dumps["notes/db"] = dump

	rcpt, id := x25519(t)
	archive, reps := src.backup(t, rcpt, "notes", "wiki")
	if len(reps) != 2 || reps[0].Address != addr || reps[1].Address != addr2 {
		t.Fatalf("backup reports %+v", reps)
	}
	if want := []string{"quiesce notes", "resume notes", "quiesce wiki", "resume wiki"}; !slices.Equal(src.events, want) {
		t.Errorf("events %q, want %q (the dump is taken with the app running)", src.events, want)
	}
	var data VolumeReport
	for _, v := range reps[0].Volumes {
		if v.Name == "data" {
			data = v
		}
	}
	if data.Skipped != 1 || data.Sparse != 1 || data.HardLinks != 1 || data.Symlinks != 3 {
		t.Errorf("data volume report %+v: want 1 skipped (the FIFO), 1 sparse, 1 hard link, 3 symlinks", data)
	}
	if len(archive) > 16<<20 { // 3 MiB of files and 8 MiB of dump
		t.Errorf("the archive is %d bytes: the 100 MiB sparse file was stored whole?", len(archive))
	}

	dst := newTestBox(t)
	got, err := Restore(t.Context(), bytes.NewReader(archive), dst, dst.keys, false, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Address != addr || got[1].Address != addr2 || got[0].Replaced {
		t.Fatalf("restore reports %+v", got)
	}
	for _, app := range []string{"notes", "wiki"} {
		if !bytes.Equal(dst.records[app], src.records[app]) {
			t.Errorf("record of %s: %s, want %s", app, dst.records[app], src.records[app])
		}
	}
	k, err := dst.keys.Store.Load("notes")
	if err != nil || k.Address() != addr {
		t.Fatalf("restored key %v, %v; want %s", k, err, addr)
	}
	clients, err := dst.keys.Store.Clients("notes")
	if err != nil || len(clients) != 2 {
		t.Fatalf("restored clients %v, %v", clients, err)
	}
	if !bytes.Equal(dst.loaded["notes/db"], dump) {
		t.Errorf("the dump loaded is %d bytes, want the %d dumped", len(dst.loaded["notes/db"]), len(dump))
	}

	want := treeState(t, src.volumeDir("notes", "data"))
	have := treeState(t, dst.volumeDir("notes", "data"))
	delete(want, "fifo")
	for rel, w := range want {
		h, ok := have[rel]
		if !ok {
			t.Errorf("%s: not restored", rel)
			continue
		}
		w.mode &^= fs.ModeSetuid | fs.ModeSetgid
		if h.mode != w.mode || h.uid != w.uid || h.gid != w.gid || h.mtime != w.mtime || h.size != w.size || h.sum != w.sum || h.link != w.link {
			t.Errorf("%s: restored %+v, want %+v", rel, h, w)
		}
	}
	for rel := range have {
		if _, ok := want[rel]; !ok {
			t.Errorf("%s: restored but not in the source", rel)
		}
	}
	if have["docs/a.txt"].ino != have["docs/b.txt"].ino {
		t.Errorf("the hard link was restored as a copy")
	}
	if b := have["sparse"].blocks * 512; b > 1<<20 {
		t.Errorf("the sparse file takes %d bytes on disk after the restore", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dst.volumeDir("wiki", "pages"), "index.md")); string(b) != "# wiki\n" {
		t.Errorf("wiki page %q", b)
	}
	// Nothing staged is left beside the volumes.
	for _, app := range []string{"notes", "wiki"} {
		entries, _ := os.ReadDir(filepath.Dir(dst.volumeDir(app, "x")))
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				t.Errorf("left behind: %s/%s", app, e.Name())
			}
		}
	}
}

// A passphrase works like any recipient, and the wrong one is ErrDecrypt.
func TestPassphrase(t *testing.T) {
	src := newTestBox(t)
	src.addApp(t, "notes", []Volume{dataVolume})
	r, err := onion.PassphraseRecipient("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	archive, _ := src.backup(t, r, "notes")
	for _, pass := range []string{"wrong horse", "correct horse"} {
		dst := newTestBox(t)
		id, err := onion.PassphraseIdentity(pass)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Restore(t.Context(), bytes.NewReader(archive), dst, dst.keys, false, id)
		if pass == "wrong horse" {
			if !errors.Is(err, ErrDecrypt) || !errors.Is(err, errkind.BadInput) {
				t.Errorf("wrong passphrase: %v, want ErrDecrypt", err)
			}
			if l := listTree(t, dst.dir); !slices.Equal(l, emptyBox) {
				t.Errorf("a wrong passphrase left %v", l)
			}
		} else if err != nil {
			t.Errorf("right passphrase: %v", err)
		}
	}
}

// Damaged backups are refused and nothing is written: a flipped byte anywhere (the age header,
// the first chunk, a chunk in the middle of the volume's data, the very last byte), a file cut
// short anywhere (inside the header, between chunks, one byte short), a wrong identity.
func TestDamagedBackupRefusedNothingWritten(t *testing.T) {
	src := newTestBox(t)
	src.addApp(t, "notes", []Volume{dataVolume, dbVolume}, "alice")
	if err := os.WriteFile(filepath.Join(src.volumeDir("notes", "data"), "big"), randomBytes(t, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	src.dumps["notes/db"] = []byte("CREATE TABLE notes (id int);\n")
	rcpt, id := x25519(t)
	archive, _ := src.backup(t, rcpt, "notes")
	_, otherID := x25519(t)

	type attempt struct {
		name string
		data []byte
		ids  []age.Identity
	}
	flip := func(at int) []byte {
		b := slices.Clone(archive)
		b[at] ^= 0x01
		return b
	}
	n := len(archive)
	attempts := []attempt{
		{"wrong identity", archive, []age.Identity{otherID}},
		{"flipped in the header", flip(40), nil},
		{"flipped in the first chunk", flip(300), nil},
		{"flipped in the middle", flip(n / 2), nil},
		{"flipped last byte", flip(n - 1), nil},
		{"cut in the header", archive[:100], nil},
		{"cut at a chunk boundary", archive[:n-(n-200)%65552], nil},
		{"cut in the middle", archive[:n/2], nil},
		{"one byte short", archive[:n-1], nil},
		{"empty", nil, nil},
	}
	for _, a := range attempts {
		t.Run(a.name, func(t *testing.T) {
			dst := newTestBox(t)
			ids := a.ids
			if ids == nil {
				ids = []age.Identity{id}
			}
			_, err := Restore(t.Context(), bytes.NewReader(a.data), dst, dst.keys, false, ids...)
			if !errors.Is(err, ErrDecrypt) {
				t.Errorf("restore = %v, want ErrDecrypt", err)
			}
			if l := listTree(t, dst.dir); !slices.Equal(l, emptyBox) {
				t.Errorf("a refused backup left %v", l)
			}
			if len(dst.records) != 0 || len(dst.events) != 0 {
				t.Errorf("a refused backup touched the box: records %v, events %v", dst.records, dst.events)
			}
		})
	}
}
