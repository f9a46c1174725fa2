package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	daemonpkg "github.com/onionpod/onionpod/cmd/internal/daemon"
	"github.com/onionpod/onionpod/configs"
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
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	reexec := make(chan struct{})
	go reloadOnHangup(ctx, log, configPath, func() { close(reexec); cancel() })
	if err := d.Run(ctx); err != nil {
		return err
	}
	select {
	case <-reexec:
		// The new config is valid: start over with it, as the same process (systemd keeps the PID).
		daemon.SdNotify(false, "RELOADING=1")
		return syscall.Exec(self, os.Args, os.Environ())
	default:
		return nil
	}
}

// reloadOnHangup waits for SIGHUP (systemctl reload onionpod). A config that does not load is
// refused and the running one stays; a good one makes the daemon restart itself with it.
func reloadOnHangup(ctx context.Context, log *slog.Logger, path string, restart func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		cfg, err := configs.LoadOrDefault(path)
		if err == nil {
			_, err = cfg.CheckSecrets() // the daemon runs as root: it can read them all
		}
		if err != nil {
			log.Error("config reload refused: the running config stays", "err", err)
			continue
		}
		log.Info("config reloaded: restarting the daemon with it", "config", path)
		restart()
		return
	}
}
