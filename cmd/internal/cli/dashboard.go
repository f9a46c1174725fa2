package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/dashboard"
)

// dashboardClient is the part of the LocalAPI the dashboard commands use.
type dashboardClient interface {
	DashboardStatus(ctx context.Context) (api.DashboardStatus, error)
	DashboardEnable(ctx context.Context, client string) (api.DashboardStatus, api.DashboardClient, error)
	DashboardDisable(ctx context.Context) error
	DashboardLogin(ctx context.Context, rotate bool) (api.DashboardLogin, error)
	DashboardAddClient(ctx context.Context, name string) (api.DashboardClient, error)
	DashboardRemoveClient(ctx context.Context, name string) error
}

type dashboardOptions struct {
	IO
	Ctx    context.Context
	Client func() (dashboardClient, error)

	JSON bool
}

func newDashboardCmd(env *Env) *cobra.Command {
	opts := dashboardOptions{IO: env.IO, Client: daemonClient[dashboardClient](env)}
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
			opts.Ctx = cmd.Context()
			return runDashboard(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	cmd.AddCommand(newDashboardEnableCmd(env), newDashboardDisableCmd(env), newDashboardLoginCmd(env), newDashboardClientCmd(env))
	return cmd
}

func runDashboard(opts *dashboardOptions) error {
	client, err := opts.Client()
	if err != nil {
		return err
	}
	st, err := client.DashboardStatus(opts.Ctx)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(opts.Out, st)
	}
	printDashboardStatus(opts.Out, st)
	return nil
}

func printDashboardStatus(w io.Writer, st api.DashboardStatus) {
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

type dashboardEnableOptions struct {
	IO
	Ctx    context.Context
	Client func() (dashboardClient, error)

	Device string // the first device's name
	NoQR   bool
}

func newDashboardEnableCmd(env *Env) *cobra.Command {
	opts := dashboardEnableOptions{IO: env.IO, Client: daemonClient[dashboardClient](env)}
	cmd := &cobra.Command{
		Use:   "enable",
		Short: "Put the dashboard on its own .onion (client authorization); print it and the first device's key",
		Long: `Put the dashboard on its own .onion (client authorization); print it and the first device's key.

On a terminal, QR codes of the address and of the key follow (for a phone's camera); a script
reading the output gets the address and key lines alone.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx = cmd.Context()
			return runDashboardEnable(&opts)
		},
	}
	cmd.Flags().StringVar(&opts.Device, "client", dashboard.DefaultClient, "name of the first device")
	cmd.Flags().BoolVar(&opts.NoQR, "no-qr", false, "do not draw QR codes (drawn on a terminal only)")
	return cmd
}

func runDashboardEnable(opts *dashboardEnableOptions) error {
	client, err := opts.Client()
	if err != nil {
		return err
	}
	st, cred, err := client.DashboardEnable(opts.Ctx, opts.Device)
	if err != nil {
		return err
	}
	fmt.Fprintf(opts.Out, "The dashboard is on its own onion service, with client authorization: only the\ndevices you add can reach it (or even find it).\n\n  http://%s/\n\n", st.Onion.Address)
	if cred.AuthPrivate == "" {
		_, err := fmt.Fprintf(opts.Out, "Devices: %s (add one: onionpod dashboard client add NAME)\n", strings.Join(st.Onion.Clients, ", "))
		return err
	}
	printCredential(opts.Out, cred, opts.OutTTY && !opts.NoQR)
	return nil
}

// printCredential shows a new device's key: once, since only its public half is kept. The QR
// codes (qr) are for a terminal: a script wants the lines, not block-character drawings.
func printCredential(w io.Writer, cred api.DashboardClient, qr bool) {
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

type dashboardDisableOptions struct {
	IO
	Ctx    context.Context
	Client func() (dashboardClient, error)
}

func newDashboardDisableCmd(env *Env) *cobra.Command {
	opts := dashboardDisableOptions{IO: env.IO, Client: daemonClient[dashboardClient](env)}
	return &cobra.Command{
		Use:   "disable",
		Short: "Take the dashboard's .onion down (its key and devices are kept)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx = cmd.Context()
			return runDashboardDisable(&opts)
		},
	}
}

func runDashboardDisable(opts *dashboardDisableOptions) error {
	client, err := opts.Client()
	if err != nil {
		return err
	}
	if err := client.DashboardDisable(opts.Ctx); err != nil {
		return err
	}
	_, err = fmt.Fprintln(opts.Out, "The dashboard's onion service is off (enable brings the same .onion back).")
	return err
}

type dashboardLoginOptions struct {
	IO
	Ctx    context.Context
	Client func() (dashboardClient, error)

	Rotate bool
}

func newDashboardLoginCmd(env *Env) *cobra.Command {
	opts := dashboardLoginOptions{IO: env.IO, Client: daemonClient[dashboardClient](env)}
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Print the login key of the dashboard's LAN side",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx = cmd.Context()
			return runDashboardLogin(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.Rotate, "rotate", false, "make a new key (ends every login)")
	return cmd
}

func runDashboardLogin(opts *dashboardLoginOptions) error {
	client, err := opts.Client()
	if err != nil {
		return err
	}
	l, err := client.DashboardLogin(opts.Ctx, opts.Rotate)
	if err != nil {
		return err
	}
	for _, a := range l.Listen {
		fmt.Fprintf(opts.Out, "http://%s/\n", a)
	}
	fmt.Fprintf(opts.Out, "login key: %s\n", l.Key)
	if opts.Rotate {
		fmt.Fprintln(opts.Out, "(a new key: every earlier login has ended)")
	}
	return nil
}

func newDashboardClientCmd(env *Env) *cobra.Command {
	cmd := groupCmd(&cobra.Command{Use: "client", Short: "The devices allowed to reach the dashboard's .onion"})
	cmd.AddCommand(newDashboardClientAddCmd(env), newDashboardClientRmCmd(env), newDashboardClientLsCmd(env))
	return cmd
}

type dashboardClientAddOptions struct {
	IO
	Ctx    context.Context
	Client func() (dashboardClient, error)

	Name string
	NoQR bool
}

func newDashboardClientAddCmd(env *Env) *cobra.Command {
	opts := dashboardClientAddOptions{IO: env.IO, Client: daemonClient[dashboardClient](env)}
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Allow one more device; print its key (and QR codes, on a terminal)",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.Name = cmd.Context(), args[0]
			return runDashboardClientAdd(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.NoQR, "no-qr", false, "do not draw QR codes (drawn on a terminal only)")
	return cmd
}

func runDashboardClientAdd(opts *dashboardClientAddOptions) error {
	client, err := opts.Client()
	if err != nil {
		return err
	}
	cred, err := client.DashboardAddClient(opts.Ctx, opts.Name)
	if err != nil {
		return err
	}
	fmt.Fprintf(opts.Out, "  http://%s/\n\n", cred.Address)
	printCredential(opts.Out, cred, opts.OutTTY && !opts.NoQR)
	return nil
}

type dashboardClientRmOptions struct {
	IO
	Ctx    context.Context
	Client func() (dashboardClient, error)

	Name string
}

func newDashboardClientRmCmd(env *Env) *cobra.Command {
	opts := dashboardClientRmOptions{IO: env.IO, Client: daemonClient[dashboardClient](env)}
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Revoke a device",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.Name = cmd.Context(), args[0]
			return runDashboardClientRm(&opts)
		},
	}
}

func runDashboardClientRm(opts *dashboardClientRmOptions) error {
	client, err := opts.Client()
	if err != nil {
		return err
	}
	if err := client.DashboardRemoveClient(opts.Ctx, opts.Name); err != nil {
		return err
	}
	_, err = fmt.Fprintf(opts.Out, "%s can no longer reach the dashboard's .onion\n", opts.Name)
	return err
}

type dashboardClientLsOptions struct {
	IO
	Ctx    context.Context
	Client func() (dashboardClient, error)
}

func newDashboardClientLsCmd(env *Env) *cobra.Command {
	opts := dashboardClientLsOptions{IO: env.IO, Client: daemonClient[dashboardClient](env)}
	return &cobra.Command{
		Use:   "ls",
		Short: "List the devices",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx = cmd.Context()
			return runDashboardClientLs(&opts)
		},
	}
}

func runDashboardClientLs(opts *dashboardClientLsOptions) error {
	client, err := opts.Client()
	if err != nil {
		return err
	}
	st, err := client.DashboardStatus(opts.Ctx)
	if err != nil {
		return err
	}
	for _, n := range st.Onion.Clients {
		fmt.Fprintln(opts.Out, n)
	}
	return nil
}
