package pods

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const busyboxPath = "/usr/bin/busybox" // Debian's busybox-static

const indexPage = "<h1>hello from a pod</h1>\n"

// layerOf turns tar bytes into an image layer (gzip-compressed by go-containerregistry).
func layerOf(t testing.TB, tarBytes []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// busyboxTar is a layer with /bin/busybox (static) and /www/index.html.
func busyboxTar(t testing.TB) []byte {
	t.Helper()
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		t.Skipf("busybox-static needed: %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"bin/", "www/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			t.Fatal(err)
		}
	}
	files := []struct {
		name string
		mode int64
		body []byte
	}{{"bin/busybox", 0o755, bb}, {"www/index.html", 0o644, []byte(indexPage)}}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: f.mode, Size: int64(len(f.body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// busyboxImage is an image whose entrypoint serves /www on port 8080 with busybox httpd.
func busyboxImage(t testing.TB, extra ...[]byte) v1.Image {
	t.Helper()
	layers := []v1.Layer{layerOf(t, busyboxTar(t))}
	for _, e := range extra {
		layers = append(layers, layerOf(t, e))
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{
		Entrypoint:   []string{"busybox", "httpd", "-f", "-p", "8080", "-h", "/www"},
		Env:          []string{"PATH=/bin", "GREETING=hello"},
		WorkingDir:   "/www",
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// startRegistry serves go-containerregistry's in-process registry on loopback.
func startRegistry(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func push(t testing.TB, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
}

func writeDockerArchive(t testing.TB, path, tag string, img v1.Image) {
	t.Helper()
	tg, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(path, tg, img); err != nil {
		t.Fatal(err)
	}
}

func writeLayout(t testing.TB, dir, ref string, img v1.Image) {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref})); err != nil {
		t.Fatal(err)
	}
}

// tarDir writes the files under dir into a tar archive at path.
func tarDir(t testing.TB, dir, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

func inode(t testing.TB, p string) uint64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// The same image from a registry, a docker save tarball, an OCI archive and an OCI layout is one
// image: one ID, unpacked once, its layer cached once.
func TestImageSourcesAgree(t *testing.T) {
	ctx := context.Background()
	img := busyboxImage(t)
	dir := t.TempDir()
	reg := startRegistry(t)
	ref := reg + "/test/busybox:1"
	push(t, ref, img)
	writeDockerArchive(t, filepath.Join(dir, "docker.tar"), "example.com/test/busybox:1", img)
	writeLayout(t, filepath.Join(dir, "layout"), "example.com/test/busybox:oci", img)
	tarDir(t, filepath.Join(dir, "layout"), filepath.Join(dir, "oci.tar"))

	store := &ImageStore{Dir: filepath.Join(dir, "store")}
	var out bytes.Buffer
	pulled, err := store.Pull(ctx, ref, &out)
	if err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 {
		t.Errorf("progress written to a non-terminal: %q", out.String())
	}
	wantID, _ := img.ConfigName()
	if pulled.Digest != wantID.String() {
		t.Errorf("digest %s, want the config digest %s", pulled.Digest, wantID)
	}
	if b, err := os.ReadFile(filepath.Join(pulled.Root, "www/index.html")); err != nil || string(b) != indexPage {
		t.Errorf("index.html = %q, %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(pulled.Root, "bin/busybox")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("bin/busybox: %v, %v", st, err)
	}
	for _, mp := range []string{"proc", "dev", "sys", "tmp", "run"} {
		if st, err := os.Stat(filepath.Join(pulled.Root, mp)); err != nil || !st.IsDir() {
			t.Errorf("mount point %s missing: %v", mp, err)
		}
	}
	c := pulled.Config
	if strings.Join(c.Entrypoint, " ") != "busybox httpd -f -p 8080 -h /www" || c.WorkingDir != "/www" ||
		len(c.ExposedPorts) != 1 || c.ExposedPorts[0] != 8080 {
		t.Errorf("config = %+v", c)
	}
	rootInode := inode(t, pulled.Root)

	fromDocker, err := store.LoadArchive(ctx, filepath.Join(dir, "docker.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	fromOCI, err := store.LoadArchive(ctx, filepath.Join(dir, "oci.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	fromLayout, err := store.LoadLayout(ctx, filepath.Join(dir, "layout"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range []*Image{fromDocker, fromOCI, fromLayout} {
		if got.Digest != pulled.Digest || got.Root != pulled.Root {
			t.Errorf("%s: digest %s root %s; want %s %s", got.Ref, got.Digest, got.Root, pulled.Digest, pulled.Root)
		}
	}
	if fromDocker.Ref != "example.com/test/busybox:1" || fromOCI.Ref != "example.com/test/busybox:oci" {
		t.Errorf("refs: %q %q", fromDocker.Ref, fromOCI.Ref)
	}
	if inode(t, pulled.Root) != rootInode {
		t.Errorf("root was unpacked again")
	}
	if n := dirNames(t, filepath.Join(store.Dir, "layers")); len(n) != 1 {
		t.Errorf("layer cache holds %v, want the one layer", n)
	}
	if n := dirNames(t, filepath.Join(store.Dir, "tmp")); len(n) != 0 {
		t.Errorf("tmp holds %v", n)
	}

	// Lookups without a registry.
	for _, r := range []string{ref, "example.com/test/busybox:1", pulled.Digest} {
		got, err := store.Image(r)
		if err != nil || got.Root != pulled.Root {
			t.Errorf("Image(%q) = %v, %v", r, got, err)
		}
	}
	if _, err := store.Image("example.com/nothing:here"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown image: %v, want ErrNotFound", err)
	}

	argv, err := pulled.Command(nil)
	if err != nil || strings.Join(argv, " ") != "/bin/busybox httpd -f -p 8080 -h /www" {
		t.Errorf("Command = %q, %v", argv, err)
	}
}

// Layers shared by two images are fetched and stored once.
func TestPullSharesLayers(t *testing.T) {
	ctx := context.Background()
	reg := startRegistry(t)
	a := busyboxImage(t, tarOf(t, entry{name: "www/a.html", body: "a"}))
	b := busyboxImage(t, tarOf(t, entry{name: "www/b.html", body: "b"}))
	push(t, reg+"/test/a:1", a)
	push(t, reg+"/test/b:1", b)
	store := &ImageStore{Dir: t.TempDir()}
	ia, err := store.Pull(ctx, reg+"/test/a:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	ib, err := store.Pull(ctx, reg+"/test/b:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ia.Root == ib.Root {
		t.Fatal("two images share a root")
	}
	if n := dirNames(t, filepath.Join(store.Dir, "layers")); len(n) != 3 {
		t.Errorf("layer cache holds %d layers, want 3 (one shared)", len(n))
	}
	if _, err := os.Stat(filepath.Join(ib.Root, "www/a.html")); err == nil {
		t.Errorf("b's root has a's file")
	}
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	store := &ImageStore{Dir: t.TempDir()}
	for _, ref := range []string{"UPPER/Case:tag", "registry.example/a:b:c", "a@sha256:xyz", ""} {
		if _, err := store.Pull(ctx, ref, nil); !errors.Is(err, ErrBadInput) {
			t.Errorf("Pull(%q) = %v, want ErrBadInput", ref, err)
		}
	}
	junk := filepath.Join(t.TempDir(), "junk.tar")
	if err := os.WriteFile(junk, []byte("not a tar at all, not even close................................"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.LoadArchive(ctx, junk, nil); !errors.Is(err, ErrBadInput) {
		t.Errorf("LoadArchive(junk) = %v, want ErrBadInput", err)
	}
}

// A hostile image is refused, from a registry or an archive, and leaves nothing: no root, no
// record, no temp files, nothing outside.
func TestHostileImageRefused(t *testing.T) {
	ctx := context.Background()
	s := newSandbox(t)
	hostileLayers := map[string][]byte{
		"symlink out": tarOf(t,
			entry{name: "escape", typ: tar.TypeSymlink, link: s.outside},
			entry{name: "escape/pwned", body: "pwned"}),
		"dot-dot":   tarOf(t, entry{name: "../../../../../../" + strings.TrimPrefix(s.outside, "/") + "/pwned", body: "pwned"}),
		"hard link": tarOf(t, entry{name: "www/passwd", typ: tar.TypeLink, link: "../../../../../../etc/passwd"}),
	}
	reg := startRegistry(t)
	for what, layer := range hostileLayers {
		t.Run(what, func(t *testing.T) {
			img := busyboxImage(t, layer)
			ref := reg + "/test/hostile:" + strings.ReplaceAll(what, " ", "-")
			push(t, ref, img)
			archive := filepath.Join(t.TempDir(), "hostile.tar")
			writeDockerArchive(t, archive, "example.com/hostile:1", img)

			store := &ImageStore{Dir: filepath.Join(s.root, strings.ReplaceAll(what, " ", "-"))}
			if _, err := store.Pull(ctx, ref, nil); !errors.Is(err, ErrHostileLayer) {
				t.Errorf("Pull = %v, want ErrHostileLayer", err)
			}
			if _, err := store.LoadArchive(ctx, archive, nil); !errors.Is(err, ErrHostileLayer) {
				t.Errorf("LoadArchive = %v, want ErrHostileLayer", err)
			}
			for _, d := range []string{"roots", "images", "refs", "tmp"} {
				if n := dirNames(t, filepath.Join(store.Dir, d)); len(n) != 0 {
					t.Errorf("%s holds %v after a refused image", d, n)
				}
			}
			if _, err := store.Image(ref); !errors.Is(err, ErrNotFound) {
				t.Errorf("refused image is known: %v", err)
			}
		})
	}
	s.untouched(t)
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	reg := startRegistry(t)
	push(t, reg+"/test/a:1", busyboxImage(t, tarOf(t, entry{name: "www/a.html", body: "a"})))
	push(t, reg+"/test/b:1", busyboxImage(t, tarOf(t, entry{name: "www/b.html", body: "b"})))
	store := &ImageStore{Dir: t.TempDir()}
	a, err := store.Pull(ctx, reg+"/test/a:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := store.Pull(ctx, reg+"/test/b:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.EmptyRoot(); err != nil {
		t.Fatal(err)
	}
	list, err := store.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %+v, %v", list, err)
	}
	for _, info := range list {
		want := map[string]string{a.Digest: reg + "/test/a:1", b.Digest: reg + "/test/b:1"}[info.ID]
		if len(info.Refs) != 1 || info.Refs[0] != want || info.Size < 1<<20 || time.Since(info.LastUsed) > time.Minute {
			t.Errorf("List: %+v (want ref %s, a size over busybox's, used just now)", info, want)
		}
	}
	report, err := store.Prune(ctx, []string{a.Digest})
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Images) != 1 || report.Images[0] != b.Digest || report.Layers != 1 || report.Bytes <= 0 {
		t.Errorf("Prune report %+v, want b and its own layer", report)
	}
	if _, err := os.Stat(b.Root); err == nil {
		t.Errorf("b's root survived the prune")
	}
	if _, err := store.Image(reg + "/test/b:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("b still known: %v", err)
	}
	if got, err := store.Image(reg + "/test/a:1"); err != nil || got.Root != a.Root {
		t.Errorf("a after prune: %v, %v", got, err)
	}
	if n := dirNames(t, filepath.Join(store.Dir, "layers")); len(n) != 2 {
		t.Errorf("layers after prune: %v, want a's two", n)
	}
	if n := dirNames(t, filepath.Join(store.Dir, "roots")); len(n) != 2 {
		t.Errorf("roots after prune: %v, want a's and the empty root", n)
	}
	if _, err := store.Prune(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if n := dirNames(t, filepath.Join(store.Dir, "layers")); len(n) != 0 {
		t.Errorf("layers after pruning everything: %v", n)
	}
}

// TestPruneStoppedHalfWay: a prune whose removal of an image's files stops half-way (here a
// mount point in its root, which no removal gets past; on a box, the daemon killed) must not
// leave a half-removed root that the image's record still vouches for: the image's next load
// (its app exposed again) must give a whole root.
func TestPruneStoppedHalfWay(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a mount point")
	}
	ctx := context.Background()
	reg := startRegistry(t)
	ref := reg + "/test/b:1"
	push(t, ref, busyboxImage(t, tarOf(t, entry{name: "www/b.html", body: "b"})))
	store := &ImageStore{Dir: t.TempDir()}
	b, err := store.Pull(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	stuck := filepath.Join(b.Root, "zz-stuck")
	if err := os.Mkdir(stuck, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("none", stuck, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("tmpfs mount: %v", err)
	}
	t.Cleanup(func() { unmountUnder(t, store.Dir) })
	if _, err := store.Prune(ctx, nil); err == nil {
		t.Fatal("Prune removed a mount point")
	}
	again, err := store.Pull(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"www/b.html", "bin/busybox"} {
		if _, err := os.Stat(filepath.Join(again.Root, f)); err != nil {
			t.Errorf("after a prune stopped half-way, the image loaded again lacks %s: %v", f, err)
		}
	}
}

// unmountUnder unmounts every mount point under dir.
func unmountUnder(t *testing.T, dir string) {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Error(err)
		return
	}
	for _, line := range strings.Split(string(info), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			if err := syscall.Unmount(f[4], syscall.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", f[4], err)
			}
		}
	}
}

func TestCheckRef(t *testing.T) {
	for _, ok := range []string{"busybox", "registry.example/blog:1", "127.0.0.1:5000/x/y:latest", "r.example/x@sha256:" + strings.Repeat("a", 64)} {
		if err := CheckRef(ok); err != nil {
			t.Errorf("CheckRef(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Registry.example/UPPER:1", "blog:", "a b", "r.example/x@sha256:short"} {
		if err := CheckRef(bad); !errors.Is(err, ErrBadInput) {
			t.Errorf("CheckRef(%q) = %v, want ErrBadInput", bad, err)
		}
	}
}
