package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/onionpod/onionpod/cmd/internal/reconcile"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/pods"
)

// An app's units are rendered again only when something they are made of changed (a pass asks
// for every app's units): the same record and namespace give the same units without a look at
// the image store; a change of the record, of the namespace or an image root gone shows at once.
func TestUnitsRenderedAgainOnlyOnChange(t *testing.T) {
	images := &pods.ImageStore{Dir: t.TempDir()}
	img, err := images.LoadArchive(context.Background(), demoArchive(t, "hi\n"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	b := &podBuilder{images: images, self: "/usr/bin/onionpod", configPath: "/etc/onionpod/onionpod.toml", netnsDir: "/run/netns"}
	app := store.App{Name: "blog", Generation: 3, Ports: []store.Port{{Public: 80, Target: 80}},
		Containers: []store.Container{{Name: "blog", Image: img.Digest, ImageID: img.Digest, Env: []string{"A=1"}}}}
	first, err := b.Units(context.Background(), app, "/run/netns/onionpod-blog")
	if err != nil {
		t.Fatal(err)
	}
	// The image record unreadable: a rendering would fail, the units of the same record are kept.
	record := filepath.Join(images.Dir, "images")
	if err := os.Rename(record, record+".away"); err != nil {
		t.Fatal(err)
	}
	again, err := b.Units(context.Background(), app.Clone(), "/run/netns/onionpod-blog")
	if err != nil || len(again) != len(first) || &again[0] != &first[0] {
		t.Fatalf("the same app rendered again: %v", err)
	}
	os.Rename(record+".away", record)

	changed := app.Clone()
	changed.Containers[0].Env = []string{"A=2"}
	units, err := b.Units(context.Background(), changed, "/run/netns/onionpod-blog")
	if err != nil || bytes.Equal(units[1].Env, first[1].Env) {
		t.Fatalf("a changed record gave the same units: %v", err)
	}
	units, err = b.Units(context.Background(), changed, "/run/netns/other")
	if err != nil || bytes.Equal(units[1].Content, first[1].Content) {
		t.Fatalf("another netns gave the same units: %v", err)
	}
	if err := os.RemoveAll(img.Root); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Units(context.Background(), changed, "/run/netns/other"); !errors.Is(err, reconcile.ErrImageMissing) {
		t.Fatalf("units of an image whose root is gone: %v, want ErrImageMissing", err)
	}
}
