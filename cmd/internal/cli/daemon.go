package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	daemonpkg "github.com/onionpod/onionpod/cmd/internal/daemon"
	"github.com/onionpod/onionpod/configs"
)

type daemonOptions struct {
	IO
	Ctx        context.Context
	Config     func() (*configs.Config, error)
	ConfigPath string

	Debug bool
}

func newDaemonCmd(env *Env) *cobra.Command {
	opts := daemonOptions{IO: env.IO, Config: env.Config}
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the onionpod daemon (normally as onionpod.service)",
		Long: `Run the onionpod daemon in the foreground: it serves the CLI on the API socket and keeps every
app's pod, network, onion service and DNS records matching the desired state. Pods are systemd units
of their own and keep running while the daemon is stopped. See configs/onionpod.service.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.ConfigPath = cmd.Context(), env.ConfigPath()
			return runDaemon(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.Debug, "debug", false, "log every step")
	return cmd
}

func runDaemon(opts *daemonOptions) error {
	cfg, err := opts.Config()
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if opts.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(opts.Err, &slog.HandlerOptions{Level: level}))
	if os.Getenv("GOGC") == "" {
		// The daemon lives for months with a live heap of about 20 kB per app; with Go's default
		// its heap may grow to twice that between collections (1000 apps in the lab: 58-66 MB
		// resident with the default, 54 MB with 50).
		debug.SetGCPercent(50)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	configPath, err := filepath.Abs(opts.ConfigPath)
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
	ctx, cancel := context.WithCancel(opts.Ctx)
	defer cancel()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reexec := make(chan struct{})
	go reloadOnHangup(ctx, log, configPath, hup, func() { close(reexec); cancel() })
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

// reloadOnHangup waits for SIGHUP on hup (systemctl reload onionpod). A config that does not
// load, or that checkConfig refuses (a torrc_extra line, a secret file), is refused and the
// running one stays; a good one makes the daemon restart itself with it.
func reloadOnHangup(ctx context.Context, log *slog.Logger, path string, hup <-chan os.Signal, restart func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		// The daemon runs as root: it can read every secret file, and must.
		_, unreadable, err := checkConfig(path, configs.LoadOrDefault)
		if err == nil && len(unreadable) > 0 {
			err = fmt.Errorf("config %s: %s", path, strings.Join(unreadable, "; "))
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
