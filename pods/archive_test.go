package pods

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// returnsWithin runs f and fails the test when it has not returned after d (a hang).
func returnsWithin(t *testing.T, d time.Duration, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s still running after %v", what, d)
		return nil
	}
}

// A FIFO, a device, a directory or a symlink where an archive should be is refused at once: the
// root daemon must never block on a FIFO a group member put there, nor follow a link.
func TestLocalArchiveMustBeARegularFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "image.tar")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(dir, "real.tar")
	writeDockerArchive(t, real, "example.com/busybox:1", busyboxImage(t))
	link := filepath.Join(dir, "link.tar")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	store := &ImageStore{Dir: filepath.Join(dir, "store")}
	for _, p := range []string{fifo, "/dev/null", dir, link} {
		err := returnsWithin(t, 5*time.Second, "LoadArchive("+p+")", func() error {
			_, err := store.LoadArchive(ctx, p, nil)
			return err
		})
		if !errors.Is(err, ErrBadInput) {
			t.Errorf("LoadArchive(%s) = %v, want ErrBadInput", p, err)
		}
	}
	if _, err := store.LoadArchive(ctx, real, nil); err != nil {
		t.Errorf("LoadArchive of a regular file: %v", err)
	}
}

// A stream that stalls is abandoned as soon as the context ends: the load returns, holding no
// lock (a prune goes through at once) and leaving nothing in the store.
func TestStalledStreamAbandoned(t *testing.T) {
	dir := t.TempDir()
	archive := filepath.Join(dir, "img.tar")
	writeDockerArchive(t, archive, "example.com/busybox:1", busyboxImage(t))
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	store := &ImageStore{Dir: filepath.Join(dir, "store")}
	pr, pw := io.Pipe()
	go func() {
		pw.Write(data[:len(data)/2]) // then nothing more, ever (until the reader is closed)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = returnsWithin(t, 10*time.Second, "LoadArchiveStream", func() error {
		_, err := store.LoadArchiveStream(ctx, pr, nil)
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("LoadArchiveStream of a stalled stream = %v, want the context's error", err)
	}
	pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer pcancel()
	if _, err := store.Prune(pctx, nil); err != nil {
		t.Errorf("Prune after an abandoned load: %v", err)
	}
	for _, d := range []string{"tmp", "layers", "roots", "images"} {
		if n := dirNames(t, filepath.Join(store.Dir, d)); len(n) != 0 {
			t.Errorf("%s holds %v after an abandoned load", d, n)
		}
	}
	// The same stream, whole, loads.
	img, err := store.LoadArchiveStream(context.Background(), bytes.NewReader(data), nil)
	if err != nil || img.Ref != "example.com/busybox:1" {
		t.Fatalf("LoadArchiveStream = %+v, %v", img, err)
	}
}

// buildahImage builds an image with buildah (busybox and /www/index.html, vfs storage in a temp
// dir) and writes it with skopeo as an OCI archive, a docker archive and an OCI layout: archives
// made by parts nobody here wrote.
func buildahImage(t *testing.T) (ociArchive, dockerArchive, layoutDir string) {
	t.Helper()
	for _, tool := range []string{"buildah", "skopeo"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s needed (apt-get install buildah skopeo): %v", tool, err)
		}
	}
	if _, err := os.Stat(busyboxPath); err != nil {
		t.Skipf("busybox-static needed: %v", err)
	}
	dir := t.TempDir()
	storage := []string{"--root", filepath.Join(dir, "storage"), "--runroot", filepath.Join(dir, "run"), "--storage-driver", "vfs"}
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr)
		}
		return strings.TrimSpace(string(out))
	}
	buildah := func(args ...string) string { return run("buildah", append(slices.Clone(storage), args...)...) }
	ctr := buildah("from", "scratch")
	t.Cleanup(func() { exec.Command("buildah", append(slices.Clone(storage), "rm", "--all")...).Run() })
	mnt := buildah("mount", ctr)
	for _, d := range []string{"bin", "www"} {
		if err := os.MkdirAll(filepath.Join(mnt, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run("cp", busyboxPath, filepath.Join(mnt, "bin/busybox"))
	if err := os.WriteFile(filepath.Join(mnt, "www/index.html"), []byte(indexPage), 0o644); err != nil {
		t.Fatal(err)
	}
	buildah("unmount", ctr)
	buildah("config", "--entrypoint", `["/bin/busybox","httpd","-f","-p","8080","-h","/www"]`,
		"--workingdir", "/www", "--env", "PATH=/bin", ctr)
	buildah("commit", "--quiet", ctr, "localhost/onionpod-test:1")
	src := "containers-storage:[vfs@" + filepath.Join(dir, "storage") + "+" + filepath.Join(dir, "run") + "]localhost/onionpod-test:1"
	ociArchive = filepath.Join(dir, "oci.tar")
	dockerArchive = filepath.Join(dir, "docker.tar")
	layoutDir = filepath.Join(dir, "layout")
	run("skopeo", "copy", "--quiet", src, "oci-archive:"+ociArchive+":example.com/buildah:oci")
	run("skopeo", "copy", "--quiet", src, "docker-archive:"+dockerArchive+":example.com/buildah:docker")
	run("skopeo", "copy", "--quiet", src, "oci:"+layoutDir+":example.com/buildah:layout")
	return ociArchive, dockerArchive, layoutDir
}

// Streams of archives made by buildah and skopeo load: an OCI archive, a docker archive, and an
// OCI layout sent as an archive by WriteLayoutArchive. The reader is a plain stream (no ReadAt,
// no Seek): the loader spools what it needs.
func TestLoadArchiveStreamOfSkopeoArchives(t *testing.T) {
	ctx := context.Background()
	ociArchive, dockerArchive, layoutDir := buildahImage(t)
	store := &ImageStore{Dir: t.TempDir()}
	check := func(what string, img *Image, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if b, err := os.ReadFile(filepath.Join(img.Root, "www/index.html")); err != nil || string(b) != indexPage {
			t.Errorf("%s: index.html = %q, %v", what, b, err)
		}
		if argv, err := img.Command(nil); err != nil || strings.Join(argv, " ") != "/bin/busybox httpd -f -p 8080 -h /www" {
			t.Errorf("%s: command %q, %v", what, argv, err)
		}
	}
	var ids []string
	for _, a := range []string{ociArchive, dockerArchive} {
		f, err := os.Open(a)
		if err != nil {
			t.Fatal(err)
		}
		img, err := store.LoadArchiveStream(ctx, struct{ io.Reader }{f}, nil)
		f.Close()
		check(filepath.Base(a), img, err)
		ids = append(ids, img.Digest)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(WriteLayoutArchive(ctx, pw, layoutDir)) }()
	img, err := store.LoadArchiveStream(ctx, pr, nil)
	check("layout", img, err)
	if img.Ref != "example.com/buildah:layout" {
		t.Errorf("layout ref %q", img.Ref)
	}
	img, err = store.LoadLayout(ctx, layoutDir, nil)
	check("LoadLayout", img, err)
	if ids[0] != ids[1] || ids[1] != img.Digest {
		t.Errorf("one image, three ids: oci archive %s, docker archive %s, layout %s", ids[0], ids[1], img.Digest)
	}
	// LocalImageID tells the same ID from the manifests alone.
	for _, p := range []string{ociArchive, dockerArchive, layoutDir} {
		if id, err := LocalImageID(p); err != nil || id != img.Digest {
			t.Errorf("LocalImageID(%s) = %s, %v; want %s", filepath.Base(p), id, err, img.Digest)
		}
	}
	if _, err := LocalImageID(filepath.Join(layoutDir, "index.json")); !errors.Is(err, ErrBadInput) {
		t.Errorf("LocalImageID of a file that is no archive: %v", err)
	}
	if n := dirNames(t, filepath.Join(store.Dir, "tmp")); len(n) != 0 {
		t.Errorf("tmp holds %v", n)
	}
}

// WriteLayoutArchive sends regular files only: a FIFO among the blobs is skipped without
// blocking, and a symlinked index.json is refused.
func TestWriteLayoutArchiveRegularFilesOnly(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writeLayout(t, dir, "example.com/busybox:1", busyboxImage(t))
	if err := syscall.Mkfifo(filepath.Join(dir, "blobs/sha256", strings.Repeat("f", 64)), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := returnsWithin(t, 5*time.Second, "WriteLayoutArchive", func() error { return WriteLayoutArchive(ctx, &buf, dir) }); err != nil {
		t.Fatal(err)
	}
	store := &ImageStore{Dir: t.TempDir()}
	if _, err := store.LoadArchiveStream(ctx, &buf, nil); err != nil {
		t.Fatal(err)
	}
	index := filepath.Join(dir, "index.json")
	if err := os.Rename(index, index+".real"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(index+".real", index); err != nil {
		t.Fatal(err)
	}
	if err := WriteLayoutArchive(ctx, io.Discard, dir); !errors.Is(err, ErrBadInput) {
		t.Errorf("WriteLayoutArchive with a symlinked index.json = %v, want ErrBadInput", err)
	}
}

// An archive that names no reference loads as its ID, and records no reference.
func TestLoadArchiveStreamWithoutReference(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(busyboxImage(t)); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteLayoutArchive(ctx, &buf, dir); err != nil {
		t.Fatal(err)
	}
	store := &ImageStore{Dir: t.TempDir()}
	img, err := store.LoadArchiveStream(ctx, &buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.Ref != img.Digest {
		t.Errorf("Ref = %q, want the ID %s", img.Ref, img.Digest)
	}
	if n := dirNames(t, filepath.Join(store.Dir, "refs")); len(n) != 0 {
		t.Errorf("refs recorded: %v", n)
	}
	if got, err := store.Image(img.Digest); err != nil || got.Root != img.Root {
		t.Errorf("Image(ID) = %v, %v", got, err)
	}
}
