package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newDNSCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{Use: "dns", Short: "Show what is published in DNS"}
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the records onionpod publishes, and where (built-in server or RFC 2136 primary)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := env.Config()
			if err != nil {
				return err
			}
			st, err := env.Client(cfg).DNS(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(env.Out, st)
			}
			where := st.Server
			if where == "" {
				where = "-"
			}
			fmt.Fprintf(env.Out, "zone %s, %s mode, served by %s", st.Zone, st.Mode, where)
			if st.Serial != 0 {
				fmt.Fprintf(env.Out, ", serial %d", st.Serial)
			}
			fmt.Fprintln(env.Out)
			if st.Pending {
				fmt.Fprintln(env.Out, "an update is pending (retrying)")
			}
			if st.Error != "" {
				fmt.Fprintln(env.Out, "last error:", st.Error)
			}
			if st.Damaged != "" {
				fmt.Fprintln(env.Out, "damaged state:", st.Damaged)
			}
			tw := tabwriter.NewWriter(env.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tADDRESSES")
			for _, r := range st.Records {
				fmt.Fprintf(tw, "%s\t%s\n", r.Name, strings.Join(r.Addresses, " "))
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(ls)
	return cmd
}
