package cli

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
	"github.com/onionpod/onionpod/pods"
)

// appFlags are the flags that describe an app (run and expose share them).
type appFlags struct {
	Image      string
	Static     string
	Ports      []string
	Env        []string
	UnsetEnv   []string
	Volumes    []string
	OnionOnly  bool
	IPv4       bool
	AutoUpdate bool
	Timeout    time.Duration
	// NoOnionLocation: no Onion-Location header on the app's HTTPS responses.
	NoOnionLocation bool

	// Changed names the flags given on the command line: only those change the app.
	Changed map[string]bool

	localImage string        // --image names this local archive or layout (absolute)
	sent       api.ImageInfo // what the daemon loaded it as, once sent
}

func (f *appFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.Image, "image", "", "OCI image: a registry reference, or the path of a docker/OCI archive or OCI layout")
	fl.StringVar(&f.Static, "static", "", "a directory of static files to serve instead of an image")
	fl.StringArrayVar(&f.Ports, "port", nil, "port the app listens on, or PUBLIC:APP (repeatable)")
	fl.StringArrayVar(&f.Env, "env", nil, "set environment variable KEY=VALUE, keeping the others (repeatable)")
	fl.StringArrayVar(&f.UnsetEnv, "unset-env", nil, "remove environment variable KEY (repeatable)")
	fl.StringArrayVar(&f.Volumes, "volume", nil, "persistent volume NAME:/path/in/pod (repeatable)")
	fl.BoolVar(&f.OnionOnly, "onion-only", false, "darknet only: no LAN interface, nothing in DNS")
	fl.BoolVar(&f.IPv4, "ipv4", false, "also ask the LAN's DHCP server for an IPv4 address")
	fl.BoolVar(&f.AutoUpdate, "auto-update", false, "let automatic updates (onionpod update --all --auto) take new images of its registry references")
	fl.DurationVar(&f.Timeout, "timeout", 3*time.Minute, "how long to wait for the app")
	fl.BoolVar(&f.NoOnionLocation, "no-onion-location", false, "no Onion-Location header on the app's HTTPS answers")
}

// parse records which flags cmd was given, and refuses a combination that makes no sense
// (a usage error).
func (f *appFlags) parse(cmd *cobra.Command) error {
	f.Changed = changedFlags(cmd)
	if f.Changed["image"] && f.Changed["static"] {
		return &usageError{err: errors.New("give --image or --static, not both"), cmdPath: cmd.CommandPath()}
	}
	return nil
}

// changedFlags names the flags given on cmd's command line.
func changedFlags(cmd *cobra.Command) map[string]bool {
	set := map[string]bool{}
	cmd.Flags().Visit(func(f *pflag.Flag) { set[f.Name] = true })
	return set
}

// check refuses a bad app name, then checks every flag's value (both bad input, exit 2): before
// the daemon is asked anything.
func (f *appFlags) check(name string) error {
	if err := names.App(name); err != nil {
		return err
	}
	return f.apply(&store.App{Name: name})
}

// containerFlags are the flags that set a container of the app: they act on an app of one
// container only (an app of several is changed with an app file: onionpod apply).
var containerFlags = []string{"image", "static", "port", "env", "unset-env", "volume"}

// apply lays the flags that were given over app (an existing record, or a new one), checking each
// value; the whole record is validated by the caller. The flags of a container set the app's
// only container (named like the app when the flags create it).
func (f *appFlags) apply(app *store.App) error {
	changed := func(name string) bool { return f.Changed[name] }
	given := slices.ContainsFunc(containerFlags, changed)
	if given && len(app.Containers) > 1 {
		return errkind.BadInputf("app %q has %d containers (%s): change it with an app file (`onionpod export %s > FILE`, edit, `onionpod apply -f FILE`)",
			app.Name, len(app.Containers), strings.Join(app.ContainerNames(), ", "), app.Name)
	}
	if len(app.Containers) == 0 && given {
		app.Containers = []store.Container{{Name: app.Name}}
	}
	app.Containers = slices.Clone(app.Containers) // changed here, not in the record it came from
	var c store.Container                         // what the container flags change (a new app without one: nothing)
	if len(app.Containers) > 0 {
		c = app.Containers[0]
	}
	if err := f.applySource(&c); err != nil {
		return err
	}
	if err := f.applyPorts(app); err != nil {
		return err
	}
	if err := f.applyEnv(&c); err != nil {
		return err
	}
	if err := f.applyVolumes(&c); err != nil {
		return err
	}
	if len(app.Containers) > 0 {
		app.Containers[0] = c
	}
	f.applySwitches(app)
	if c.Static != "" && len(app.Ports) == 0 {
		app.Ports = []store.Port{{Public: 80, Target: 8080}}
	}
	return nil
}

// applySource sets what c runs from --image (a registry reference, or a local archive or
// layout sent later) or --static (a directory), forgetting the other.
func (f *appFlags) applySource(c *store.Container) error {
	if f.Changed["image"] {
		ref, local, err := imageRef(f.Image)
		if err != nil {
			return err
		}
		c.Image, c.Source, c.Static, c.ImageID = ref, "", "", ""
		if local {
			f.localImage = ref
			c.Image, c.Source = f.sent.ID, ref // empty until sent (see submit)
		}
	}
	if f.Changed["static"] {
		dir, err := filepath.Abs(f.Static)
		if err != nil {
			return err
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return errkind.BadInputf("--static %s is not a directory", f.Static)
		}
		c.Static, c.Image, c.ImageID, c.Source = dir, "", "", ""
	}
	return nil
}

// applyPorts replaces the app's ports with those of --port.
func (f *appFlags) applyPorts(app *store.App) error {
	if !f.Changed["port"] {
		return nil
	}
	app.Ports = nil
	for _, p := range f.Ports {
		port, err := store.ParsePort(p)
		if err != nil {
			return err
		}
		app.Ports = append(app.Ports, port)
	}
	return nil
}

// applyEnv removes the variables of --unset-env from c's environment, then sets those of --env.
func (f *appFlags) applyEnv(c *store.Container) error {
	if f.Changed["unset-env"] {
		env, err := store.UnsetEnv(c.Env, f.UnsetEnv)
		if err != nil {
			return err
		}
		c.Env = env
	}
	if f.Changed["env"] {
		if err := store.ValidateEnv(f.Env); err != nil {
			return err
		}
		c.Env = store.SetEnv(c.Env, f.Env)
	}
	return nil
}

// applyVolumes replaces c's volumes with those of --volume.
func (f *appFlags) applyVolumes(c *store.Container) error {
	if !f.Changed["volume"] {
		return nil
	}
	c.Volumes = nil
	for _, v := range f.Volumes {
		vol, err := store.ParseVolume(v)
		if err != nil {
			return err
		}
		c.Volumes = append(c.Volumes, vol)
	}
	return nil
}

// applySwitches sets the app's boolean flags that were given.
func (f *appFlags) applySwitches(app *store.App) {
	if f.Changed["no-onion-location"] {
		app.NoOnionLocation = f.NoOnionLocation
	}
	if f.Changed["onion-only"] {
		app.OnionOnly = f.OnionOnly
	}
	if f.Changed["ipv4"] {
		app.IPv4 = f.IPv4
	}
	if f.Changed["auto-update"] {
		app.AutoUpdate = f.AutoUpdate
	}
}

// imageRef tells a local archive or layout (local: its absolute path, checked to be readable
// here, by this user) from a registry reference (checked for syntax).
func imageRef(ref string) (_ string, local bool, _ error) {
	if ref == "" || strings.ContainsAny(ref, " \t\n") {
		return "", false, errkind.BadInputf("%q is not an image reference", ref)
	}
	_, statErr := os.Stat(ref)
	if strings.HasPrefix(ref, "/") || strings.HasPrefix(ref, "./") || strings.HasPrefix(ref, "../") ||
		statErr == nil && strings.ContainsAny(ref, "/.") && !strings.Contains(ref, ":") {
		abs, err := filepath.Abs(ref)
		if err != nil {
			return "", false, err
		}
		return abs, true, checkLocalImage(abs)
	}
	return ref, false, pods.CheckRef(ref)
}

// checkLocalImage checks that this user can read the local image at path (an archive, or a
// layout directory's index.json), the way it is read when sent.
func checkLocalImage(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return errkind.BadInputf("image %s: %w", path, err)
	}
	if st.IsDir() {
		path = filepath.Join(path, "index.json")
	}
	f, err := pods.OpenLocal(path)
	if err != nil {
		return err
	}
	return f.Close()
}
