package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/internal/names"
)

// startClient is the part of the LocalAPI start uses.
type startClient interface {
	Start(ctx context.Context, name string) (api.AppStatus, error)
	Wait(ctx context.Context, name, what string, generation int64, timeout time.Duration) (api.AppStatus, error)
}

type startOptions struct {
	IO
	Ctx    context.Context
	Client func() (startClient, error)

	App     string
	Timeout time.Duration
}

func newStartCmd(env *Env) *cobra.Command {
	opts := startOptions{IO: env.IO, Client: daemonClient[startClient](env)}
	cmd := &cobra.Command{
		Use:   "start APP",
		Short: "Start a stopped app",
		Args:  exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.App = cmd.Context(), args[0]
			return runStart(&opts)
		},
	}
	cmd.Flags().DurationVar(&opts.Timeout, "timeout", time.Minute, "how long to wait for the app")
	return cmd
}

func runStart(opts *startOptions) error {
	if err := names.App(opts.App); err != nil {
		return err
	}
	client, err := opts.Client()
	if err != nil {
		return err
	}
	st, err := client.Start(opts.Ctx, opts.App)
	if err != nil {
		return err
	}
	st, err = client.Wait(opts.Ctx, opts.App, api.WaitRunning, st.App.Generation, opts.Timeout)
	if err != nil {
		return err
	}
	fmt.Fprintf(opts.Out, "%s is running\n", opts.App)
	for _, l := range addressLines(st) {
		fmt.Fprintln(opts.Out, l)
	}
	return nil
}
