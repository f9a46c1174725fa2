package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/internal/names"
)

// statusClient is the part of the LocalAPI status uses.
type statusClient interface {
	App(ctx context.Context, name string) (api.AppStatus, error)
}

type statusOptions struct {
	IO
	Ctx    context.Context
	Client func() (statusClient, error)
	// Now is the time status says "retry in" from (time.Now).
	Now func() time.Time

	App  string
	JSON bool
}

func newStatusCmd(env *Env) *cobra.Command {
	opts := statusOptions{IO: env.IO, Client: daemonClient[statusClient](env), Now: time.Now}
	cmd := &cobra.Command{
		Use:   "status APP",
		Short: "Show an app: state, addresses, onion and DNS publication, last error",
		Args:  exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.App = cmd.Context(), args[0]
			return runStatus(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	return cmd
}

func runStatus(opts *statusOptions) error {
	if err := names.App(opts.App); err != nil {
		return err
	}
	client, err := opts.Client()
	if err != nil {
		return err
	}
	st, err := client.App(opts.Ctx, opts.App)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(opts.Out, st)
	}
	printStatus(opts.Out, st, opts.Now())
	return nil
}

// printStatus is the human output of status; now is when it is printed.
func printStatus(w io.Writer, st api.AppStatus, now time.Time) {
	fmt.Fprintf(w, "%s: %s\n", st.App.Name, st.State)
	if held(st) {
		printHeld(w, st)
		return
	}
	if len(st.Containers) <= 1 {
		printSingleContainer(w, st)
	} else {
		printContainers(w, st)
	}
	printPorts(w, st)
	if st.App.WantsOnion() {
		printOnion(w, st)
	}
	if st.App.Clearnet() {
		printClearnet(w, st)
	} else {
		fmt.Fprintf(w, "  clearnet:  none (onion-only)\n")
	}
	printTLS(w, st, now)
	fmt.Fprintf(w, "  ula:       %s\n", orDash(st.Network.ULA))
	if st.Health != "" {
		fmt.Fprintf(w, "  health:    %s\n", st.Health)
	}
	printProbes(w, st)
	printTrouble(w, st, now)
	if lines := addressLines(st); len(lines) > 0 && st.State == api.StateRunning {
		fmt.Fprintln(w)
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	}
}

// printSingleContainer shows the source, unit, check and images of an app of one container
// (or none yet) on the app's own lines.
func printSingleContainer(w io.Writer, st api.AppStatus) {
	fmt.Fprintf(w, "  source:    %s\n", source(st))
	if u := st.Unit; u.Name != "" {
		fmt.Fprintf(w, "  unit:      %s\n", unitLine(u))
	}
	for _, c := range st.Containers {
		printCheck(w, "  check:     ", c.Health)
		printImages(w, "  ", c)
	}
}

// printContainers shows each container of an app of several, indented under "containers:".
func printContainers(w io.Writer, st api.AppStatus) {
	fmt.Fprintf(w, "  containers:\n")
	for _, c := range st.Containers {
		src := c.Image
		if ac, ok := st.App.Container(c.Name); ok {
			src = containerSource(ac)
		}
		fmt.Fprintf(w, "    %s: %s", c.Name, src)
		if len(c.Ports) > 0 {
			fmt.Fprintf(w, " (serves %s)", strings.Join(c.Ports, " "))
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "      unit:    %s\n", unitLine(c.Unit))
		printCheck(w, "      check:   ", c.Health)
		printImages(w, "    ", c)
	}
}

func printPorts(w io.Writer, st api.AppStatus) {
	var ports []string
	for _, p := range st.App.Ports {
		ports = append(ports, fmt.Sprintf("%d->%d", p.Public, p.Target))
	}
	fmt.Fprintf(w, "  ports:     %s\n", orDash(strings.Join(ports, " ")))
}

// printOnion shows the onion service: its address, how far it is published, its clients.
func printOnion(w io.Writer, st api.AppStatus) {
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

// printClearnet shows the LAN addresses and the DNS name of an app reachable off Tor.
func printClearnet(w io.Writer, st api.AppStatus) {
	fmt.Fprintf(w, "  ipv6:      %s\n", orDash(st.Network.LAN))
	if st.Network.IPv4 != "" {
		fmt.Fprintf(w, "  ipv4:      %s\n", st.Network.IPv4)
	}
	dns := "not published"
	if st.DNS.Published {
		dns = "published"
	}
	fmt.Fprintf(w, "  dns:       %s (%s)\n", orDash(st.DNS.Name), dns)
}

// printProbes shows one line per probe: what answered and how fast, or the hop that failed.
func printProbes(w io.Writer, st api.AppStatus) {
	for _, p := range st.Probes {
		proto := "HTTP"
		if p.TLS {
			proto = "HTTPS"
		}
		line := fmt.Sprintf("%s %d in %v", proto, p.Status, p.Latency.Round(time.Millisecond))
		if !p.OK {
			line = fmt.Sprintf("failed at %s: %s", p.Hop, p.Err)
		}
		fmt.Fprintf(w, "  probe:     %-5s %s (%s)\n", p.Path, line, p.At.Format(time.TimeOnly))
	}
}

// printTrouble shows what is not right yet: the last error, damaged files, the next retry, and
// a change not applied yet.
func printTrouble(w io.Writer, st api.AppStatus, now time.Time) {
	if st.LastError != "" {
		fmt.Fprintf(w, "  error:     %s\n", st.LastError)
	}
	for _, f := range st.Damaged {
		fmt.Fprintf(w, "  damaged:   %s (kept for you; a fresh one was made)\n", f)
	}
	if !st.RetryAt.IsZero() {
		fmt.Fprintf(w, "  retry:     in %s (or at once when the app changes)\n", st.RetryAt.Sub(now).Round(time.Second))
	}
	if st.ObservedGeneration < st.App.Generation {
		fmt.Fprintf(w, "  change:    %d not applied yet (the state above is of %d)\n", st.App.Generation, st.ObservedGeneration)
	}
}

// printHeld shows a held app: what is wrong and what to do, and what is observed of it.
func printHeld(w io.Writer, st api.AppStatus) {
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

// unitLine is a unit's state, main PID, restarts and since when.
func unitLine(u api.UnitStatus) string {
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
	return line
}

// printCheck shows a container's health check: its state, what it checks, its restarts.
func printCheck(w io.Writer, prefix string, h *api.HealthStatus) {
	if h == nil {
		return
	}
	state := orDash(h.State)
	if !h.Since.IsZero() {
		state += " since " + h.Since.Format(time.TimeOnly)
	}
	fmt.Fprintf(w, "%s%s (%s)\n", prefix, state, h.Check)
	indent := strings.Repeat(" ", len(prefix))
	if h.LastError != "" {
		fmt.Fprintf(w, "%slast failure (%d in a row): %s\n", indent, h.Failures, h.LastError)
	}
	if h.Restarts > 0 {
		fmt.Fprintf(w, "%srestarted %d time(s) by its health check, last at %s: %s\n", indent, h.Restarts,
			h.LastRestart.Format(time.RFC3339), h.RestartReason)
	}
}

// printImages shows the image a container runs and the one it ran before (what a rollback
// returns to), when known, with their registry digests, and the image an update was rolled back
// from.
func printImages(w io.Writer, indent string, c api.ContainerStatus) {
	if c.ImageID != "" && c.ImageID != c.Image {
		fmt.Fprintf(w, "%s  image:     %s\n", indent, c.ImageID)
	}
	if c.Digest != "" {
		fmt.Fprintf(w, "%s  digest:    %s\n", indent, c.Digest)
	}
	if c.PreviousImageID != "" {
		fmt.Fprintf(w, "%s  before:    %s%s\n", indent, c.PreviousImageID, digestOf(c.PreviousDigest))
	}
	if c.Rejected != "" {
		fmt.Fprintf(w, "%s  rejected:  %s (an update to it was rolled back)\n", indent, c.Rejected)
		if c.RejectedReason != "" {
			fmt.Fprintf(w, "%s             why: %s\n", indent, c.RejectedReason)
		}
	}
	if t := c.Trial; t != nil {
		fmt.Fprintf(w, "%s  updating:  trial of %s until %s (kept once healthy, else back to %s)\n",
			indent, cmp.Or(c.Image, c.ImageID), t.Deadline.Format(time.RFC3339), cmp.Or(t.Back.Image, t.Back.ImageID))
	}
}

func digestOf(d string) string {
	if d == "" {
		return ""
	}
	return " (digest " + d + ")"
}
