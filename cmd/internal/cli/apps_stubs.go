package cli

import (
	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/store"
)

// checkApp refuses a bad app name (exit 2) before anything else happens.
func checkApp(args []string) error {
	if len(args) == 0 {
		return nil
	}
	return store.ValidateName(args[0])
}

func newExposeCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{Use: "expose APP (--image REF | --static DIR) --port PORT", Short: "Put an app on the darknet and the LAN in one command, and print its addresses", Args: exactArgs("APP"), RunE: notBuilt(checkApp)}
	cmd.Flags().String("image", "", "OCI image reference or archive")
	cmd.Flags().String("static", "", "directory of static files to serve")
	cmd.Flags().StringSlice("port", nil, "port")
	return cmd
}

func newUnexposeCmd(env *Env) *cobra.Command {
	return &cobra.Command{Use: "unexpose APP", Short: "Take an app's onion service down (the key is kept)", Args: exactArgs("APP"), RunE: notBuilt(checkApp)}
}

func newRunCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{Use: "run APP --image REF", Short: "Create or update an app and run it", Args: exactArgs("APP"), RunE: notBuilt(checkApp)}
	cmd.Flags().String("image", "", "OCI image reference or archive")
	cmd.Flags().String("static", "", "directory of static files to serve")
	cmd.Flags().StringSlice("port", nil, "port")
	return cmd
}

func newLogsCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{Use: "logs APP", Short: "Show an app's logs", Args: exactArgs("APP"), RunE: notBuilt(checkApp)}
	cmd.Flags().BoolP("follow", "f", false, "follow")
	return cmd
}

func newStartCmd(env *Env) *cobra.Command {
	return &cobra.Command{Use: "start APP", Short: "Start a stopped app", Args: exactArgs("APP"), RunE: notBuilt(checkApp)}
}

func newStopCmd(env *Env) *cobra.Command {
	return &cobra.Command{Use: "stop APP", Short: "Stop an app (keeps its key, address and settings)", Args: exactArgs("APP"), RunE: notBuilt(checkApp)}
}

func newRmCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{Use: "rm APP", Short: "Remove an app (its onion key is kept unless --purge-key)", Args: exactArgs("APP"), RunE: notBuilt(checkApp)}
	cmd.Flags().Bool("purge-key", false, "also delete the onion key")
	return cmd
}

func newDNSCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{Use: "dns", Short: "Show what is published in DNS"}
	cmd.AddCommand(&cobra.Command{Use: "ls", Short: "List published records and where they are served", RunE: notBuilt(nil)})
	return cmd
}

func newLabCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{Use: "lab", Short: "A lab in namespaces (systemd, IPv6 LAN, private Tor network, DNS) touching nothing else"}
	for _, verb := range []string{"up", "down", "status", "exec"} {
		cmd.AddCommand(&cobra.Command{Use: verb, RunE: notBuilt(nil)})
	}
	return cmd
}

func newDemoCmd(env *Env) *cobra.Command {
	return &cobra.Command{Use: "demo", Short: "Bring the lab up, expose a demo app, fetch it over .onion and over IPv6 + DNS", RunE: notBuilt(nil)}
}
