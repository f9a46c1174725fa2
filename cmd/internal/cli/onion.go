package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"filippo.io/age"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/names"
	"github.com/onionpod/onionpod/onion"
)

// newOnionCmd groups the onion key commands. They work on the state dir directly, under the
// store's lock, with or without a running daemon (a running one is told to pick changes up).
func newOnionCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "onion",
		Short: "Onion keys: list, import, export, back up, restore, client authorization",
		Long: `Onion keys: one v3 key per app, kept in the state dir in tor's own HiddenServiceDir
layout. These commands work on the state dir directly (the daemon may be stopped):
restoring a backup onto a fresh box comes before anything else.`,
	}
	cmd.AddCommand(newOnionLsCmd(env), newOnionImportCmd(env), newOnionExportCmd(env),
		newOnionBackupCmd(env), newOnionRestoreCmd(env), newOnionAuthCmd(env))
	return cmd
}

// keyStore is where the apps' onion keys live: STATE_DIR/onion/APP/.
func keyStore(cfg *configs.Config) *onion.KeyStore {
	return &onion.KeyStore{Dir: cfg.KeysDir()}
}

// withKeys runs fn on the key store under the state dir's lock.
func withKeys(ctx context.Context, env *Env, fn func(*onion.KeyStore) error) error {
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	st, err := env.Store(cfg)
	if err != nil {
		return err
	}
	return st.Update(ctx, func(*store.Tx) error { return fn(keyStore(cfg)) })
}

// changeKeys is withKeys for commands that change keys or client lists: a running daemon is then
// told to pick the change up at once (with the daemon stopped, it reads the keys when it starts).
func changeKeys(ctx context.Context, env *Env, fn func(*onion.KeyStore) error) error {
	if err := withKeys(ctx, env, fn); err != nil {
		return err
	}
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	if err := env.Client(cfg).Sync(ctx); err != nil && !errors.Is(err, api.ErrNoDaemon) {
		fmt.Fprintf(env.Err, "note: the daemon was not told of the change (%v); it picks it up on its next pass\n", err)
	}
	return nil
}

// --- onion ls

type onionLsOptions struct {
	JSON bool
}

func newOnionLsCmd(env *Env) *cobra.Command {
	var opts onionLsOptions
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the apps' onion addresses and client-auth clients",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOnionLs(cmd.Context(), env, opts)
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

func runOnionLs(ctx context.Context, env *Env, opts onionLsOptions) error {
	var keys []onion.AppKey
	err := withKeys(ctx, env, func(ks *onion.KeyStore) error {
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
		if err := writeJSON(env.Out, entries); err != nil {
			return err
		}
	} else if len(entries) == 0 {
		fmt.Fprintln(env.Out, "No onion keys yet. Apps get one when exposed; or: onionpod onion import APP SOURCE")
	} else {
		tw := tabwriter.NewWriter(env.Out, 0, 4, 2, ' ', 0)
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

// --- onion import

type onionImportOptions struct {
	App    string
	Source string
	Force  bool
}

func newOnionImportCmd(env *Env) *cobra.Command {
	var opts onionImportOptions
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
			return runOnionImport(cmd.Context(), env, opts)
		},
	}
	cmd.Flags().BoolVar(&opts.Force, "force", false, "replace the app's current key")
	return cmd
}

func runOnionImport(ctx context.Context, env *Env, opts onionImportOptions) error {
	if err := names.App(opts.App); err != nil {
		return err
	}
	var stdinKey *onion.Key
	if opts.Source == "-" {
		k, err := readKeyFromStdin(env.In)
		if err != nil {
			return err
		}
		stdinKey = k
	}
	var key *onion.Key
	err := changeKeys(ctx, env, func(ks *onion.KeyStore) error {
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
	fmt.Fprintf(env.Out, "%s: imported key\n", opts.App)
	fmt.Fprintf(env.Out, "http://%s/\n", key.Address())
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

// --- onion export

type onionExportOptions struct {
	App string
	Dir string
}

func newOnionExportCmd(env *Env) *cobra.Command {
	var opts onionExportOptions
	cmd := &cobra.Command{
		Use:   "export APP DIR",
		Short: "Write an app's key as a HiddenServiceDir that a plain tor serves as is",
		Args:  exactArgs("APP", "DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.App, opts.Dir = args[0], args[1]
			return runOnionExport(cmd.Context(), env, opts)
		},
	}
	return cmd
}

func runOnionExport(ctx context.Context, env *Env, opts onionExportOptions) error {
	if err := names.App(opts.App); err != nil {
		return err
	}
	var addr string
	err := withKeys(ctx, env, func(ks *onion.KeyStore) error {
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
	fmt.Fprintf(env.Out, "%s: exported to %s (mode 0700; tor must own it)\n", opts.App, abs)
	fmt.Fprintf(env.Out, "torrc:  HiddenServiceDir %s\n        HiddenServicePort 80 127.0.0.1:8080\n", abs)
	fmt.Fprintf(env.Out, "http://%s/\n", addr)
	return nil
}

// --- onion backup

type onionBackupOptions struct {
	Apps           []string
	Output         string
	PassphraseFile string
	Recipients     []string
}

func newOnionBackupCmd(env *Env) *cobra.Command {
	var opts onionBackupOptions
	cmd := &cobra.Command{
		Use:   "backup [APP...] -o FILE",
		Short: "Write the keys and client lists of apps (default all) to one encrypted file",
		Long: `Write the onion keys and client-auth lists of the given apps (all apps when none is
named) to one file encrypted and authenticated with age: with a passphrase (asked on
the terminal, or read from --passphrase-file), or for age/SSH public keys (--recipient).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Apps = args
			return runOnionBackup(cmd.Context(), env, opts)
		},
	}
	cmd.Flags().StringVarP(&opts.Output, "output", "o", "", "the backup file to write (required)")
	cmd.Flags().StringVar(&opts.PassphraseFile, "passphrase-file", "", "read the passphrase from this file")
	cmd.Flags().StringArrayVarP(&opts.Recipients, "recipient", "r", nil, "encrypt for this age (age1...) or SSH public key (repeatable)")
	return cmd
}

func runOnionBackup(ctx context.Context, env *Env, opts onionBackupOptions) error {
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
		pass, err := passphrase(env, opts.PassphraseFile, true)
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
	err := withKeys(ctx, env, func(ks *onion.KeyStore) error {
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
	fmt.Fprintf(env.Out, "backed up %d app(s) to %s:\n", len(done), opts.Output)
	for _, a := range done {
		fmt.Fprintf(env.Out, "  %s\t%s\t%d client(s)\n", a.App, a.Address, len(a.Clients))
	}
	return nil
}

// passphrase reads it from file (one line; a trailing newline is dropped) or asks on the
// terminal (twice when confirm).
func passphrase(env *Env, file string, confirm bool) (string, error) {
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
	f, ok := env.In.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", fmt.Errorf("no passphrase: give --passphrase-file (or --recipient/--identity), or run on a terminal: %w", errBadInput)
	}
	fmt.Fprint(env.Err, "Passphrase: ")
	p, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(env.Err)
	if err != nil {
		return "", err
	}
	if len(p) == 0 {
		return "", fmt.Errorf("empty passphrase: %w", errBadInput)
	}
	if confirm {
		fmt.Fprint(env.Err, "Again: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(env.Err)
		if err != nil {
			return "", err
		}
		if !bytes.Equal(p, again) {
			return "", fmt.Errorf("the passphrases differ: %w", errBadInput)
		}
	}
	return string(p), nil
}

// --- onion restore

type onionRestoreOptions struct {
	File           string
	Force          bool
	PassphraseFile string
	Identity       string
}

func newOnionRestoreCmd(env *Env) *cobra.Command {
	var opts onionRestoreOptions
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
			return runOnionRestore(cmd.Context(), env, opts)
		},
	}
	cmd.Flags().BoolVar(&opts.Force, "force", false, "replace apps that have another key, and apply the backup's client lists")
	cmd.Flags().StringVar(&opts.PassphraseFile, "passphrase-file", "", "read the passphrase from this file")
	cmd.Flags().StringVarP(&opts.Identity, "identity", "i", "", "decrypt with this age identity file or SSH private key")
	return cmd
}

func runOnionRestore(ctx context.Context, env *Env, opts onionRestoreOptions) error {
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
		pass, err := passphrase(env, opts.PassphraseFile, false)
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
	err = changeKeys(ctx, env, func(ks *onion.KeyStore) error {
		var err error
		restored, err = onion.Restore(bytes.NewReader(data), ks, identities, opts.Force)
		return err
	})
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.Out, 0, 4, 2, ' ', 0)
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
			fmt.Fprintf(env.Out, "%s: clients applied from the backup: %s\n", r.App, clientChanges(r, "added", "removed", "new key for"))
		default:
			fmt.Fprintf(env.Out, "%s: the backup's clients differ: it would %s; kept the box's (--force applies the backup's)\n",
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

// --- onion auth

func newOnionAuthCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "v3 client authorization: only clients holding a key reach the app",
	}
	cmd.AddCommand(newOnionAuthAddCmd(env), newOnionAuthRmCmd(env), newOnionAuthLsCmd(env))
	return cmd
}

type onionAuthOptions struct {
	App    string
	Client string
	JSON   bool
}

func newOnionAuthAddCmd(env *Env) *cobra.Command {
	var opts onionAuthOptions
	return &cobra.Command{
		Use:   "add APP CLIENT",
		Short: "Authorize a client and print its key (shown this once)",
		Long: `Authorize a client: the app's onion service then answers only clients holding a key.
The client's private key is printed this once (onionpod keeps only the public half): put the
line in a file CLIENT.auth_private in the ClientOnionAuthDir of the client's tor, or give
Tor Browser the key when it asks.`,
		Args: exactArgs("APP", "CLIENT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.App, opts.Client = args[0], args[1]
			return runOnionAuthAdd(cmd.Context(), env, opts)
		},
	}
}

func runOnionAuthAdd(ctx context.Context, env *Env, opts onionAuthOptions) error {
	if err := names.App(opts.App); err != nil {
		return err
	}
	var cred onion.ClientCredential
	err := changeKeys(ctx, env, func(ks *onion.KeyStore) error {
		var err error
		cred, err = ks.AddClient(opts.App, opts.Client)
		return err
	})
	if err != nil {
		return err
	}
	w := env.Out
	fmt.Fprintf(w, "%s: client %q authorized; the service now answers only authorized clients.\n", opts.App, opts.Client)
	fmt.Fprintf(w, "Give the client this line, for its tor's ClientOnionAuthDir/%s.auth_private (shown only now):\n\n", opts.Client)
	fmt.Fprintf(w, "%s\n\n", cred.AuthPrivate())
	fmt.Fprintf(w, "Tor Browser asks for the key alone: %s\n", cred.PrivateKey())
	fmt.Fprintf(w, "http://%s/\n", cred.Address)
	return nil
}

func newOnionAuthRmCmd(env *Env) *cobra.Command {
	var opts onionAuthOptions
	return &cobra.Command{
		Use:   "rm APP CLIENT",
		Short: "Revoke a client (the last one removed opens the service to everyone)",
		Args:  exactArgs("APP", "CLIENT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.App, opts.Client = args[0], args[1]
			return runOnionAuthRm(cmd.Context(), env, opts)
		},
	}
}

func runOnionAuthRm(ctx context.Context, env *Env, opts onionAuthOptions) error {
	if err := names.App(opts.App); err != nil {
		return err
	}
	var left int
	err := changeKeys(ctx, env, func(ks *onion.KeyStore) error {
		if _, err := ks.Load(opts.App); err != nil {
			return err
		}
		if err := ks.RemoveClient(opts.App, opts.Client); err != nil {
			return err
		}
		clients, err := ks.Clients(opts.App)
		left = len(clients)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Out, "%s: client %q revoked\n", opts.App, opts.Client)
	if left == 0 {
		fmt.Fprintf(env.Out, "%s: no clients left: the service is open to everyone\n", opts.App)
	}
	return nil
}

func newOnionAuthLsCmd(env *Env) *cobra.Command {
	var opts onionAuthOptions
	cmd := &cobra.Command{
		Use:   "ls APP",
		Short: "List an app's authorized clients",
		Args:  exactArgs("APP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.App = args[0]
			return runOnionAuthLs(cmd.Context(), env, opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	return cmd
}

type onionClientEntry struct {
	Client    string `json:"client"`
	PublicKey string `json:"public_key"` // the .auth line: descriptor:x25519:<base32>
}

func runOnionAuthLs(ctx context.Context, env *Env, opts onionAuthOptions) error {
	if err := names.App(opts.App); err != nil {
		return err
	}
	var clients []onion.AuthorizedClient
	err := withKeys(ctx, env, func(ks *onion.KeyStore) error {
		var err error
		clients, err = ks.Clients(opts.App)
		return err
	})
	if err != nil {
		return err
	}
	entries := make([]onionClientEntry, 0, len(clients))
	for _, c := range clients {
		entries = append(entries, onionClientEntry{Client: c.Name, PublicKey: c.AuthLine()})
	}
	if opts.JSON {
		return writeJSON(env.Out, entries)
	}
	if len(entries) == 0 {
		fmt.Fprintf(env.Out, "%s: no clients: the service is open to everyone\n", opts.App)
		return nil
	}
	tw := tabwriter.NewWriter(env.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tPUBLIC KEY")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\n", e.Client, e.PublicKey)
	}
	return tw.Flush()
}
