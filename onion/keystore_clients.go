package onion

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/dirwatch"
)

// Clients returns the app's authorized clients sorted by name (empty when the service is
// open to everyone). An .auth file that does not parse is an error naming the file.
func (ks *KeyStore) Clients(app string) ([]AuthorizedClient, error) {
	return ks.ClientsIn(context.Background(), app)
}

// ClientsIn is Clients, the cached list checked with the watch in ctx's view (see
// dirwatch.Settled: a reconcile pass looks at every app's clients once for all).
func (ks *KeyStore) ClientsIn(ctx context.Context, app string) ([]AuthorizedClient, error) {
	if err := checkAppName(app); err != nil {
		return nil, err
	}
	dir := filepath.Join(ks.appDir(app), authorizedClients)
	if clients, ok := ks.clientCache.get(ctx, app, dir); ok {
		return clients, nil // its directory is where it was: so is the app's key directory
	}
	if _, err := os.Stat(filepath.Join(ks.appDir(app), secretKeyFile)); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("onion: clients of %q: no key: %w", app, ErrNotFound)
	}
	mark := ks.clientCache.markNow()
	before := clientFileIDs(dir, nil)
	clients, err := readClientsDir(dir)
	if err != nil {
		ks.clientCache.forget(app)
		return nil, fmt.Errorf("onion: clients of %q: %w", app, err)
	}
	if after := clientFileIDs(dir, clients); before.dir == after.dir { // the directory did not change meanwhile
		ks.clientCache.put(app, after, clients, mark)
	}
	return slices.Clone(clients), nil
}

// clientCache keeps each app's client list with the identities of its directory and its .auth
// files: asking again for the clients of an app whose directory and files did not change costs
// an lstat of each (one, for an app open to everyone), not a read of the directory and files.
type clientCache struct {
	mu    sync.Mutex
	apps  map[string]cachedClients
	watch *dirwatch.Watch // see KeyStore.FollowFiles
}

type cachedClients struct {
	ids     clientIDs
	clients []AuthorizedClient
	mark    uint64 // the watch's mark before the files were last checked (0: none)
}

// clientIDs are the identities of a clients directory (zero: none) and of its clients' files.
type clientIDs struct {
	dir   keyFileID
	files []keyFileID
}

func lstatID(path string) (keyFileID, bool) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return keyFileID{}, false
	}
	return keyFileID{ino: st.Ino, size: uint64(st.Size), mtimeNsec: st.Mtim.Nano(), ctimeNsec: st.Ctim.Nano()}, true
}

// clientFileIDs are the identities of dir and of the files of clients in it now.
func clientFileIDs(dir string, clients []AuthorizedClient) clientIDs {
	ids := clientIDs{}
	ids.dir, _ = lstatID(dir)
	for _, c := range clients {
		id, _ := lstatID(filepath.Join(dir, c.Name+authFileSuffix))
		ids.files = append(ids.files, id)
	}
	return ids
}

func (c *clientCache) get(ctx context.Context, app, dir string) ([]AuthorizedClient, bool) {
	c.mu.Lock()
	cached, ok := c.apps[app]
	watch := c.watch
	c.mu.Unlock()
	if !ok || cached.ids.dir == (keyFileID{}) {
		return nil, false
	}
	if cached.mark != 0 && watch.UnchangedDirIn(ctx, cached.mark, dir) {
		return slices.Clone(cached.clients), true // nothing happened in the directory
	}
	mark := watch.Mark()
	now := clientFileIDs(dir, cached.clients)
	if now.dir != cached.ids.dir || !slices.Equal(now.files, cached.ids.files) {
		return nil, false
	}
	c.mu.Lock()
	if cur, ok := c.apps[app]; ok && cur.ids.dir == cached.ids.dir {
		cur.mark = mark
		c.apps[app] = cur
	}
	c.mu.Unlock()
	return slices.Clone(cached.clients), true
}

func (c *clientCache) put(app string, ids clientIDs, clients []AuthorizedClient, mark uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apps == nil {
		c.apps = map[string]cachedClients{}
	}
	c.apps[app] = cachedClients{ids: ids, clients: slices.Clone(clients), mark: mark}
}

func (c *clientCache) markNow() uint64 {
	c.mu.Lock()
	watch := c.watch
	c.mu.Unlock()
	return watch.Mark()
}

func (c *clientCache) forget(app string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.apps, app)
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
