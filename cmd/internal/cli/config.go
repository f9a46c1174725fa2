package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/configs"
)

func newConfigCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check the daemon's configuration",
	}
	cmd.AddCommand(newConfigCheckCmd(env))
	return cmd
}

type configCheckOptions struct {
	File string
}

func newConfigCheckCmd(env *Env) *cobra.Command {
	var opts configCheckOptions
	return &cobra.Command{
		Use:   "check [FILE]",
		Short: "Check a config file (default: the one in use) without applying it",
		Long: `Check a config file: syntax, unknown keys (a typo is an error that names the key and its line),
and every value. Exit code 0 when it is valid, 2 when it is not. Nothing is applied.

Secret files (dns.tsig secret_file) are checked when this user may read them; otherwise a note
says they were not (only the daemon, as root, reads them).`,
		Args: rangeArgs(0, 1, "at most one FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.File = env.ConfigPath()
			if len(args) == 1 {
				opts.File = args[0]
			}
			return runConfigCheck(env, opts)
		},
	}
}

func runConfigCheck(env *Env, opts configCheckOptions) error {
	cfg, err := configs.Load(opts.File)
	if err != nil {
		return err
	}
	unchecked, err := cfg.CheckSecrets()
	if err != nil {
		return err
	}
	for _, note := range unchecked {
		fmt.Fprintf(env.Err, "note: %s\n", note)
	}
	_, err = fmt.Fprintf(env.Out, "%s: ok\n", opts.File)
	return err
}
