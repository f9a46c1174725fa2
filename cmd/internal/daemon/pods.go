package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"

	"github.com/onionpod/onionpod/cmd/internal/reconcile"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/dirwatch"
	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/pods"
)

// podBuilder turns an app into its pod's units, from its cached image.
type podBuilder struct {
	images     *pods.ImageStore
	self       string // the onionpod binary (static sites run it; network units call it)
	configPath string
	netnsDir   string
	netAfter   []string // units the network units start after (the namespace holder)
	netBoot    string   // the unit that makes every app's network at boot (onionpod-networks.service)
	fetches    *fetcher // registry pulls in the background (set by Run)

	mu       sync.Mutex
	loaded   map[string]localImage    // records of older onionpods: archive path -> what it loaded as (images/local.json)
	rendered map[string]renderedUnits // by app: the units Units rendered last
	files    *dirwatch.Watch          // the image roots' events (nil: a stat of each root tells)
}

// renderedUnits is one rendering of an app's units, reused while the app's record and netns are
// the same and the images' roots are still there: a pass asks for every app's units (to tell
// whether they are current), and an app of pinned images renders the same units until its
// record changes. Images are immutable by ID; an app with a registry image not pinned yet, or a
// static site (whose directory is checked at each rendering), is rendered every time.
type renderedUnits struct {
	app   store.App
	netns string
	roots []string
	units []pods.Unit
	mark  uint64 // the watch's mark before the roots were last seen (0: none)
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

// Fetch makes sure the images of the app's containers are in the store. A registry pull runs in
// the background (reconcile.ErrFetching until it ends); an image the CLI sent is only looked up;
// a local path (a record of an older onionpod) is never opened.
func (b *podBuilder) Fetch(ctx context.Context, app store.App) error {
	var errs []error
	fetching := false
	for _, c := range app.Containers {
		err := b.fetchContainer(app.Name, c)
		if errors.Is(err, reconcile.ErrFetching) {
			fetching = true
			continue
		}
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if fetching {
		return reconcile.ErrFetching
	}
	return nil
}

func (b *podBuilder) fetchContainer(app string, c store.Container) error {
	switch {
	case c.Static != "":
		_, err := b.images.EmptyRoot()
		return err
	case c.ImageID != "":
		if _, err := b.images.Image(c.ImageID); err == nil {
			return nil
		}
		if !RegistryImage(c.Image) {
			return fmt.Errorf("daemon: app %q: container %s: its image %s is no longer in the image store: send it again (`onionpod apply` or `onionpod run %s --image FILE`)", app, c.Name, c.ImageID, app)
		}
	case UploadedImage(c.Image):
		_, err := b.images.Image(c.Image)
		if errors.Is(err, pods.ErrNotFound) {
			return fmt.Errorf("daemon: app %q: container %s: its image %s is no longer in the image store: send it again (`onionpod apply` or `onionpod run %s --image FILE`)", app, c.Name, c.Image, app)
		}
		return err
	case !RegistryImage(c.Image):
		return fmt.Errorf("daemon: app %q: its image is the local path %s, which the daemon does not open: `onionpod run %s --image %s` sends it", app, c.Image, app, c.Image)
	}
	ref := c.Image
	if c.ImageID != "" && c.Digest != "" {
		// The image the app runs, exactly (on a box it was restored to, the tag may name
		// another one by now).
		ref = pods.DigestRef(c.Image, c.Digest)
	}
	if err := b.fetches.fetch(app+"/"+c.Name, ref); err != nil {
		return err
	}
	if c.ImageID != "" {
		// The registry serves another image under the reference now than the one the app runs.
		if _, err := b.images.Image(c.ImageID); err != nil {
			return fmt.Errorf("daemon: app %q: container %s runs %s, which is no longer in the image store, and %s now names another image: update the app to take it", app, c.Name, c.ImageID, c.Image)
		}
	}
	return nil
}

// Fetching reports whether an image of the app is being pulled in the background.
func (b *podBuilder) Fetching(app store.App) bool {
	for _, c := range app.Containers {
		if c.Static == "" && RegistryImage(c.Image) && (b.fetches.fetching(app.Name+"/"+c.Name, c.Image) ||
			c.Digest != "" && b.fetches.fetching(app.Name+"/"+c.Name, pods.DigestRef(c.Image, c.Digest))) {
			return true
		}
	}
	return false
}

// cached returns the image a container runs if it is in the store: its resolved ImageID when
// it has one, else what its reference names.
func (b *podBuilder) cached(c store.Container) (*pods.Image, error) {
	ref := c.Image
	switch {
	case c.ImageID != "":
		ref = c.ImageID
	case strings.HasPrefix(ref, "/"):
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

// Units renders the app's network unit and its containers' units for a pod in netns. The units
// returned may be shared with later calls: never change them.
func (b *podBuilder) Units(ctx context.Context, app store.App, netns string) ([]pods.Unit, error) {
	if units, ok := b.rerender(ctx, app, netns); ok {
		return units, nil
	}
	mark := b.files.Mark()
	specs, err := b.specs(app, netns)
	if err != nil {
		return nil, err
	}
	units, err := pods.AppUnits(specs...)
	if err != nil {
		return nil, err
	}
	r := renderedUnits{app: app.Clone(), netns: netns, units: units, mark: mark}
	for i, c := range app.Containers {
		if c.Static != "" || c.ImageID == "" {
			return units, nil
		}
		r.roots = append(r.roots, specs[i].Root)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rendered == nil {
		b.rendered = map[string]renderedUnits{}
	}
	b.rendered[app.Name] = r
	return units, nil
}

// rerender returns the units rendered last for app, when they are still what rendering would give.
func (b *podBuilder) rerender(ctx context.Context, app store.App, netns string) ([]pods.Unit, bool) {
	b.mu.Lock()
	r, ok := b.rendered[app.Name]
	b.mu.Unlock()
	if !ok || r.netns != netns || !reflect.DeepEqual(r.app, app) {
		return nil, false
	}
	if r.mark != 0 && b.files.UnchangedIn(ctx, r.mark, r.roots...) {
		return r.units, true // nothing happened to the roots
	}
	mark := b.files.Mark()
	for _, root := range r.roots {
		if st, err := os.Stat(root); err != nil || !st.IsDir() {
			return nil, false
		}
	}
	b.mu.Lock()
	if cur, ok := b.rendered[app.Name]; ok && &cur.units[0] == &r.units[0] {
		cur.mark = mark
		b.rendered[app.Name] = cur
	}
	b.mu.Unlock()
	return r.units, true
}

// forget drops the renderings of apps not in keep.
func (b *podBuilder) forget(keep []store.App) {
	names := make(map[string]bool, len(keep))
	for _, a := range keep {
		names[a.Name] = true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for name := range b.rendered {
		if !names[name] {
			delete(b.rendered, name)
		}
	}
}

// specs are the pod specs of the app's containers.
func (b *podBuilder) specs(app store.App, netns string) ([]pods.Spec, error) {
	out := make([]pods.Spec, 0, len(app.Containers))
	for _, c := range app.Containers {
		spec, _, err := b.spec(app, c, netns)
		if err != nil {
			return nil, err
		}
		out = append(out, spec)
	}
	return out, nil
}

// spec is the pod spec of one container, and its image (nil for a static site).
func (b *podBuilder) spec(app store.App, c store.Container, netns string) (pods.Spec, *pods.Image, error) {
	var spec pods.Spec
	var img *pods.Image
	if c.Static != "" {
		port := uint16(80)
		if ports := app.PortsOf(c.Name); len(ports) > 0 {
			port = ports[0].Target
		}
		var err error
		if spec, err = b.images.StaticSpec(app.Name, c.Static, b.self, port); err != nil {
			return spec, nil, err
		}
		spec.Env = pods.MergeEnv(spec.Env, c.Env)
	} else {
		var err error
		if img, err = b.cached(c); err != nil {
			return spec, nil, err
		}
		argv, err := img.CommandOf(c.Entrypoint, c.Command)
		if err != nil {
			return spec, nil, err
		}
		spec = pods.Spec{
			App: app.Name, Root: img.Root, Command: argv,
			Env: pods.MergeEnv(img.Config.Env, c.Env), WorkingDir: img.Config.WorkingDir,
			KillSignal: img.Config.StopSignal,
		}
	}
	spec.Container = c.Name
	spec.After = c.After
	spec.OwnUser = c.User == store.UserOwn
	spec.Limits = c.Limits.Or(app.Limits)
	// Ports are opened without a capability: the pod's network namespace allows unprivileged
	// binding of every port (net.ipv4.ip_unprivileged_port_start=0 there), so the app runs with
	// an empty capability set.
	spec.Capabilities = nil
	for _, v := range c.Volumes {
		spec.Volumes = append(spec.Volumes, pods.Volume{Name: v.Name, Path: v.Path})
	}
	if netns == "" {
		netns = network.NetnsPath(b.netnsDir, app.Name)
	}
	spec.Netns = netns
	// The network unit recreates the pod's network at boot, before the pod and the daemon. It has
	// no ExecStop: at shutdown the namespaces go with the box (leases stay, so the next boot gets
	// the same addresses); removing an app detaches its network in the daemon.
	spec.NetUp = []string{b.self, "--config", b.configPath, "internal", "net-up", app.Name}
	spec.NetAfter = b.netAfter
	spec.NetBoot = b.netBoot
	return spec, img, nil
}

// checkCommand is what a container's command check runs: its spec (for its sandbox) and argv,
// the program found in the container's image as its entrypoint would be.
func (b *podBuilder) checkCommand(app store.App, c store.Container, netns string, argv []string) (pods.Spec, []string, error) {
	spec, img, err := b.spec(app, c, netns)
	if err != nil {
		return spec, nil, err
	}
	if img == nil {
		if !strings.HasPrefix(argv[0], "/") {
			return spec, nil, fmt.Errorf("daemon: app %q: container %s: a static site's check command needs an absolute path", app.Name, c.Name)
		}
		return spec, argv, nil
	}
	resolved, err := img.CommandOf(argv, nil)
	return spec, resolved, err
}

// unitAdapter is pods.Systemd as the reconciler sees it (Current compares the unit files and
// the pods' environment files on disk).
type unitAdapter struct {
	*pods.Systemd
}
