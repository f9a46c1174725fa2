package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
)

type appOptions struct {
	App     string
	Timeout time.Duration
}

func newStartCmd(env *Env) *cobra.Command {
	var opts appOptions
	cmd := &cobra.Command{
		Use:   "start APP",
		Short: "Start a stopped app",
		Args:  exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.App = args[0]
			if err := store.ValidateName(opts.App); err != nil {
				return err
			}
			cfg, err := env.Config()
			if err != nil {
				return err
			}
			client := env.Client(cfg)
			if err := client.Start(cmd.Context(), opts.App); err != nil {
				return err
			}
			st, err := client.Wait(cmd.Context(), opts.App, api.WaitRunning, opts.Timeout)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Out, "%s is running\n", opts.App)
			for _, l := range addressLines(st) {
				fmt.Fprintln(env.Out, l)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&opts.Timeout, "timeout", time.Minute, "how long to wait for the app")
	return cmd
}

func newStopCmd(env *Env) *cobra.Command {
	var opts appOptions
	return &cobra.Command{
		Use:   "stop APP",
		Short: "Stop an app: its pod stops, its onion service and DNS records are withdrawn, all else is kept",
		Args:  exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.App = args[0]
			if err := store.ValidateName(opts.App); err != nil {
				return err
			}
			cfg, err := env.Config()
			if err != nil {
				return err
			}
			if err := env.Client(cfg).Stop(cmd.Context(), opts.App); err != nil {
				return err
			}
			fmt.Fprintf(env.Out, "%s stopped (start it again with `onionpod start %s`)\n", opts.App, opts.App)
			return nil
		},
	}
}

type rmOptions struct {
	App      string
	PurgeKey bool
}

func newRmCmd(env *Env) *cobra.Command {
	var opts rmOptions
	cmd := &cobra.Command{
		Use:   "rm APP",
		Short: "Remove an app: pod, network, DNS records, onion service (its key is kept unless --purge-key)",
		Args:  exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.App = args[0]
			return runRm(cmd, env, opts)
		},
	}
	cmd.Flags().BoolVar(&opts.PurgeKey, "purge-key", false, "also delete the onion key: the .onion address is lost for good")
	return cmd
}

func runRm(cmd *cobra.Command, env *Env, opts rmOptions) error {
	if err := store.ValidateName(opts.App); err != nil {
		return err
	}
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	client := env.Client(cfg)
	address := ""
	if st, err := client.App(cmd.Context(), opts.App); err == nil {
		address = st.Onion.Address
	}
	if err := client.Remove(cmd.Context(), opts.App, opts.PurgeKey); err != nil {
		return err
	}
	fmt.Fprintf(env.Out, "%s removed\n", opts.App)
	switch {
	case opts.PurgeKey:
		fmt.Fprintf(env.Out, "its onion key is deleted: %s is gone for good\n", orDash(address))
	case address != "":
		fmt.Fprintf(env.Out, "its onion key is kept, so `onionpod expose %s` brings %s back;\n"+
			"`onionpod onion backup %s -o FILE` saves it, `onionpod rm --purge-key %s` deletes it\n",
			opts.App, address, opts.App, opts.App)
	}
	return nil
}

type logsOptions struct {
	App    string
	Follow bool
}

func newLogsCmd(env *Env) *cobra.Command {
	var opts logsOptions
	cmd := &cobra.Command{
		Use:   "logs APP",
		Short: "Show an app's logs (from the journal)",
		Args:  exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.App = args[0]
			if err := store.ValidateName(opts.App); err != nil {
				return err
			}
			cfg, err := env.Config()
			if err != nil {
				return err
			}
			return env.Client(cfg).Logs(cmd.Context(), opts.App, opts.Follow, 0, env.Out)
		},
	}
	cmd.Flags().BoolVarP(&opts.Follow, "follow", "f", false, "keep printing new lines")
	return cmd
}
