package daemon

import (
	"bytes"
	"context"
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
	loaded map[string]string // local archive/layout path -> image ID, for this daemon's life
}

// LocalImage reports whether an app's image is a file or directory on this box rather than a
// registry reference.
func LocalImage(ref string) bool { return strings.HasPrefix(ref, "/") }

// Fetch pulls or loads the app's image (static sites need none).
func (b *podBuilder) Fetch(ctx context.Context, app store.App) error {
	if app.Static != "" {
		_, err := b.images.EmptyRoot()
		return err
	}
	var img *pods.Image
	var err error
	switch {
	case !LocalImage(app.Image):
		img, err = b.images.Pull(ctx, app.Image, io.Discard)
	default:
		st, statErr := os.Stat(app.Image)
		switch {
		case statErr != nil:
			return fmt.Errorf("image %s: %w", app.Image, statErr)
		case st.IsDir():
			img, err = b.images.LoadLayout(ctx, app.Image, io.Discard)
		default:
			img, err = b.images.LoadArchive(ctx, app.Image, io.Discard)
		}
		if err == nil {
			b.mu.Lock()
			if b.loaded == nil {
				b.loaded = map[string]string{}
			}
			b.loaded[app.Image] = img.Digest
			b.mu.Unlock()
		}
	}
	return err
}

// cached returns the app's image if it is in the store.
func (b *podBuilder) cached(app store.App) (*pods.Image, error) {
	ref := app.Image
	if LocalImage(ref) {
		b.mu.Lock()
		id, ok := b.loaded[ref]
		b.mu.Unlock()
		if !ok {
			return nil, reconcile.ErrImageMissing
		}
		ref = id
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

// unitAdapter is pods.Systemd as the reconciler sees it.
type unitAdapter struct {
	*pods.Systemd
	dir string
}

// Current reports whether the unit files on disk are exactly want.
func (u *unitAdapter) Current(want []pods.Unit) bool {
	for _, w := range want {
		have, err := os.ReadFile(filepath.Join(u.dir, w.Name))
		if err != nil || !bytes.Equal(have, w.Content) {
			return false
		}
	}
	return len(want) > 0
}
