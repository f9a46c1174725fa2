package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	fetches    *fetcher // registry pulls in the background (set by Run)

	mu     sync.Mutex
	loaded map[string]localImage // records of older onionpods: archive path -> what it loaded as (images/local.json)
}

// localImage is what a local archive or layout named by path loaded as, when an older onionpod
// loaded archives itself. Only the ID is still used: the daemon never opens the path again.
type localImage struct {
	ID string `json:"id"`
}

func (b *podBuilder) indexPath() string { return filepath.Join(b.images.Dir, "local.json") }

// localIndex returns the index of loaded local images, read once from disk. Call with mu held.
func (b *podBuilder) localIndex() map[string]localImage {
	if b.loaded == nil {
		b.loaded = map[string]localImage{}
		if data, err := os.ReadFile(b.indexPath()); err == nil {
			json.Unmarshal(data, &b.loaded) // a damaged index only means sending archives again
		}
	}
	return b.loaded
}

// An app's image is a registry reference, the ID of an image the CLI sent (UploadedImage), or,
// in records of older onionpods, a local path (which the daemon never opens).

// UploadedImage reports whether ref is the ID of an image in the store ("sha256:..."): what a
// record holds for a local archive, which the CLI sends to the daemon (POST /v1/images).
func UploadedImage(ref string) bool { return strings.HasPrefix(ref, "sha256:") }

// RegistryImage reports whether ref is pulled from a registry.
func RegistryImage(ref string) bool {
	return ref != "" && !UploadedImage(ref) && !strings.HasPrefix(ref, "/")
}

// Fetch makes sure the app's image is in the store. A registry pull runs in the background
// (reconcile.ErrFetching until it ends); an image the CLI sent is only looked up; a local path
// (a record of an older onionpod) is never opened.
func (b *podBuilder) Fetch(ctx context.Context, app store.App) error {
	switch {
	case app.Static != "":
		_, err := b.images.EmptyRoot()
		return err
	case UploadedImage(app.Image):
		_, err := b.images.Image(app.Image)
		if errors.Is(err, pods.ErrNotFound) {
			return fmt.Errorf("daemon: app %q: its image %s is no longer in the image store: send it again with `onionpod run %s --image FILE`", app.Name, app.Image, app.Name)
		}
		return err
	case !RegistryImage(app.Image):
		return fmt.Errorf("daemon: app %q: its image is the local path %s, which the daemon does not open: `onionpod run %s --image %s` sends it", app.Name, app.Image, app.Name, app.Image)
	}
	return b.fetches.fetch(app.Name, app.Image)
}

// Fetching reports whether the app's image is being pulled in the background.
func (b *podBuilder) Fetching(app store.App) bool {
	return app.Static == "" && RegistryImage(app.Image) && b.fetches.fetching(app.Name, app.Image)
}

// cached returns the app's image if it is in the store.
func (b *podBuilder) cached(app store.App) (*pods.Image, error) {
	ref := app.Image
	if strings.HasPrefix(ref, "/") {
		b.mu.Lock()
		known, ok := b.localIndex()[ref]
		b.mu.Unlock()
		if !ok {
			return nil, reconcile.ErrImageMissing
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
