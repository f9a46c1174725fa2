// Package cli is onionpod's command line: one file per verb, each an options struct plus a run
// function writing to injected streams. Commands that change apps talk to the daemon over the
// LocalAPI; key commands work on the state dir directly, under the store's lock.
package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Main runs the command line with the process's streams and returns the exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, SystemIO())
}

// Run executes one command line and returns its exit code (0 ok, 1 failed, 2 bad usage or input).
func Run(ctx context.Context, args []string, streams IO) int {
	env := &Env{IO: streams}
	root := newRootCmd(env)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil {
		if _, ok := err.(*usageError); !ok && isCobraUsageError(err) {
			err = &usageError{err: err, cmdPath: cmd.CommandPath()}
		}
		if _, quiet := err.(*childExit); !quiet {
			fmt.Fprintln(streams.Err, describe(err))
		}
	}
	return exitCode(err)
}

func newRootCmd(env *Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "onionpod",
		Short: "Host web apps on this box: each as a .onion service and at a stable IPv6 address with DNS",
		Long: `onionpod runs each app as a pod (an OCI image run by systemd in its own network namespace),
wires it to the LAN with a stable IPv6 address published in DNS, and puts it on the darknet as
a v3 onion service whose .onion name never changes.

  onionpod expose blog --image registry.example/blog:1 --port 80`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version(),
	}
	root.SetIn(env.In)
	root.SetOut(env.Out)
	root.SetErr(env.Err)
	root.PersistentFlags().StringVar(&env.ConfigFlag, "config", "",
		"config file (default $ONIONPOD_CONFIG or /etc/onionpod/onionpod.toml)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usageError{err: err, cmdPath: c.CommandPath()}
	})
	root.AddGroup(
		&cobra.Group{ID: "apps", Title: "Apps:"},
		&cobra.Group{ID: "services", Title: "Onion services and DNS:"},
		&cobra.Group{ID: "system", Title: "The box:"},
	)
	for _, c := range []*cobra.Command{
		newExposeCmd(env), newUnexposeCmd(env), newRunCmd(env), newApplyCmd(env), newExportCmd(env),
		newLsCmd(env), newStatusCmd(env),
		newLogsCmd(env), newStartCmd(env), newStopCmd(env), newRmCmd(env), newImageCmd(env),
		newUpdateCmd(env), newRollbackCmd(env), newBackupCmd(env), newRestoreCmd(env),
	} {
		c.GroupID = "apps"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newOnionCmd(env), newDNSCmd(env), newTLSCmd(env), newDashboardCmd(env)} {
		c.GroupID = "services"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{
		newDaemonCmd(env), newConfigCmd(env), newLabCmd(env), newDemoCmd(env), newVersionCmd(env),
	} {
		c.GroupID = "system"
		root.AddCommand(c)
	}
	root.AddCommand(newInternalCmd(env), newServeStaticCmd(env))
	root.SetCompletionCommandGroupID("system")
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			groupCmd(c) // completion nope: a usage error, as for every group
		}
	}
	root.SetHelpCommandGroupID("system")
	return root
}
