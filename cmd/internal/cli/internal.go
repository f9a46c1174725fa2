package cli

import (
	"context"
	"errors"
	"fmt"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/daemon"
	"github.com/onionpod/onionpod/cmd/internal/reconcile"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/internal/names"
	"github.com/onionpod/onionpod/internal/netnsfile"
	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/pods"
)

// newInternalCmd holds commands onionpod's own units run; users never need them.
func newInternalCmd(env *Env) *cobra.Command {
	cmd := groupCmd(&cobra.Command{Use: "internal", Short: "Commands run by onionpod's units", Hidden: true})
	cmd.AddCommand(newNetUpCmd(env), newFrontCmd(env), newEdgeCmd(env), newNetnsHolderCmd())
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
// the app's record (for a held app whose record is damaged: its last good record).
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
	cfg, err := opts.Config()
	if err != nil {
		return err
	}
	netCfg, err := daemon.NetworkConfig(cfg)
	if err != nil {
		return err
	}
	m, err := network.New(netCfg)
	if err != nil {
		return err
	}
	defer m.Close()
	st, err := store.Open(cfg.StateDir)
	if err != nil {
		return err
	}
	rec, err := st.Get(app)
	var held *store.Held
	if errors.As(err, &held) && held.Last != nil {
		rec, err = *held.Last, nil
	}
	if err != nil {
		return err
	}
	res, err := m.Attach(opts.Ctx, reconcile.NetAttachment(rec, daemon.FrontAtBoot(cfg, rec)))
	if err != nil {
		return err
	}
	fmt.Fprintf(opts.Out, "%s: netns %s, ula %s, lan %s\n", app, res.Netns, res.ULA, res.LAN)
	return nil
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
