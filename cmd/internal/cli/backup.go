package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/appbackup"
	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
	"github.com/onionpod/onionpod/onion"
)

// backup and restore: whole apps (records, onion keys and clients, volumes' data) in one file
// encrypted with age, made and read by the daemon, which owns the state; the file is the CLI's.

// backupClient is the part of the LocalAPI backup and restore use.
type backupClient interface {
	Backup(ctx context.Context, req api.BackupRequest, w io.Writer) ([]appbackup.AppReport, error)
	Restore(ctx context.Context, req api.RestoreRequest, r io.Reader) ([]appbackup.AppReport, error)
}

type backupOptions struct {
	IO
	Ctx    context.Context
	Client func() (backupClient, error)

	Apps           []string
	Output         string
	PassphraseFile string
	Recipients     []string
	JSON           bool
}

func newBackupCmd(env *Env) *cobra.Command {
	opts := backupOptions{IO: env.IO, Client: daemonClient[backupClient](env)}
	cmd := &cobra.Command{
		Use:   "backup APP... -o FILE",
		Short: "Back whole apps up into one encrypted file: app file, onion key and clients, volumes",
		Long: `Write one file, encrypted and authenticated with age, holding for each app its record (its
app file), its onion key and client list, and the data of its volumes. A volume a container's
backup hook covers (a database) is stored as the hook's dump, taken while the app runs; the
other volumes are copied with the app stopped for the time of the copy. onionpod restore brings
the apps back, on this box or another, with the same .onion addresses and their data.

The file is encrypted with a passphrase (asked on the terminal, or --passphrase-file) or for
age or SSH public keys (--recipient). Root only: the file holds the apps' secrets.`,
		Example: `  onionpod backup notes -o notes.backup
  onionpod backup notes wiki -o apps.backup --recipient age1...`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.Apps = cmd.Context(), args
			return runBackup(&opts)
		},
	}
	cmd.Flags().StringVarP(&opts.Output, "output", "o", "", "the backup file to write (required)")
	cmd.Flags().StringVar(&opts.PassphraseFile, "passphrase-file", "", "read the passphrase from this file")
	cmd.Flags().StringArrayVarP(&opts.Recipients, "recipient", "r", nil, "encrypt for this age (age1...) or SSH public key (repeatable)")
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	return cmd
}

func runBackup(opts *backupOptions) (err error) {
	usage := func(msg string) error { return &usageError{err: errors.New(msg), cmdPath: "onionpod backup"} }
	switch {
	case len(opts.Apps) == 0:
		return usage("name the apps to back up")
	case opts.Output == "":
		return usage("backup needs -o FILE")
	case opts.PassphraseFile != "" && len(opts.Recipients) > 0:
		return usage("use --passphrase-file or --recipient, not both")
	}
	for _, app := range opts.Apps {
		if err := names.App(app); err != nil {
			return err
		}
	}
	req := api.BackupRequest{Apps: opts.Apps, Recipients: opts.Recipients}
	for _, r := range opts.Recipients {
		if _, err := onion.ParseRecipient(r); err != nil {
			return err
		}
	}
	if len(opts.Recipients) == 0 {
		if req.Passphrase, err = passphrase(opts.IO, opts.PassphraseFile, true); err != nil {
			return err
		}
	}
	client, err := opts.Client()
	if err != nil {
		return err
	}
	// The backup goes to a temporary file beside the output, renamed once complete: a backup cut
	// short is never left under the name given.
	dir := filepath.Dir(opts.Output)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(opts.Output)+".partial-")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	reps, err := client.Backup(opts.Ctx, req, tmp)
	if err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(tmp.Name(), opts.Output); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if opts.JSON {
		return writeJSON(opts.Out, reps)
	}
	fmt.Fprintf(opts.Out, "backed up %d app(s) to %s\n", len(reps), opts.Output)
	printAppReports(opts.Out, reps)
	return nil
}

// printAppReports says what a backup holds of each app, or what a restore put back.
func printAppReports(w io.Writer, reps []appbackup.AppReport) {
	for _, a := range reps {
		line := "  " + a.Name
		if a.Address != "" {
			line += "  " + a.Address
		}
		if a.Replaced {
			line += "  (replaced the box's)"
		}
		if a.Quiesced > 0 {
			line += fmt.Sprintf("  (stopped %.2f s for the copy)", a.Quiesced.Seconds())
		}
		fmt.Fprintln(w, line)
		for _, img := range a.Images {
			fmt.Fprintf(w, "    image %s (sent to the box as an archive), %s\n", shortID(img.ID), humanBytes(img.Bytes))
		}
		for _, v := range a.Volumes {
			what := fmt.Sprintf("%d files, %d dirs", v.Files, v.Dirs)
			if v.Dump {
				what = "its backup hook's dump"
			}
			var extra []string
			if v.Symlinks > 0 {
				extra = append(extra, fmt.Sprintf("%d symlinks", v.Symlinks))
			}
			if v.HardLinks > 0 {
				extra = append(extra, fmt.Sprintf("%d hard links", v.HardLinks))
			}
			if v.Sparse > 0 {
				extra = append(extra, fmt.Sprintf("%d sparse", v.Sparse))
			}
			if v.Skipped > 0 {
				extra = append(extra, fmt.Sprintf("%d skipped (sockets, FIFOs, devices)", v.Skipped))
			}
			if len(extra) > 0 {
				what += ", " + strings.Join(extra, ", ")
			}
			fmt.Fprintf(w, "    volume %s: %s, %s\n", v.Name, what, humanBytes(v.Bytes))
		}
	}
}

type restoreOptions struct {
	IO
	Ctx    context.Context
	Client func() (backupClient, error)

	File           string
	Force          bool
	PassphraseFile string
	Identity       string
	JSON           bool
}

func newRestoreCmd(env *Env) *cobra.Command {
	opts := restoreOptions{IO: env.IO, Client: daemonClient[backupClient](env)}
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Bring the apps of a backup back: same .onion addresses, same data (all or nothing)",
		Long: `Read a backup written by onionpod backup and bring its apps back on this box: their records,
onion keys and client lists, and their volumes' data; dumps are loaded by the apps' backup
hooks once they run. The whole file is verified before anything changes: a wrong passphrase,
a modified byte or a file cut short is refused and nothing is written. Then every app is put in
place, or none (a failure undoes what was done). An app the box has already is replaced only
with --force. Root only.`,
		Example: `  onionpod restore notes.backup
  onionpod restore apps.backup --identity ~/.ssh/id_ed25519 --force`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.File = cmd.Context(), args[0]
			return runRestore(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.Force, "force", false, "replace the apps the box has")
	cmd.Flags().StringVar(&opts.PassphraseFile, "passphrase-file", "", "read the passphrase from this file")
	cmd.Flags().StringVarP(&opts.Identity, "identity", "i", "", "an age identity file or SSH private key to decrypt with")
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	return cmd
}

func runRestore(opts *restoreOptions) error {
	if opts.PassphraseFile != "" && opts.Identity != "" {
		return &usageError{err: errors.New("use --passphrase-file or --identity, not both"), cmdPath: "onionpod restore"}
	}
	f, err := os.Open(opts.File)
	if err != nil {
		return errkind.BadInputf("restore: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return errkind.BadInputf("restore: %s is not a regular file", opts.File)
	}
	req := api.RestoreRequest{Force: opts.Force}
	if opts.Identity != "" {
		b, err := os.ReadFile(opts.Identity)
		if err != nil {
			return errkind.BadInputf("restore: identity: %w", err)
		}
		if _, err := onion.ParseIdentities(b); err != nil {
			return err
		}
		req.Identities = string(b)
	} else if req.Passphrase, err = passphrase(opts.IO, opts.PassphraseFile, false); err != nil {
		return err
	}
	client, err := opts.Client()
	if err != nil {
		return err
	}
	reps, err := client.Restore(opts.Ctx, req, f)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(opts.Out, reps)
	}
	fmt.Fprintf(opts.Out, "restored %d app(s) from %s\n", len(reps), opts.File)
	printAppReports(opts.Out, reps)
	return nil
}
