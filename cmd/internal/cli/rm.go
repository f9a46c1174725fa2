package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/internal/names"
)

// rmClient is the part of the LocalAPI rm uses.
type rmClient interface {
	App(ctx context.Context, name string) (api.AppStatus, error)
	Remove(ctx context.Context, name string, purgeKey bool) error
}

type rmOptions struct {
	IO
	Ctx    context.Context
	Client func() (rmClient, error)

	App      string
	PurgeKey bool
}

func newRmCmd(env *Env) *cobra.Command {
	opts := rmOptions{IO: env.IO, Client: daemonClient[rmClient](env)}
	cmd := &cobra.Command{
		Use:   "rm APP",
		Short: "Remove an app: pod, network, DNS records, onion service (its key is kept unless --purge-key)",
		Args:  exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.App = cmd.Context(), args[0]
			return runRm(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.PurgeKey, "purge-key", false, "also delete the onion key: the .onion address is lost for good")
	return cmd
}

func runRm(opts *rmOptions) error {
	app := opts.App
	if err := names.App(app); err != nil {
		return err
	}
	client, err := opts.Client()
	if err != nil {
		return err
	}
	address := ""
	if st, err := client.App(opts.Ctx, app); err == nil {
		address = st.Onion.Address
	}
	if err := client.Remove(opts.Ctx, app, opts.PurgeKey); err != nil {
		return err
	}
	w := opts.Out
	fmt.Fprintf(w, "%s removed\n", app)
	switch {
	case opts.PurgeKey:
		fmt.Fprintf(w, "its onion key is deleted: %s is gone for good\n", orDash(address))
	case address != "":
		fmt.Fprintf(w, "its onion key is kept, so `onionpod expose %s` brings %s back;\n"+
			"`onionpod onion backup %s -o FILE` saves it, `onionpod rm --purge-key %s` deletes it\n",
			app, address, app, app)
	}
	return nil
}
