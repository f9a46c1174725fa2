package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/onion"
)

// The onion key commands, by concern: onion_keys.go (ls, import, export), onion_backup.go
// (backup, restore), onion_auth.go (client authorization). They work on the state dir directly,
// under the store's lock, with or without a running daemon (a running one is told to pick
// changes up).

func newOnionCmd(env *Env) *cobra.Command {
	cmd := groupCmd(&cobra.Command{
		Use:   "onion",
		Short: "Onion keys: list, import, export, back up, restore, client authorization",
		Long: `Onion keys: one v3 key per app, kept in the state dir in tor's own HiddenServiceDir
layout. These commands work on the state dir directly (the daemon may be stopped):
restoring a backup onto a fresh box comes before anything else.`,
	})
	cmd.AddCommand(newOnionLsCmd(env), newOnionImportCmd(env), newOnionExportCmd(env),
		newOnionBackupCmd(env), newOnionRestoreCmd(env), newOnionAuthCmd(env))
	return cmd
}

// lockedKeys are the apps' onion keys (STATE_DIR/onion/APP/), used under the state dir's lock.
type lockedKeys struct {
	store *store.Store
	keys  *onion.KeyStore
}

// with runs fn on the key store under the state dir's lock.
func (k *lockedKeys) with(ctx context.Context, fn func(*onion.KeyStore) error) error {
	return k.store.Update(ctx, func(*store.Tx) error { return fn(k.keys) })
}

// syncClient is the part of the LocalAPI the key commands use: tell the daemon of a change.
type syncClient interface {
	Sync(ctx context.Context) error
}

// keyAccess is what every onion key command's options hold: the keys, and the daemon to tell
// of a change.
type keyAccess struct {
	Keys   func() (*lockedKeys, error)
	Daemon func() (syncClient, error)
}

func newKeyAccess(env *Env) keyAccess {
	return keyAccess{Keys: env.keys, Daemon: daemonClient[syncClient](env)}
}

// read runs fn on the key store under the state dir's lock.
func (a keyAccess) read(ctx context.Context, fn func(*onion.KeyStore) error) error {
	k, err := a.Keys()
	if err != nil {
		return err
	}
	return k.with(ctx, fn)
}

// change is read for commands that change keys or client lists: a running daemon is then told
// to pick the change up at once (with the daemon stopped, it reads the keys when it starts); a
// note on errOut says when it could not be told.
func (a keyAccess) change(ctx context.Context, errOut io.Writer, fn func(*onion.KeyStore) error) error {
	if err := a.read(ctx, fn); err != nil {
		return err
	}
	client, err := a.Daemon()
	if err != nil {
		return err
	}
	if err := client.Sync(ctx); err != nil && !errors.Is(err, api.ErrNoDaemon) {
		fmt.Fprintf(errOut, "note: the daemon was not told of the change (%v); it picks it up on its next pass\n", err)
	}
	return nil
}
