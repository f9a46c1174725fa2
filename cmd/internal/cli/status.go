package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
)

func newStatusCmd(env *Env) *cobra.Command {
	var asJSON bool
	cmd := appCommand(env, "status", "Show an app: state, addresses, onion and DNS publication, last error",
		func(ctx context.Context, client *api.Client, app string) error {
			st, err := client.App(ctx, app)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(env.Out, st)
			}
			printStatus(env, st)
			return nil
		})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printStatus(env *Env, st api.AppStatus) {
	w := env.Out
	a := st.App
	fmt.Fprintf(w, "%s: %s\n", a.Name, st.State)
	if held(st) {
		printHeld(env, st)
		return
	}
	fmt.Fprintf(w, "  source:    %s\n", source(st))
	if u := st.Unit; u.Name != "" {
		line := fmt.Sprintf("%s %s/%s", u.Name, orDash(u.ActiveState), orDash(u.SubState))
		if u.MainPID != 0 {
			line += fmt.Sprintf(", pid %d", u.MainPID)
		}
		if u.Restarts > 0 {
			line += fmt.Sprintf(", %d restarts", u.Restarts)
		}
		if !u.Since.IsZero() {
			line += ", since " + u.Since.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "  unit:      %s\n", line)
	}
	var ports []string
	for _, p := range a.Ports {
		ports = append(ports, fmt.Sprintf("%d->%d", p.Public, p.Target))
	}
	fmt.Fprintf(w, "  ports:     %s\n", orDash(strings.Join(ports, " ")))
	if a.WantsOnion() {
		state := "not added"
		switch {
		case st.Onion.Published:
			state = "published"
		case st.Onion.Added:
			state = "added, descriptor not uploaded yet"
		}
		fmt.Fprintf(w, "  onion:     %s (%s)\n", orDash(st.Onion.Address), state)
		if st.Onion.Clients > 0 {
			fmt.Fprintf(w, "  clients:   %d authorized (v3 client auth)\n", st.Onion.Clients)
		}
	}
	if a.Clearnet() {
		fmt.Fprintf(w, "  ipv6:      %s\n", orDash(st.Network.LAN))
		if st.Network.IPv4 != "" {
			fmt.Fprintf(w, "  ipv4:      %s\n", st.Network.IPv4)
		}
		dns := "not published"
		if st.DNS.Published {
			dns = "published"
		}
		fmt.Fprintf(w, "  dns:       %s (%s)\n", orDash(st.DNS.Name), dns)
	} else {
		fmt.Fprintf(w, "  clearnet:  none (onion-only)\n")
	}
	printTLS(env, st)
	fmt.Fprintf(w, "  ula:       %s\n", orDash(st.Network.ULA))
	if st.Health != "" {
		fmt.Fprintf(w, "  health:    %s\n", st.Health)
	}
	for _, p := range st.Probes {
		line := fmt.Sprintf("HTTP %d in %v", p.Status, p.Latency.Round(time.Millisecond))
		if !p.OK {
			line = fmt.Sprintf("failed at %s: %s", p.Hop, p.Err)
		}
		fmt.Fprintf(w, "  probe:     %-5s %s (%s)\n", p.Path, line, p.At.Format(time.TimeOnly))
	}
	if st.LastError != "" {
		fmt.Fprintf(w, "  error:     %s\n", st.LastError)
	}
	for _, f := range st.Damaged {
		fmt.Fprintf(w, "  damaged:   %s (kept for you; a fresh one was made)\n", f)
	}
	if !st.RetryAt.IsZero() {
		fmt.Fprintf(w, "  retry:     in %s (or at once when the app changes)\n", time.Until(st.RetryAt).Round(time.Second))
	}
	if st.ObservedGeneration < a.Generation {
		fmt.Fprintf(w, "  change:    %d not applied yet (the state above is of %d)\n", a.Generation, st.ObservedGeneration)
	}
	if lines := addressLines(st); len(lines) > 0 && st.State == api.StateRunning {
		fmt.Fprintln(w)
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	}
}

// held reports whether the app's record cannot be used (damaged or unreadable).
func held(st api.AppStatus) bool {
	return st.State == api.StateDamaged || st.State == api.StateUnreadable
}

// printHeld shows a held app: what is wrong and what to do, and what is observed of it.
func printHeld(env *Env, st api.AppStatus) {
	w := env.Out
	fmt.Fprintf(w, "  error:     %s\n", st.LastError)
	for _, c := range st.Damaged {
		fmt.Fprintf(w, "  kept:      %s\n", c)
	}
	if u := st.Unit; u.Name != "" {
		fmt.Fprintf(w, "  unit:      %s %s/%s\n", u.Name, orDash(u.ActiveState), orDash(u.SubState))
	}
	if st.Onion.Address != "" {
		fmt.Fprintf(w, "  onion:     %s (added: %v)\n", st.Onion.Address, st.Onion.Added)
	}
	if st.Network.LAN != "" {
		fmt.Fprintf(w, "  ipv6:      %s\n", st.Network.LAN)
	}
	if st.DNS.Name != "" {
		fmt.Fprintf(w, "  dns:       %s (published: %v)\n", st.DNS.Name, st.DNS.Published)
	}
}
