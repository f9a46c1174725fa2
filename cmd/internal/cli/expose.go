package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
)

type exposeOptions struct {
	App    string
	NoWait bool
	appFlags
}

func newExposeCmd(env *Env) *cobra.Command {
	var opts exposeOptions
	cmd := &cobra.Command{
		Use:   "expose APP [--image REF | --static DIR] [--port PORT]...",
		Short: "Put an app on the darknet (and the LAN) in one command, and print its addresses",
		Long: `Create the app if needed (with --image or --static), give it an onion service whose .onion
name never changes (the key is created once and kept), wait until the pod runs and tor has uploaded
the service descriptor, and print the addresses: the .onion, the DNS name and the IPv6 address.`,
		Example: `  onionpod expose blog --image registry.example/blog:1 --port 80
  onionpod expose site --static /srv/site --port 80
  onionpod expose wiki            # an existing app`,
		Args: exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.App = args[0]
			return runExpose(cmd, env, opts)
		},
	}
	opts.register(cmd)
	cmd.Flags().BoolVar(&opts.NoWait, "no-wait", false, "return once the onion service is added, before the descriptor is uploaded")
	return cmd
}

func runExpose(cmd *cobra.Command, env *Env, opts exposeOptions) error {
	start := time.Now()
	res, err := submit(cmd, env, opts.App, &opts.appFlags, func(app *store.App, exists bool) error {
		if !exists && opts.Image == "" && opts.Static == "" {
			return &usageError{err: fmt.Errorf("app %q does not exist yet: give --image REF or --static DIR", opts.App), cmdPath: cmd.CommandPath()}
		}
		app.Onion = true
		return nil
	})
	if err != nil {
		return err
	}
	st := res.Status
	if !opts.NoWait {
		if st, err = res.Client.Wait(cmd.Context(), opts.App, api.WaitPublished, st.ObservedGeneration, opts.Timeout); err != nil {
			return err
		}
	}
	fmt.Fprintf(env.Err, "%s: pod running, onion added and DNS published in %.2f s", opts.App, res.Took.Seconds())
	if !opts.NoWait {
		fmt.Fprintf(env.Err, "; descriptor uploaded after %.2f s", time.Since(start).Seconds())
	}
	fmt.Fprintln(env.Err)
	for _, l := range addressLines(st) {
		fmt.Fprintln(env.Out, l)
	}
	return nil
}

func newUnexposeCmd(env *Env) *cobra.Command {
	return appCommand(env, "unexpose", "Take an app's onion service down (the key is kept: expose brings the same .onion back)",
		func(ctx context.Context, client *api.Client, app string) error {
			st, err := update(ctx, client, app, func(a *store.App, exists bool) error {
				switch {
				case !exists:
					return errkind.NotFoundf("%s: no such app", app)
				case a.OnionOnly:
					return errkind.BadInputf("%s is onion-only: `onionpod stop %s` or `onionpod rm %s`", app, app, app)
				}
				a.Onion = false
				return nil
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Out, "%s: onion service removed; its key is kept (%s)\n", app, st.Onion.Address)
			return nil
		})
}
