package cli

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"time"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/internal/lab"
)

// labOptions are what every lab command shares: the streams and the lab's state directory
// (--dir, a flag of the lab group); each subcommand's options embed them.
type labOptions struct {
	IO
	Ctx context.Context
	Dir string
}

func newLabCmd(env *Env) *cobra.Command {
	opts := &labOptions{IO: env.IO}
	cmd := groupCmd(&cobra.Command{
		Use:   "lab",
		Short: "A lab in namespaces (systemd, IPv6 LAN, private Tor network, DNS) touching nothing else",
		Long: `The lab is a whole onionpod deployment in namespaces this command creates: a box (a real
systemd as PID 1) running onionpod.service and onionpod's tor, a simulated IPv6 LAN with a client,
a private Tor network on the box's loopback (the public Tor network is never contacted), and the
built-in DNS server. State survives lab down + lab up (the lab's reboot).`,
	})
	cmd.PersistentFlags().StringVar(&opts.Dir, "dir", lab.DefaultDir, "the lab's state directory")
	cmd.AddCommand(newLabUpCmd(opts), newLabDownCmd(opts), newLabRebootCmd(opts),
		newLabStatusCmd(opts), newLabExecCmd(opts))
	return cmd
}

// labRunE is the RunE of a lab subcommand: it completes the shared options, then runs run.
func labRunE(opts *labOptions, run func() error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		opts.Ctx = cmd.Context()
		return run()
	}
}

type labUpOptions struct {
	*labOptions
	TorNetwork bool
	IPv4       bool
}

func newLabUpCmd(shared *labOptions) *cobra.Command {
	opts := labUpOptions{labOptions: shared}
	up := &cobra.Command{
		Use:   "up",
		Short: "Bring the lab up (about 30 s with the Tor network)",
		Args:  exactArgs(),
		RunE: labRunE(shared, func() error {
			_, err := labUp(&opts)
			return err
		}),
	}
	up.Flags().BoolVar(&opts.TorNetwork, "tor-network", true, "run the private Tor network (off: the box's tor stays offline)")
	up.Flags().BoolVar(&opts.IPv4, "ipv4", false, "add a DHCPv4 server to the LAN")
	return up
}

// labUp brings a lab up with progress on stderr. lab.Up says first what this machine lacks, if
// anything (not root, a tool or kernel feature missing).
func labUp(opts *labUpOptions) (*lab.Lab, error) {
	start := time.Now()
	l, err := lab.Up(opts.Ctx, lab.Options{
		Dir: opts.Dir, TorNetwork: opts.TorNetwork, IPv4: opts.IPv4, Persist: true,
		Log: func(format string, args ...any) { fmt.Fprintf(opts.Err, "  "+format+"\n", args...) },
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(opts.Err, "lab up in %.1f s: onionpod lab exec box -- onionpod ls; onionpod lab down\n", time.Since(start).Seconds())
	return l, nil
}

func newLabDownCmd(opts *labOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Tear the lab down (its state is kept for the next lab up)",
		Args:  exactArgs(),
		RunE:  labRunE(opts, func() error { return runLabDown(opts) }),
	}
}

func runLabDown(opts *labOptions) error {
	l, err := lab.Open(opts.Dir)
	if err != nil {
		return err
	}
	if err := l.Down(opts.Ctx); err != nil {
		return err
	}
	fmt.Fprintln(opts.Out, "lab down (state kept in", opts.Dir+")")
	return nil
}

func newLabRebootCmd(opts *labOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "reboot",
		Short: "Reboot the box's systemd (the LAN and the Tor network stay up, as a router would)",
		Args:  exactArgs(),
		RunE:  labRunE(opts, func() error { return runLabReboot(opts) }),
	}
}

func runLabReboot(opts *labOptions) error {
	l, err := lab.Open(opts.Dir)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := l.Reboot(opts.Ctx); err != nil {
		return err
	}
	fmt.Fprintf(opts.Out, "box rebooted; the daemon answers again after %.2f s\n", time.Since(start).Seconds())
	return nil
}

func newLabStatusCmd(opts *labOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show whether the lab is up, and its apps",
		Args:  exactArgs(),
		RunE:  labRunE(opts, func() error { return runLabStatus(opts) }),
	}
}

func runLabStatus(opts *labOptions) error {
	l, err := lab.Open(opts.Dir)
	if err != nil {
		return err
	}
	st := l.State()
	fmt.Fprintf(opts.Out, "lab %s up since %s (dir %s)\n", st.Name, st.Started.Format(time.RFC3339), st.Dir)
	fmt.Fprintf(opts.Out, "  box netns %s, client netns %s\n", st.BoxNetns, st.Client)
	if st.Socks != "" {
		fmt.Fprintf(opts.Out, "  Tor client SOCKS %s (in the box's netns)\n", st.Socks)
	}
	c := l.Command(opts.Ctx, lab.InBox, "onionpod", "ls")
	c.Stdout, c.Stderr = opts.Out, opts.Err
	return c.Run()
}

type labExecOptions struct {
	*labOptions
	Place string   // box, client or tor
	Argv  []string // the command
}

func newLabExecCmd(shared *labOptions) *cobra.Command {
	opts := labExecOptions{labOptions: shared}
	return &cobra.Command{
		Use:   "exec box|client|tor -- CMD [ARG...]",
		Short: "Run a command in the box, on the LAN client, or beside the lab's Tor client",
		Long: `Run a command in the lab:
  box     inside the box: systemctl and the onionpod CLI talk to the lab's systemd and daemon
  client  on the LAN client: names under box.example resolve through the box's DNS server
  tor     beside the lab's Tor client, with ALL_PROXY=socks5h://... set (curl http://X.onion/ works)`,
		Example: `  onionpod lab exec box -- onionpod ls
  onionpod lab exec client -- curl -s http://hello.box.example/
  onionpod lab exec tor -- curl -s http://$ONION/`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 || !lab.ValidPlace(args[0]) {
				return &usageError{err: errors.New("lab exec needs a place (box, client or tor) and a command"), cmdPath: cmd.CommandPath()}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.Place, opts.Argv = cmd.Context(), args[0], args[1:]
			return runLabExec(&opts)
		},
	}
}

func runLabExec(opts *labExecOptions) error {
	l, err := lab.Open(opts.Dir)
	if err != nil {
		return err
	}
	c := l.Command(opts.Ctx, opts.Place, opts.Argv...)
	c.Stdin, c.Stdout, c.Stderr = opts.In, opts.Out, opts.Err
	err = c.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return &childExit{code: exit.ExitCode()}
	}
	return err
}

// childExit carries the exit code of a command run by lab exec.
type childExit struct{ code int }

func (e *childExit) Error() string { return fmt.Sprintf("command exited with status %d", e.code) }
