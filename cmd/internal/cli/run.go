package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/store"
)

type runOptions struct {
	IO
	Ctx    context.Context
	Client func() (submitClient, error)
	Images func() (imageCache, error) // the image store for a prefetch (nil store: none)

	App   string
	Onion bool
	appFlags
}

func newRunCmd(env *Env) *cobra.Command {
	opts := runOptions{IO: env.IO, Client: daemonClient[submitClient](env), Images: env.imageCache}
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
			opts.Ctx, opts.App = cmd.Context(), args[0]
			if err := opts.parse(cmd); err != nil {
				return err
			}
			return runRun(&opts)
		},
	}
	opts.register(cmd)
	cmd.Flags().BoolVar(&opts.Onion, "onion", false, "also publish an onion service")
	return cmd
}

func runRun(opts *runOptions) error {
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
		Adjust: func(app *store.App, _ bool) error {
			if opts.Changed["onion"] {
				app.Onion = opts.Onion
			}
			app.Stopped = false
			return nil
		},
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(opts.Out, "%s is running (%.2f s)\n", res.Status.App.Name, res.Took.Seconds())
	for _, l := range addressLines(res.Status) {
		fmt.Fprintln(opts.Out, l)
	}
	return nil
}
