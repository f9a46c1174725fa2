package appbackup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/onion"
)

// OnionKeys keeps the apps' keys in an onion.KeyStore. An app's key in a backup is an `onion
// backup` file of that one app (the same format, restored by onion.Restore with all its checks:
// the address derived from the key, a key another app uses refused, all or nothing), encrypted
// to a one-time X25519 identity written on the line before it: the backup's own encryption
// protects both. Callers hold the state store's lock, as every writer of the key store does.
type OnionKeys struct {
	Store *onion.KeyStore
}

// Backup writes the app's key and clients; errkind.NotFound when the app has no key.
func (k OnionKeys) Backup(w io.Writer, app string) (string, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", err
	}
	var inner bytes.Buffer
	done, err := onion.Backup(&inner, k.Store, []string{app}, []age.Recipient{id.Recipient()})
	if err != nil {
		return "", err
	}
	if _, err := fmt.Fprintf(w, "%s\n", id); err != nil {
		return "", err
	}
	if _, err := w.Write(inner.Bytes()); err != nil {
		return "", err
	}
	return done[0].Address, nil
}

// Restore stores the key Backup wrote for app: a new app gets the backup's key and clients; an
// app with the same key keeps its own client list (onion.Restore's rule) unless force; an app
// with another key is refused unless force. undo puts back what the app had.
func (k OnionKeys) Restore(r io.Reader, app string, force bool) (string, func() error, error) {
	br := bufio.NewReader(io.LimitReader(r, maxKeyBytes))
	line, err := br.ReadString('\n')
	if err != nil {
		return "", nil, errkind.BadInputf("onion key of %q: no identity line", app)
	}
	id, err := age.ParseX25519Identity(strings.TrimSpace(line))
	if err != nil {
		return "", nil, errkind.BadInputf("onion key of %q: not an X25519 identity", app)
	}
	// What undo puts back: the app's current key and clients, if it has some.
	var prev bytes.Buffer
	prevID, err := age.GenerateX25519Identity()
	if err != nil {
		return "", nil, err
	}
	_, err = onion.Backup(&prev, k.Store, []string{app}, []age.Recipient{prevID.Recipient()})
	hadKey := err == nil
	if err != nil && !errors.Is(err, errkind.NotFound) && !force {
		return "", nil, err
	}
	results, err := onion.Restore(br, k.Store, []age.Identity{id}, force)
	if err != nil {
		return "", nil, err
	}
	if len(results) != 1 || results[0].App != app {
		for _, res := range results {
			if res.Result == "created" {
				_ = k.Store.Remove(res.App)
			}
		}
		return "", nil, errkind.BadInputf("onion key of %q: the key belongs to another app", app)
	}
	res := results[0]
	undo := func() error {
		switch {
		case res.Result == "unchanged":
			return nil
		case !hadKey:
			return k.Store.Remove(app)
		default:
			_, err := onion.Restore(bytes.NewReader(prev.Bytes()), k.Store, []age.Identity{prevID}, true)
			return err
		}
	}
	return res.Address, undo, nil
}
