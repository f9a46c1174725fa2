package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/onionpod/onionpod/cmd/internal/reconcile"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/pods"
)

// podBuilder turns an app into its pod's units, from its cached image.
type podBuilder struct {
	images     *pods.ImageStore
	self       string // the onionpod binary (static sites run it; network units call it)
	configPath string
	netnsDir   string

	mu     sync.Mutex
	loaded map[string]localImage // local archive/layout path -> what it loaded as (images/local.json)
}

// localImage is what a local archive or layout loaded as, and the file it was then, so a
// restarted daemon need not read the archive again unless it changed.
type localImage struct {
	ID      string `json:"id"`
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime_ns"`
}

// identify stats a local image: an archive itself, or a layout's index.json.
func identify(path string) (localImage, error) {
	st, err := os.Stat(path)
	if err == nil && st.IsDir() {
		st, err = os.Stat(filepath.Join(path, "index.json"))
	}
	if err != nil {
		return localImage{}, err
	}
	return localImage{Size: st.Size(), ModTime: st.ModTime().UnixNano()}, nil
}

func (b *podBuilder) indexPath() string { return filepath.Join(b.images.Dir, "local.json") }

// localIndex returns the index of loaded local images, read once from disk. Call with mu held.
func (b *podBuilder) localIndex() map[string]localImage {
	if b.loaded == nil {
		b.loaded = map[string]localImage{}
		if data, err := os.ReadFile(b.indexPath()); err == nil {
			json.Unmarshal(data, &b.loaded) // a damaged index only costs reloading archives
		}
	}
	return b.loaded
}

// remember records what a local image loaded as, and saves the index.
func (b *podBuilder) remember(path, id string) error {
	li, err := identify(path)
	if err != nil {
		return err
	}
	li.ID = id
	b.mu.Lock()
	defer b.mu.Unlock()
	b.localIndex()[path] = li
	data, err := json.Marshal(b.loaded)
	if err != nil {
		return err
	}
	return store.WriteFileAtomic(b.indexPath(), data, 0o600)
}

// LocalImage reports whether an app's image is a file or directory on this box rather than a
// registry reference.
func LocalImage(ref string) bool { return strings.HasPrefix(ref, "/") }

// FetchImage pulls a registry reference, or loads a local archive or OCI layout, into images,
// with progress going to progress (a bar only on a terminal).
func FetchImage(ctx context.Context, images *pods.ImageStore, ref string, progress io.Writer) (*pods.Image, error) {
	if !LocalImage(ref) {
		return images.Pull(ctx, ref, progress)
	}
	st, err := os.Stat(ref)
	switch {
	case err != nil:
		return nil, fmt.Errorf("image %s: %w", ref, err)
	case st.IsDir():
		return images.LoadLayout(ctx, ref, progress)
	default:
		return images.LoadArchive(ctx, ref, progress)
	}
}

// Fetch pulls or loads the app's image (static sites need none).
func (b *podBuilder) Fetch(ctx context.Context, app store.App) error {
	if app.Static != "" {
		_, err := b.images.EmptyRoot()
		return err
	}
	img, err := FetchImage(ctx, b.images, app.Image, io.Discard)
	if err != nil || !LocalImage(app.Image) {
		return err
	}
	return b.remember(app.Image, img.Digest)
}

// cached returns the app's image if it is in the store.
func (b *podBuilder) cached(app store.App) (*pods.Image, error) {
	ref := app.Image
	if LocalImage(ref) {
		b.mu.Lock()
		known, ok := b.localIndex()[ref]
		b.mu.Unlock()
		now, err := identify(ref)
		if !ok || err != nil || now.Size != known.Size || now.ModTime != known.ModTime {
			return nil, reconcile.ErrImageMissing // never loaded, or changed since: load it again
		}
		ref = known.ID
	}
	img, err := b.images.Image(ref)
	if errors.Is(err, pods.ErrNotFound) {
		return nil, reconcile.ErrImageMissing
	}
	return img, err
}

// Units renders the app's network and pod units for a pod in netns.
func (b *podBuilder) Units(app store.App, netns string) ([]pods.Unit, error) {
	spec, err := b.spec(app, netns)
	if err != nil {
		return nil, err
	}
	return pods.PodUnits(spec)
}

func (b *podBuilder) spec(app store.App, netns string) (pods.Spec, error) {
	var spec pods.Spec
	if app.Static != "" {
		port := uint16(80)
		if len(app.Ports) > 0 {
			port = app.Ports[0].Target
		}
		var err error
		if spec, err = b.images.StaticSpec(app.Name, app.Static, b.self, port); err != nil {
			return spec, err
		}
	} else {
		img, err := b.cached(app)
		if err != nil {
			return spec, err
		}
		argv, err := img.Command(nil)
		if err != nil {
			return spec, err
		}
		spec = pods.Spec{
			App: app.Name, Root: img.Root, Command: argv,
			Env: pods.MergeEnv(img.Config.Env, app.Env), WorkingDir: img.Config.WorkingDir,
		}
	}
	if app.Static != "" {
		spec.Env = pods.MergeEnv(spec.Env, app.Env)
	}
	// Ports are opened without a capability: the pod's network namespace allows unprivileged
	// binding of every port (net.ipv4.ip_unprivileged_port_start=0 there), so the app runs with
	// an empty capability set.
	spec.Capabilities = nil
	for _, v := range app.Volumes {
		spec.Volumes = append(spec.Volumes, pods.Volume{Name: v.Name, Path: v.Path})
	}
	if netns == "" {
		netns = filepath.Join(b.netnsDir, "onionpod-"+app.Name)
	}
	spec.Netns = netns
	// The network unit recreates the pod's network at boot, before the pod and the daemon. It has
	// no ExecStop: at shutdown the namespaces go with the box (leases stay, so the next boot gets
	// the same addresses); removing an app detaches its network in the daemon.
	spec.NetUp = []string{b.self, "--config", b.configPath, "internal", "net-up", app.Name}
	return spec, nil
}

// unitAdapter is pods.Systemd as the reconciler sees it (Current compares the unit files and
// the pods' environment files on disk).
type unitAdapter struct {
	*pods.Systemd
}
