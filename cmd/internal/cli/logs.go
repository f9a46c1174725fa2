package cli

import (
	"context"
	"io"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/internal/names"
)

// logsClient is the part of the LocalAPI logs uses.
type logsClient interface {
	Logs(ctx context.Context, name string, follow bool, w io.Writer) error
}

type logsOptions struct {
	IO
	Ctx    context.Context
	Client func() (logsClient, error)

	App    string
	Follow bool
}

func newLogsCmd(env *Env) *cobra.Command {
	opts := logsOptions{IO: env.IO, Client: daemonClient[logsClient](env)}
	cmd := &cobra.Command{
		Use:   "logs APP",
		Short: "Show an app's logs (from the journal)",
		Args:  exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.App = cmd.Context(), args[0]
			return runLogs(&opts)
		},
	}
	cmd.Flags().BoolVarP(&opts.Follow, "follow", "f", false, "keep printing new lines")
	return cmd
}

func runLogs(opts *logsOptions) error {
	if err := names.App(opts.App); err != nil {
		return err
	}
	client, err := opts.Client()
	if err != nil {
		return err
	}
	return client.Logs(opts.Ctx, opts.App, opts.Follow, opts.Out)
}
