package appbackup

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
)

// The archive's format.
const (
	formatName = "onionpod-app-backup"
	// formatVersion is written for a backup that holds images (apps/APP/images/), and
	// formatVersionNoImages for one that holds none, which an onionpod before images reads.
	formatVersion         = 2
	formatVersionNoImages = 1

	headerName  = "backup.json"
	trailerName = "end.json"

	maxHeaderBytes = 1 << 20 // backup.json, end.json
	maxRecordBytes = 4 << 20 // an app's record
	maxKeyBytes    = 1 << 20 // an app's key and clients
	dumpChunkBytes = 4 << 20 // a dump is stored in chunks of this size (the memory it needs)
)

// ErrBadInput marks errors of the caller's input: a bad app or volume name, no passphrase, a
// file that is not a backup (alias of errkind.BadInput).
var ErrBadInput = errkind.BadInput

// ErrDecrypt is wrapped when a backup does not decrypt or authenticate: a wrong passphrase or
// identity, a modified byte, a truncated file. Nothing was written.
var ErrDecrypt = errkind.BadInputf("appbackup: the backup does not decrypt or authenticate")

// App is what a backup holds of one app.
type App struct {
	Name string
	// Record is the app's desired state as the box stores it (its app file): opaque here, read
	// and checked by Target.
	Record  []byte
	Volumes []Volume
	// Images are the IDs ("sha256:...") of images the box runs the app's containers on that
	// no registry serves (sent to it as archives): Source.Describe names them, and the backup
	// holds them (Source.WriteImage). Target.Check returns those this box lacks: Restore stages
	// them in ImageDir and loads them (Target.LoadImage) before the app's record is committed.
	Images   []string
	ImageDir string
	// Replaces is set by Target.Check: the box has an app of that name, which the restore
	// replaces (force).
	Replaces bool
}

// Volume is one of an app's volumes.
type Volume struct {
	Name string
	// Dir is its host directory (pods.VolumeHostDir): copied as files, or restored into.
	Dir string
	// Dump says a dump hook of the app covers the volume: its data is what Source.Dump writes
	// (taken while the app runs) and Target.Load reads back, not its raw files.
	Dump bool
}

// Source is the box's side of a backup (the daemon: its store, pods and systemd).
type Source interface {
	// Describe returns the app's record and volumes; errkind.NotFound for an unknown app.
	Describe(ctx context.Context, app string) (App, error)
	// Quiesce stops what writes to the app's volumes until resume is called (nothing to do for
	// an app that is stopped); Backup calls it only for apps with volumes copied as files.
	Quiesce(ctx context.Context, app string) (resume func(context.Context) error, err error)
	// Dump runs the dump hook that covers volume (inside the app, while it runs) and writes the
	// dump to w.
	Dump(ctx context.Context, app, volume string, w io.Writer) error
	// WriteImage writes the image id (one of App.Images) to w as an archive LoadImage loads.
	WriteImage(ctx context.Context, id string, w io.Writer) error
}

// Target is the box's side of a restore.
type Target interface {
	// Check says whether app may be restored from rec (a new app, or with force one that
	// exists) and returns it as this box would run it: its volumes with their host directories
	// here. It writes nothing. An app that exists, without force, is errkind.Conflict.
	Check(ctx context.Context, rec App, force bool) (App, error)
	// Quiesce stops an existing app until resume (nothing to do for a new one), so that its
	// volumes can be swapped.
	Quiesce(ctx context.Context, app string) (resume func(context.Context) error, err error)
	// Commit makes rec.Record the app's desired state (the box then runs it); undo restores
	// what was there before (or removes the app).
	Commit(ctx context.Context, rec App) (undo func(context.Context) error, err error)
	// Load applies a dump to the volume it covers once the app runs (its restore hook).
	Load(ctx context.Context, app, volume string, r io.Reader) error
	// LoadImage loads an image archive written by Source.WriteImage, which must be the image id.
	LoadImage(ctx context.Context, id string, r io.Reader) error
}

// Keys keeps the apps' onion keys and client lists (OnionKeys over onion.KeyStore).
type Keys interface {
	// Backup writes the app's key and clients to w; errkind.NotFound when it has no key.
	Backup(w io.Writer, app string) (address string, err error)
	// Restore stores a key written by Backup for app (replacing another key only with force)
	// and returns how to undo that.
	Restore(r io.Reader, app string, force bool) (address string, undo func() error, err error)
}

// header is backup.json.
type header struct {
	Format  string      `json:"format"`
	Version int         `json:"version"`
	Created time.Time   `json:"created"`
	Apps    []headerApp `json:"apps"`
}

type headerApp struct {
	Name    string         `json:"name"`
	Address string         `json:"address,omitempty"` // its .onion, when it has a key
	Volumes []headerVolume `json:"volumes,omitempty"`
	Images  []string       `json:"images,omitempty"` // IDs of the images it holds (version 2)
}

type headerVolume struct {
	Name string `json:"name"`
	Dump bool   `json:"dump,omitempty"`
}

// trailer is end.json: what came before it, counted by the writer.
type trailer struct {
	Apps    int   `json:"apps"`
	Entries int64 `json:"entries"` // tar entries before end.json
	Bytes   int64 `json:"bytes"`   // bytes of file and dump content before end.json
}

var (
	volumeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	imageID    = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

func checkApp(a headerApp) error {
	if !names.IsApp(a.Name) {
		return errkind.BadInputf("app %q: not an app name (a DNS label)", a.Name)
	}
	seen := map[string]bool{}
	for _, v := range a.Volumes {
		if !volumeName.MatchString(v.Name) {
			return errkind.BadInputf("app %q: volume %q: not a volume name", a.Name, v.Name)
		}
		if seen[v.Name] {
			return errkind.BadInputf("app %q: volume %q listed twice", a.Name, v.Name)
		}
		seen[v.Name] = true
	}
	for _, id := range a.Images {
		if !imageID.MatchString(id) {
			return errkind.BadInputf("app %q: image %q: want sha256: and 64 hex digits", a.Name, id)
		}
		if seen[id] {
			return errkind.BadInputf("app %q: image %s listed twice", a.Name, id)
		}
		seen[id] = true
	}
	return nil
}

func (h header) check() error {
	if h.Format != formatName {
		return errkind.BadInputf("not an onionpod app backup (format is not %q)", formatName)
	}
	if h.Version != formatVersion && h.Version != formatVersionNoImages {
		return errkind.BadInputf("backup version %d, this onionpod reads %d and %d", h.Version, formatVersionNoImages, formatVersion)
	}
	if len(h.Apps) == 0 {
		return errkind.BadInputf("the backup holds no apps")
	}
	seen := map[string]bool{}
	for _, a := range h.Apps {
		if err := checkApp(a); err != nil {
			return err
		}
		if len(a.Images) > 0 && h.Version < formatVersion {
			return errkind.BadInputf("app %q: images in a backup of version %d", a.Name, h.Version)
		}
		if seen[a.Name] {
			return errkind.BadInputf("app %q listed twice", a.Name)
		}
		seen[a.Name] = true
	}
	return nil
}

func appPrefix(app string) string         { return "apps/" + app + "/" }
func recordName(app string) string        { return appPrefix(app) + "record" }
func keyName(app string) string           { return appPrefix(app) + "onion" }
func volumePrefix(app, vol string) string { return appPrefix(app) + "volumes/" + vol + "/" }
func dumpPrefix(app, vol string) string   { return appPrefix(app) + "dumps/" + vol + "/" }
func imagePrefix(app, id string) string {
	return appPrefix(app) + "images/" + id[len("sha256:"):] + "/"
}
func dumpChunkName(app, vol string, n int) string {
	return fmt.Sprintf("%s%06d", dumpPrefix(app, vol), n)
}
func imageChunkName(app, id string, n int) string {
	return fmt.Sprintf("%s%06d", imagePrefix(app, id), n)
}
