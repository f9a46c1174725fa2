package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/internal/names"
	"github.com/onionpod/onionpod/onion"
)

// onion ls, import and export: the apps' keys themselves.

type onionLsOptions struct {
	IO
	Ctx context.Context
	keyAccess

	JSON bool
}

func newOnionLsCmd(env *Env) *cobra.Command {
	opts := onionLsOptions{IO: env.IO, keyAccess: newKeyAccess(env)}
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the apps' onion addresses and client-auth clients",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx = cmd.Context()
			return runOnionLs(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	return cmd
}

type onionLsEntry struct {
	App     string   `json:"app"`
	Address string   `json:"address,omitempty"`
	Clients []string `json:"clients"`
	Error   string   `json:"error,omitempty"`
}

func runOnionLs(opts *onionLsOptions) error {
	ctx := opts.Ctx
	var keys []onion.AppKey
	err := opts.read(ctx, func(ks *onion.KeyStore) error {
		var err error
		keys, err = ks.List()
		return err
	})
	if err != nil {
		return err
	}
	entries := make([]onionLsEntry, 0, len(keys))
	var broken []error
	for _, k := range keys {
		e := onionLsEntry{App: k.App, Address: k.Address, Clients: k.Clients}
		if e.Clients == nil {
			e.Clients = []string{}
		}
		if k.Err != nil {
			e.Error = k.Err.Error()
			broken = append(broken, k.Err)
		}
		entries = append(entries, e)
	}
	if opts.JSON {
		if err := writeJSON(opts.Out, entries); err != nil {
			return err
		}
	} else if len(entries) == 0 {
		fmt.Fprintln(opts.Out, "No onion keys yet. Apps get one when exposed; or: onionpod onion import APP SOURCE")
	} else {
		tw := newTable(opts.Out)
		fmt.Fprintln(tw, "APP\tADDRESS\tCLIENTS")
		for _, e := range entries {
			addr := e.Address
			if e.Error != "" {
				addr = "ERROR: " + e.Error
			}
			clients := strings.Join(e.Clients, ",")
			if clients == "" {
				clients = "- (open)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", e.App, addr, clients)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(broken) > 0 {
		return fmt.Errorf("%d key(s) do not load: %w", len(broken), errors.Join(broken...))
	}
	return nil
}

type onionImportOptions struct {
	IO
	Ctx context.Context
	keyAccess

	App    string
	Source string
	Force  bool
}

func newOnionImportCmd(env *Env) *cobra.Command {
	opts := onionImportOptions{IO: env.IO, keyAccess: newKeyAccess(env)}
	cmd := &cobra.Command{
		Use:   "import APP SOURCE",
		Short: "Give an app an existing onion key (and so its .onion address)",
		Long: `Give an app an existing onion key. SOURCE is one of:
  - a HiddenServiceDir written by tor or by a vanity generator such as mkp224o
    (its authorized_clients/, if any, becomes the app's client list);
  - a bare hs_ed25519_secret_key file (96 bytes);
  - a file holding the ADD_ONION key "ED25519-V3:<base64>", or that string itself;
  - "-" to read a key file or the ED25519-V3 string from standard input
    (keeps the secret out of the shell history).
An app that already has another key keeps it unless --force is given.`,
		Args: exactArgs("APP", "SOURCE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.App, opts.Source = args[0], args[1]
			opts.Ctx = cmd.Context()
			return runOnionImport(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.Force, "force", false, "replace the app's current key")
	return cmd
}

func runOnionImport(opts *onionImportOptions) error {
	ctx := opts.Ctx
	if err := names.App(opts.App); err != nil {
		return err
	}
	var stdinKey *onion.Key
	if opts.Source == "-" {
		k, err := readKeyFromStdin(opts.In)
		if err != nil {
			return err
		}
		stdinKey = k
	}
	var key *onion.Key
	err := opts.change(ctx, opts.Err, func(ks *onion.KeyStore) error {
		if stdinKey != nil {
			key = stdinKey
			return ks.Save(opts.App, stdinKey, nil, opts.Force)
		}
		var err error
		key, err = ks.Import(opts.App, opts.Source, opts.Force)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(opts.Out, "%s: imported key\n", opts.App)
	fmt.Fprintf(opts.Out, "http://%s/\n", key.Address())
	return nil
}

func readKeyFromStdin(in io.Reader) (*onion.Key, error) {
	if in == nil {
		return nil, fmt.Errorf("no standard input: %w", errBadInput)
	}
	b, err := io.ReadAll(io.LimitReader(in, 4096))
	if err != nil {
		return nil, err
	}
	defer clear(b)
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("ED25519-V3:")) {
		return onion.ParseAddOnionBlob(string(b))
	}
	return onion.ParseSecretKeyFile(b)
}

type onionExportOptions struct {
	IO
	Ctx context.Context
	keyAccess

	App string
	Dir string
}

func newOnionExportCmd(env *Env) *cobra.Command {
	opts := onionExportOptions{IO: env.IO, keyAccess: newKeyAccess(env)}
	cmd := &cobra.Command{
		Use:   "export APP DIR",
		Short: "Write an app's key as a HiddenServiceDir that a plain tor serves as is",
		Args:  exactArgs("APP", "DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.App, opts.Dir = args[0], args[1]
			opts.Ctx = cmd.Context()
			return runOnionExport(&opts)
		},
	}
	return cmd
}

func runOnionExport(opts *onionExportOptions) error {
	ctx := opts.Ctx
	if err := names.App(opts.App); err != nil {
		return err
	}
	var addr string
	err := opts.read(ctx, func(ks *onion.KeyStore) error {
		if err := ks.Export(opts.App, opts.Dir); err != nil {
			return err
		}
		k, err := ks.Load(opts.App)
		if err == nil {
			addr = k.Address()
		}
		return err
	})
	if err != nil {
		return err
	}
	abs, _ := filepath.Abs(opts.Dir)
	fmt.Fprintf(opts.Out, "%s: exported to %s (mode 0700; tor must own it)\n", opts.App, abs)
	fmt.Fprintf(opts.Out, "torrc:  HiddenServiceDir %s\n        HiddenServicePort 80 127.0.0.1:8080\n", abs)
	fmt.Fprintf(opts.Out, "http://%s/\n", addr)
	return nil
}
