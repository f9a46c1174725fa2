package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/internal/names"
	"github.com/onionpod/onionpod/onion"
)

// onion auth add, rm and ls: v3 client authorization.

func newOnionAuthCmd(env *Env) *cobra.Command {
	cmd := groupCmd(&cobra.Command{
		Use:   "auth",
		Short: "v3 client authorization: only clients holding a key reach the app",
	})
	cmd.AddCommand(newOnionAuthAddCmd(env), newOnionAuthRmCmd(env), newOnionAuthLsCmd(env))
	return cmd
}

type onionAuthOptions struct {
	IO
	Ctx context.Context
	keyAccess

	App    string
	Client string
	JSON   bool
}

func newOnionAuthAddCmd(env *Env) *cobra.Command {
	opts := onionAuthOptions{IO: env.IO, keyAccess: newKeyAccess(env)}
	return &cobra.Command{
		Use:   "add APP CLIENT",
		Short: "Authorize a client and print its key (shown this once)",
		Long: `Authorize a client: the app's onion service then answers only clients holding a key.
The client's private key is printed this once (onionpod keeps only the public half): put the
line in a file CLIENT.auth_private in the ClientOnionAuthDir of the client's tor, or give
Tor Browser the key when it asks.`,
		Args: exactArgs("APP", "CLIENT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.App, opts.Client = args[0], args[1]
			opts.Ctx = cmd.Context()
			return runOnionAuthAdd(&opts)
		},
	}
}

func runOnionAuthAdd(opts *onionAuthOptions) error {
	ctx := opts.Ctx
	if err := names.App(opts.App); err != nil {
		return err
	}
	var cred onion.ClientCredential
	err := opts.change(ctx, opts.Err, func(ks *onion.KeyStore) error {
		var err error
		cred, err = ks.AddClient(opts.App, opts.Client)
		return err
	})
	if err != nil {
		return err
	}
	w := opts.Out
	fmt.Fprintf(w, "%s: client %q authorized; the service now answers only authorized clients.\n", opts.App, opts.Client)
	fmt.Fprintf(w, "Give the client this line, for its tor's ClientOnionAuthDir/%s.auth_private (shown only now):\n\n", opts.Client)
	fmt.Fprintf(w, "%s\n\n", cred.AuthPrivate())
	fmt.Fprintf(w, "Tor Browser asks for the key alone: %s\n", cred.PrivateKey())
	fmt.Fprintf(w, "http://%s/\n", cred.Address)
	return nil
}

func newOnionAuthRmCmd(env *Env) *cobra.Command {
	opts := onionAuthOptions{IO: env.IO, keyAccess: newKeyAccess(env)}
	return &cobra.Command{
		Use:   "rm APP CLIENT",
		Short: "Revoke a client (the last one removed opens the service to everyone)",
		Args:  exactArgs("APP", "CLIENT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.App, opts.Client = args[0], args[1]
			opts.Ctx = cmd.Context()
			return runOnionAuthRm(&opts)
		},
	}
}

func runOnionAuthRm(opts *onionAuthOptions) error {
	ctx := opts.Ctx
	if err := names.App(opts.App); err != nil {
		return err
	}
	var left int
	err := opts.change(ctx, opts.Err, func(ks *onion.KeyStore) error {
		if _, err := ks.Load(opts.App); err != nil {
			return err
		}
		if err := ks.RemoveClient(opts.App, opts.Client); err != nil {
			return err
		}
		clients, err := ks.Clients(opts.App)
		left = len(clients)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(opts.Out, "%s: client %q revoked\n", opts.App, opts.Client)
	if left == 0 {
		fmt.Fprintf(opts.Out, "%s: no clients left: the service is open to everyone\n", opts.App)
	}
	return nil
}

func newOnionAuthLsCmd(env *Env) *cobra.Command {
	opts := onionAuthOptions{IO: env.IO, keyAccess: newKeyAccess(env)}
	cmd := &cobra.Command{
		Use:   "ls APP",
		Short: "List an app's authorized clients",
		Args:  exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.App = args[0]
			opts.Ctx = cmd.Context()
			return runOnionAuthLs(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	return cmd
}

type onionClientEntry struct {
	Client    string `json:"client"`
	PublicKey string `json:"public_key"` // the .auth line: descriptor:x25519:<base32>
}

func runOnionAuthLs(opts *onionAuthOptions) error {
	ctx := opts.Ctx
	if err := names.App(opts.App); err != nil {
		return err
	}
	var clients []onion.AuthorizedClient
	err := opts.read(ctx, func(ks *onion.KeyStore) error {
		var err error
		clients, err = ks.Clients(opts.App)
		return err
	})
	if err != nil {
		return err
	}
	entries := make([]onionClientEntry, 0, len(clients))
	for _, c := range clients {
		entries = append(entries, onionClientEntry{Client: c.Name, PublicKey: c.AuthLine()})
	}
	if opts.JSON {
		return writeJSON(opts.Out, entries)
	}
	if len(entries) == 0 {
		fmt.Fprintf(opts.Out, "%s: no clients: the service is open to everyone\n", opts.App)
		return nil
	}
	tw := newTable(opts.Out)
	fmt.Fprintln(tw, "CLIENT\tPUBLIC KEY")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\n", e.Client, e.PublicKey)
	}
	return tw.Flush()
}
