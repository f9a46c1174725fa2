package pods

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/onionpod/onionpod/internal/errkind"
)

// TestWriteArchiveRoundTrip: an image sent to one store (a `docker save` archive, its layers
// kept uncompressed; an OCI layout, kept gzipped) is written by WriteArchive and loaded by
// another store as the same image ID, with the same files and config. An image whose config the
// store does not keep is NotFound; a prune removes the config with the image.
func TestWriteArchiveRoundTrip(t *testing.T) {
	ctx := context.Background()
	src := &ImageStore{Dir: t.TempDir()}
	docker := filepath.Join(t.TempDir(), "docker.tar")
	writeDockerArchive(t, docker, "onionpod.example/site:1", busyboxImage(t, pageTar(t, "docker\n")))
	layoutDir := t.TempDir()
	writeLayout(t, layoutDir, "onionpod.example/site:2", busyboxImage(t, pageTar(t, "layout\n")))
	fromDocker, err := src.LoadArchive(ctx, docker, nil)
	if err != nil {
		t.Fatal(err)
	}
	fromLayout, err := src.LoadLayout(ctx, layoutDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range []*Image{fromDocker, fromLayout} {
		var buf bytes.Buffer
		if err := src.WriteArchive(ctx, &buf, img.Digest); err != nil {
			t.Fatal(err)
		}
		dst := &ImageStore{Dir: t.TempDir()}
		got, err := dst.LoadArchiveStream(ctx, &buf, nil)
		if err != nil {
			t.Fatalf("%s: load the written archive: %v", img.Ref, err)
		}
		if got.Digest != img.Digest || got.Ref != img.Digest || !reflect.DeepEqual(got.Config, img.Config) || readPage(t, got) != readPage(t, img) {
			t.Errorf("%s: loaded back as %+v, want %+v", img.Ref, got, img)
		}
	}

	hexID := strings.TrimPrefix(fromDocker.Digest, "sha256:")
	if err := os.Remove(src.configPath(hexID)); err != nil {
		t.Fatal(err)
	}
	if src.CanWriteArchive(fromDocker.Digest) || !src.CanWriteArchive(fromLayout.Digest) {
		t.Error("CanWriteArchive: wrong")
	}
	if err := src.WriteArchive(ctx, &bytes.Buffer{}, fromDocker.Digest); !errors.Is(err, errkind.NotFound) {
		t.Errorf("WriteArchive of an image without its config: %v, want NotFound", err)
	}
	if _, err := src.LoadArchive(ctx, docker, nil); err != nil { // loaded again: the config is kept
		t.Fatal(err)
	}
	if err := src.WriteArchive(ctx, &bytes.Buffer{}, fromDocker.Digest); err != nil {
		t.Errorf("WriteArchive after a new load: %v", err)
	}
	if _, err := src.Prune(ctx, []string{fromLayout.Digest}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(src.configPath(hexID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the pruned image's config: %v", err)
	}
}
