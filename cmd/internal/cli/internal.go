package cli

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/daemon"
	"github.com/onionpod/onionpod/cmd/internal/reconcile"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
	"github.com/onionpod/onionpod/internal/netnsfile"
	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/pods"
)

// newInternalCmd holds commands onionpod's own units run; users never need them.
func newInternalCmd(env *Env) *cobra.Command {
	cmd := groupCmd(&cobra.Command{Use: "internal", Short: "Commands run by onionpod's units", Hidden: true})
	cmd.AddCommand(newNetUpCmd(env), newNetBootCmd(env), newFrontCmd(env), newEdgeCmd(env), newNetnsHolderCmd())
	return cmd
}

// newNetnsHolderCmd is the ExecStart of onionpod-netns.service: the holder of the pods' network
// namespaces. systemd starts it in a mount namespace of its own with a tmpfs at INNER; it points
// LINK (network.netns_dir) at that tmpfs and waits, so that the pods' namespace mounts are made
// there, out of the mount table systemd copies at every unit start (netnsfile.Hold).
func newNetnsHolderCmd() *cobra.Command {
	return &cobra.Command{
		Use:  "netns-holder INNER LINK",
		Args: exactArgs("INNER", "LINK"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return netnsfile.Hold(cmd.Context(), args[0], args[1], func() { sddaemon.SdNotify(false, sddaemon.SdNotifyReady) })
		},
	}
}

type netUpOptions struct {
	IO
	Ctx    context.Context
	Config func() (*configs.Config, error)

	App string
}

// newNetUpCmd is the ExecStart of an app's network unit: it recreates the pod's network
// namespace and attachment at boot, before the pod and before the daemon, from the config and
// the app's record (for a held app whose record is damaged: its last good record). At boot
// onionpod-networks.service (net-boot) has usually done it for every app, and systemd skips the
// unit; it runs for an app net-boot could not attach, or whose namespace was lost since.
func newNetUpCmd(env *Env) *cobra.Command {
	opts := netUpOptions{IO: env.IO, Config: env.Config}
	return &cobra.Command{
		Use:  "net-up APP",
		Args: exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.App = cmd.Context(), args[0]
			return runNetUp(&opts)
		},
	}
}

func runNetUp(opts *netUpOptions) error {
	app := opts.App
	if err := names.App(app); err != nil {
		return err
	}
	b, err := openBootNetworks(opts.Config)
	if err != nil {
		return err
	}
	defer b.close()
	rec, err := b.st.Get(app)
	var held *store.Held
	if errors.As(err, &held) && held.Last != nil {
		rec, err = *held.Last, nil
	}
	if err != nil {
		return err
	}
	res, err := b.attach(opts.Ctx, rec)
	if err != nil {
		return err
	}
	fmt.Fprintln(opts.Out, attachedLine(app, res))
	return nil
}

type netBootOptions struct {
	IO
	Ctx    context.Context
	Config func() (*configs.Config, error)

	Parallel int           // attaches at a time
	Budget   time.Duration // after this, the apps not begun are left to their network units
}

// newNetBootCmd is the ExecStart of onionpod-networks.service: at boot, before the apps'
// network units, it recreates the network of every app that runs (as net-up would, each from
// its record or last good record) in this one process, Parallel at a time. An app it attached
// has its namespace, so systemd skips its network unit; one it could not attach is named on
// stderr and left to its network unit, which tries again. It fails only when it cannot start
// (the config, the store, the network); the apps' own failures are their units'.
func newNetBootCmd(env *Env) *cobra.Command {
	opts := netBootOptions{IO: env.IO, Config: env.Config}
	cmd := &cobra.Command{
		Use:  "net-boot",
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx = cmd.Context()
			return runNetBoot(&opts)
		},
	}
	cmd.Flags().IntVar(&opts.Parallel, "parallel", 2*runtime.NumCPU(), "attaches at a time")
	cmd.Flags().DurationVar(&opts.Budget, "budget", 10*time.Minute, "time after which the apps not begun are left to their network units")
	return cmd
}

func runNetBoot(opts *netBootOptions) error {
	if opts.Parallel < 1 {
		return errkind.BadInputf("--parallel: at least 1, not %d", opts.Parallel)
	}
	start := time.Now()
	b, err := openBootNetworks(opts.Config)
	if err != nil {
		return err
	}
	defer b.close()
	apps, held, err := b.st.List()
	if err != nil {
		return err
	}
	for _, h := range held {
		if h.Last != nil {
			apps = append(apps, *h.Last)
		}
	}
	var todo []store.App
	for _, app := range apps {
		if !app.Stopped && !netnsfile.Exists(network.NetnsPath(b.cfg.Network.NetnsDir, app.Name)) {
			todo = append(todo, app)
		}
	}
	deadline := start.Add(opts.Budget)
	var (
		mu                     sync.Mutex
		next                   atomic.Int64
		attached, failed, late int
		wg                     sync.WaitGroup
	)
	for range min(opts.Parallel, len(todo)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(todo); i = int(next.Add(1) - 1) {
				app := todo[i]
				if time.Now().After(deadline) || opts.Ctx.Err() != nil {
					mu.Lock()
					late++
					mu.Unlock()
					continue
				}
				res, err := b.attach(opts.Ctx, app)
				mu.Lock()
				if err != nil {
					failed++
					fmt.Fprintf(opts.Err, "%s: %v (left to %s)\n", app.Name, err, pods.NetUnitName(app.Name))
				} else {
					attached++
					fmt.Fprintln(opts.Out, attachedLine(app.Name, res))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fmt.Fprintf(opts.Out, "net-boot: %d apps attached, %d failed, %d not begun in time (left to their network units), %d stopped or with a network already, in %v\n",
		attached, failed, late, len(apps)-len(todo), time.Since(start).Round(time.Millisecond))
	return nil
}

// attachedLine says where an attached app is: its namespace and addresses ("lan -" for an app
// on the .onion only).
func attachedLine(app string, res network.Result) string {
	lan := "-"
	if res.LAN.IsValid() {
		lan = res.LAN.String()
	}
	return fmt.Sprintf("%s: netns %s, ula %s, lan %s", app, res.Netns, res.ULA, lan)
}

// bootNetworks is what the boot-time network commands work with: the config, the network
// Manager and the store of app records.
type bootNetworks struct {
	cfg *configs.Config
	m   *network.Manager
	st  *store.Store
}

func openBootNetworks(config func() (*configs.Config, error)) (*bootNetworks, error) {
	cfg, err := config()
	if err != nil {
		return nil, err
	}
	netCfg, err := daemon.NetworkConfig(cfg)
	if err != nil {
		return nil, err
	}
	m, err := network.New(netCfg)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(cfg.StateDir)
	if err != nil {
		m.Close()
		return nil, err
	}
	return &bootNetworks{cfg: cfg, m: m, st: st}, nil
}

func (b *bootNetworks) close() { b.m.Close() }

// attach makes app's network as the daemon would (with its HTTPS front's ports where it has one).
func (b *bootNetworks) attach(ctx context.Context, app store.App) (network.Result, error) {
	return b.m.Attach(ctx, reconcile.NetAttachment(app, daemon.FrontAtBoot(b.cfg, app)))
}

type serveStaticOptions struct {
	Ctx    context.Context
	Dir    string
	Listen string
}

// newServeStaticCmd is what a static-site pod runs: the onionpod binary itself serving a
// read-only directory.
func newServeStaticCmd(env *Env) *cobra.Command {
	var opts serveStaticOptions
	cmd := &cobra.Command{
		Use:    "serve-static --dir DIR --listen ADDR",
		Short:  "Serve a directory of static files over HTTP (what a --static pod runs)",
		Hidden: true,
		Args:   exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx = cmd.Context()
			return runServeStatic(&opts)
		},
	}
	cmd.Flags().StringVar(&opts.Dir, "dir", "/site", "directory to serve")
	cmd.Flags().StringVar(&opts.Listen, "listen", "[::]:8080", "address to listen on")
	return cmd
}

func runServeStatic(opts *serveStaticOptions) error {
	return pods.ServeStatic(opts.Ctx, opts.Dir, opts.Listen)
}
