package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/daemon"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/pods"
)

// submitClient is the part of the LocalAPI that changing an app uses (run, expose, unexpose).
type submitClient interface {
	App(ctx context.Context, name string) (api.AppStatus, error)
	Put(ctx context.Context, app store.App) (api.AppStatus, error)
	Wait(ctx context.Context, name, what string, generation int64, timeout time.Duration) (api.AppStatus, error)
	LoadImage(ctx context.Context, archive io.Reader) (api.ImageInfo, error)
	Update(ctx context.Context, name string, req api.UpdateRequest) (api.UpdateResult, error)
}

// change is one change of an app made through the daemon.
type change struct {
	App string
	// Flags are the flags given (nil: none): laid over the app's record first.
	Flags *appFlags
	// Adjust then changes the record (exists: the app had a record).
	Adjust func(app *store.App, exists bool) error
	// Prefetch fetches a registry image here first, with a progress bar (nil: never).
	Prefetch func(ctx context.Context, ref string)
	// Wait: once stored, wait until the daemon has applied this very change and the app runs.
	Wait bool
	// ReResolve: the registry references of the app's containers are resolved again (the user
	// named the image); a container that runs another image then is updated (deferImages).
	ReResolve bool
	// Out gets what the updates the change calls for did.
	Out io.Writer
}

// submitted is what submit returns: the app's status (once it runs, when asked to wait) and how
// long the daemon took.
type submitted struct {
	Status api.AppStatus
	Took   time.Duration
}

// submit is what run, expose and unexpose share. The caller has checked the name and the flags
// (appFlags.check). It sends a local image to the daemon, lays the given flags over the app's
// current record (or a new one), lets Adjust change it, validates it, prefetches the image,
// stores the record through the daemon (again from a fresh read when another change came
// first) and, with Wait, waits until the daemon has applied this very change and the app runs.
func submit(ctx context.Context, client submitClient, c change) (submitted, error) {
	if c.Flags != nil && c.Flags.localImage != "" {
		sendCtx, cancel := ctx, context.CancelFunc(func() {})
		if c.Flags.Timeout > 0 {
			sendCtx, cancel = context.WithTimeout(ctx, c.Flags.Timeout) // waiting for a turn included
		}
		sent, err := sendImage(sendCtx, client, c.Flags.localImage)
		cancel()
		if err != nil {
			return submitted{}, err
		}
		c.Flags.sent = sent
	}
	prefetched := false
	start := time.Now()
	var updates []imageUpdate
	st, err := update(ctx, client, c.App, func(app *store.App, exists bool) error {
		before := *app
		if c.Flags != nil {
			if err := c.Flags.apply(app); err != nil {
				return err
			}
		}
		if err := c.Adjust(app, exists); err != nil {
			return err
		}
		if err := app.Validate(); err != nil {
			return err
		}
		updates = deferImages(before, exists, app, c.ReResolve)
		if !prefetched && c.Prefetch != nil {
			for _, ct := range app.Containers {
				c.Prefetch(ctx, ct.Image)
			}
			prefetched, start = true, time.Now()
		}
		return nil
	})
	if err != nil || !c.Wait && len(updates) == 0 {
		return submitted{Status: st, Took: time.Since(start)}, err
	}
	timeout := time.Minute
	if c.Flags != nil {
		timeout = c.Flags.Timeout
	}
	st, err = client.Wait(ctx, c.App, api.WaitRunning, st.App.Generation, timeout)
	if err != nil || len(updates) == 0 {
		return submitted{Status: st, Took: time.Since(start)}, err
	}
	if c.Prefetch != nil {
		for _, u := range updates {
			if ct, ok := st.App.Container(u.Container); ok {
				c.Prefetch(ctx, cmp.Or(u.Image, ct.Image))
			}
		}
	}
	out := c.Out
	if out == nil {
		out = io.Discard
	}
	if updated, err := runUpdates(ctx, client, c.App, updates, 0, false, out); err != nil {
		return submitted{Status: st, Took: time.Since(start)}, err
	} else if updated.App.Name != "" {
		st = updated
	}
	return submitted{Status: st, Took: time.Since(start)}, nil
}

// maxUpdateAttempts bounds how often update re-reads and re-applies a change that lost a race
// with another one.
const maxUpdateAttempts = 50

// update reads the app's record (a new one when it does not exist), lets change edit it, and
// stores it through the daemon, based on the generation it read: when another change came in
// between (ErrConflict), it reads the record again and re-applies change, a bounded number of
// times. It returns the status with the stored record (its new generation).
func update(ctx context.Context, client submitClient, name string, change func(app *store.App, exists bool) error) (api.AppStatus, error) {
	for attempt := 1; ; attempt++ {
		app, exists, err := currentApp(ctx, client, name)
		if err != nil {
			return api.AppStatus{}, err
		}
		if err := change(&app, exists); err != nil {
			return api.AppStatus{}, err
		}
		st, err := client.Put(ctx, app)
		if !errors.Is(err, api.ErrConflict) {
			return st, err
		}
		if attempt == maxUpdateAttempts {
			return st, fmt.Errorf("%s changed %d times while this change was being made: %w", name, attempt, err)
		}
		select { // let the other writer finish; spread retries apart
		case <-time.After(time.Duration(1+rand.IntN(10*attempt)) * time.Millisecond):
		case <-ctx.Done():
			return st, ctx.Err()
		}
	}
}

// currentApp fetches the app's record from the daemon, or a fresh one if it does not exist (or
// its record is damaged: a new record replaces it).
func currentApp(ctx context.Context, client submitClient, name string) (store.App, bool, error) {
	st, err := client.App(ctx, name)
	if errors.Is(err, api.ErrNotFound) || err == nil && st.State == api.StateDamaged {
		return store.App{Name: name}, false, nil
	}
	if err != nil {
		return store.App{}, false, err
	}
	return st.App, true, nil
}

// A local image (a `docker save` tarball, an OCI archive or an OCI layout directory) is read by
// the CLI, as the user who names it, and sent to the daemon, which loads it: the daemon never
// opens a path a user names.

// imageSender is the part of the LocalAPI that sends local images.
type imageSender interface {
	LoadImage(ctx context.Context, archive io.Reader) (api.ImageInfo, error)
}

// sendImage sends the local image at path to the daemon and returns what it loaded as.
func sendImage(ctx context.Context, client imageSender, path string) (api.ImageInfo, error) {
	// The daemon takes a few uploads per user at a time (429): wait for a turn, as long as the
	// command may wait, sending the image again from its start.
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		info, err := sendImageOnce(ctx, client, path)
		if !errors.Is(err, api.ErrBusy) {
			return info, err
		}
		select {
		case <-ctx.Done():
			return info, fmt.Errorf("%w (still busy when the command's time ran out)", err)
		case <-time.After(delay):
		}
	}
}

// sendImageOnce sends the local image at path (an archive, or a layout directory as an OCI
// archive) to the daemon once.
func sendImageOnce(ctx context.Context, client imageSender, path string) (api.ImageInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return api.ImageInfo{}, errkind.BadInputf("image %s: %w", path, err)
	}
	if st.IsDir() {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(pods.WriteLayoutArchive(ctx, pw, path)) }()
		defer pr.Close()
		return client.LoadImage(ctx, pr)
	}
	f, err := pods.OpenLocal(path)
	if err != nil {
		return api.ImageInfo{}, err
	}
	defer f.Close()
	return client.LoadImage(ctx, f)
}

// imageCache is the box's image store as a prefetch uses it (*pods.ImageStore).
type imageCache interface {
	Image(ref string) (*pods.Image, error)
	Pull(ctx context.Context, ref string, progress io.Writer) (*pods.Image, error)
}

// prefetcher returns what pulls an app's registry image into the box's image store with a
// progress bar, when the user watches a terminal (streams.ErrTTY) and images gives a store (root
// only): the daemon then finds it cached. Otherwise (scripts, the lab, another user) it returns
// nil and the daemon pulls the image itself, in the background. A failure here is only
// reported: the daemon tries again and its error is the one that counts.
func prefetcher(streams IO, images func() (imageCache, error)) func(ctx context.Context, ref string) {
	if !streams.ErrTTY || images == nil {
		return nil
	}
	return func(ctx context.Context, ref string) {
		if !daemon.RegistryImage(ref) {
			return
		}
		cache, err := images()
		if err != nil || cache == nil {
			return
		}
		if r, ok := cache.(imageRefresher); ok {
			// What the registry names now (one HEAD when the store has it already).
			if _, _, err := r.Refresh(ctx, ref, streams.Err); err != nil {
				fmt.Fprintf(streams.Err, "note: fetching %s here failed (%v); the daemon tries again\n", ref, err)
			}
			return
		}
		if _, err := cache.Image(ref); err == nil {
			return // already cached
		}
		if _, err := cache.Pull(ctx, ref, streams.Err); err != nil {
			fmt.Fprintf(streams.Err, "note: fetching %s here failed (%v); the daemon tries again\n", ref, err)
		}
	}
}
