package cli

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is the module version the binary was built from ("devel" for a source build).
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok || info.Main.Version == "" {
		return "devel"
	}
	return info.Main.Version
}

type versionOptions struct {
	IO
	Version string
}

func newVersionCmd(env *Env) *cobra.Command {
	opts := versionOptions{IO: env.IO, Version: version()}
	return &cobra.Command{
		Use:   "version",
		Short: "Print onionpod's version",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVersion(&opts)
		},
	}
}

func runVersion(opts *versionOptions) error {
	_, err := fmt.Fprintf(opts.Out, "onionpod %s\n", opts.Version)
	return err
}
