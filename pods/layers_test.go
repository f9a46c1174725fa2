package pods

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// A hostile image that claims another image's layer (its DiffID) with other content, content
// that even fails to unpack for an ordinary reason, must not poison the layer cache: the
// legitimate image still loads afterwards.
func TestLayerCachePoisoning(t *testing.T) {
	ctx := context.Background()
	legit := busyboxImage(t)
	legitCfg, err := legit.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	// The hostile image: a layer whose entry name is too long for the file system (an ordinary
	// unpack error, not a refused layer), under the legitimate layer's DiffID.
	poison := tarOf(t, entry{name: "www/" + strings.Repeat("a", 300), body: "poison"})
	hostile, err := mutate.AppendLayers(empty.Image, layerOf(t, poison))
	if err != nil {
		t.Fatal(err)
	}
	hcf, err := hostile.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	hcf = hcf.DeepCopy()
	hcf.RootFS.DiffIDs = []v1.Hash{legitCfg.RootFS.DiffIDs[0]}
	hcf.Config.Entrypoint = []string{"/bin/busybox"}
	if hostile, err = mutate.ConfigFile(hostile, hcf); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeLayout(t, filepath.Join(dir, "hostile"), "example.com/hostile:1", hostile)
	writeLayout(t, filepath.Join(dir, "legit"), "example.com/legit:1", legit)

	store := &ImageStore{Dir: filepath.Join(dir, "store")}
	if _, err := store.LoadLayout(ctx, filepath.Join(dir, "hostile"), nil); err == nil {
		t.Fatal("the hostile image loaded")
	}
	if n := dirNames(t, filepath.Join(store.Dir, "layers")); len(n) != 0 {
		t.Errorf("layers cached after the hostile image: %v", n)
	}
	img, err := store.LoadLayout(ctx, filepath.Join(dir, "legit"), nil)
	if err != nil {
		t.Fatalf("the legitimate image after the hostile one: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(img.Root, "www/index.html")); err != nil || string(b) != indexPage {
		t.Errorf("index.html = %q, %v", b, err)
	}
}

// smallImage is an image of the given layers without busybox (so a small byte budget fits).
func smallImage(t *testing.T, layers ...[]byte) v1.Image {
	t.Helper()
	var ls []v1.Layer
	for _, l := range layers {
		ls = append(ls, layerOf(t, l))
	}
	img, err := mutate.AppendLayers(empty.Image, ls...)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{Entrypoint: []string{"/bin/app"}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// Bytes after a layer's tar end (which the DiffID covers, so the image is consistent) count
// toward the image's byte budget like any other: here two layers of tiny files, each followed
// by 600 KiB of zeros, are over a 1 MiB budget.
func TestTrailingDataCountsTowardBudget(t *testing.T) {
	ctx := context.Background()
	padded := func(name string) []byte {
		return append(tarOf(t, entry{name: name, body: "x"}), make([]byte, 600<<10)...)
	}
	dir := t.TempDir()
	archive := filepath.Join(dir, "padded.tar")
	writeDockerArchive(t, archive, "example.com/padded:1", smallImage(t, padded("a"), padded("b")))
	store := &ImageStore{Dir: filepath.Join(dir, "store"), MaxImageBytes: 1 << 20}
	if _, err := store.LoadArchive(ctx, archive, nil); !errors.Is(err, ErrHostileLayer) {
		t.Fatalf("LoadArchive = %v, want ErrHostileLayer (over the byte budget)", err)
	}
	// (A verified layer may stay cached until a prune: it is what its DiffID says.)
	for _, d := range []string{"roots", "images", "refs", "tmp"} {
		if n := dirNames(t, filepath.Join(store.Dir, d)); len(n) != 0 {
			t.Errorf("%s holds %v after a refused image", d, n)
		}
	}
	// The same files without the padding fit.
	writeDockerArchive(t, archive, "example.com/small:1", smallImage(t,
		tarOf(t, entry{name: "a", body: "x"}), tarOf(t, entry{name: "b", body: "x"})))
	if _, err := store.LoadArchive(ctx, archive, nil); err != nil {
		t.Fatalf("small image: %v", err)
	}
}

// An image has at most maxLayers layers.
func TestLayerCountBounded(t *testing.T) {
	ctx := context.Background()
	var layers [][]byte
	for i := range 129 {
		layers = append(layers, tarOf(t, entry{name: "f", body: strings.Repeat("x", i+1)}))
	}
	dir := t.TempDir()
	archive := filepath.Join(dir, "many.tar")
	writeDockerArchive(t, archive, "example.com/many:1", smallImage(t, layers...))
	store := &ImageStore{Dir: filepath.Join(dir, "store")}
	if _, err := store.LoadArchive(ctx, archive, nil); !errors.Is(err, ErrHostileLayer) {
		t.Fatalf("LoadArchive of 129 layers = %v, want ErrHostileLayer", err)
	}
	if n := dirNames(t, filepath.Join(store.Dir, "layers")); len(n) != 0 {
		t.Errorf("%d layers cached", len(n))
	}
	writeDockerArchive(t, archive, "example.com/many:2", smallImage(t, layers[:128]...))
	if _, err := store.LoadArchive(ctx, archive, nil); err != nil {
		t.Fatalf("128 layers: %v", err)
	}
}

// A prune while a pull is half-way (its first layer cached, the second one stalled in the
// registry) waits for the pull instead of removing its layer, and the image it then loads is
// kept by a prune that was already waiting.
func TestPruneDuringLoad(t *testing.T) {
	ctx := context.Background()
	img := busyboxImage(t, tarOf(t, entry{name: "www/late.html", body: "late"}))
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	stalled, err := layers[1].Digest()
	if err != nil {
		t.Fatal(err)
	}
	reached, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+stalled.String()) {
			once.Do(func() { close(reached) })
			<-release
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/test/late:1"
	push(t, ref, img)

	store := &ImageStore{Dir: t.TempDir()}
	pulled := make(chan error, 1)
	go func() {
		_, err := store.Pull(ctx, ref, nil)
		pulled <- err
	}()
	select {
	case <-reached:
	case err := <-pulled:
		t.Fatalf("pull ended before the stalled layer: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the pull never asked for its second layer")
	}
	if n := dirNames(t, filepath.Join(store.Dir, "layers")); len(n) != 1 {
		t.Fatalf("layers while the second one is stalled: %v", n)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = store.Prune(short, nil)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Prune during a pull = %v, want it to wait (the context's error)", err)
	}
	waiting := make(chan error, 1)
	go func() {
		_, err := store.Prune(ctx, nil)
		waiting <- err
	}()
	time.Sleep(100 * time.Millisecond) // the prune is waiting now
	close(release)
	if err := <-pulled; err != nil {
		t.Fatalf("pull with a prune around: %v", err)
	}
	if err := <-waiting; err != nil {
		t.Fatal(err)
	}
	got, err := store.Image(ref)
	if err != nil {
		t.Fatalf("the image loaded while a prune waited is gone: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(got.Root, "www/late.html")); err != nil || string(b) != "late" {
		t.Errorf("late.html = %q, %v", b, err)
	}
}
