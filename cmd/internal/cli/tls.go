package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
)

func newTLSCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{Use: "tls", Short: "The apps' HTTPS certificates"}
	cmd.AddCommand(newTLSRenewCmd(env))
	return cmd
}

func newTLSRenewCmd(env *Env) *cobra.Command {
	var asJSON bool
	var timeout time.Duration
	cmd := appCommand(env, "renew", "Obtain a new certificate for an app now (the one in place stays if it fails)",
		func(ctx context.Context, client *api.Client, app string) error {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			st, err := client.RenewTLS(ctx, app)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(env.Out, st.TLS)
			}
			printTLS(env, st)
			return nil
		})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for the CA")
	return cmd
}

// printTLS prints an app's certificate lines of status.
func printTLS(env *Env, st api.AppStatus) {
	t := st.TLS
	if t == nil {
		return
	}
	w := env.Out
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
		fmt.Fprintf(w, "  https:     %s, certificate by %s until %s (%s)\n", front, t.Issuer,
			t.NotAfter.Format(time.RFC3339), until(t.NotAfter))
	}
	if !t.RenewAt.IsZero() {
		fmt.Fprintf(w, "  renewal:   next %s", t.RenewAt.Format(time.RFC3339))
		if !t.LastRenewal.IsZero() {
			fmt.Fprintf(w, ", last %s", t.LastRenewal.Format(time.RFC3339))
		}
		fmt.Fprintln(w)
	}
	if t.LastError != "" {
		fmt.Fprintf(w, "  tls error: %s (%d failed attempts)\n", t.LastError, t.Failures)
	}
}

func until(t time.Time) string {
	d := time.Until(t)
	switch {
	case d < 0:
		return "EXPIRED"
	case d > 48*time.Hour:
		return fmt.Sprintf("%d days left", int(d.Hours()/24))
	}
	return d.Round(time.Second).String() + " left"
}
