package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"filippo.io/age"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/appbackup"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/onion"
	"github.com/onionpod/onionpod/pods"
)

// Whole-app backups (package appbackup) run in the daemon, which owns the state: the records,
// the keys, the volumes. The daemon is appbackup's Source and Target (boxApps): an app is
// quiesced by holding it stopped (its containers stop; the passes leave it so until it is
// resumed), a volume a container's backup hook covers is dumped and loaded back by that hook,
// run in the container's sandbox.

// hookTimeout bounds one dump or restore hook.
const hookTimeout = time.Hour

// loadWait bounds the wait for a restored app to run before its dumps are loaded.
const loadWait = 10 * time.Minute

// quiesced counts, per app, those who hold it stopped (a backup, a restore).
type quiesced struct {
	mu   sync.Mutex
	held map[string]int
}

func (q *quiesced) add(app string, n int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.held == nil {
		q.held = map[string]int{}
	}
	q.held[app] += n
	if q.held[app] <= 0 {
		delete(q.held, app)
	}
}

func (q *quiesced) has(app string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.held[app] > 0
}

// holdStopped marks the apps the passes must keep stopped now (desired): quiesced ones.
func (d *Daemon) holdStopped(apps []store.App) {
	for i := range apps {
		if d.quiesced.has(apps[i].Name) {
			apps[i].Stopped = true
		}
	}
}

// boxApps is the daemon as appbackup's Source and Target.
type boxApps struct{ d *Daemon }

// Describe returns the app's record (its JSON), volumes and the images it runs that were sent to
// the box (no registry serves them: the backup holds them): a volume some container's backup
// hook covers is dumped, unless the app is stopped (its files are then consistent as they are).
func (b boxApps) Describe(_ context.Context, name string) (appbackup.App, error) {
	app, err := b.d.store.Get(name)
	if err != nil {
		return appbackup.App{}, err
	}
	rec, err := json.Marshal(app)
	if err != nil {
		return appbackup.App{}, err
	}
	return appbackup.App{Name: name, Record: rec, Volumes: volumesOf(app, !app.Stopped), Images: b.sentImagesOf(app)}, nil
}

// sentImagesOf lists the IDs of the images the app's containers run that were sent to the box
// as archives (each once). An image loaded by an older onionpod, which kept too little of it to
// write it back, is left out (a restore then needs it sent first, as before): a warning says so.
func (b boxApps) sentImagesOf(app store.App) []string {
	var out []string
	for _, c := range app.Containers {
		id := cmpOr(c.ImageID, c.Image)
		if c.Static != "" || RegistryImage(c.Image) || !UploadedImage(id) || slices.Contains(out, id) {
			continue
		}
		if !b.d.parts.images.CanWriteArchive(id) {
			b.d.log.Warn("backup without an image: loaded by an older onionpod, it cannot be written back; load it again (onionpod image load FILE) to have it in backups",
				"app", app.Name, "container", c.Name, "image", id)
			continue
		}
		out = append(out, id)
	}
	return out
}

// WriteImage writes an image of the store as an archive (pods.ImageStore.WriteArchive).
func (b boxApps) WriteImage(ctx context.Context, id string, w io.Writer) error {
	return b.d.parts.images.WriteArchive(ctx, w, id)
}

// LoadImage loads an image archive of a backup into the image store; it must be the image id.
func (b boxApps) LoadImage(ctx context.Context, id string, r io.Reader) error {
	img, err := b.d.loadImage(ctx, r)
	if err != nil {
		return fmt.Errorf("daemon: restore: image %s: %w", id, err)
	}
	if img.ID != id {
		return fmt.Errorf("daemon: restore: image %s: the backup's archive is the image %s: %w", id, img.ID, errkind.BadInput)
	}
	return nil
}

// volumesOf lists the app's volumes (shared ones once), with their host directories; with hooks,
// those a container's backup hook covers are marked as dumps.
func volumesOf(app store.App, hooks bool) []appbackup.Volume {
	var out []appbackup.Volume
	for _, c := range app.Containers {
		for _, v := range c.Volumes {
			if slices.ContainsFunc(out, func(o appbackup.Volume) bool { return o.Name == v.Name }) {
				continue
			}
			_, hooked := hookOf(app, v.Name)
			out = append(out, appbackup.Volume{Name: v.Name, Dir: pods.VolumeHostDir(app.Name, v.Name), Dump: hooks && hooked})
		}
	}
	return out
}

// hookOf is the container whose backup hook covers the volume.
func hookOf(app store.App, volume string) (store.Container, bool) {
	for _, c := range app.Containers {
		if c.Backup != nil && c.Backup.Volume == volume {
			return c, true
		}
	}
	return store.Container{}, false
}

// Quiesce holds the app stopped (a pass stops its containers now) until resume; an app that is
// stopped already, or that the box does not have, needs nothing.
func (b boxApps) Quiesce(ctx context.Context, name string) (func(context.Context) error, error) {
	app, err := b.d.store.Get(name)
	if errors.Is(err, store.ErrNotFound) || err == nil && app.Stopped {
		return func(context.Context) error { return nil }, nil
	}
	if err != nil {
		return nil, err
	}
	b.d.quiesced.add(name, 1)
	b.d.pass(ctx)
	if err := b.stopped(ctx, app); err != nil {
		b.d.quiesced.add(name, -1)
		b.d.trigger("app " + name + " resumed")
		return nil, err
	}
	return func(ctx context.Context) error {
		b.d.quiesced.add(name, -1)
		b.d.trigger("app " + name + " resumed")
		return nil
	}, nil
}

// stopped checks that the app's containers are stopped.
func (b boxApps) stopped(ctx context.Context, app store.App) error {
	for _, c := range app.Containers {
		us, err := b.d.parts.systemd.ContainerStatus(ctx, app.Name, c.Name)
		if errors.Is(err, pods.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if us.ActiveState == "active" || us.ActiveState == "deactivating" || us.ActiveState == "activating" {
			return fmt.Errorf("daemon: app %q: container %s did not stop (%s)", app.Name, c.Name, us.ActiveState)
		}
	}
	return nil
}

// Dump runs the dump hook of the container whose backup hook covers volume, while the app runs.
func (b boxApps) Dump(ctx context.Context, name, volume string, w io.Writer) error {
	app, err := b.d.store.Get(name)
	if err != nil {
		return err
	}
	c, ok := hookOf(app, volume)
	if !ok {
		return fmt.Errorf("daemon: app %q: no backup hook covers volume %q", name, volume)
	}
	return b.runHook(ctx, app, c, c.Backup.Dump, nil, w)
}

// runHook runs argv in the container's sandbox (the program found in its image as its
// entrypoint would be).
func (b boxApps) runHook(ctx context.Context, app store.App, c store.Container, argv []string, in io.Reader, out io.Writer) error {
	spec, resolved, err := b.d.parts.pods.checkCommand(app, c, "", argv)
	if err != nil {
		return err
	}
	return b.d.parts.systemd.RunHook(ctx, spec, resolved, in, out, hookTimeout)
}

// Check reads a backup's record of an app and says where its volumes go on this box. An app the
// box has is replaced only with force (errkind.Conflict otherwise).
func (b boxApps) Check(_ context.Context, rec appbackup.App, force bool) (appbackup.App, error) {
	app, err := decodeRecord(rec)
	if err != nil {
		return appbackup.App{}, err
	}
	_, err = b.d.store.Get(rec.Name)
	exists := err == nil || errors.As(err, new(*store.Held))
	if exists && !force {
		return appbackup.App{}, errkind.Conflictf("daemon: restore: the box has an app %q already (--force replaces it)", rec.Name)
	}
	// Images pulled from a registry are pulled again (by their digest); one sent to the box
	// from an archive is in the backup (loaded before the record is committed), or, in a
	// backup of an older onionpod, must be here.
	var load []string
	for _, c := range app.Containers {
		id := cmpOr(c.ImageID, c.Image)
		if c.Static != "" || RegistryImage(c.Image) || !UploadedImage(id) || slices.Contains(load, id) {
			continue
		}
		if _, err := b.d.parts.images.Image(id); err == nil {
			continue
		}
		if slices.Contains(rec.Images, id) {
			load = append(load, id)
			continue
		}
		return appbackup.App{}, errkind.NotFoundf("daemon: restore %q: container %s runs the image %s, sent to its box from %s, which neither this box nor the backup has: send it first (onionpod image load FILE)",
			rec.Name, c.Name, id, cmpOr(c.Source, "an archive"))
	}
	// The dumps of the backup are loaded by the hooks of this record.
	out := appbackup.App{Name: rec.Name, Record: rec.Record, Replaces: exists, Volumes: volumesOf(app, true),
		// Staged in the image store's work directory (its file system); a prune that empties it
		// meanwhile removes the names only: the restore reads what it staged by its open files.
		Images: load, ImageDir: filepath.Join(b.d.parts.images.Dir, "tmp")}
	for i, v := range out.Volumes {
		for _, bv := range rec.Volumes {
			if bv.Name == v.Name {
				out.Volumes[i].Dump = bv.Dump
			}
		}
	}
	return out, nil
}

// decodeRecord reads a record from a backup: strict JSON of a store.App named as the backup says,
// valid.
func decodeRecord(rec appbackup.App) (store.App, error) {
	dec := json.NewDecoder(bytes.NewReader(rec.Record))
	dec.DisallowUnknownFields()
	var app store.App
	if err := dec.Decode(&app); err != nil {
		return app, errkind.BadInputf("daemon: restore %q: its record: %v", rec.Name, err)
	}
	if app.Name != rec.Name {
		return app, errkind.BadInputf("daemon: restore %q: its record names app %q", rec.Name, app.Name)
	}
	if err := app.Validate(); err != nil {
		return app, fmt.Errorf("daemon: restore %q: its record: %w", rec.Name, err)
	}
	return app, nil
}

// Commit stores the backup's record as the app's (the next generation of what the box had),
// and returns how to put back what was there.
func (b boxApps) Commit(ctx context.Context, rec appbackup.App) (func(context.Context) error, error) {
	app, err := decodeRecord(rec)
	if err != nil {
		return nil, err
	}
	// An update on trial when the backup was taken is no trial here: nothing would decide it.
	// The app runs what it ran then.
	for i := range app.Containers {
		app.Containers[i].Trial = nil
	}
	var prev store.App
	var existed bool
	now := time.Now().UTC()
	err = b.d.store.Update(ctx, func(tx *store.Tx) error {
		old, err := tx.Get(app.Name)
		switch {
		case err == nil:
			prev, existed = old, true
			app.Generation, app.Created = old.Generation+1, old.Created
		case errors.Is(err, store.ErrNotFound), errors.As(err, new(*store.Held)):
			app.Generation, app.Created = 1, now
		default:
			return err
		}
		app.Updated = now
		return tx.Put(app)
	})
	if err != nil {
		return nil, err
	}
	b.d.trigger("app " + app.Name + " restored")
	return func(ctx context.Context) error {
		err := b.d.store.Update(ctx, func(tx *store.Tx) error {
			if !existed {
				_, err := tx.Delete(app.Name)
				return err
			}
			cur, err := tx.Get(app.Name)
			if err != nil {
				return err
			}
			prev.Generation, prev.Updated = cur.Generation+1, time.Now().UTC()
			return tx.Put(prev)
		})
		b.d.trigger("app " + app.Name + " restore undone")
		return err
	}, nil
}

// Load waits until the restored app runs, then feeds the dump to the restore hook of the
// container whose backup hook covers volume.
func (b boxApps) Load(ctx context.Context, name, volume string, r io.Reader) error {
	if err := b.running(ctx, name); err != nil {
		return err
	}
	app, err := b.d.store.Get(name)
	if err != nil {
		return err
	}
	c, ok := hookOf(app, volume)
	if !ok {
		return fmt.Errorf("daemon: app %q: no backup hook covers volume %q", name, volume)
	}
	return b.runHook(ctx, app, c, c.Backup.Restore, r, io.Discard)
}

// running waits until the app runs (healthy), at most loadWait; an app that fails is an error
// at once (its dumps cannot be loaded: the restore is undone).
func (b boxApps) running(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, loadWait)
	defer cancel()
	for {
		b.d.mu.Lock()
		changed := b.d.changed
		b.d.mu.Unlock()
		st, err := b.d.appStatus(name)
		switch {
		case err != nil:
			return err
		case st.State == api.StateRunning:
			return nil
		case st.State == api.StateFailed:
			return fmt.Errorf("daemon: app %q does not run: %s", name, st.LastError)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("daemon: app %q is not running after %v (state %s%s)", name, loadWait, st.State, lastErr(st))
		case <-changed:
		case <-time.After(time.Second):
		}
	}
}

// lockedKeys is the key store as appbackup uses it, under the store's lock (every writer of
// the state dir holds it).
type lockedKeys struct {
	d *Daemon
}

func (k lockedKeys) Backup(w io.Writer, app string) (addr string, err error) {
	err = k.d.store.Update(context.Background(), func(*store.Tx) error {
		addr, err = appbackup.OnionKeys{Store: k.d.parts.keys}.Backup(w, app)
		return err
	})
	return addr, err
}

func (k lockedKeys) Restore(r io.Reader, app string, force bool) (addr string, undo func() error, err error) {
	err = k.d.store.Update(context.Background(), func(*store.Tx) error {
		addr, undo, err = appbackup.OnionKeys{Store: k.d.parts.keys}.Restore(r, app, force)
		return err
	})
	if err != nil {
		return "", nil, err
	}
	k.d.trigger("key of " + app + " restored")
	return addr, func() error {
		return k.d.store.Update(context.Background(), func(*store.Tx) error { return undo() })
	}, nil
}

// backup writes the backup of the apps to w (see appbackup.Backup). A passphrase or recipients
// say who may read it.
func (d *Daemon) backup(ctx context.Context, w io.Writer, req api.BackupRequest) ([]appbackup.AppReport, error) {
	recipients, err := backupRecipients(req)
	if err != nil {
		return nil, err
	}
	for _, a := range req.Apps {
		if err := d.checkHeldForBackup(a); err != nil {
			return nil, err
		}
	}
	return appbackup.Backup(ctx, w, boxApps{d}, lockedKeys{d}, req.Apps, recipients...)
}

// checkHeldForBackup refuses an app whose record is damaged or unreadable: it cannot be backed up.
func (d *Daemon) checkHeldForBackup(name string) error {
	_, err := d.store.Get(name)
	var h *store.Held
	if errors.As(err, &h) {
		return fmt.Errorf("daemon: backup %q: %s", name, heldWhy(h))
	}
	return nil
}

func backupRecipients(req api.BackupRequest) ([]age.Recipient, error) {
	var out []age.Recipient
	if req.Passphrase != "" {
		r, err := onion.PassphraseRecipient(req.Passphrase)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	for _, s := range req.Recipients {
		r, err := onion.ParseRecipient(s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errkind.BadInputf("daemon: backup: a passphrase or a recipient is needed")
	}
	return out, nil
}

// restore reads a backup from r and brings its apps back (see appbackup.Restore).
func (d *Daemon) restore(ctx context.Context, r io.Reader, req api.RestoreRequest) ([]appbackup.AppReport, error) {
	var ids []age.Identity
	if req.Passphrase != "" {
		id, err := onion.PassphraseIdentity(req.Passphrase)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	if req.Identities != "" {
		parsed, err := onion.ParseIdentities([]byte(req.Identities))
		if err != nil {
			return nil, err
		}
		ids = append(ids, parsed...)
	}
	if len(ids) == 0 {
		return nil, errkind.BadInputf("daemon: restore: a passphrase or an identity is needed")
	}
	reps, err := appbackup.Restore(ctx, r, boxApps{d}, lockedKeys{d}, req.Force, ids...)
	if err == nil {
		names := make([]string, len(reps))
		for i, a := range reps {
			names[i] = a.Name
		}
		d.log.Info("apps restored", "apps", strings.Join(names, ","))
	}
	return reps, err
}

// serveBackup answers POST /v1/backup: the backup streams as the answer's body; whether it
// finished, and what it holds, comes in the trailers (api.TrailerError, api.TrailerReport). An
// error before the first byte is an ordinary error answer.
func (d *Daemon) serveBackup(w http.ResponseWriter, r *http.Request) {
	var req api.BackupRequest
	if err := decodeBody(r, &req); err != nil {
		fail(w, err)
		return
	}
	w.Header().Set("Trailer", api.TrailerError+", "+api.TrailerReport)
	out := &lazyBody{w: w}
	reps, err := d.backup(r.Context(), out, req)
	if err != nil && !out.started {
		w.Header().Del("Trailer")
		fail(w, err)
		return
	}
	out.start()
	if err != nil {
		d.log.Warn("backup failed", "apps", strings.Join(req.Apps, ","), "err", err)
		w.Header().Set(api.TrailerError, trailerValue(err.Error()))
		return
	}
	report, _ := json.Marshal(reps)
	w.Header().Set(api.TrailerReport, string(report))
}

// trailerValue makes a message fit a header value (one line).
func trailerValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// lazyBody sends the answer's header only with its first byte, so that a backup refused at once
// gets an ordinary error answer.
type lazyBody struct {
	w       http.ResponseWriter
	started bool
}

func (l *lazyBody) start() {
	if !l.started {
		l.w.Header().Set("Content-Type", "application/octet-stream")
		l.w.WriteHeader(http.StatusOK)
		l.started = true
	}
}

func (l *lazyBody) Write(p []byte) (int, error) {
	l.start()
	return l.w.Write(p)
}

// serveRestore reads POST /v1/restore: a JSON line (api.RestoreRequest), then the backup.
func (d *Daemon) serveRestore(r *http.Request) ([]appbackup.AppReport, error) {
	br := bufio.NewReaderSize(r.Body, 64<<10)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return nil, errkind.BadInputf("api: restore: the request's first line (its options) is missing")
	}
	var req api.RestoreRequest
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, errkind.BadInputf("api: restore: its options: %v", err)
	}
	return d.restore(r.Context(), br, req)
}
