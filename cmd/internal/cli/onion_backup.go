package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"filippo.io/age"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/names"
	"github.com/onionpod/onionpod/onion"
)

// onion backup and restore: every key and client list in one file encrypted with age.

type onionBackupOptions struct {
	IO
	Ctx context.Context
	keyAccess

	Apps           []string
	Output         string
	PassphraseFile string
	Recipients     []string
}

func newOnionBackupCmd(env *Env) *cobra.Command {
	opts := onionBackupOptions{IO: env.IO, keyAccess: newKeyAccess(env)}
	cmd := &cobra.Command{
		Use:   "backup [APP...] -o FILE",
		Short: "Write the keys and client lists of apps (default all) to one encrypted file",
		Long: `Write the onion keys and client-auth lists of the given apps (all apps when none is
named) to one file encrypted and authenticated with age: with a passphrase (asked on
the terminal, or read from --passphrase-file), or for age/SSH public keys (--recipient).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Apps = args
			opts.Ctx = cmd.Context()
			return runOnionBackup(&opts)
		},
	}
	cmd.Flags().StringVarP(&opts.Output, "output", "o", "", "the backup file to write (required)")
	cmd.Flags().StringVar(&opts.PassphraseFile, "passphrase-file", "", "read the passphrase from this file")
	cmd.Flags().StringArrayVarP(&opts.Recipients, "recipient", "r", nil, "encrypt for this age (age1...) or SSH public key (repeatable)")
	return cmd
}

func runOnionBackup(opts *onionBackupOptions) error {
	ctx := opts.Ctx
	for _, app := range opts.Apps {
		if err := names.App(app); err != nil {
			return err
		}
	}
	if opts.Output == "" {
		return &usageError{err: errors.New("onion backup needs -o FILE"), cmdPath: "onionpod onion backup"}
	}
	if opts.PassphraseFile != "" && len(opts.Recipients) > 0 {
		return &usageError{err: errors.New("use --passphrase-file or --recipient, not both"), cmdPath: "onionpod onion backup"}
	}
	var recipients []age.Recipient
	for _, r := range opts.Recipients {
		rec, err := onion.ParseRecipient(r)
		if err != nil {
			return err
		}
		recipients = append(recipients, rec)
	}
	if len(recipients) == 0 {
		pass, err := passphrase(opts.IO, opts.PassphraseFile, true)
		if err != nil {
			return err
		}
		rec, err := onion.PassphraseRecipient(pass)
		if err != nil {
			return err
		}
		recipients = []age.Recipient{rec}
	}
	var buf bytes.Buffer
	var done []onion.AppKey
	err := opts.read(ctx, func(ks *onion.KeyStore) error {
		var err error
		done, err = onion.Backup(&buf, ks, opts.Apps, recipients)
		return err
	})
	if err != nil {
		return err
	}
	if _, err := atomicfile.WriteFile(opts.Output, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("onion backup: %w", err)
	}
	fmt.Fprintf(opts.Out, "backed up %d app(s) to %s:\n", len(done), opts.Output)
	for _, a := range done {
		fmt.Fprintf(opts.Out, "  %s\t%s\t%d client(s)\n", a.App, a.Address, len(a.Clients))
	}
	return nil
}

// passphrase reads it from file (one line; a trailing newline is dropped) or asks on the
// terminal (twice when confirm).
func passphrase(streams IO, file string, confirm bool) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("passphrase file: %w", err)
		}
		p := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if p == "" {
			return "", fmt.Errorf("passphrase file %s is empty: %w", file, errBadInput)
		}
		return p, nil
	}
	f, ok := streams.In.(*os.File)
	if !ok || !streams.InTTY {
		return "", fmt.Errorf("no passphrase: give --passphrase-file (or --recipient/--identity), or run on a terminal: %w", errBadInput)
	}
	fmt.Fprint(streams.Err, "Passphrase: ")
	p, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(streams.Err)
	if err != nil {
		return "", err
	}
	if len(p) == 0 {
		return "", fmt.Errorf("empty passphrase: %w", errBadInput)
	}
	if confirm {
		fmt.Fprint(streams.Err, "Again: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(streams.Err)
		if err != nil {
			return "", err
		}
		if !bytes.Equal(p, again) {
			return "", fmt.Errorf("the passphrases differ: %w", errBadInput)
		}
	}
	return string(p), nil
}

type onionRestoreOptions struct {
	IO
	Ctx context.Context
	keyAccess

	File           string
	Force          bool
	PassphraseFile string
	Identity       string
}

func newOnionRestoreCmd(env *Env) *cobra.Command {
	opts := onionRestoreOptions{IO: env.IO, keyAccess: newKeyAccess(env)}
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Restore keys and client lists from a backup: all apps or none",
		Long: `Restore the onion keys and client lists of a backup. Every address is checked against its
key before anything is written, and all apps are written or none. A wrong passphrase or a
modified file changes nothing. An app that has another key is replaced only with --force.
Without --force the authorized clients of an app that keeps its key stay as they are on
the box; the differences are shown, and --force applies the backup's list.`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.File = args[0]
			opts.Ctx = cmd.Context()
			return runOnionRestore(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.Force, "force", false, "replace apps that have another key, and apply the backup's client lists")
	cmd.Flags().StringVar(&opts.PassphraseFile, "passphrase-file", "", "read the passphrase from this file")
	cmd.Flags().StringVarP(&opts.Identity, "identity", "i", "", "decrypt with this age identity file or SSH private key")
	return cmd
}

func runOnionRestore(opts *onionRestoreOptions) error {
	ctx := opts.Ctx
	if opts.PassphraseFile != "" && opts.Identity != "" {
		return &usageError{err: errors.New("use --passphrase-file or --identity, not both"), cmdPath: "onionpod onion restore"}
	}
	data, err := os.ReadFile(opts.File)
	if err != nil {
		return fmt.Errorf("onion restore: %w", err)
	}
	var identities []age.Identity
	if opts.Identity != "" {
		b, err := os.ReadFile(opts.Identity)
		if err != nil {
			return fmt.Errorf("onion restore: identity: %w", err)
		}
		identities, err = onion.ParseIdentities(b)
		clear(b)
		if err != nil {
			return err
		}
	} else {
		pass, err := passphrase(opts.IO, opts.PassphraseFile, false)
		if err != nil {
			return err
		}
		id, err := onion.PassphraseIdentity(pass)
		if err != nil {
			return err
		}
		identities = []age.Identity{id}
	}
	var restored []onion.RestoredApp
	err = opts.change(ctx, opts.Err, func(ks *onion.KeyStore) error {
		var err error
		restored, err = onion.Restore(bytes.NewReader(data), ks, identities, opts.Force)
		return err
	})
	if err != nil {
		return err
	}
	tw := newTable(opts.Out)
	fmt.Fprintln(tw, "APP\tRESULT\tADDRESS")
	for _, r := range restored {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.App, r.Result, r.Address)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range restored {
		switch {
		case !r.ClientsDiffer() || r.Result == "created":
		case r.ClientsApplied:
			fmt.Fprintf(opts.Out, "%s: clients applied from the backup: %s\n", r.App, clientChanges(r, "added", "removed", "new key for"))
		default:
			fmt.Fprintf(opts.Out, "%s: the backup's clients differ: it would %s; kept the box's (--force applies the backup's)\n",
				r.App, clientChanges(r, "add", "remove", "change the key of"))
		}
	}
	return nil
}

// clientChanges says how a restored app's client list differs, with the given verbs.
func clientChanges(r onion.RestoredApp, add, remove, change string) string {
	var parts []string
	for _, d := range []struct {
		verb  string
		names []string
	}{{add, r.ClientsAdded}, {remove, r.ClientsRemoved}, {change, r.ClientsChanged}} {
		if len(d.names) > 0 {
			parts = append(parts, d.verb+" "+strings.Join(d.names, ", "))
		}
	}
	return strings.Join(parts, ", ")
}
