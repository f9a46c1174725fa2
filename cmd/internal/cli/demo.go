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

	"github.com/onionpod/onionpod/internal/lab"
	"github.com/onionpod/onionpod/internal/lab/hostcheck"
)

type demoOptions struct {
	IO
	Ctx context.Context
	Dir string
}

func newDemoCmd(env *Env) *cobra.Command {
	opts := demoOptions{IO: env.IO}
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
			opts.Ctx = cmd.Context()
			return runDemo(&opts)
		},
	}
	cmd.Flags().StringVar(&opts.Dir, "dir", lab.DefaultDir, "the lab's state directory")
	return cmd
}

// demoPage is what the demo app serves.
const demoPage = "<h1>Hello from onionpod</h1>\n<p>Served by busybox httpd in a pod run by systemd.</p>\n"

// demo is one run of the demo: its output, its lab, and when it began.
type demo struct {
	ctx   context.Context
	opts  *demoOptions
	lab   *lab.Lab
	start time.Time
}

// demoAddrs are the addresses expose printed.
type demoAddrs struct {
	onion, dns string
}

// runDemo runs the demo's steps, each timed and printed: build the image, bring the lab up,
// expose the app in the box, fetch it by DNS over IPv6 and over its .onion, compare the pages.
func runDemo(opts *demoOptions) error {
	d := &demo{ctx: opts.Ctx, opts: opts, start: time.Now()}
	// The lab's parts, busybox for the image and curl for the fetches: say at once what is missing.
	needs := append(lab.Needs(lab.Options{TorNetwork: true}), hostcheck.Busybox, hostcheck.Curl)
	if err := hostcheck.Missing(needs...); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	image := filepath.Join(opts.Dir, "images", "hello.tar")
	if _, err := d.step("build the demo image (busybox httpd) at "+image, func() (string, error) {
		return "", buildDemoImage(image)
	}); err != nil {
		return err
	}
	if _, err := d.step("bring the lab up (box, LAN, private Tor network, DNS)", d.openOrUpLab); err != nil {
		return err
	}
	addrs, err := d.expose(image)
	if err != nil {
		return err
	}
	ipv6Page, err := d.fetch("fetch "+addrs.dns+" from the LAN client (DNS from the box, IPv6)",
		lab.InClient, 30*time.Second, "curl", "-sS", "-6", "--fail", "--max-time", "10", addrs.dns)
	if err != nil {
		return err
	}
	onionPage, err := d.fetch("fetch "+addrs.onion+" from the Tor client (through the private Tor network)",
		lab.InTor, 3*time.Minute, "curl", "-sS", "--fail", "--max-time", "60", addrs.onion)
	if err != nil {
		return err
	}
	if ipv6Page != demoPage || onionPage != demoPage {
		return errors.New("the pages fetched differ from the page served")
	}
	d.summary(addrs)
	return nil
}

// step times one step of the demo and prints it.
func (d *demo) step(what string, fn func() (string, error)) (string, error) {
	start := time.Now()
	fmt.Fprintf(d.opts.Out, "==> %s\n", what)
	out, err := fn()
	if err != nil {
		fmt.Fprintf(d.opts.Out, "    FAILED after %.2f s\n", time.Since(start).Seconds())
		return out, err
	}
	fmt.Fprintf(d.opts.Out, "    done in %.2f s\n", time.Since(start).Seconds())
	return out, nil
}

// buildDemoImage writes the demo app's image archive at path.
func buildDemoImage(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return lab.WriteDemoImage(path, demoPage)
}

// openOrUpLab uses the lab that is up in the demo's dir, or brings one up with its Tor network.
func (d *demo) openOrUpLab() (string, error) {
	var err error
	if d.lab, err = lab.Open(d.opts.Dir); err == nil {
		fmt.Fprintln(d.opts.Out, "    (the lab is already up: using it)")
	} else if d.lab, err = labUp(&labUpOptions{labOptions: &labOptions{IO: d.opts.IO, Ctx: d.ctx, Dir: d.opts.Dir}, TorNetwork: true}); err != nil {
		return "", err
	}
	if d.lab.State().Socks == "" {
		return "", fmt.Errorf("the lab in %s runs without its Tor network: onionpod lab down, then run the demo again", d.opts.Dir)
	}
	return "", nil
}

// expose runs `onionpod expose hello` in the box and returns the addresses it printed.
func (d *demo) expose(image string) (demoAddrs, error) {
	out, err := d.step("onionpod expose hello --image "+image+" --port 80   (in the box)", func() (string, error) {
		fmt.Fprintln(d.opts.Out, "    (a new private Tor network needs 15-35 s for its first consensus: the descriptor upload waits for it)")
		return d.run(lab.InBox, "onionpod", "expose", "hello", "--image", image, "--port", "80")
	})
	if err != nil {
		return demoAddrs{}, err
	}
	fmt.Fprint(d.opts.Out, indent(out))
	var a demoAddrs
	for _, word := range strings.Fields(out) {
		switch {
		case strings.Contains(word, ".onion"):
			a.onion = word
		case strings.Contains(word, lab.Zone):
			a.dns = word
		}
	}
	if a.onion == "" || a.dns == "" {
		return demoAddrs{}, fmt.Errorf("expose printed no .onion or DNS address:\n%s", out)
	}
	return a, nil
}

// fetch runs argv (a curl) in the lab's place where, retrying for up to d (tor circuits and
// descriptors take a moment), as a step, and prints the page.
func (d *demo) fetch(what, where string, limit time.Duration, argv ...string) (string, error) {
	page, err := d.step(what, func() (string, error) {
		return retry(d.ctx, limit, func() (string, error) { return d.run(where, argv...) })
	})
	if err != nil {
		return "", err
	}
	fmt.Fprint(d.opts.Out, indent(page))
	return page, nil
}

// run runs argv in the lab and returns its output; its stderr goes, indented, to the demo's.
func (d *demo) run(where string, argv ...string) (string, error) {
	var out, errOut bytes.Buffer
	c := d.lab.Command(d.ctx, where, argv...)
	c.Stdout, c.Stderr = &out, &errOut
	if err := c.Run(); err != nil {
		return out.String(), fmt.Errorf("%s: %w\n%s%s", strings.Join(argv, " "), err, out.String(), errOut.String())
	}
	fmt.Fprint(d.opts.Err, indent(errOut.String()))
	return out.String(), nil
}

// summary prints the total time and what to try next.
func (d *demo) summary(a demoAddrs) {
	fmt.Fprintf(d.opts.Out, "\nThe same page over IPv6 + DNS and over its .onion, %.1f s in all.\n", time.Since(d.start).Seconds())
	fmt.Fprintf(d.opts.Out, "Explore: onionpod lab exec box -- onionpod status hello\n         onionpod lab exec client -- curl -s %s\n         onionpod lab exec tor -- curl -s %s\nThen:    onionpod lab down\n", a.dns, a.onion)
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
