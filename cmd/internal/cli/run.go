package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/pods"
)

// appFlags are the flags that describe an app (run and expose share them).
type appFlags struct {
	Image     string
	Static    string
	Ports     []string
	Env       []string
	Volumes   []string
	OnionOnly bool
	IPv4      bool
	Timeout   time.Duration
	// NoOnionLocation: no Onion-Location header on the app's HTTPS responses.
	NoOnionLocation bool
}

func (f *appFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.Image, "image", "", "OCI image: a registry reference, or the path of a docker/OCI archive or OCI layout")
	fl.StringVar(&f.Static, "static", "", "a directory of static files to serve instead of an image")
	fl.StringArrayVar(&f.Ports, "port", nil, "port the app listens on, or PUBLIC:APP (repeatable)")
	fl.StringArrayVar(&f.Env, "env", nil, "environment variable KEY=VALUE (repeatable)")
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
		ref, err := imageRef(f.Image)
		if err != nil {
			return err
		}
		app.Image, app.Static = ref, ""
	}
	if changed("static") {
		dir, err := filepath.Abs(f.Static)
		if err != nil {
			return err
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return fmt.Errorf("%w: --static %s is not a directory", errBadInput, f.Static)
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
	if changed("env") {
		if err := store.ValidateEnv(f.Env); err != nil {
			return err
		}
		app.Env = f.Env
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

// imageRef makes a local archive or layout path absolute (the daemon resolves it, not the
// shell's working directory); anything else is a registry reference.
func imageRef(ref string) (string, error) {
	if ref == "" || strings.ContainsAny(ref, " \t\n") {
		return "", fmt.Errorf("%w: %q is not an image reference", errBadInput, ref)
	}
	if strings.HasPrefix(ref, "/") || strings.HasPrefix(ref, "./") || strings.HasPrefix(ref, "../") {
		abs, err := filepath.Abs(ref)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("%w: image %s: %w", errBadInput, ref, err)
		}
		return abs, nil
	}
	if _, err := os.Stat(ref); err == nil && strings.ContainsAny(ref, "/.") && !strings.Contains(ref, ":") {
		return filepath.Abs(ref)
	}
	return ref, pods.CheckRef(ref)
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
their current value. The app gets a stable IPv6 address on the LAN and a DNS name; --onion (or
` + "`onionpod expose`" + `) also puts it on the darknet.`,
		Example: `  onionpod run blog --image registry.example/blog:1 --port 80
  onionpod run wiki --image ./wiki.tar --port 80:3000 --volume data:/var/lib/wiki --onion
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
	st, took, _, err := submit(cmd, env, opts.App, &opts.appFlags, func(app *store.App, _ bool) error {
		if cmd.Flags().Changed("onion") {
			app.Onion = opts.Onion
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Out, "%s is running (%.2f s)\n", st.App.Name, took.Seconds())
	for _, l := range addressLines(st) {
		fmt.Fprintln(env.Out, l)
	}
	return nil
}

// submit is what run and expose share: it refuses a bad name (exit 2) first, lays the given
// flags over the app's current record (or a new one), lets adjust change it, fetches the image
// with a progress bar on a terminal, stores the record through the daemon and waits until the
// app runs. It returns the status, how long the daemon took, and the client.
func submit(cmd *cobra.Command, env *Env, name string, flags *appFlags, adjust func(app *store.App, exists bool) error) (api.AppStatus, time.Duration, *api.Client, error) {
	if err := store.ValidateName(name); err != nil {
		return api.AppStatus{}, 0, nil, err
	}
	// Every flag's value is checked before the daemon is asked anything.
	if err := flags.apply(cmd, &store.App{Name: name}); err != nil {
		return api.AppStatus{}, 0, nil, err
	}
	ctx := cmd.Context()
	cfg, err := env.Config()
	if err != nil {
		return api.AppStatus{}, 0, nil, err
	}
	client := env.Client(cfg)
	app, exists, err := currentApp(ctx, client, name)
	if err != nil {
		return api.AppStatus{}, 0, nil, err
	}
	if err := flags.apply(cmd, &app); err != nil {
		return api.AppStatus{}, 0, nil, err
	}
	if err := adjust(&app, exists); err != nil {
		return api.AppStatus{}, 0, nil, err
	}
	app.Stopped = false
	if err := app.Validate(); err != nil {
		return api.AppStatus{}, 0, nil, err
	}
	prefetch(ctx, env, cfg, app.Image)
	start := time.Now()
	if _, err := client.Put(ctx, app); err != nil {
		return api.AppStatus{}, 0, nil, err
	}
	st, err := client.Wait(ctx, app.Name, api.WaitRunning, flags.Timeout)
	return st, time.Since(start), client, err
}

// currentApp fetches the app's record from the daemon, or a fresh one if it does not exist.
func currentApp(ctx context.Context, client *api.Client, name string) (store.App, bool, error) {
	st, err := client.App(ctx, name)
	if errors.Is(err, api.ErrNotFound) {
		return store.App{Name: name}, false, nil
	}
	if err != nil {
		return store.App{}, false, err
	}
	return st.App, true, nil
}
