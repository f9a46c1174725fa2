package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/daemon"
	"github.com/onionpod/onionpod/configs"
)

func newConfigCmd(env *Env) *cobra.Command {
	cmd := groupCmd(&cobra.Command{
		Use:   "config",
		Short: "Check the daemon's configuration",
	})
	cmd.AddCommand(newConfigCheckCmd(env))
	return cmd
}

type configCheckOptions struct {
	IO
	File string
}

func newConfigCheckCmd(env *Env) *cobra.Command {
	opts := configCheckOptions{IO: env.IO}
	return &cobra.Command{
		Use:   "check [FILE]",
		Short: "Check a config file (default: the one in use) without applying it",
		Long: `Check a config file: syntax, unknown keys (a typo is an error that names the key and its line),
and every value, including the managed tor's torrc_extra lines. Exit code 0 when it is valid, 2
when it is not. Nothing is applied.

Secret files (dns.tsig secret_file) are checked when this user may read them; otherwise a note
says they were not (only the daemon, as root, reads them).`,
		Args: rangeArgs(0, 1, "at most one FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.File = env.ConfigPath()
			if len(args) == 1 {
				opts.File = args[0]
			}
			return runConfigCheck(&opts)
		},
	}
}

func runConfigCheck(opts *configCheckOptions) error {
	_, unchecked, err := checkConfig(opts.File, configs.Load)
	if err != nil {
		return err
	}
	for _, note := range unchecked {
		fmt.Fprintf(opts.Err, "note: %s\n", note)
	}
	_, err = fmt.Fprintf(opts.Out, "%s: ok\n", opts.File)
	return err
}

// checkConfig loads the config at path with load and checks what loading does not: in managed
// mode the managed tor's torrc (a torrc_extra line onion refuses), then the secret files (those
// this user may read; the others are named in unchecked). What config check and the daemon's
// reload run: a config that fails here never replaces a good one.
func checkConfig(path string, load func(string) (*configs.Config, error)) (_ *configs.Config, unchecked []string, _ error) {
	cfg, err := load(path)
	if err != nil {
		return nil, nil, err
	}
	if err := daemon.CheckTorrc(cfg); err != nil {
		return nil, nil, fmt.Errorf("config %s: %w", path, err)
	}
	unchecked, err = cfg.CheckSecrets()
	if err != nil {
		return nil, unchecked, err
	}
	return cfg, unchecked, nil
}
