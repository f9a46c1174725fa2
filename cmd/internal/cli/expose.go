package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
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
	st, running, client, err := submit(cmd, env, opts.App, &opts.appFlags, func(app *store.App, exists bool) error {
		if !exists && opts.Image == "" && opts.Static == "" {
			return &usageError{err: fmt.Errorf("app %q does not exist yet: give --image REF or --static DIR", opts.App), cmdPath: cmd.CommandPath()}
		}
		app.Onion = true
		return nil
	})
	if err != nil {
		return err
	}
	if !opts.NoWait {
		if st, err = client.Wait(cmd.Context(), opts.App, api.WaitPublished, opts.Timeout); err != nil {
			return err
		}
	}
	fmt.Fprintf(env.Err, "%s: pod running, onion added and DNS published in %.2f s", opts.App, running.Seconds())
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
			st, err := client.App(ctx, app)
			if err != nil {
				return err
			}
			if st.App.OnionOnly {
				return fmt.Errorf("%w: %s is onion-only: `onionpod stop %s` or `onionpod rm %s`", errBadInput, app, app, app)
			}
			st.App.Onion = false
			if _, err := client.Put(ctx, st.App); err != nil {
				return err
			}
			fmt.Fprintf(env.Out, "%s: onion service removed; its key is kept (%s)\n", app, st.Onion.Address)
			return nil
		})
}
