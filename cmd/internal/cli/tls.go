package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/internal/names"
)

func newTLSCmd(env *Env) *cobra.Command {
	cmd := groupCmd(&cobra.Command{Use: "tls", Short: "The apps' HTTPS certificates"})
	cmd.AddCommand(newTLSRenewCmd(env))
	return cmd
}

// tlsRenewClient is the part of the LocalAPI tls renew uses.
type tlsRenewClient interface {
	RenewTLS(ctx context.Context, name string) (api.AppStatus, error)
}

type tlsRenewOptions struct {
	IO
	Ctx    context.Context
	Client func() (tlsRenewClient, error)
	// Now is the time the certificate's days left are counted from (time.Now).
	Now func() time.Time

	App     string
	JSON    bool
	Timeout time.Duration
}

func newTLSRenewCmd(env *Env) *cobra.Command {
	opts := tlsRenewOptions{IO: env.IO, Client: daemonClient[tlsRenewClient](env), Now: time.Now}
	cmd := &cobra.Command{
		Use:   "renew APP",
		Short: "Obtain a new certificate for an app now (the one in place stays if it fails)",
		Args:  exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.App = cmd.Context(), args[0]
			return runTLSRenew(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	cmd.Flags().DurationVar(&opts.Timeout, "timeout", 5*time.Minute, "how long to wait for the CA")
	return cmd
}

func runTLSRenew(opts *tlsRenewOptions) error {
	if err := names.App(opts.App); err != nil {
		return err
	}
	client, err := opts.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(opts.Ctx, opts.Timeout)
	defer cancel()
	st, err := client.RenewTLS(ctx, opts.App)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(opts.Out, st.TLS)
	}
	fmt.Fprintf(opts.Out, "%s: certificate renewed\n", opts.App)
	printTLS(opts.Out, st, opts.Now())
	return nil
}

// printTLS prints an app's certificate lines of status; now is when they are printed.
func printTLS(w io.Writer, st api.AppStatus, now time.Time) {
	t := st.TLS
	if t == nil {
		return
	}
	switch {
	case t.Note != "":
		fmt.Fprintf(w, "  https:     none (%s)\n", t.Note)
		return
	case t.NotAfter.IsZero():
		fmt.Fprintf(w, "  https:     no certificate yet\n")
	default:
		front := "front running"
		if !t.Front {
			front = "front not running"
		}
		if t.Serves != "" {
			front += " (to " + t.Serves + ")"
		}
		fmt.Fprintf(w, "  https:     %s, certificate by %s until %s (%s)\n", front, t.Issuer,
			t.NotAfter.Format(time.RFC3339), timeLeft(t.NotAfter.Sub(now)))
	}
	if !t.RenewAt.IsZero() {
		fmt.Fprintf(w, "  renewal:   next %s", t.RenewAt.Format(time.RFC3339))
		if !t.LastRenewal.IsZero() {
			fmt.Fprintf(w, ", last %s", t.LastRenewal.Format(time.RFC3339))
		}
		fmt.Fprintln(w)
	}
	if t.LastError != "" {
		attempts := "attempts"
		if t.Failures == 1 {
			attempts = "attempt"
		}
		fmt.Fprintf(w, "  tls error: %s (%d failed %s)\n", t.LastError, t.Failures, attempts)
	}
}

// timeLeft is a certificate's remaining life d: days, or the time itself under two days.
func timeLeft(d time.Duration) string {
	switch {
	case d < 0:
		return "EXPIRED"
	case d > 48*time.Hour:
		return fmt.Sprintf("%d days left", int(d.Hours()/24))
	}
	return d.Round(time.Second).String() + " left"
}
