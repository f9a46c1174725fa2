package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
)

// unexposeClient is the part of the LocalAPI unexpose uses.
type unexposeClient = submitClient

type unexposeOptions struct {
	IO
	Ctx    context.Context
	Client func() (unexposeClient, error)

	App string
}

func newUnexposeCmd(env *Env) *cobra.Command {
	opts := unexposeOptions{IO: env.IO, Client: daemonClient[unexposeClient](env)}
	return &cobra.Command{
		Use:   "unexpose APP",
		Short: "Take an app's onion service down (the key is kept: expose brings the same .onion back)",
		Args:  exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.App = cmd.Context(), args[0]
			return runUnexpose(&opts)
		},
	}
}

func runUnexpose(opts *unexposeOptions) error {
	app := opts.App
	if err := names.App(app); err != nil {
		return err
	}
	client, err := opts.Client()
	if err != nil {
		return err
	}
	res, err := submit(opts.Ctx, client, change{App: app, Adjust: func(a *store.App, exists bool) error {
		switch {
		case !exists:
			return errkind.NotFoundf("%s: no such app", app)
		case a.OnionOnly:
			return errkind.BadInputf("%s is onion-only: `onionpod stop %s` or `onionpod rm %s`", app, app, app)
		}
		a.Onion = false
		return nil
	}})
	if err != nil {
		return err
	}
	fmt.Fprintf(opts.Out, "%s: onion service removed; its key is kept (%s)\n", app, res.Status.Onion.Address)
	return nil
}
