package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// notBuilt is the RunE of a verb that is registered but not built yet: it says so and exits 1,
// after the checks of its arguments that must already hold (an app name is refused with exit 2).
func notBuilt(check func(args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if check != nil {
			if err := check(args); err != nil {
				return err
			}
		}
		return fmt.Errorf("%s: %w", cmd.CommandPath(), errNotImplemented)
	}
}
