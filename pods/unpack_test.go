package pods

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// entry is one crafted tar entry.
type entry struct {
	name     string
	typ      byte
	body     string
	link     string
	mode     int64
	size     int64 // header size when body is empty and size is set (a lying header)
	dev      [2]int64
	headOnly bool // write only the header (the archive ends right after it)
}

func tarOf(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Mode: mode,
			ModTime: time.Unix(1700000000, 0), Devmajor: e.dev[0], Devminor: e.dev[1], Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			h.Size = int64(len(e.body))
			if e.size != 0 {
				h.Size = e.size
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.headOnly {
			tw.Flush() //nolint:errcheck // the lie is the point
			return buf.Bytes()
		}
		if e.body != "" {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sandbox is a temp dir with root/ (unpack target) and outside/ (a canary dir with one file).
type sandbox struct {
	base, root, outside string
}

func newSandbox(t testing.TB) sandbox {
	t.Helper()
	base := t.TempDir()
	s := sandbox{base: base, root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside")}
	for _, d := range []string{s.root, s.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.outside, "passwd"), []byte("canary\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// untouched fails t when anything but root/ and outside/passwd (unchanged) exists in the sandbox.
func (s sandbox) untouched(t testing.TB) {
	t.Helper()
	var got []string
	entries, err := os.ReadDir(s.base)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		got = append(got, e.Name())
	}
	out, err := os.ReadDir(s.outside)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range out {
		got = append(got, "outside/"+e.Name())
	}
	sort.Strings(got)
	if want := []string{"outside", "outside/passwd", "root"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("sandbox holds %v, want %v", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(s.outside, "passwd")); err != nil || string(b) != "canary\n" {
		t.Errorf("outside/passwd = %q, %v", b, err)
	}
	if st, err := os.Lstat(filepath.Join(s.outside, "passwd")); err == nil && st.Sys() != nil {
		if nlink := linkCount(st); nlink != 1 {
			t.Errorf("outside/passwd has %d links: something hard-linked it", nlink)
		}
	}
}

func applyLayers(t testing.TB, root string, layers ...[]byte) error {
	t.Helper()
	u, err := newUnpacker(root, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for _, l := range layers {
		if err := u.applyLayer(bytes.NewReader(l)); err != nil {
			return err
		}
	}
	return nil
}

func TestUnpackRefusesHostileLayers(t *testing.T) {
	cases := []struct {
		name    string
		layers  func(s sandbox) [][]byte
		outside bool // an extra check that nothing reached outside/ (always checked)
	}{
		{"dot-dot path", func(s sandbox) [][]byte {
			return [][]byte{tarOf(t, entry{name: "../escape", body: "x"})}
		}, true},
		{"dot-dot inside path", func(s sandbox) [][]byte {
			return [][]byte{tarOf(t, entry{name: "a/../../outside/new", body: "x"})}
		}, true},
		{"absolute path", func(s sandbox) [][]byte {
			return [][]byte{tarOf(t, entry{name: s.outside + "/abs", body: "x"})}
		}, true},
		{"absolute symlink then file through it", func(s sandbox) [][]byte {
			return [][]byte{tarOf(t,
				entry{name: "evil", typ: tar.TypeSymlink, link: s.outside},
				entry{name: "evil/pwned", body: "x"})}
		}, true},
		{"relative symlink out then file through it", func(s sandbox) [][]byte {
			return [][]byte{tarOf(t,
				entry{name: "d", typ: tar.TypeDir},
				entry{name: "d/evil", typ: tar.TypeSymlink, link: "../../outside"},
				entry{name: "d/evil/pwned", body: "x"})}
		}, true},
		{"symlink in an earlier layer, file through it later", func(s sandbox) [][]byte {
			return [][]byte{
				tarOf(t, entry{name: "evil", typ: tar.TypeSymlink, link: "../outside"}),
				tarOf(t, entry{name: "evil/passwd", body: "pwned"})}
		}, true},
		{"symlink chain out", func(s sandbox) [][]byte {
			return [][]byte{tarOf(t,
				entry{name: "a", typ: tar.TypeSymlink, link: "b/.."},
				entry{name: "b", typ: tar.TypeSymlink, link: "."},
				entry{name: "c", typ: tar.TypeSymlink, link: "a/../.."},
				entry{name: "c/outside/pwned", body: "x"})}
		}, true},
		{"hard link to absolute path", func(s sandbox) [][]byte {
			return [][]byte{tarOf(t, entry{name: "passwd", typ: tar.TypeLink, link: s.outside + "/passwd"})}
		}, true},
		{"hard link to /etc/passwd", func(s sandbox) [][]byte {
			return [][]byte{tarOf(t, entry{name: "passwd", typ: tar.TypeLink, link: "/etc/passwd"})}
		}, true},
		{"hard link with dot-dot", func(s sandbox) [][]byte {
			return [][]byte{tarOf(t, entry{name: "passwd", typ: tar.TypeLink, link: "../outside/passwd"})}
		}, true},
		{"hard link through a symlink out", func(s sandbox) [][]byte {
			return [][]byte{tarOf(t,
				entry{name: "o", typ: tar.TypeSymlink, link: s.outside},
				entry{name: "passwd", typ: tar.TypeLink, link: "o/passwd"})}
		}, true},
		{"huge size header", func(s sandbox) [][]byte {
			return [][]byte{tarOf(t, entry{name: "huge", size: 1 << 50, headOnly: true})}
		}, true},
		{"size beyond the data", func(s sandbox) [][]byte {
			return [][]byte{tarOf(t, entry{name: "short", size: 1 << 20, headOnly: true})}
		}, true},
		{"file used as a directory", func(s sandbox) [][]byte {
			return [][]byte{tarOf(t, entry{name: "f", body: "x"}, entry{name: "f/x", body: "y"})}
		}, true},
		{"not a tar", func(s sandbox) [][]byte {
			return [][]byte{bytes.Repeat([]byte("garbage!"), 100)}
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSandbox(t)
			err := applyLayers(t, s.root, c.layers(s)...)
			if !errors.Is(err, ErrHostileLayer) {
				t.Errorf("err = %v, want ErrHostileLayer", err)
			}
			s.untouched(t)
		})
	}
}

func TestUnpackNeutralises(t *testing.T) {
	s := newSandbox(t)
	err := applyLayers(t, s.root, tarOf(t,
		entry{name: "bin/su", body: "#!/bin/sh\n", mode: 0o4755},
		entry{name: "bin/sg", body: "#!/bin/sh\n", mode: 0o2755},
		entry{name: "dev/mem", typ: tar.TypeChar, dev: [2]int64{1, 1}},
		entry{name: "dev/sda", typ: tar.TypeBlock, dev: [2]int64{8, 0}},
		entry{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600},
	))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"bin/su", "bin/sg"} {
		st, err := os.Stat(filepath.Join(s.root, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 || st.Mode().Perm() != 0o755 {
			t.Errorf("%s mode %v: setuid/setgid kept", f, st.Mode())
		}
	}
	for _, f := range []string{"dev/mem", "dev/sda"} {
		if _, err := os.Lstat(filepath.Join(s.root, f)); err == nil {
			t.Errorf("device node %s was created", f)
		}
	}
	if st, err := os.Lstat(filepath.Join(s.root, "run/fifo")); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("fifo: %v %v", st, err)
	}
	s.untouched(t)
}

func TestUnpackReplacesFinalSymlinkInsteadOfFollowingIt(t *testing.T) {
	s := newSandbox(t)
	target := filepath.Join(s.outside, "passwd")
	err := applyLayers(t, s.root,
		tarOf(t, entry{name: "etc/passwd", typ: tar.TypeSymlink, link: target}),
		tarOf(t, entry{name: "etc/passwd", body: "root:x:0:0::/:/bin/sh\n"}),
		tarOf(t, entry{name: "dir", typ: tar.TypeSymlink, link: s.outside}, entry{name: "dir", typ: tar.TypeDir}),
	)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(s.root, "etc/passwd")); err != nil || !strings.HasPrefix(string(b), "root:") {
		t.Errorf("etc/passwd = %q, %v", b, err)
	}
	if st, err := os.Lstat(filepath.Join(s.root, "dir")); err != nil || !st.IsDir() {
		t.Errorf("dir: %v %v (want a real directory replacing the symlink)", st, err)
	}
	s.untouched(t)
}

func TestUnpackWhiteoutsAndLinks(t *testing.T) {
	s := newSandbox(t)
	lower := tarOf(t,
		entry{name: "a/x", body: "x"}, entry{name: "a/y", body: "y"},
		entry{name: "b/z", body: "z"}, entry{name: "b/sub/deep", body: "d"},
		entry{name: "c/keep", body: "k"},
		entry{name: "usr/lib/libc.so", body: "libc"},
		entry{name: "lib", typ: tar.TypeSymlink, link: "usr/lib"},
	)
	upper := tarOf(t,
		entry{name: "a/.wh.x"},
		entry{name: "c/new", body: "n"}, // before the opaque marker: kept
		entry{name: "c/.wh..wh..opq"},
		entry{name: "b/.wh..wh..opq"},
		entry{name: "b/sub/fresh", body: "f"},
		entry{name: "lib/extra.so", body: "through a relative symlink inside"},
		entry{name: "a/hard", typ: tar.TypeLink, link: "a/y"},
		entry{name: "abs", typ: tar.TypeSymlink, link: "/usr/lib/libc.so"}, // created, not followed
	)
	if err := applyLayers(t, s.root, lower, upper); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"a/y": "y", "a/hard": "y", "c/new": "n", "b/sub/fresh": "f",
		"usr/lib/libc.so": "libc", "usr/lib/extra.so": "through a relative symlink inside",
	}
	for f, body := range want {
		if b, err := os.ReadFile(filepath.Join(s.root, f)); err != nil || string(b) != body {
			t.Errorf("%s = %q, %v; want %q", f, b, err, body)
		}
	}
	for _, gone := range []string{"a/x", "a/.wh.x", "b/z", "b/sub/deep", "c/keep", "c/.wh..wh..opq"} {
		if _, err := os.Lstat(filepath.Join(s.root, gone)); err == nil {
			t.Errorf("%s still exists", gone)
		}
	}
	if l, err := os.Readlink(filepath.Join(s.root, "abs")); err != nil || l != "/usr/lib/libc.so" {
		t.Errorf("abs -> %q, %v", l, err)
	}
	s.untouched(t)
}

func FuzzUnpack(f *testing.F) {
	f.Add(tarOf(f, entry{name: "a/b", body: "x"}, entry{name: "l", typ: tar.TypeSymlink, link: "a"}))
	f.Add(tarOf(f, entry{name: "evil", typ: tar.TypeSymlink, link: "../outside"}, entry{name: "evil/passwd", body: "x"}))
	f.Add(tarOf(f, entry{name: "x", typ: tar.TypeLink, link: "../outside/passwd"}))
	f.Add(tarOf(f, entry{name: "d/.wh..wh..opq"}, entry{name: "d/.wh.x"}))
	f.Add(tarOf(f, entry{name: "a", typ: tar.TypeSymlink, link: "b"}, entry{name: "b", typ: tar.TypeSymlink, link: "a"}, entry{name: "a/x", body: "x"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newSandbox(t)
		_ = applyLayers(t, s.root, data)
		s.untouched(t)
	})
}

func linkCount(st os.FileInfo) uint64 {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return uint64(sys.Nlink)
	}
	return 1
}
