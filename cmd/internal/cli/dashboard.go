package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/dashboard"
)

func newDashboardCmd(env *Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "The web dashboard: its onion service (client auth), its devices, the LAN login key",
		Long: `The daemon serves a web dashboard of every app: on loopback and the host's ULA behind a login
(the key "onionpod dashboard login" prints), and, once enabled, as its own v3 onion service with
client authorization: only devices you add can even find it.

  onionpod dashboard enable              # make its .onion; print it and the first device's key
  onionpod dashboard client add phone    # one more device
  onionpod dashboard login               # the LAN side's login key`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), env, func(ctx context.Context, c *api.Client) error {
				st, err := c.DashboardStatus(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(env.Out, st)
				}
				printDashboardStatus(env, st)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(newDashboardEnableCmd(env), newDashboardDisableCmd(env), newDashboardLoginCmd(env), newDashboardClientCmd(env))
	return cmd
}

// withClient loads the config and hands a LocalAPI client to fn.
func withClient(ctx context.Context, env *Env, fn func(context.Context, *api.Client) error) error {
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	return fn(ctx, env.Client(cfg))
}

func printDashboardStatus(env *Env, st api.DashboardStatus) {
	w := env.Out
	fmt.Fprintln(w, "LAN (login: onionpod dashboard login):")
	for _, l := range st.Listen {
		fmt.Fprintf(w, "  http://%s/\n", l)
	}
	o := st.Onion
	switch {
	case !o.Enabled:
		fmt.Fprintln(w, "onion: off (onionpod dashboard enable)")
	default:
		state := "not added yet"
		switch {
		case o.Published:
			state = "published"
		case o.Added:
			state = "added, descriptor not uploaded yet"
		}
		fmt.Fprintf(w, "onion: http://%s/ (%s)\n", o.Address, state)
		fmt.Fprintf(w, "devices: %s\n", orDash(strings.Join(o.Clients, ", ")))
	}
	if o.Error != "" {
		fmt.Fprintf(w, "error: %s\n", o.Error)
	}
}

func newDashboardEnableCmd(env *Env) *cobra.Command {
	var client string
	var noQR bool
	cmd := &cobra.Command{
		Use:   "enable",
		Short: "Put the dashboard on its own .onion (client authorization); print it and the first device's key",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), env, func(ctx context.Context, c *api.Client) error {
				st, cred, err := c.DashboardEnable(ctx, client)
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Out, "The dashboard is on its own onion service, with client authorization: only the\ndevices you add can reach it (or even find it).\n\n  http://%s/\n\n", st.Onion.Address)
				if cred.AuthPrivate == "" {
					fmt.Fprintf(env.Out, "Devices: %s (add one: onionpod dashboard client add NAME)\n", strings.Join(st.Onion.Clients, ", "))
					return nil
				}
				printCredential(env, cred, !noQR)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&client, "client", dashboard.DefaultClient, "name of the first device")
	cmd.Flags().BoolVar(&noQR, "no-qr", false, "do not draw QR codes")
	return cmd
}

// printCredential shows a new device's key: once, since only its public half is kept.
func printCredential(env *Env, cred api.DashboardClient, qr bool) {
	w := env.Out
	fmt.Fprintf(w, "Device %q may reach it with this key, shown once (onionpod keeps only its public half):\n\n", cred.Name)
	fmt.Fprintf(w, "  Tor Browser (\"onion site authentication\") asks for:\n    %s\n", cred.PrivateKey)
	fmt.Fprintf(w, "  a tor client's ClientOnionAuthDir/%s.auth_private holds:\n    %s\n", cred.Name, cred.AuthPrivate)
	if !qr {
		return
	}
	for _, q := range []struct{ what, text string }{
		{"the address", "http://" + cred.Address + "/"},
		{"the .auth_private line", cred.AuthPrivate},
	} {
		code, err := dashboard.TerminalQR(q.text)
		if err != nil {
			continue
		}
		fmt.Fprintf(w, "\nQR code of %s:\n%s", q.what, code)
	}
}

func newDashboardDisableCmd(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "disable",
		Short: "Take the dashboard's .onion down (its key and devices are kept)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), env, func(ctx context.Context, c *api.Client) error {
				if err := c.DashboardDisable(ctx); err != nil {
					return err
				}
				fmt.Fprintln(env.Out, "The dashboard's onion service is off (enable brings the same .onion back).")
				return nil
			})
		},
	}
}

func newDashboardLoginCmd(env *Env) *cobra.Command {
	var rotate bool
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Print the login key of the dashboard's LAN side",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), env, func(ctx context.Context, c *api.Client) error {
				l, err := c.DashboardLogin(ctx, rotate)
				if err != nil {
					return err
				}
				for _, a := range l.Listen {
					fmt.Fprintf(env.Out, "http://%s/\n", a)
				}
				fmt.Fprintf(env.Out, "login key: %s\n", l.Key)
				if rotate {
					fmt.Fprintln(env.Out, "(a new key: every earlier login has ended)")
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&rotate, "rotate", false, "make a new key (ends every login)")
	return cmd
}

func newDashboardClientCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{Use: "client", Short: "The devices allowed to reach the dashboard's .onion"}
	var noQR bool
	add := &cobra.Command{
		Use: "add NAME", Short: "Allow one more device; print its key and QR codes", Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), env, func(ctx context.Context, c *api.Client) error {
				cred, err := c.DashboardAddClient(ctx, args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Out, "  http://%s/\n\n", cred.Address)
				printCredential(env, cred, !noQR)
				return nil
			})
		},
	}
	add.Flags().BoolVar(&noQR, "no-qr", false, "do not draw QR codes")
	rm := &cobra.Command{
		Use: "rm NAME", Short: "Revoke a device", Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), env, func(ctx context.Context, c *api.Client) error {
				if err := c.DashboardRemoveClient(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(env.Out, "%s can no longer reach the dashboard's .onion\n", args[0])
				return nil
			})
		},
	}
	ls := &cobra.Command{
		Use: "ls", Short: "List the devices", Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), env, func(ctx context.Context, c *api.Client) error {
				st, err := c.DashboardStatus(ctx)
				if err != nil {
					return err
				}
				for _, n := range st.Onion.Clients {
					fmt.Fprintln(env.Out, n)
				}
				return nil
			})
		},
	}
	cmd.AddCommand(add, rm, ls)
	return cmd
}
