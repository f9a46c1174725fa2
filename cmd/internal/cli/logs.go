package cli

import (
	"context"
	"io"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
)

// logsClient is the part of the LocalAPI logs uses.
type logsClient interface {
	Logs(ctx context.Context, name, container string, follow bool, w io.Writer) error
}

type logsOptions struct {
	IO
	Ctx    context.Context
	Client func() (logsClient, error)

	App       string
	Container string // "" for all the app's containers
	Follow    bool
}

func newLogsCmd(env *Env) *cobra.Command {
	opts := logsOptions{IO: env.IO, Client: daemonClient[logsClient](env)}
	cmd := &cobra.Command{
		Use:   "logs APP [CONTAINER]",
		Short: "Show an app's logs (from the journal): all its containers', or one's",
		Args:  rangeArgs(1, 2, "APP [CONTAINER]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.App = cmd.Context(), args[0]
			if len(args) == 2 {
				opts.Container = args[1]
			}
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
	if opts.Container != "" && !names.IsApp(opts.Container) {
		return errkind.BadInputf("%q is not a container name", opts.Container)
	}
	client, err := opts.Client()
	if err != nil {
		return err
	}
	return client.Logs(opts.Ctx, opts.App, opts.Container, opts.Follow, opts.Out)
}
