package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/appfile"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
	"github.com/onionpod/onionpod/pods"
)

// applyClient is the part of the LocalAPI apply uses.
type applyClient interface {
	App(ctx context.Context, name string) (api.AppStatus, error)
	Put(ctx context.Context, app store.App) (api.AppStatus, error)
	Plan(ctx context.Context, app store.App) (api.PlannedChange, error)
	Image(ctx context.Context, id string) (api.ImageInfo, error)
	LoadImage(ctx context.Context, archive io.Reader) (api.ImageInfo, error)
	Wait(ctx context.Context, name, what string, generation int64, timeout time.Duration) (api.AppStatus, error)
	Update(ctx context.Context, name string, req api.UpdateRequest) (api.UpdateResult, error)
}

type applyOptions struct {
	IO
	Ctx    context.Context
	Client func() (applyClient, error)

	Path    string // -f: an app file, or a directory of them (*.toml)
	DryRun  bool
	Timeout time.Duration
}

func newApplyCmd(env *Env) *cobra.Command {
	opts := applyOptions{IO: env.IO, Client: daemonClient[applyClient](env)}
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR",
		Short: "Create or change apps as app files describe them (declarative; --dry-run shows what would change)",
		Long: `Make each app what its app file says (a TOML file: see onionpod export APP for one), and wait
until it runs. A file that says what the app already is changes nothing (and says so). With a
directory, every *.toml file in it is an app file; all are read and checked before any is applied.
A local image archive named by a file is sent to the daemon unless it has that image already.
Registry references are resolved again: a container of an existing app whose reference names
another image now is updated (onionpod update: kept once healthy, rolled back otherwise).
--dry-run prints, per app, the difference between its app file and the app now, the plan the
daemon would carry out and the new images the registries have, and changes nothing.`,
		Example: `  onionpod export notes > notes.toml     # an existing app's file
  onionpod apply -f notes.toml --dry-run
  onionpod apply -f notes.toml
  onionpod apply -f /etc/onionpod/apps/`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Path == "" {
				return &usageError{err: errors.New("give the app file or directory: -f FILE|DIR"), cmdPath: cmd.CommandPath()}
			}
			opts.Ctx = cmd.Context()
			return runApply(&opts)
		},
	}
	cmd.Flags().StringVarP(&opts.Path, "file", "f", "", "the app file, or a directory of app files (*.toml)")
	cmd.Flags().BoolVar(&opts.DryRun, "dry-run", false, "show what would change, change nothing")
	cmd.Flags().DurationVar(&opts.Timeout, "timeout", 3*time.Minute, "how long to wait for each app")
	return cmd
}

func runApply(opts *applyOptions) error {
	files := []string{opts.Path}
	if st, err := os.Stat(opts.Path); err != nil {
		return errkind.BadInputf("apply: %w", err)
	} else if st.IsDir() {
		if files, err = appfile.ReadDir(opts.Path); err != nil {
			return err
		}
	}
	// Every file is read and checked before anything is sent or changed.
	apps := make([]appfile.App, 0, len(files))
	seen := map[string]string{}
	for _, f := range files {
		app, err := readAppFile(f)
		if err != nil {
			return err
		}
		if other, ok := seen[app.Name]; ok {
			return errkind.BadInputf("apply: %s and %s both describe app %q", other, f, app.Name)
		}
		seen[app.Name] = f
		apps = append(apps, app)
	}
	client, err := opts.Client()
	if err != nil {
		return err
	}
	for _, app := range apps {
		if err := applyApp(opts, client, app); err != nil {
			return err
		}
	}
	return nil
}

// readAppFile reads and parses one app file (bounded, as the user who runs the CLI).
func readAppFile(path string) (appfile.App, error) {
	f, err := os.Open(path)
	if err != nil {
		return appfile.App{}, errkind.BadInputf("apply: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, appfile.MaxSize+1))
	if err != nil {
		return appfile.App{}, errkind.BadInputf("apply: %s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return appfile.App{}, err
	}
	return appfile.Parse(data, path, filepath.Dir(abs))
}

// applyApp makes one app what its file says: unchanged, planned (dry run), or stored and waited for.
func applyApp(opts *applyOptions, client applyClient, app appfile.App) error {
	ctx := opts.Ctx
	if err := resolveLocalImages(ctx, client, &app, opts.DryRun); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		cur, exists, err := currentRecord(ctx, client, app.Name)
		if err != nil {
			return err
		}
		next := app.App
		next.Generation, next.Stopped = cur.Generation, cur.Stopped
		next.Containers = slices.Clone(next.Containers)
		// Image changes of existing containers go through updates, after the rest.
		updates := deferImages(cur, exists, &next, true)
		if exists && appfile.Same(cur, next) {
			fmt.Fprintf(opts.Out, "%s: unchanged (generation %d)\n", app.Name, cur.Generation)
			if len(updates) > 0 {
				_, err := runUpdates(ctx, client, app.Name, updates, 0, opts.DryRun, opts.Out)
				return err
			}
			return nil
		}
		verb := "changes"
		if !exists {
			verb = "is new"
		}
		if opts.DryRun {
			planned, err := client.Plan(ctx, next)
			if err != nil {
				return err
			}
			fmt.Fprintf(opts.Out, "%s %s (dry run: nothing is changed):\n%s\nplan:\n%s", app.Name, verb, appfile.Diff(cur, next), planned.Plan)
			if len(updates) > 0 {
				_, err := runUpdates(ctx, client, app.Name, updates, 0, true, opts.Out)
				return err
			}
			return nil
		}
		st, err := client.Put(ctx, next)
		if errors.Is(err, api.ErrConflict) && attempt < maxUpdateAttempts {
			continue // changed meanwhile: compare with the new record
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(opts.Out, "%s %s (generation %d):\n%s", app.Name, verb, st.App.Generation, appfile.Diff(cur, next))
		start := time.Now()
		st, err = client.Wait(ctx, app.Name, api.WaitRunning, st.App.Generation, opts.Timeout)
		if err != nil {
			return err
		}
		if len(updates) > 0 {
			updated, err := runUpdates(ctx, client, app.Name, updates, 0, false, opts.Out)
			if err != nil {
				return err
			}
			if updated.App.Name != "" {
				st = updated
			}
		}
		fmt.Fprintf(opts.Out, "%s is running (%.2f s)\n", app.Name, time.Since(start).Seconds())
		for _, l := range addressLines(st) {
			fmt.Fprintln(opts.Out, l)
		}
		return nil
	}
}

// currentRecord is the app's record, or an empty one when it does not exist (or its record is
// damaged: a new one replaces it).
func currentRecord(ctx context.Context, client applyClient, name string) (store.App, bool, error) {
	st, err := client.App(ctx, name)
	switch {
	case errors.Is(err, api.ErrNotFound) || err == nil && st.State == api.StateDamaged:
		return store.App{}, false, nil
	case err != nil:
		return store.App{}, false, err
	}
	return st.App, true, nil
}

// resolveLocalImages gives each container whose image is a local archive or layout that image's
// ID, sending it to the daemon unless it has it (never on a dry run).
func resolveLocalImages(ctx context.Context, client applyClient, app *appfile.App, dryRun bool) error {
	for i := range app.Containers {
		c := &app.Containers[i]
		path, ok := app.Local[c.Name]
		if !ok {
			continue
		}
		id, err := pods.LocalImageID(path)
		if err != nil {
			return fmt.Errorf("apply: app %q: container %s: %w", app.Name, c.Name, err)
		}
		_, err = client.Image(ctx, id)
		switch {
		case err == nil || dryRun && errors.Is(err, api.ErrNotFound):
		case errors.Is(err, api.ErrNotFound):
			info, err := sendImage(ctx, client, path)
			if err != nil {
				return fmt.Errorf("apply: app %q: container %s: %w", app.Name, c.Name, err)
			}
			id = info.ID
		default:
			return err
		}
		c.Image, c.Source = id, path
	}
	return nil
}

// exportClient is the part of the LocalAPI export uses.
type exportClient interface {
	App(ctx context.Context, name string) (api.AppStatus, error)
}

type exportOptions struct {
	IO
	Ctx    context.Context
	Client func() (exportClient, error)
	App    string
}

func newExportCmd(env *Env) *cobra.Command {
	opts := exportOptions{IO: env.IO, Client: daemonClient[exportClient](env)}
	return &cobra.Command{
		Use:   "export APP",
		Short: "Print an app's app file (onionpod apply -f of it changes nothing)",
		Long: `Print the app file of an existing app: every setting of it, its images by reference or by the
ID of the image sent to the daemon (the archive it came from in a comment). The file holds the
app's environment, secrets included: keep it as you keep those.`,
		Example: `  onionpod export notes > notes.toml`,
		Args:    exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.App = cmd.Context(), args[0]
			return runExport(&opts)
		},
	}
}

func runExport(opts *exportOptions) error {
	if err := names.App(opts.App); err != nil {
		return err
	}
	client, err := opts.Client()
	if err != nil {
		return err
	}
	st, err := client.App(opts.Ctx, opts.App)
	if err != nil {
		return err
	}
	if held(st) {
		return fmt.Errorf("export: app %q is %s: %s", opts.App, st.State, st.LastError)
	}
	_, err = opts.Out.Write(appfile.Format(st.App))
	return err
}
