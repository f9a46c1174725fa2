package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/daemon"
	"github.com/onionpod/onionpod/cmd/internal/store"
)

// Re-running run, expose or apply with a registry reference resolves it again at the registry,
// and a container that already runs an image changes image only through an update: the new
// image must make the app healthy within the grace period, or the old one is put back. The
// record is stored with the references the containers run now; the updates follow.

// imageUpdate is an update a change of an app calls for: a container's reference resolved
// again (Image ""), or given a new one.
type imageUpdate struct {
	Container string
	Image     string
}

// deferImages keeps in next the registry reference each container of the existing app runs now
// (cur) where next names another registry reference, and returns the updates to make instead:
// those, and with reResolve the containers whose reference stays (resolved again). A container
// new to the app, or that runs no registry image yet, is left to the change itself.
func deferImages(cur store.App, exists bool, next *store.App, reResolve bool) []imageUpdate {
	if !exists {
		return nil
	}
	var out []imageUpdate
	for i := range next.Containers {
		c := &next.Containers[i]
		prev, ok := cur.Container(c.Name)
		if !ok || prev.ImageID == "" || prev.Static != "" || !daemon.RegistryImage(prev.Image) ||
			c.Static != "" || !daemon.RegistryImage(c.Image) {
			continue
		}
		switch {
		case c.Image != prev.Image:
			out = append(out, imageUpdate{Container: c.Name, Image: c.Image})
		case reResolve:
			out = append(out, imageUpdate{Container: c.Name})
		default:
			continue
		}
		c.Image, c.ImageID = prev.Image, prev.ImageID
	}
	return out
}

// updater is the part of the LocalAPI that makes the updates a change calls for.
type updater interface {
	Update(ctx context.Context, name string, req api.UpdateRequest) (api.UpdateResult, error)
}

// runUpdates makes the updates of app one after the other (each waits until the app is healthy
// or rolled back), printing what each did; a rollback ends them with an error (exit 1). With
// check, it only says which containers' registries have new images.
func runUpdates(ctx context.Context, client updater, app string, updates []imageUpdate, grace time.Duration, check bool, out io.Writer) (api.AppStatus, error) {
	var st api.AppStatus
	for _, u := range updates {
		res, err := client.Update(ctx, app, api.UpdateRequest{Container: u.Container, Image: u.Image, Grace: grace, Check: check})
		if err != nil {
			return st, err
		}
		st = res.Status
		if res.Result != api.UpdateUpToDate {
			printUpdate(out, res)
		}
		if res.Result == api.UpdateRolledBack {
			return st, fmt.Errorf("%s: %w: %s", app, errUpdateFailed, res.Reason)
		}
	}
	return st, nil
}
