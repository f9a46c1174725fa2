package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/lab"
	"github.com/onionpod/onionpod/pods"
)

// imagesOnly is a daemon with a store and a real image store in a temp dir, and no other part,
// serving its LocalAPI to an api.Client: enough for the image commands.
func imagesOnly(t *testing.T) (*Daemon, *api.Client) {
	t.Helper()
	cfg := configs.Default()
	cfg.StateDir = t.TempDir()
	d, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	images := &pods.ImageStore{Dir: cfg.ImagesDir()}
	d.parts = &parts{images: images, loader: images, pods: &podBuilder{images: images}}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &http.Server{Handler: d.handler(), ConnContext: withPeer, BaseContext: func(net.Listener) context.Context { return ctx }}
	go srv.Serve(ln)
	t.Cleanup(func() { cancel(); srv.Close(); d.handlers.closeAndWait() })
	return d, api.NewClient(sock)
}

// demoArchive writes an image archive serving page and returns its path.
func demoArchive(t *testing.T, page string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "image.tar")
	if err := lab.WriteDemoImage(path, page); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestImagePrune: image prune removes the images no app uses and keeps every app's image (a
// held app's by its last good record) and an image just sent whose record is on its way; an
// app held with no good record stops the prune (its image is unknown); image ls says which app
// uses which image.
func TestImagePrune(t *testing.T) {
	d, client := imagesOnly(t)
	ctx := t.Context()
	send := func(page string) string {
		t.Helper()
		f, err := os.Open(demoArchive(t, page))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		info, err := client.LoadImage(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		return info.ID
	}
	web, old, pending := send("web\n"), send("old\n"), send("pending\n")
	// An image in the store that was never sent (a pull of an app since removed).
	unused, err := d.parts.images.LoadArchive(ctx, demoArchive(t, "unused\n"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	put := func(app store.App) {
		t.Helper()
		if _, err := client.Put(ctx, app); err != nil {
			t.Fatal(err)
		}
	}
	put(store.App{Name: "web", Containers: []store.Container{{Name: "web", Image: web}}, Ports: []store.Port{{Public: 80, Target: 80}}})
	put(store.App{Name: "old", Containers: []store.Container{{Name: "old", Image: old}}, Ports: []store.Port{{Public: 80, Target: 80}}})
	put(store.App{Name: "site", Containers: []store.Container{{Name: "site", Static: t.TempDir()}}})
	// old's record is damaged: the app is held, and its last good record names its image.
	if err := os.WriteFile(filepath.Join(d.cfg.StateDir, "apps", "old.json"), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}

	list, err := client.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	usedBy := map[string][]string{}
	for _, img := range list {
		usedBy[img.ID] = img.Apps
		if img.Size <= 0 || img.LastUsed.IsZero() {
			t.Errorf("image ls: %+v (want a size and when it was used)", img)
		}
	}
	want := map[string][]string{web: {"web"}, old: {"old"}, pending: nil, unused.Digest: nil}
	if len(usedBy) != len(want) {
		t.Errorf("image ls: %v, want %v", usedBy, want)
	}
	for id, apps := range want {
		if got, ok := usedBy[id]; !ok || !slices.Equal(got, apps) {
			t.Errorf("image ls: %s used by %v (listed: %v), want %v", id, got, ok, apps)
		}
	}

	report, err := client.PruneImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(report.Images, []string{unused.Digest}) || report.Bytes <= 0 {
		t.Errorf("prune: %+v, want only the unused image removed", report)
	}
	// Once the upload is older than the grace, no record having named it, it goes too.
	d.sent.add(pending, time.Now().Add(-uploadGrace-time.Second))
	if report, err = client.PruneImages(ctx); err != nil || !slices.Equal(report.Images, []string{pending}) {
		t.Errorf("prune after the grace: %+v, %v; want the pending image removed", report, err)
	}
	for _, id := range []string{web, old} {
		if _, err := d.parts.images.Image(id); err != nil {
			t.Errorf("image %s of an app was pruned: %v", id, err)
		}
	}

	// An image sent and then named by a record is the record's to keep: removing the app
	// frees it at once (no grace).
	again := send("again\n")
	put(store.App{Name: "brief", Containers: []store.Container{{Name: "brief", Image: again}}, Ports: []store.Port{{Public: 80, Target: 80}}})
	if err := d.store.Update(ctx, func(tx *store.Tx) error { _, err := tx.Delete("brief"); return err }); err != nil {
		t.Fatal(err)
	}
	// A held app with no good record: its image is unknown, so nothing is pruned.
	if err := os.WriteFile(filepath.Join(d.cfg.StateDir, "apps", "ghost.json"), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := client.PruneImages(ctx); !errors.Is(err, errkind.Conflict) {
		t.Errorf("prune with a held app of unknown image: %v, want a conflict", err)
	}
	if _, err := d.parts.images.Image(again); err != nil {
		t.Errorf("a refused prune removed an image: %v", err)
	}
	if err := os.Remove(filepath.Join(d.cfg.StateDir, "apps", "ghost.json")); err != nil {
		t.Fatal(err)
	}
	if report, err = client.PruneImages(ctx); err != nil || !slices.Equal(report.Images, []string{again}) {
		t.Errorf("prune after the app that named an upload was removed: %+v, %v; want it removed", report, err)
	}
}
