package cli

import "github.com/spf13/cobra"

// newOnionCmd groups the onion key commands. They work on the state dir directly, under the
// store's lock, with or without a running daemon (a running one is told to pick changes up).
func newOnionCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "onion",
		Short: "Onion keys: list, import, export, back up, restore, client authorization",
	}
	for _, verb := range []string{"ls", "import", "export", "backup", "restore"} {
		cmd.AddCommand(&cobra.Command{Use: verb, RunE: notBuilt(checkApp)})
	}
	auth := &cobra.Command{Use: "auth", Short: "v3 client authorization"}
	for _, verb := range []string{"add", "rm", "ls"} {
		auth.AddCommand(&cobra.Command{Use: verb, RunE: notBuilt(checkApp)})
	}
	cmd.AddCommand(auth)
	return cmd
}
