package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
)

func newDNSCmd(env *Env) *cobra.Command {
	cmd := groupCmd(&cobra.Command{Use: "dns", Short: "Show what is published in DNS"})
	cmd.AddCommand(newDNSLsCmd(env))
	return cmd
}

// dnsClient is the part of the LocalAPI dns ls uses.
type dnsClient interface {
	DNS(ctx context.Context) (api.DNSStatus, error)
}

type dnsLsOptions struct {
	IO
	Ctx    context.Context
	Client func() (dnsClient, error)

	JSON bool
}

func newDNSLsCmd(env *Env) *cobra.Command {
	opts := dnsLsOptions{IO: env.IO, Client: daemonClient[dnsClient](env)}
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the records onionpod publishes, and where (built-in server or RFC 2136 primary)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx = cmd.Context()
			return runDNSLs(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	return cmd
}

func runDNSLs(opts *dnsLsOptions) error {
	client, err := opts.Client()
	if err != nil {
		return err
	}
	st, err := client.DNS(opts.Ctx)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(opts.Out, st)
	}
	w := opts.Out
	fmt.Fprintf(w, "zone %s, %s mode, served by %s", st.Zone, st.Mode, orDash(st.Server))
	if st.Serial != 0 {
		fmt.Fprintf(w, ", serial %d", st.Serial)
	}
	fmt.Fprintln(w)
	if st.Pending {
		fmt.Fprintln(w, "an update is pending (retrying)")
	}
	if st.Error != "" {
		fmt.Fprintln(w, "last error:", st.Error)
	}
	if st.Damaged != "" {
		fmt.Fprintln(w, "damaged state:", st.Damaged)
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tADDRESSES")
	for _, r := range st.Records {
		fmt.Fprintf(tw, "%s\t%s\n", r.Name, strings.Join(r.Addresses, " "))
	}
	return tw.Flush()
}
