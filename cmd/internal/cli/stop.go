package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/internal/names"
)

// stopClient is the part of the LocalAPI stop uses.
type stopClient interface {
	Stop(ctx context.Context, name string) (api.AppStatus, error)
}

type stopOptions struct {
	IO
	Ctx    context.Context
	Client func() (stopClient, error)

	App string
}

func newStopCmd(env *Env) *cobra.Command {
	opts := stopOptions{IO: env.IO, Client: daemonClient[stopClient](env)}
	return &cobra.Command{
		Use:   "stop APP",
		Short: "Stop an app: its pod stops, its onion service and DNS records are withdrawn, all else is kept",
		Args:  exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.App = cmd.Context(), args[0]
			return runStop(&opts)
		},
	}
}

func runStop(opts *stopOptions) error {
	if err := names.App(opts.App); err != nil {
		return err
	}
	client, err := opts.Client()
	if err != nil {
		return err
	}
	if _, err := client.Stop(opts.Ctx, opts.App); err != nil {
		return err
	}
	fmt.Fprintf(opts.Out, "%s stopped (start it again with `onionpod start %s`)\n", opts.App, opts.App)
	return nil
}
