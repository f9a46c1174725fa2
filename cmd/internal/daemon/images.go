package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/reconcile"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/pods"
)

// maxUploadBytes bounds an image archive sent to the daemon: the image store's budget for one
// image's layers (16 GiB) and room for the archive's headers, configs and manifests.
const maxUploadBytes = 16<<30 + 64<<20

// archiveLoader loads an image archive from a stream: an archive the CLI read as the user who
// named it and sent over the API. The daemon never opens a path a user names.
// (*pods.ImageStore).LoadArchiveStream is it.
type archiveLoader interface {
	LoadArchiveStream(ctx context.Context, r io.Reader, progress io.Writer) (*pods.Image, error)
}

// loadImage loads an archive sent by a client into the image store and says what it loaded.
func (d *Daemon) loadImage(ctx context.Context, r io.Reader) (api.ImageInfo, error) {
	img, err := d.parts.loader.LoadArchiveStream(ctx, r, io.Discard)
	if err != nil {
		return api.ImageInfo{}, err
	}
	d.sent.add(img.Digest, time.Now())
	d.log.Info("image loaded", "id", img.Digest, "ref", img.Ref)
	return api.ImageInfo{ID: img.Digest, Ref: img.Ref}, nil
}

// imageInfo says whether the image store has the image of this ID (NotFound when it has not).
func (d *Daemon) imageInfo(id string) (api.ImageInfo, error) {
	if !UploadedImage(id) {
		return api.ImageInfo{}, errkind.BadInputf("daemon: image %q: want an ID, sha256:HEX", id)
	}
	img, err := d.parts.images.Image(id)
	if err != nil {
		return api.ImageInfo{}, err
	}
	return api.ImageInfo{ID: img.Digest}, nil
}

// uploadGrace is how long a prune spares an image sent by the CLI that no record names yet:
// `onionpod run --image FILE` sends the image first, then stores the record naming it.
const uploadGrace = 10 * time.Minute

// sentImages remembers when images were sent to this daemon (loadImage) until a record names
// them (claim), for prune.
type sentImages struct {
	mu sync.Mutex
	at map[string]time.Time // image ID -> when it was last sent
}

func (s *sentImages) add(id string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.at == nil {
		s.at = map[string]time.Time{}
	}
	s.at[id] = now
}

// claim forgets an image sent, once a record names it: from then on the record keeps it.
func (s *sentImages) claim(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.at, id)
}

// since returns the images sent after cutoff, and forgets the others.
func (s *sentImages) since(cutoff time.Time) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, at := range s.at {
		if at.After(cutoff) {
			ids = append(ids, id)
		} else {
			delete(s.at, id)
		}
	}
	return ids
}

// imagesInUse maps each image ID an app's record names to those apps: every app's image, and a
// held app's by its last good record. It fails when an app's image cannot be known (a held app
// with no good record, an image record that does not read): then nothing may be pruned.
func (d *Daemon) imagesInUse() (map[string][]string, error) {
	apps, held, err := d.store.List()
	if err != nil {
		return nil, err
	}
	for _, h := range held {
		if h.Last == nil {
			return nil, errkind.Conflictf("daemon: app %q is held with no good record, so the image its pod runs is unknown: "+
				"`onionpod run %s --image REF|--static DIR ...` or `onionpod rm %s` first", h.Name, h.Name, h.Name)
		}
		apps = append(apps, *h.Last)
	}
	inUse := map[string][]string{}
	used := map[[2]string]bool{}
	use := func(id, app string) {
		if !used[[2]string{id, app}] {
			used[[2]string{id, app}] = true
			inUse[id] = append(inUse[id], app)
		}
	}
	// Apps mostly share images: each image is looked up once (its record read from disk), not
	// once per container (1000 apps of one image: 40 ms of every rm's prune).
	digests := map[string]string{}
	for _, app := range apps {
		for _, c := range app.Containers {
			if c.Static != "" {
				continue // the store's empty root, which a prune keeps
			}
			if c.PreviousImageID != "" {
				use(c.PreviousImageID, app.Name) // what a rollback returns to
			}
			key := cmp.Or(c.ImageID, c.Image)
			digest, seen := digests[key]
			if !seen {
				img, err := d.parts.pods.cached(c)
				switch {
				case errors.Is(err, reconcile.ErrImageMissing):
					// not in the store (yet): nothing of it to keep
				case err != nil:
					return nil, fmt.Errorf("daemon: app %q: container %s: %w", app.Name, c.Name, err)
				default:
					digest = img.Digest
				}
				digests[key] = digest
			}
			if digest != "" {
				use(digest, app.Name)
			}
		}
	}
	return inUse, nil
}

// images lists the image store's images with the apps using them.
func (d *Daemon) images() ([]api.Image, error) {
	list, err := d.parts.images.List()
	if err != nil {
		return nil, err
	}
	inUse, err := d.imagesInUse()
	if err != nil && !errors.Is(err, errkind.Conflict) {
		return nil, err
	}
	out := make([]api.Image, 0, len(list))
	for _, img := range list {
		apps := inUse[img.ID]
		sort.Strings(apps)
		out = append(out, api.Image{ID: img.ID, Refs: img.Refs, Size: img.Size, LastUsed: img.LastUsed, Apps: apps})
	}
	return out, nil
}

// pruneImages removes the images no app uses: those no record names (a held app's last good
// one counts), except images sent in the last uploadGrace, whose record may be on its way. It
// holds the state dir's lock throughout, so that no record naming an image can be stored
// between the choice and the removal; it waits at most wait for loads and pulls in progress
// (the image store's lock) and fails, removing nothing, if they last longer.
func (d *Daemon) pruneImages(ctx context.Context, wait time.Duration) (api.PruneReport, error) {
	var report pods.PruneReport
	err := d.store.Update(ctx, func(*store.Tx) error {
		inUse, err := d.imagesInUse()
		if err != nil {
			return err
		}
		keep := d.sent.since(time.Now().Add(-uploadGrace))
		for id := range inUse {
			keep = append(keep, id)
		}
		ctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		report, err = d.parts.images.Prune(ctx, keep)
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("daemon: image prune: images are being loaded or pulled: try again once they are in (%w)", err)
		}
		return err
	})
	if err != nil {
		return api.PruneReport{}, err
	}
	if len(report.Images) > 0 || report.Layers > 0 {
		d.log.Info("images pruned", "images", len(report.Images), "layers", report.Layers, "bytes", report.Bytes)
	}
	return api.PruneReport{Images: report.Images, Layers: report.Layers, Bytes: report.Bytes}, nil
}

// How long a prune waits for loads and pulls in progress: asked for (image prune), and after
// an app's removal or an update's end, which it must not hold up.
const (
	pruneWait      = 30 * time.Second
	pruneAfterWait = time.Second
)

// pruneAfter removes the images no app uses any more, after what happened to app (an rm, an
// update kept or rolled back: the image before the previous one, or the rejected one, is no
// longer needed). A prune that cannot run now is only logged: what came before succeeded,
// and the next one or `onionpod image prune` removes them.
func (d *Daemon) pruneAfter(ctx context.Context, app, what string) {
	if _, err := d.pruneImages(ctx, pruneAfterWait); err != nil {
		d.log.Info("images not pruned after "+what, "app", app, "err", err)
	}
}
