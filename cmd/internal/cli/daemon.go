package cli

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	daemonpkg "github.com/onionpod/onionpod/cmd/internal/daemon"
)

type daemonOptions struct {
	Debug bool
}

func newDaemonCmd(env *Env) *cobra.Command {
	var opts daemonOptions
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the onionpod daemon (normally as onionpod.service)",
		Long: `Run the onionpod daemon in the foreground: it serves the CLI on the API socket and keeps every
app's pod, network, onion service and DNS records matching the desired state. Pods are systemd units
of their own and keep running while the daemon is stopped. See configs/onionpod.service.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDaemon(cmd, env, opts)
		},
	}
	cmd.Flags().BoolVar(&opts.Debug, "debug", false, "log every step")
	return cmd
}

func runDaemon(cmd *cobra.Command, env *Env, opts daemonOptions) error {
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if opts.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(env.Err, &slog.HandlerOptions{Level: level}))
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	configPath, err := filepath.Abs(env.ConfigPath())
	if err != nil {
		return err
	}
	d, err := daemonpkg.New(cfg, daemonpkg.Options{
		Log:        log,
		Version:    version(),
		Self:       self,
		ConfigPath: configPath,
		Ready:      func() { daemon.SdNotify(false, daemon.SdNotifyReady) },
	})
	if err != nil {
		return err
	}
	return d.Run(cmd.Context())
}
