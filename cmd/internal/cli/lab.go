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

type labOptions struct {
	Dir        string
	TorNetwork bool
	IPv4       bool
}

func newLabCmd(env *Env) *cobra.Command {
	opts := &labOptions{}
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "A lab in namespaces (systemd, IPv6 LAN, private Tor network, DNS) touching nothing else",
		Long: `The lab is a whole onionpod deployment in namespaces this command creates: a box (a real
systemd as PID 1) running onionpod.service and onionpod's tor, a simulated IPv6 LAN with a client,
a private Tor network on the box's loopback (the public Tor network is never contacted), and the
built-in DNS server. State survives lab down + lab up (the lab's reboot).`,
	}
	cmd.PersistentFlags().StringVar(&opts.Dir, "dir", lab.DefaultDir, "the lab's state directory")
	cmd.AddCommand(newLabUpCmd(env, opts), newLabDownCmd(env, opts), newLabRebootCmd(env, opts),
		newLabStatusCmd(env, opts), newLabExecCmd(env, opts))
	return cmd
}

func newLabUpCmd(env *Env, opts *labOptions) *cobra.Command {
	up := &cobra.Command{
		Use:   "up",
		Short: "Bring the lab up (about 30 s with the Tor network)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := labUp(cmd.Context(), env, *opts)
			return err
		},
	}
	up.Flags().BoolVar(&opts.TorNetwork, "tor-network", true, "run the private Tor network (off: the box's tor stays offline)")
	up.Flags().BoolVar(&opts.IPv4, "ipv4", false, "add a DHCPv4 server to the LAN")
	return up
}

func newLabDownCmd(env *Env, opts *labOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Tear the lab down (its state is kept for the next lab up)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.Open(opts.Dir)
			if err != nil {
				return err
			}
			if err := l.Down(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(env.Out, "lab down (state kept in", opts.Dir+")")
			return nil
		},
	}
}

func newLabRebootCmd(env *Env, opts *labOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "reboot",
		Short: "Reboot the box's systemd (the LAN and the Tor network stay up, as a router would)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.Open(opts.Dir)
			if err != nil {
				return err
			}
			start := time.Now()
			if err := l.Reboot(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintf(env.Out, "box rebooted; the daemon answers again after %.2f s\n", time.Since(start).Seconds())
			return nil
		},
	}
}

func newLabStatusCmd(env *Env, opts *labOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show whether the lab is up, and its apps",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.Open(opts.Dir)
			if err != nil {
				return err
			}
			st := l.State()
			fmt.Fprintf(env.Out, "lab %s up since %s (dir %s)\n", st.Name, st.Started.Format(time.RFC3339), st.Dir)
			fmt.Fprintf(env.Out, "  box netns %s, client netns %s\n", st.BoxNetns, st.Client)
			if st.Socks != "" {
				fmt.Fprintf(env.Out, "  Tor client SOCKS %s (in the box's netns)\n", st.Socks)
			}
			c := l.Command(cmd.Context(), lab.InBox, "onionpod", "ls")
			c.Stdout, c.Stderr = env.Out, env.Err
			return c.Run()
		},
	}
}

func newLabExecCmd(env *Env, opts *labOptions) *cobra.Command {
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
			l, err := lab.Open(opts.Dir)
			if err != nil {
				return err
			}
			c := l.Command(cmd.Context(), args[0], args[1:]...)
			c.Stdin, c.Stdout, c.Stderr = env.In, env.Out, env.Err
			err = c.Run()
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				return &childExit{code: exit.ExitCode()}
			}
			return err
		},
	}
}

// labUp brings a lab up with progress on stderr. lab.Up says first what this machine lacks, if
// anything (not root, a tool or kernel feature missing).
func labUp(ctx context.Context, env *Env, opts labOptions) (*lab.Lab, error) {
	start := time.Now()
	l, err := lab.Up(ctx, lab.Options{
		Dir: opts.Dir, TorNetwork: opts.TorNetwork, IPv4: opts.IPv4, Persist: true,
		Log: func(format string, args ...any) { fmt.Fprintf(env.Err, "  "+format+"\n", args...) },
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(env.Err, "lab up in %.1f s: onionpod lab exec box -- onionpod ls; onionpod lab down\n", time.Since(start).Seconds())
	return l, nil
}

// childExit carries the exit code of a command run by lab exec.
type childExit struct{ code int }

func (e *childExit) Error() string { return fmt.Sprintf("command exited with status %d", e.code) }
