package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/internal/names"
)

// appCommand is a command on one app: it refuses a bad name (exit 2) before anything else, loads
// the config, and hands a LocalAPI client to run.
func appCommand(env *Env, use, short string, run func(ctx context.Context, client *api.Client, app string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use + " APP",
		Short: short,
		Args:  exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := names.App(args[0]); err != nil {
				return err
			}
			cfg, err := env.Config()
			if err != nil {
				return err
			}
			return run(cmd.Context(), env.Client(cfg), args[0])
		},
	}
}

func newStartCmd(env *Env) *cobra.Command {
	var timeout time.Duration
	cmd := appCommand(env, "start", "Start a stopped app", func(ctx context.Context, client *api.Client, app string) error {
		st, err := client.Start(ctx, app)
		if err != nil {
			return err
		}
		st, err = client.Wait(ctx, app, api.WaitRunning, st.App.Generation, timeout)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Out, "%s is running\n", app)
		for _, l := range addressLines(st) {
			fmt.Fprintln(env.Out, l)
		}
		return nil
	})
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long to wait for the app")
	return cmd
}

func newStopCmd(env *Env) *cobra.Command {
	return appCommand(env, "stop", "Stop an app: its pod stops, its onion service and DNS records are withdrawn, all else is kept",
		func(ctx context.Context, client *api.Client, app string) error {
			if _, err := client.Stop(ctx, app); err != nil {
				return err
			}
			fmt.Fprintf(env.Out, "%s stopped (start it again with `onionpod start %s`)\n", app, app)
			return nil
		})
}

func newRmCmd(env *Env) *cobra.Command {
	var purgeKey bool
	cmd := appCommand(env, "rm", "Remove an app: pod, network, DNS records, onion service (its key is kept unless --purge-key)",
		func(ctx context.Context, client *api.Client, app string) error {
			address := ""
			if st, err := client.App(ctx, app); err == nil {
				address = st.Onion.Address
			}
			if err := client.Remove(ctx, app, purgeKey); err != nil {
				return err
			}
			fmt.Fprintf(env.Out, "%s removed\n", app)
			switch {
			case purgeKey:
				fmt.Fprintf(env.Out, "its onion key is deleted: %s is gone for good\n", orDash(address))
			case address != "":
				fmt.Fprintf(env.Out, "its onion key is kept, so `onionpod expose %s` brings %s back;\n"+
					"`onionpod onion backup %s -o FILE` saves it, `onionpod rm --purge-key %s` deletes it\n",
					app, address, app, app)
			}
			return nil
		})
	cmd.Flags().BoolVar(&purgeKey, "purge-key", false, "also delete the onion key: the .onion address is lost for good")
	return cmd
}

func newLogsCmd(env *Env) *cobra.Command {
	var follow bool
	cmd := appCommand(env, "logs", "Show an app's logs (from the journal)", func(ctx context.Context, client *api.Client, app string) error {
		return client.Logs(ctx, app, follow, env.Out)
	})
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	return cmd
}
