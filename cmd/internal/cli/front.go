package cli

import (
	"log/slog"
	"net/netip"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/front"
	"github.com/onionpod/onionpod/internal/errkind"
)

// newFrontCmd is the ExecStart of an app's front unit (in the pod's network namespace, as a
// dynamic user): everything it needs is on its command line, the certificate comes as a
// credential and over the feed; it reads no config and nothing of the state dir.
func newFrontCmd(env *Env) *cobra.Command {
	var host, onion, edge, feed string
	var target uint16
	cmd := &cobra.Command{
		Use:   "front APP --host NAME --target PORT [--onion NAME.onion] [--edge-addr ULA] [--feed SOCKET]",
		Short: "Serve an app's HTTPS in its pod (what its front unit runs)",
		Args:  exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg := front.Config{Host: host, Target: target, Onion: onion}
			if edge != "" {
				a, err := netip.ParseAddr(edge)
				if err != nil {
					return errkind.BadInputf("front: --edge-addr: not an address")
				}
				cfg.EdgeAddr = a
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			log := slog.New(slog.NewTextHandler(env.Err, nil)).With("app", args[0])
			return front.RunFront(ctx, cfg, feed, log)
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "the app's clearnet name (redirects go there)")
	cmd.Flags().Uint16Var(&target, "target", 0, "the app's port in the pod")
	cmd.Flags().StringVar(&onion, "onion", "", "the app's .onion name, for Onion-Location")
	cmd.Flags().StringVar(&edge, "edge-addr", "", "the host's ULA address, whose connections carry a PROXY header")
	cmd.Flags().StringVar(&feed, "feed", front.FeedSocket, "the daemon's feed socket")
	return cmd
}

// newEdgeCmd is the ExecStart of the edge unit: the box's IPv4 :443 and :80 routed to the apps.
func newEdgeCmd(env *Env) *cobra.Command {
	var https, http, feed string
	cmd := &cobra.Command{
		Use:   "edge [--https ADDR] [--http ADDR] [--feed SOCKET]",
		Short: "Route the box's IPv4 :443 by server name and :80 by Host to the apps (the edge unit)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return front.RunEdge(ctx, https, http, feed, slog.New(slog.NewTextHandler(env.Err, nil)))
		},
	}
	cmd.Flags().StringVar(&https, "https", "0.0.0.0:443", "where TLS visitors arrive")
	cmd.Flags().StringVar(&http, "http", "0.0.0.0:80", "where plain HTTP visitors arrive")
	cmd.Flags().StringVar(&feed, "feed", front.FeedSocket, "the daemon's feed socket")
	return cmd
}
