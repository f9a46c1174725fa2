package cli

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/front"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
)

type frontOptions struct {
	IO
	Ctx context.Context
	// Serve runs the front until its context ends (front.RunFront).
	Serve func(ctx context.Context, cfg front.Config, feed string, log *slog.Logger) error

	App      string
	Host     string
	Target   uint16
	Onion    string
	EdgeAddr string
	Feed     string
}

// newFrontCmd is the ExecStart of an app's front unit (in the pod's network namespace, as a
// dynamic user): everything it needs is on its command line, the certificate comes as a
// credential and over the feed; it reads no config and nothing of the state dir.
func newFrontCmd(env *Env) *cobra.Command {
	opts := frontOptions{IO: env.IO, Serve: front.RunFront}
	cmd := &cobra.Command{
		Use:   "front APP --host NAME --target PORT [--onion NAME.onion] [--edge-addr ULA] [--feed SOCKET]",
		Short: "Serve an app's HTTPS in its pod (what its front unit runs)",
		Args:  exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.App = cmd.Context(), args[0]
			return runFront(&opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.Host, "host", "", "the app's clearnet name (redirects go there)")
	fl.Uint16Var(&opts.Target, "target", 0, "the app's port in the pod")
	fl.StringVar(&opts.Onion, "onion", "", "the app's .onion name, for Onion-Location")
	fl.StringVar(&opts.EdgeAddr, "edge-addr", "", "the host's ULA address, whose connections carry a PROXY header")
	fl.StringVar(&opts.Feed, "feed", front.FeedSocket, "the daemon's feed socket")
	return cmd
}

// runFront checks the front's command line (bad input before anything listens), says what it
// serves, and serves until SIGTERM.
func runFront(opts *frontOptions) error {
	if err := names.App(opts.App); err != nil {
		return err
	}
	cfg := front.Config{Host: strings.TrimSuffix(opts.Host, "."), Target: opts.Target, Onion: opts.Onion}
	if !names.IsHostname(cfg.Host) {
		return errkind.BadInputf("front: --host: not a host name")
	}
	if cfg.Target == 0 {
		return errkind.BadInputf("front: --target: a port from 1 to 65535")
	}
	if opts.Onion != "" && !strings.HasSuffix(opts.Onion, ".onion") {
		return errkind.BadInputf("front: --onion: not a .onion name")
	}
	if opts.EdgeAddr != "" {
		a, err := netip.ParseAddr(opts.EdgeAddr)
		if err != nil {
			return errkind.BadInputf("front: --edge-addr: not an address")
		}
		cfg.EdgeAddr = a
	}
	log := unitLogger(opts.Err).With("app", opts.App)
	log.Info("front", "host", cfg.Host, "target", cfg.Target, "onion_location", cfg.Onion != "",
		"edge", cfg.EdgeAddr, "feed", opts.Feed)
	ctx, stop := signal.NotifyContext(opts.Ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return opts.Serve(ctx, cfg, opts.Feed, log)
}

type edgeOptions struct {
	IO
	Ctx context.Context
	// Serve routes until its context ends (front.RunEdge).
	Serve func(ctx context.Context, httpsAddr, httpAddr, feed string, log *slog.Logger) error

	HTTPS, HTTP string
	Feed        string
}

// newEdgeCmd is the ExecStart of the edge unit: the box's IPv4 :443 and :80 routed to the apps.
func newEdgeCmd(env *Env) *cobra.Command {
	opts := edgeOptions{IO: env.IO, Serve: front.RunEdge}
	cmd := &cobra.Command{
		Use:   "edge [--https ADDR] [--http ADDR] [--feed SOCKET]",
		Short: "Route the box's IPv4 :443 by server name and :80 by Host to the apps (the edge unit)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx = cmd.Context()
			return runEdge(&opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.HTTPS, "https", "0.0.0.0:443", "where TLS visitors arrive")
	fl.StringVar(&opts.HTTP, "http", "0.0.0.0:80", "where plain HTTP visitors arrive")
	fl.StringVar(&opts.Feed, "feed", front.FeedSocket, "the daemon's feed socket")
	return cmd
}

// runEdge checks the listen addresses, says where it routes from, and routes until SIGTERM.
func runEdge(opts *edgeOptions) error {
	for _, a := range []struct{ flag, addr string }{{"--https", opts.HTTPS}, {"--http", opts.HTTP}} {
		if _, port, err := net.SplitHostPort(a.addr); err != nil || port == "" {
			return errkind.BadInputf("edge: %s: want HOST:PORT", a.flag)
		}
	}
	log := unitLogger(opts.Err)
	log.Info("edge", "https", opts.HTTPS, "http", opts.HTTP, "feed", opts.Feed)
	ctx, stop := signal.NotifyContext(opts.Ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return opts.Serve(ctx, opts.HTTPS, opts.HTTP, opts.Feed, log)
}

// unitLogger is the log of a unit onionpod runs: text lines on w without a time (the journal
// stamps each line).
func unitLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}
