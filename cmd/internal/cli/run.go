package cli

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
	"github.com/onionpod/onionpod/pods"
)

// appFlags are the flags that describe an app (run and expose share them).
type appFlags struct {
	Image     string
	Static    string
	Ports     []string
	Env       []string
	UnsetEnv  []string
	Volumes   []string
	OnionOnly bool
	IPv4      bool
	Timeout   time.Duration
	// NoOnionLocation: no Onion-Location header on the app's HTTPS responses.
	NoOnionLocation bool

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
	fl.DurationVar(&f.Timeout, "timeout", 3*time.Minute, "how long to wait for the app")
	fl.BoolVar(&f.NoOnionLocation, "no-onion-location", false, "no Onion-Location header on the app's HTTPS answers")
}

// apply lays the flags that were given over app (an existing record, or a new one), checking each
// value; the whole record is validated by the caller.
func (f *appFlags) apply(cmd *cobra.Command, app *store.App) error {
	changed := cmd.Flags().Changed
	if changed("image") && changed("static") {
		return &usageError{err: errors.New("give --image or --static, not both"), cmdPath: cmd.CommandPath()}
	}
	if changed("image") {
		ref, local, err := imageRef(f.Image)
		if err != nil {
			return err
		}
		app.Image, app.Source, app.Static = ref, "", ""
		if local {
			f.localImage = ref
			app.Image, app.Source = f.sent.ID, ref // empty until sent (see submit)
		}
	}
	if changed("static") {
		dir, err := filepath.Abs(f.Static)
		if err != nil {
			return err
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return errkind.BadInputf("--static %s is not a directory", f.Static)
		}
		app.Static, app.Image = dir, ""
	}
	if changed("port") {
		app.Ports = nil
		for _, p := range f.Ports {
			port, err := store.ParsePort(p)
			if err != nil {
				return err
			}
			app.Ports = append(app.Ports, port)
		}
	}
	if changed("unset-env") {
		env, err := store.UnsetEnv(app.Env, f.UnsetEnv)
		if err != nil {
			return err
		}
		app.Env = env
	}
	if changed("env") {
		if err := store.ValidateEnv(f.Env); err != nil {
			return err
		}
		app.Env = store.SetEnv(app.Env, f.Env)
	}
	if changed("volume") {
		app.Volumes = nil
		for _, v := range f.Volumes {
			vol, err := store.ParseVolume(v)
			if err != nil {
				return err
			}
			app.Volumes = append(app.Volumes, vol)
		}
	}
	if changed("no-onion-location") {
		app.NoOnionLocation = f.NoOnionLocation
	}
	if changed("onion-only") {
		app.OnionOnly = f.OnionOnly
	}
	if changed("ipv4") {
		app.IPv4 = f.IPv4
	}
	if app.Static != "" && len(app.Ports) == 0 {
		app.Ports = []store.Port{{Public: 80, Target: 8080}}
	}
	return nil
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

type runOptions struct {
	App   string
	Onion bool
	appFlags
}

func newRunCmd(env *Env) *cobra.Command {
	var opts runOptions
	cmd := &cobra.Command{
		Use:   "run APP (--image REF | --static DIR) [--port PORT]...",
		Short: "Create or update an app and run it",
		Long: `Create an app, or change an existing one, and wait until its pod runs. Flags not given keep
their current value; --env sets one variable and keeps the others (--unset-env removes one).
Two changes at once never undo each other. The app gets a stable IPv6 address on the LAN and a DNS name; --onion (or
` + "`onionpod expose`" + `) also puts it on the darknet.`,
		Example: `  onionpod run blog --image registry.example/blog:1 --port 80
  onionpod run wiki --image ./wiki.tar --port 80:3000 --volume data:/var/lib/wiki --onion
  onionpod run wiki --env LOG=debug --unset-env OLD     # change one setting, keep the rest
  onionpod run notes --static ~/notes-site --onion-only`,
		Args: exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.App = args[0]
			return runRun(cmd, env, opts)
		},
	}
	opts.register(cmd)
	cmd.Flags().BoolVar(&opts.Onion, "onion", false, "also publish an onion service")
	return cmd
}

func runRun(cmd *cobra.Command, env *Env, opts runOptions) error {
	res, err := submit(cmd, env, opts.App, &opts.appFlags, func(app *store.App, _ bool) error {
		if cmd.Flags().Changed("onion") {
			app.Onion = opts.Onion
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Out, "%s is running (%.2f s)\n", res.Status.App.Name, res.Took.Seconds())
	for _, l := range addressLines(res.Status) {
		fmt.Fprintln(env.Out, l)
	}
	return nil
}

// submitted is what submit returns: the app's status once it runs, how long the daemon took, and
// the client that asked.
type submitted struct {
	Status api.AppStatus
	Took   time.Duration
	Client *api.Client
}

// submit is what run and expose share: it refuses a bad name (exit 2) first, lays the given
// flags over the app's current record (or a new one), lets adjust change it, fetches the image
// with a progress bar on a terminal, stores the record through the daemon (again from a fresh
// read when another change came first) and waits until the daemon has applied this very
// change and the app runs.
func submit(cmd *cobra.Command, env *Env, name string, flags *appFlags, adjust func(app *store.App, exists bool) error) (submitted, error) {
	if err := names.App(name); err != nil {
		return submitted{}, err
	}
	// Every flag's value is checked before the daemon is asked anything.
	if err := flags.apply(cmd, &store.App{Name: name}); err != nil {
		return submitted{}, err
	}
	ctx := cmd.Context()
	cfg, err := env.Config()
	if err != nil {
		return submitted{}, err
	}
	client := env.Client(cfg)
	if flags.localImage != "" {
		if flags.sent, err = sendImage(ctx, client, flags.localImage); err != nil {
			return submitted{}, err
		}
	}
	prefetched := false
	start := time.Now()
	st, err := update(ctx, client, name, func(app *store.App, exists bool) error {
		if err := flags.apply(cmd, app); err != nil {
			return err
		}
		if err := adjust(app, exists); err != nil {
			return err
		}
		app.Stopped = false
		if err := app.Validate(); err != nil {
			return err
		}
		if !prefetched {
			prefetch(ctx, env, cfg, app.Image)
			prefetched, start = true, time.Now()
		}
		return nil
	})
	if err != nil {
		return submitted{Client: client}, err
	}
	st, err = client.Wait(ctx, name, api.WaitRunning, st.App.Generation, flags.Timeout)
	return submitted{Status: st, Took: time.Since(start), Client: client}, err
}

// maxUpdateAttempts bounds how often update re-reads and re-applies a change that lost a race
// with another one.
const maxUpdateAttempts = 50

// update reads the app's record (a new one when it does not exist), lets change edit it, and
// stores it through the daemon, based on the generation it read: when another change came in
// between (ErrConflict), it reads the record again and re-applies change, a bounded number of
// times. It returns the status with the stored record (its new generation).
func update(ctx context.Context, client *api.Client, name string, change func(app *store.App, exists bool) error) (api.AppStatus, error) {
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
func currentApp(ctx context.Context, client *api.Client, name string) (store.App, bool, error) {
	st, err := client.App(ctx, name)
	if errors.Is(err, api.ErrNotFound) || err == nil && st.State == api.StateDamaged {
		return store.App{Name: name}, false, nil
	}
	if err != nil {
		return store.App{}, false, err
	}
	return st.App, true, nil
}
