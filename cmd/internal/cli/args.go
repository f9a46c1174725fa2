package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// exactArgs is cobra.ExactArgs with a usage error (exit 2) that names what is missing.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			want := "no arguments"
			if len(names) > 0 {
				want = strings.Join(names, " ")
			}
			return &usageError{
				err:     fmt.Errorf("%s expects %s, got %d argument(s)", cmd.CommandPath(), want, len(args)),
				cmdPath: cmd.CommandPath(),
			}
		}
		return nil
	}
}

// rangeArgs accepts between min and max positional arguments.
func rangeArgs(min, max int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min || len(args) > max {
			return &usageError{
				err:     fmt.Errorf("%s takes %s, got %d argument(s)", cmd.CommandPath(), what, len(args)),
				cmdPath: cmd.CommandPath(),
			}
		}
		return nil
	}
}

// isCobraUsageError recognises cobra's own complaints (unknown command, bad arguments).
func isCobraUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires ", "invalid argument", "flag needs an argument", "required flag"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// groupCmd makes cmd a group of subcommands: called alone it prints its help; called with a
// word that is none of its subcommands it is a usage error (exit 2), as at the top level.
func groupCmd(cmd *cobra.Command) *cobra.Command {
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			return &usageError{
				err:     fmt.Errorf("unknown command %q for %q", args[0], c.CommandPath()),
				cmdPath: c.CommandPath(),
			}
		}
		return nil
	}
	cmd.RunE = func(c *cobra.Command, args []string) error { return c.Help() }
	return cmd
}
