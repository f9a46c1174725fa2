package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/probe"
)

// lsClient is the part of the LocalAPI ls uses.
type lsClient interface {
	Apps(ctx context.Context) ([]api.AppStatus, error)
	// AppList is Apps with only what the table prints (api.ListEntry).
	AppList(ctx context.Context) ([]api.AppStatus, error)
}

type lsOptions struct {
	IO
	Ctx    context.Context
	Client func() (lsClient, error)

	JSON bool
}

func newLsCmd(env *Env) *cobra.Command {
	opts := lsOptions{IO: env.IO, Client: daemonClient[lsClient](env)}
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List apps with their state and addresses",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx = cmd.Context()
			return runLs(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	return cmd
}

func runLs(opts *lsOptions) error {
	client, err := opts.Client()
	if err != nil {
		return err
	}
	if opts.JSON {
		apps, err := client.Apps(opts.Ctx)
		if err != nil {
			return err
		}
		return writeJSON(opts.Out, apps)
	}
	apps, err := client.AppList(opts.Ctx)
	if err != nil {
		return err
	}
	if len(apps) == 0 {
		_, err := fmt.Fprintln(opts.Out, "No apps yet. Try: onionpod expose hello --static DIR --port 80")
		return err
	}
	tw := newTable(opts.Out)
	fmt.Fprintln(tw, "APP\tSTATE\tCONTAINERS\tPROBES\tONION\tIPV6\tSOURCE")
	for _, a := range apps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.App.Name, a.State, orDash(containersLine(a)), orDash(probeColumn(a.Probes)),
			orDash(onionURL(a)), orDash(a.Network.LAN), source(a))
	}
	return tw.Flush()
}

// probeColumn sums up the last probes: "onion:ok ipv6:ok", or the hop that failed
// ("onion:descriptor").
func probeColumn(probes []probe.Result) string {
	var parts []string
	for _, p := range probes {
		if p.OK {
			parts = append(parts, string(p.Path)+":ok")
		} else {
			parts = append(parts, string(p.Path)+":"+p.Hop)
		}
	}
	return strings.Join(parts, " ")
}
