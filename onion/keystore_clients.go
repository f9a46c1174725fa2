package onion

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/atomicfile"
)

// Clients returns the app's authorized clients sorted by name (empty when the service is
// open to everyone). An .auth file that does not parse is an error naming the file.
func (ks *KeyStore) Clients(app string) ([]AuthorizedClient, error) {
	if err := checkAppName(app); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(ks.appDir(app), secretKeyFile)); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("onion: clients of %q: no key: %w", app, ErrNotFound)
	}
	clients, err := readClientsDir(filepath.Join(ks.appDir(app), authorizedClients))
	if err != nil {
		return nil, fmt.Errorf("onion: clients of %q: %w", app, err)
	}
	return clients, nil
}

// readClientsDir reads <name>.auth files the way tor does (other names are ignored). A
// missing directory means no clients and gives nil. A symlink is refused, never followed.
func readClientsDir(dir string) ([]AuthorizedClient, error) {
	fd, err := openDir(dir, true)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	entries, err := readDirNames(fd, dir)
	if err != nil {
		return nil, err
	}
	clients := []AuthorizedClient{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e, authFileSuffix)
		if !ok {
			continue
		}
		if st, ok, _ := lstatAt(fd, e); ok && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			continue
		}
		b, err := readFileAt(fd, dir, e, 256)
		if err != nil {
			return nil, err
		}
		c, err := ParseAuthorizedClient(name, b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, e), err)
		}
		clients = append(clients, c)
	}
	sort.Slice(clients, func(i, j int) bool { return clients[i].Name < clients[j].Name })
	return clients, nil
}

// AddClient authorizes a new client for the app's service (v3 client authorization). It
// generates an x25519 key pair, stores only the public half as
// authorized_clients/<client>.auth, and returns the private half: the only time it exists.
func (ks *KeyStore) AddClient(app, client string) (ClientCredential, error) {
	if err := checkClientName(client); err != nil {
		return ClientCredential{}, err
	}
	k, err := ks.Load(app)
	if err != nil {
		return ClientCredential{}, err
	}
	authDir := filepath.Join(ks.appDir(app), authorizedClients)
	path := filepath.Join(authDir, client+authFileSuffix)
	if _, err := os.Lstat(path); err == nil {
		return ClientCredential{}, fmt.Errorf("onion: add client %q to %q: %w", client, app, ErrClientExists)
	}
	priv, pub, err := newClientKeys(rand.Reader)
	if err != nil {
		return ClientCredential{}, fmt.Errorf("onion: add client %q to %q: %w", client, app, err)
	}
	if err := os.Mkdir(authDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return ClientCredential{}, fmt.Errorf("onion: add client %q to %q: %w", client, app, err)
	}
	ac := AuthorizedClient{Name: client, PublicKey: pub}
	if _, err := atomicfile.WriteFile(path, ac.authFile(), 0o600); err != nil {
		return ClientCredential{}, fmt.Errorf("onion: add client %q to %q: %w", client, app, err)
	}
	return ClientCredential{App: app, Client: client, Address: k.Address(), private: priv}, nil
}

// RemoveClient revokes a client. Removing a client that is not there is not an error.
func (ks *KeyStore) RemoveClient(app, client string) error {
	if err := checkAppName(app); err != nil {
		return err
	}
	if err := checkClientName(client); err != nil {
		return err
	}
	authDir := filepath.Join(ks.appDir(app), authorizedClients)
	err := os.Remove(filepath.Join(authDir, client+authFileSuffix))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("onion: remove client %q from %q: %w", client, app, err)
	}
	return atomicfile.SyncDir(authDir)
}
