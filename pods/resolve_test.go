package pods

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/onionpod/onionpod/internal/lab/hostcheck"
	"github.com/onionpod/onionpod/internal/lab/registry"
	"github.com/onionpod/onionpod/internal/lab/registry/registrytest"
	"github.com/onionpod/onionpod/internal/netnsfile"
)

// pageTar is a layer holding /www/index.html with page.
func pageTar(t testing.TB, page string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "www/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	if err := tw.WriteHeader(&tar.Header{Name: "www/index.html", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(page))}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(tw, page); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pushPage builds busybox + a page layer, saves it as a `docker save` archive and pushes it to
// reg as repoTag with skopeo (what a user's CI would do).
func pushPage(t *testing.T, reg *registry.Registry, repoTag, page string) {
	t.Helper()
	archive := filepath.Join(t.TempDir(), "image.tar")
	writeDockerArchive(t, archive, "onionpod.example/site:build", busyboxImage(t, pageTar(t, page)))
	if err := reg.Push(t.Context(), archive, repoTag); err != nil {
		t.Fatal(err)
	}
}

func readPage(t *testing.T, img *Image) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(img.Root, "www/index.html"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func resetRequests(t *testing.T, reg *registry.Registry) {
	t.Helper()
	if err := reg.ResetRequests(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// blobGets lists the blob digests fetched with GET since the last reset.
func blobGets(t *testing.T, reg *registry.Registry) (blobs []string, manifestGets, manifestHeads int) {
	t.Helper()
	if err := reg.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, q := range reg.Requests() {
		_, blob, isBlob := strings.Cut(q.Path, "/blobs/")
		switch {
		case isBlob && q.Method == "GET":
			blobs = append(blobs, blob)
		case strings.Contains(q.Path, "/manifests/") && q.Method == "GET":
			manifestGets++
		case strings.Contains(q.Path, "/manifests/") && q.Method == "HEAD":
			manifestHeads++
		}
	}
	return blobs, manifestGets, manifestHeads
}

// A tag re-pushed at a real registry (Debian's docker-registry, images pushed by skopeo) is seen:
// Resolve answers the new manifest digest with one HEAD request, Refresh fetches only the new
// layer and the new config, the old image stays in the store by its ID, and a Refresh with
// nothing new asks the registry one HEAD and fetches nothing.
func TestRefreshSeesARepushedTag(t *testing.T) {
	reg := registrytest.New(t)
	ctx := t.Context()
	ref := reg.Ref("site:latest")
	pushPage(t, reg, "site:latest", "v1\n")

	s := &ImageStore{Dir: t.TempDir()}
	img1, err := s.Pull(ctx, ref, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := readPage(t, img1); got != "v1\n" {
		t.Fatalf("v1 page = %q", got)
	}
	d1, err := s.Resolve(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if img1.RepoDigest != d1 || !strings.HasPrefix(d1, "sha256:") {
		t.Fatalf("pulled RepoDigest %q, the registry resolves %q", img1.RepoDigest, d1)
	}
	if got, err := s.Image(ref); err != nil || got.RepoDigest != d1 {
		t.Fatalf("Image(%s) = %+v, %v; want RepoDigest %s", ref, got, err, d1)
	}

	// Nothing new: one HEAD, nothing fetched.
	resetRequests(t, reg)
	same, changed, err := s.Refresh(ctx, ref, io.Discard)
	if err != nil || changed || same.Digest != img1.Digest {
		t.Fatalf("Refresh with nothing new = %v, changed %v, %v", same, changed, err)
	}
	if blobs, gets, heads := blobGets(t, reg); len(blobs) != 0 || gets != 0 || heads != 1 {
		t.Fatalf("Refresh with nothing new: %d blob GETs, %d manifest GETs, %d HEADs; want 0, 0, 1", len(blobs), gets, heads)
	}

	// v2 under the same tag.
	pushPage(t, reg, "site:latest", "v2\n")
	d2, err := s.Resolve(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if d2 == d1 {
		t.Fatalf("the re-pushed tag still resolves to %s", d1)
	}
	r, _ := name.ParseReference(ref)
	remoteImg, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := remoteImg.Layers()
	if err != nil {
		t.Fatal(err)
	}
	newLayer, _ := layers[1].Digest()
	cfgDigest, _ := remoteImg.ConfigName()

	resetRequests(t, reg)
	img2, changed, err := s.Refresh(ctx, ref, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !changed || img2.Digest == img1.Digest || img2.RepoDigest != d2 {
		t.Fatalf("Refresh after a re-push: changed %v, id %s (was %s), repo digest %s (want %s)", changed, img2.Digest, img1.Digest, img2.RepoDigest, d2)
	}
	if got := readPage(t, img2); got != "v2\n" {
		t.Fatalf("after Refresh the page is %q, want v2", got)
	}
	blobs, gets, _ := blobGets(t, reg)
	want := map[string]bool{newLayer.String(): true, cfgDigest.String(): true}
	for _, b := range blobs {
		if !want[b] {
			t.Errorf("Refresh fetched blob %s: only the new layer %s and the config %s are new", b, newLayer, cfgDigest)
		}
		delete(want, b)
	}
	if len(want) > 0 || gets != 1 {
		t.Errorf("Refresh fetched blobs %v and %d manifests; want the new layer, the config and one manifest", blobs, gets)
	}

	// The tag names v2 now; v1 stays by its ID, for a rollback.
	if got, err := s.Image(ref); err != nil || got.Digest != img2.Digest {
		t.Fatalf("Image(%s) = %v, %v; want %s", ref, got, err, img2.Digest)
	}
	old, err := s.Image(img1.Digest)
	if err != nil {
		t.Fatalf("the previous image is gone: %v", err)
	}
	if got := readPage(t, old); got != "v1\n" {
		t.Fatalf("the previous image's page is %q", got)
	}

	// A reference by digest resolves to itself without a request.
	pinned := r.Context().Digest(d1).String()
	resetRequests(t, reg)
	if got, err := s.Resolve(ctx, pinned); err != nil || got != d1 {
		t.Fatalf("Resolve(%s) = %s, %v", pinned, got, err)
	}
	if _, gets, heads := blobGets(t, reg); gets+heads != 0 {
		t.Errorf("resolving a digest reference asked the registry")
	}
}

// Resolve and Refresh refuse a malformed reference as bad input, and report a tag the
// registry does not have, changing nothing.
func TestRefreshBadAndMissing(t *testing.T) {
	reg := registrytest.New(t)
	s := &ImageStore{Dir: t.TempDir()}
	if _, err := s.Resolve(t.Context(), "Not A Ref"); !errors.Is(err, ErrBadInput) {
		t.Errorf("Resolve of a malformed reference = %v, want ErrBadInput", err)
	}
	if _, _, err := s.Refresh(t.Context(), reg.Ref("nothing:here"), io.Discard); err == nil {
		t.Fatal("Refresh of a missing tag succeeded")
	}
	if n := dirNames(t, filepath.Join(s.Dir, "images")); len(n) != 0 {
		t.Errorf("a failed Refresh left images %v", n)
	}
}

const envInsecureChild = "PODS_INSECURE_REGISTRY_CHILD"

// A registry on a LAN address without a certificate is reached over plain HTTP only when it is
// listed in InsecureRegistries (go-containerregistry speaks HTTP by itself only to loopback and
// RFC 1918 registries). The registry runs in a network namespace of the test's own, on a
// documentation address; the pulls run in a child process inside that namespace.
func TestInsecureRegistries(t *testing.T) {
	if ref := os.Getenv(envInsecureChild); ref != "" {
		insecureChild(t, ref)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (a network namespace)")
	}
	nsPath := filepath.Join(t.TempDir(), "netns")
	if err := netnsfile.Create(nsPath, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netnsfile.Remove(nsPath) })
	for _, argv := range [][]string{{"ip", "link", "set", "lo", "up"}, {"ip", "addr", "add", "2001:db8:5::1/128", "dev", "lo"}} {
		if out, err := exec.Command("nsenter", append([]string{"--net=" + nsPath, "--"}, argv...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", argv, err, out)
		}
	}
	if err := hostcheck.Missing(hostcheck.Registry, hostcheck.Skopeo); err != nil {
		t.Skip(err)
	}
	reg, err := registry.Start(t.Context(), registry.Options{Dir: t.TempDir(), Host: "2001:db8:5::1", Port: 5000, Netns: nsPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	pushPage(t, reg, "site:1", "lan\n")
	cmd := exec.Command("nsenter", "--net="+nsPath, "--", os.Args[0], "-test.run=^TestInsecureRegistries$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), envInsecureChild+"="+reg.Ref("site:1"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
}

func insecureChild(t *testing.T, ref string) {
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	plain := &ImageStore{Dir: t.TempDir()}
	if _, err := plain.Pull(t.Context(), ref, io.Discard); err == nil {
		t.Errorf("pulled %s over plain HTTP without it being listed", ref)
	} else {
		t.Logf("not listed: %v", err)
	}
	listed := &ImageStore{Dir: t.TempDir(), InsecureRegistries: []string{r.Context().RegistryStr()}}
	img, err := listed.Pull(t.Context(), ref, io.Discard)
	if err != nil {
		t.Fatalf("listed %s: %v", r.Context().RegistryStr(), err)
	}
	if got := readPage(t, img); got != "lan\n" {
		t.Errorf("page %q", got)
	}
	if _, _, err := listed.Refresh(t.Context(), ref, io.Discard); err != nil {
		t.Errorf("Refresh: %v", err)
	}
}
