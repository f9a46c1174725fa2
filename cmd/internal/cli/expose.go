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
	IO
	Ctx    context.Context
	Client func() (submitClient, error)
	Images func() (imageCache, error) // the image store for a prefetch (nil store: none)

	App    string
	NoWait bool
	appFlags
}

func newExposeCmd(env *Env) *cobra.Command {
	opts := exposeOptions{IO: env.IO, Client: daemonClient[submitClient](env), Images: env.imageCache}
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
			opts.Ctx, opts.App = cmd.Context(), args[0]
			if err := opts.parse(cmd); err != nil {
				return err
			}
			return runExpose(&opts)
		},
	}
	opts.register(cmd)
	cmd.Flags().BoolVar(&opts.NoWait, "no-wait", false, "return once the onion service is added, before the descriptor is uploaded")
	return cmd
}

func runExpose(opts *exposeOptions) error {
	start := time.Now()
	if err := opts.check(opts.App); err != nil {
		return err
	}
	client, err := opts.Client()
	if err != nil {
		return err
	}
	res, err := submit(opts.Ctx, client, change{
		App: opts.App, Flags: &opts.appFlags, Wait: true, Prefetch: prefetcher(opts.IO, opts.Images),
		ReResolve: opts.Changed["image"], Out: opts.Out,
		Adjust: func(app *store.App, exists bool) error {
			if !exists && opts.Image == "" && opts.Static == "" {
				return &usageError{err: fmt.Errorf("app %q does not exist yet: give --image REF or --static DIR", opts.App), cmdPath: "onionpod expose"}
			}
			app.Onion, app.Stopped = true, false
			return nil
		},
	})
	if err != nil {
		return err
	}
	st := res.Status
	if !opts.NoWait {
		if st, err = client.Wait(opts.Ctx, opts.App, api.WaitPublished, st.ObservedGeneration, opts.Timeout); err != nil {
			return err
		}
	}
	fmt.Fprintf(opts.Err, "%s: pod running, onion added and DNS published in %.2f s", opts.App, res.Took.Seconds())
	if !opts.NoWait {
		fmt.Fprintf(opts.Err, "; descriptor uploaded after %.2f s", time.Since(start).Seconds())
	}
	fmt.Fprintln(opts.Err)
	for _, l := range addressLines(st) {
		fmt.Fprintln(opts.Out, l)
	}
	return nil
}
