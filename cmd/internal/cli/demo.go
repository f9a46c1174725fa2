package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/e2e/lab"
)

type demoOptions struct {
	Dir string
}

func newDemoCmd(env *Env) *cobra.Command {
	var opts demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Bring the lab up, expose a demo app, fetch it over .onion and over IPv6 + DNS",
		Long: `The demo builds a tiny web server image locally (busybox httpd), brings the lab up (or uses
the one that is up), runs 'onionpod expose hello --image ... --port 80' inside the lab's box, then
fetches the page from the lab's LAN client by its DNS name over IPv6, and from the lab's Tor client
over the .onion, and prints both pages and how long each step took. Needs root; touches nothing
outside the lab's namespaces; never contacts the public Tor network.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDemo(cmd.Context(), env, opts)
		},
	}
	cmd.Flags().StringVar(&opts.Dir, "dir", lab.DefaultDir, "the lab's state directory")
	return cmd
}

// demoStep times one step of the demo and prints it.
type demoStep struct {
	env   *Env
	total time.Time
}

func (d demoStep) run(what string, fn func() (string, error)) (string, error) {
	start := time.Now()
	fmt.Fprintf(d.env.Out, "==> %s\n", what)
	out, err := fn()
	if err != nil {
		fmt.Fprintf(d.env.Out, "    FAILED after %.2f s\n", time.Since(start).Seconds())
		return out, err
	}
	fmt.Fprintf(d.env.Out, "    done in %.2f s\n", time.Since(start).Seconds())
	return out, nil
}

func runDemo(ctx context.Context, env *Env, opts demoOptions) error {
	d := demoStep{env: env, total: time.Now()}
	page := "<h1>Hello from onionpod</h1>\n<p>Served by busybox httpd in a pod run by systemd.</p>\n"
	image := filepath.Join(opts.Dir, "images", "hello.tar")
	if _, err := d.run("build the demo image (busybox httpd) at "+image, func() (string, error) {
		if err := os.MkdirAll(filepath.Dir(image), 0o755); err != nil {
			return "", err
		}
		return "", lab.WriteDemoImage(image, page)
	}); err != nil {
		return err
	}
	var l *lab.Lab
	if _, err := d.run("bring the lab up (box, LAN, private Tor network, DNS)", func() (string, error) {
		var err error
		if l, err = lab.Open(opts.Dir); err == nil {
			fmt.Fprintln(env.Out, "    (the lab is already up: using it)")
			return "", nil
		}
		l, err = labUp(ctx, env, labOptions{Dir: opts.Dir, TorNetwork: true})
		return "", err
	}); err != nil {
		return err
	}
	if l.State().Socks == "" {
		return fmt.Errorf("the lab in %s runs without its Tor network: onionpod lab down, then run the demo again", opts.Dir)
	}
	run := func(where string, argv ...string) (string, error) {
		var out, errOut bytes.Buffer
		c := l.Command(ctx, where, argv...)
		c.Stdout, c.Stderr = &out, &errOut
		if err := c.Run(); err != nil {
			return out.String(), fmt.Errorf("%s: %w\n%s%s", strings.Join(argv, " "), err, out.String(), errOut.String())
		}
		fmt.Fprint(env.Err, indent(errOut.String()))
		return out.String(), nil
	}
	addrs, err := d.run("onionpod expose hello --image "+image+" --port 80   (in the box)", func() (string, error) {
		fmt.Fprintln(env.Out, "    (a new private Tor network needs 15-35 s for its first consensus: the descriptor upload waits for it)")
		return run(lab.InBox, "onionpod", "expose", "hello", "--image", image, "--port", "80")
	})
	if err != nil {
		return err
	}
	fmt.Fprint(env.Out, indent(addrs))
	var onionURL, dnsURL string
	for _, line := range strings.Fields(addrs) {
		switch {
		case strings.Contains(line, ".onion"):
			onionURL = line
		case strings.Contains(line, lab.Zone):
			dnsURL = line
		}
	}
	if onionURL == "" || dnsURL == "" {
		return fmt.Errorf("expose printed no .onion or DNS address:\n%s", addrs)
	}
	ipv6Page, err := d.run("fetch "+dnsURL+" from the LAN client (DNS from the box, IPv6)", func() (string, error) {
		return retry(ctx, 30*time.Second, func() (string, error) {
			return run(lab.InClient, "curl", "-sS", "-6", "--fail", "--max-time", "10", dnsURL)
		})
	})
	if err != nil {
		return err
	}
	fmt.Fprint(env.Out, indent(ipv6Page))
	onionPage, err := d.run("fetch "+onionURL+" from the Tor client (through the private Tor network)", func() (string, error) {
		return retry(ctx, 3*time.Minute, func() (string, error) {
			return run(lab.InTor, "curl", "-sS", "--fail", "--max-time", "60", onionURL)
		})
	})
	if err != nil {
		return err
	}
	fmt.Fprint(env.Out, indent(onionPage))
	if ipv6Page != page || onionPage != page {
		return errors.New("the pages fetched differ from the page served")
	}
	fmt.Fprintf(env.Out, "\nThe same page over IPv6 + DNS and over its .onion, %.1f s in all.\n", time.Since(d.total).Seconds())
	fmt.Fprintf(env.Out, "Explore: onionpod lab exec box -- onionpod status hello\n         onionpod lab exec client -- curl -s %s\n         onionpod lab exec tor -- curl -s %s\nThen:    onionpod lab down\n", dnsURL, onionURL)
	return nil
}

// retry runs fn until it succeeds or the time is up (tor circuits and descriptors take a moment).
func retry(ctx context.Context, d time.Duration, fn func() (string, error)) (string, error) {
	deadline := time.Now().Add(d)
	for {
		out, err := fn()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return out, err
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return "    " + strings.Join(lines, "\n    ") + "\n"
}
