package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/probe"
)

type lsOptions struct {
	JSON bool
}

func newLsCmd(env *Env) *cobra.Command {
	var opts lsOptions
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List apps with their state and addresses",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLs(cmd.Context(), env, opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	return cmd
}

func runLs(ctx context.Context, env *Env, opts lsOptions) error {
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	apps, err := env.Client(cfg).Apps(ctx)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(env.Out, apps)
	}
	if len(apps) == 0 {
		_, err := fmt.Fprintln(env.Out, "No apps yet. Try: onionpod expose hello --static DIR --port 80")
		return err
	}
	tw := tabwriter.NewWriter(env.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tSTATE\tPROBES\tONION\tIPV6\tSOURCE")
	for _, a := range apps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.App.Name, a.State, orDash(probeColumn(a.Probes)), orDash(onionURL(a)), orDash(a.Network.LAN), source(a))
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

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func onionURL(a api.AppStatus) string {
	if a.Onion.Address == "" {
		return ""
	}
	return "http://" + a.Onion.Address + "/"
}

func source(a api.AppStatus) string {
	if held(a) {
		return "(record " + a.State + ": see onionpod status " + a.App.Name + ")"
	}
	switch {
	case a.App.Static != "":
		return "static:" + a.App.Static
	case a.App.Source != "":
		return a.App.Source + " (" + shortID(a.App.Image) + ")"
	}
	return a.App.Image
}

// shortID is an image ID as docker shows it: 12 hex digits.
func shortID(id string) string {
	hex := strings.TrimPrefix(id, "sha256:")
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex
}

// addressLines are the lines that end the human output of run, expose and status: how to reach the app.
func addressLines(a api.AppStatus) []string {
	var lines []string
	if u := onionURL(a); u != "" {
		lines = append(lines, u)
	}
	if a.DNS.Name != "" {
		lines = append(lines, "http://"+strings.TrimSuffix(a.DNS.Name, ".")+"/")
	}
	if a.Network.LAN != "" {
		lines = append(lines, "http://["+a.Network.LAN+"]/")
	}
	return lines
}
