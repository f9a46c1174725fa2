package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/daemon"
	"github.com/onionpod/onionpod/internal/names"
	"github.com/onionpod/onionpod/pods"
)

// updateClient is the part of the LocalAPI update and rollback use.
type updateClient interface {
	Apps(ctx context.Context) ([]api.AppStatus, error)
	App(ctx context.Context, name string) (api.AppStatus, error)
	Update(ctx context.Context, name string, req api.UpdateRequest) (api.UpdateResult, error)
	Rollback(ctx context.Context, name string, req api.RollbackRequest) (api.UpdateResult, error)
}

// imageRefresher is the box's image store as an update's prefetch uses it (*pods.ImageStore):
// the new image is fetched here, with a progress bar, and the daemon finds it cached.
type imageRefresher interface {
	Refresh(ctx context.Context, ref string, progress io.Writer) (*pods.Image, bool, error)
}

type updateOptions struct {
	IO
	Ctx    context.Context
	Client func() (updateClient, error)
	Images func() (imageRefresher, error) // the image store for a prefetch (nil store: none)

	Apps      []string
	All       bool
	Auto      bool
	Image     string
	Container string
	Grace     time.Duration
	Check     bool
	JSON      bool
}

func newUpdateCmd(env *Env) *cobra.Command {
	opts := updateOptions{IO: env.IO, Client: daemonClient[updateClient](env), Images: env.imageRefresher}
	cmd := &cobra.Command{
		Use:   "update (APP... | --all) [--image REF [--container NAME]]",
		Short: "Take the new images the registries serve for apps, safely: rolled back unless healthy",
		Long: `Resolve the apps' image references again at their registries. A container whose reference
names another image now gets it: the new image is pulled (only its new layers), the container is
restarted on it, and the update is kept once the app is healthy again (its health checks pass;
a container without one runs for a few seconds without a restart). If that does not happen
within the grace period, the image it ran is put back at once and serves again: the update is
rolled back (exit 1), and automatic updates do not try that image again. The trial is kept
in the app's record (status shows it): a daemon restarted during it, or a reboot, resumes it.
Volumes are kept through every update and rollback. --image gives a container a new reference the same way.

--all updates every app; with --auto (what onionpod-update.timer runs) only the apps with
auto_update = true (run --auto-update). --check only says whether new images are there.`,
		Example: `  onionpod update notes
  onionpod update notes --image registry.example/notes:2 --container web
  onionpod update --all --check
  onionpod update --all --auto         # the timer's job: apps with auto_update only`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.Apps = cmd.Context(), args
			return runUpdate(&opts)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opts.All, "all", false, "update every app")
	f.BoolVar(&opts.Auto, "auto", false, "an automatic update: only apps with auto_update, never an image rolled back before")
	f.StringVar(&opts.Image, "image", "", "a new registry reference for the container")
	f.StringVar(&opts.Container, "container", "", "update only this container")
	f.DurationVar(&opts.Grace, "grace", api.DefaultGrace, "how long the new version has to become healthy")
	f.BoolVar(&opts.Check, "check", false, "only say whether new images are there; change nothing")
	f.BoolVar(&opts.JSON, "json", false, "print JSON")
	return cmd
}

// errUpdateFailed is returned (exit 1) when an update was rolled back.
var errUpdateFailed = errors.New("update rolled back")

func runUpdate(opts *updateOptions) error {
	if err := opts.check(); err != nil {
		return err
	}
	client, err := opts.Client()
	if err != nil {
		return err
	}
	apps, err := opts.targets(client)
	if err != nil {
		return err
	}
	results, failed, err := opts.updateEach(client, apps)
	if err != nil {
		return err
	}
	if opts.JSON {
		if results == nil {
			results = []api.UpdateResult{}
		}
		if err := writeJSON(opts.Out, results); err != nil {
			return err
		}
	} else if opts.All && len(apps) == 0 {
		fmt.Fprintln(opts.Out, "No app runs a registry image.")
	}
	if len(failed) == 1 && len(apps) == 1 {
		return failed[0]
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d apps not updated: %w", len(failed), len(apps), errors.Join(failed...))
	}
	return nil
}

// check refuses a combination of arguments and flags that does not make sense, and names
// that are not app or container names or image references, before anything is asked.
func (opts *updateOptions) check() error {
	bad := func(format string, args ...any) error {
		return &usageError{err: fmt.Errorf(format, args...), cmdPath: "onionpod update"}
	}
	switch {
	case opts.All && len(opts.Apps) > 0:
		return bad("name apps or give --all, not both")
	case !opts.All && len(opts.Apps) == 0:
		return bad("name an app (or give --all)")
	case opts.Auto && !opts.All:
		return bad("--auto goes with --all")
	case opts.Image != "" && len(opts.Apps) != 1:
		return bad("--image updates one app")
	case opts.Container != "" && len(opts.Apps) != 1:
		return bad("--container names a container of one app")
	case opts.Grace <= 0:
		return bad("--grace must be positive")
	}
	for _, a := range opts.Apps {
		if err := names.App(a); err != nil {
			return err
		}
	}
	if opts.Container != "" && !names.IsApp(opts.Container) {
		return fmt.Errorf("--container %q: not a container name: %w", opts.Container, errBadInput)
	}
	if opts.Image != "" {
		if err := pods.CheckRef(opts.Image); err != nil {
			return err
		}
	}
	return nil
}

// targets returns the apps to update: those named, or with --all every app that runs a
// registry image.
func (opts *updateOptions) targets(client updateClient) ([]string, error) {
	if !opts.All {
		return opts.Apps, nil
	}
	all, err := client.Apps(opts.Ctx)
	if err != nil {
		return nil, err
	}
	var apps []string
	for _, st := range all {
		if hasRegistryImage(st) {
			apps = append(apps, st.App.Name)
		}
	}
	return apps, nil
}

// updateEach updates the apps one after the other, printing each result unless the output is
// JSON. An app that fails or rolls back is in failed and the others still go; with one app
// only, its error is err.
func (opts *updateOptions) updateEach(client updateClient, apps []string) (results []api.UpdateResult, failed []error, err error) {
	req := api.UpdateRequest{Container: opts.Container, Image: opts.Image, Auto: opts.Auto, Grace: opts.Grace, Check: opts.Check}
	for _, name := range apps {
		if !opts.Check {
			opts.prefetch(name, client)
		}
		res, err := client.Update(opts.Ctx, name, req)
		if err != nil {
			if len(apps) == 1 {
				return nil, nil, err
			}
			fmt.Fprintf(opts.Err, "%s: %v\n", name, err)
			failed = append(failed, fmt.Errorf("%s: %w", name, err))
			continue
		}
		results = append(results, res)
		if !opts.JSON {
			printUpdate(opts.Out, res)
		}
		if res.Result == api.UpdateRolledBack {
			failed = append(failed, fmt.Errorf("%s: %w: %s", name, errUpdateFailed, res.Reason))
		}
	}
	return results, failed, nil
}

func hasRegistryImage(st api.AppStatus) bool {
	for _, c := range st.App.Containers {
		if c.Static == "" && daemon.RegistryImage(c.Image) {
			return true
		}
	}
	return false
}

// prefetch pulls the app's new images into the box's image store with a progress bar, when the
// user watches a terminal and may use the store (root): the daemon then finds them cached.
// Anything that goes wrong here is left to the daemon, whose error is the one that counts.
func (opts *updateOptions) prefetch(name string, client updateClient) {
	if !opts.ErrTTY || opts.Images == nil {
		return
	}
	cache, err := opts.Images()
	if err != nil || cache == nil {
		return
	}
	st, err := client.App(opts.Ctx, name)
	if err != nil || st.App.Stopped || opts.Auto && !st.App.AutoUpdate {
		return
	}
	for _, c := range st.App.Containers {
		ref := c.Image
		switch {
		case opts.Container != "" && c.Name != opts.Container:
			continue
		case opts.Image != "" && (opts.Container == c.Name || len(st.App.Containers) == 1):
			ref = opts.Image
		}
		if daemon.RegistryImage(ref) {
			cache.Refresh(opts.Ctx, ref, opts.Err)
		}
	}
}

// printUpdate says what an update (or rollback) did, one line per container that it concerns.
func printUpdate(w io.Writer, res api.UpdateResult) {
	took := ""
	if res.Took > 0 {
		took = fmt.Sprintf(" in %.2f s", res.Took.Seconds())
	}
	switch res.Result {
	case api.UpdateUpToDate, api.UpdateSkipped:
		if res.Reason != "" {
			fmt.Fprintf(w, "%s: %s: %s\n", res.App, res.Result, res.Reason)
		} else {
			fmt.Fprintf(w, "%s: %s\n", res.App, res.Result)
		}
		for _, c := range res.Containers {
			if c.Result == api.UpdateSkipped {
				fmt.Fprintf(w, "  %s: skipped %s: %s\n", c.Name, shortID(c.To), c.Reason)
			}
		}
		return
	case api.UpdateAvailable:
		fmt.Fprintf(w, "%s: new images available\n", res.App)
	case api.UpdateUpdated:
		fmt.Fprintf(w, "%s: updated, healthy%s\n", res.App, took)
	case api.UpdateRolledBack:
		fmt.Fprintf(w, "%s: rolled back%s: %s\n", res.App, took, res.Reason)
	}
	for _, c := range res.Containers {
		switch c.Result {
		case api.UpdateAvailable:
			fmt.Fprintf(w, "  %s: %s -> %s (%s)\n", c.Name, shortID(c.From), shortID(c.To), c.Image)
		case api.UpdateUpdated:
			fmt.Fprintf(w, "  %s: %s -> %s (%s%s)\n", c.Name, shortID(c.From), shortID(c.To), c.Image, digestNote(c.Digest))
		case api.UpdateRolledBack:
			fmt.Fprintf(w, "  %s: runs %s again (%s was %s)\n", c.Name, shortID(c.From), shortID(c.To), c.Result)
		case api.UpdateSkipped:
			fmt.Fprintf(w, "  %s: skipped %s: %s\n", c.Name, shortID(c.To), c.Reason)
		}
	}
}

func digestNote(d string) string {
	if d == "" {
		return ""
	}
	return ", digest " + shortID(d)
}

type rollbackOptions struct {
	IO
	Ctx    context.Context
	Client func() (updateClient, error)

	App       string
	Container string
	Grace     time.Duration
	JSON      bool
}

func newRollbackCmd(env *Env) *cobra.Command {
	opts := rollbackOptions{IO: env.IO, Client: daemonClient[updateClient](env)}
	cmd := &cobra.Command{
		Use:   "rollback APP [--container NAME]",
		Short: "Run the images an app's containers ran before its last update again",
		Long: `Put back the image each container ran before (status shows it as "before"), restart the
containers on it and wait until the app is healthy. The image left becomes the previous one:
a second rollback goes forward again. Volumes are kept.`,
		Args: exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.App = cmd.Context(), args[0]
			return runRollback(&opts)
		},
	}
	cmd.Flags().StringVar(&opts.Container, "container", "", "roll back only this container")
	cmd.Flags().DurationVar(&opts.Grace, "grace", api.DefaultGrace, "how long to wait for the app to be healthy")
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	return cmd
}

func runRollback(opts *rollbackOptions) error {
	if err := names.App(opts.App); err != nil {
		return err
	}
	if opts.Container != "" && !names.IsApp(opts.Container) {
		return fmt.Errorf("--container %q: not a container name: %w", opts.Container, errBadInput)
	}
	if opts.Grace <= 0 {
		return &usageError{err: errors.New("--grace must be positive"), cmdPath: "onionpod rollback"}
	}
	client, err := opts.Client()
	if err != nil {
		return err
	}
	res, err := client.Rollback(opts.Ctx, opts.App, api.RollbackRequest{Container: opts.Container, Grace: opts.Grace})
	if err != nil {
		return err
	}
	if opts.JSON {
		if err := writeJSON(opts.Out, res); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(opts.Out, "%s: rolled back in %.2f s\n", res.App, res.Took.Seconds())
		for _, c := range res.Containers {
			fmt.Fprintf(opts.Out, "  %s: %s -> %s (%s%s)\n", c.Name, shortID(c.From), shortID(c.To), c.Image, digestNote(c.Digest))
		}
	}
	if res.Reason != "" {
		return errors.New(res.Reason)
	}
	return nil
}
