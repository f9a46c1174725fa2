package onion

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/dirwatch"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
)

// KeyStore keeps one v3 key per app under Dir, one subdirectory per app in tor's
// HiddenServiceDir layout:
//
//	Dir/<app>/hs_ed25519_secret_key
//	Dir/<app>/hs_ed25519_public_key
//	Dir/<app>/hostname
//	Dir/<app>/authorized_clients/<client>.auth
//
// Files are 0600 in 0700 directories and written atomically: a whole app directory is
// prepared under a temporary name next to it and swapped in with one rename. KeyStore does
// no locking of its own: callers that write hold the state store's lock.
type KeyStore struct {
	Dir string

	// failCommit, when set (by tests), makes committing that app fail, to prove rollback.
	failCommit func(app string) error

	cache       keyCache
	clientCache clientCache
	listed      dirwatch.Dir // Dir as Apps read it last
}

// keyCache keeps the keys Load verified, each with the identities of the files it read (inode,
// size, times): loading an unchanged key again costs three lstats, not three reads and a scalar
// multiplication. Every write replaces the app's directory (a new inode for each file), and a
// file changed in place changes its times: either is read and checked again. Keys are
// immutable, so the cached *Key is shared.
type keyCache struct {
	mu    sync.Mutex
	keys  map[string]cachedKey
	watch *dirwatch.Watch // see FollowFiles
}

type cachedKey struct {
	files [3]keyFileID // secret key, public key, hostname
	key   *Key
	mark  uint64 // the watch's mark before the files were last checked (0: none)
}

// FollowFiles makes loading a key (and listing clients) whose files nothing happened to since
// they were last checked cost no stat (w sees the key directories' events). For a long-lived
// process (the daemon).
func (ks *KeyStore) FollowFiles(w *dirwatch.Watch) {
	ks.cache.mu.Lock()
	ks.cache.watch = w
	ks.cache.mu.Unlock()
	ks.clientCache.mu.Lock()
	ks.clientCache.watch = w
	ks.clientCache.mu.Unlock()
}

// vouched returns the key cached for app when the watch saw nothing happen to its files since
// they were checked.
func (c *keyCache) vouched(ctx context.Context, app, dir string) *Key {
	c.mu.Lock()
	k, ok := c.keys[app]
	watch := c.watch
	c.mu.Unlock()
	if !ok || k.mark == 0 || !watch.UnchangedIn(ctx, k.mark, filepath.Join(dir, secretKeyFile),
		filepath.Join(dir, publicKeyFile), filepath.Join(dir, hostnameFile)) {
		return nil
	}
	return k.key
}

func (c *keyCache) mark() uint64 {
	c.mu.Lock()
	watch := c.watch
	c.mu.Unlock()
	return watch.Mark()
}

type keyFileID struct {
	ino, size            uint64
	mtimeNsec, ctimeNsec int64
}

// keyFiles are the files Load reads, in cachedKey.files' order.
var keyFiles = [3]string{secretKeyFile, publicKeyFile, hostnameFile}

// ids are the identities of an app's key files now (ok false when one cannot be stat'ed).
func (c *keyCache) ids(dir string) (ids [3]keyFileID, ok bool) {
	for i, name := range keyFiles {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, name), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			return ids, false
		}
		ids[i] = keyFileID{ino: st.Ino, size: uint64(st.Size), mtimeNsec: st.Mtim.Nano(), ctimeNsec: st.Ctim.Nano()}
	}
	return ids, true
}

// get returns the key cached for files of identities ids (checked after mark).
func (c *keyCache) get(app string, ids [3]keyFileID, mark uint64) *Key {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.keys[app]; ok && k.files == ids {
		k.mark = mark
		c.keys[app] = k
		return k.key
	}
	return nil
}

func (c *keyCache) put(app string, ids [3]keyFileID, k *Key, mark uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys == nil {
		c.keys = map[string]cachedKey{}
	}
	c.keys[app] = cachedKey{files: ids, key: k, mark: mark}
}

func (c *keyCache) forget(app string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.keys, app)
}

// AppKey is one app of the store, as List reports it.
type AppKey struct {
	App     string   `json:"app"`
	Address string   `json:"address,omitempty"`
	Clients []string `json:"clients,omitempty"`
	// Err is set when the app's key does not load; Address is then empty.
	Err error `json:"-"`
}

func (ks *KeyStore) appDir(app string) string { return filepath.Join(ks.Dir, app) }

// Load reads and verifies the app's key: the secret key file's header and length, and that
// hs_ed25519_public_key and hostname are the ones of that secret key. A missing key is
// ErrNotFound; a mismatch is an error naming the file and wrapping ErrKeyMismatch.
func (ks *KeyStore) Load(app string) (*Key, error) { return ks.load(context.Background(), app) }

// load is Load, checking the key's files with the watch in ctx's view (see dirwatch.Settled).
func (ks *KeyStore) load(ctx context.Context, app string) (*Key, error) {
	if err := checkAppName(app); err != nil {
		return nil, err
	}
	dir := ks.appDir(app)
	if k := ks.cache.vouched(ctx, app, dir); k != nil {
		return k, nil
	}
	mark := ks.cache.mark()
	before, stable := ks.cache.ids(dir)
	if stable {
		if k := ks.cache.get(app, before, mark); k != nil {
			return k, nil
		}
	}
	k, err := loadKeyDir(dir, true)
	if err != nil {
		ks.cache.forget(app)
		return nil, fmt.Errorf("onion: load %q: %w", app, err)
	}
	// Cached only when the files did not change while they were read.
	if after, ok := ks.cache.ids(dir); stable && ok && after == before {
		ks.cache.put(app, before, k, mark)
	}
	return k, nil
}

// loadKeyDir reads a HiddenServiceDir (see loadKeyDirAt). A symlink at dir itself is
// followed (an import source is the user's choice); files inside are never symlinks.
func loadKeyDir(dir string, strict bool) (*Key, error) {
	fd, err := openDir(dir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no key in %s: %w", dir, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return loadKeyDirAt(fd, dir, strict)
}

// loadKeyDirAt reads the HiddenServiceDir open at dirfd (where names it in errors). With
// strict, hs_ed25519_public_key and hostname must exist; without, they are checked when
// present (a bare directory with only the secret key imports fine). A symlink in place of a
// key file is refused, never followed.
func loadKeyDirAt(dirfd int, where string, strict bool) (*Key, error) {
	secretPath := filepath.Join(where, secretKeyFile)
	b, err := readFileAt(dirfd, where, secretKeyFile, secretKeyFileBytes)
	if errors.Is(err, fs.ErrNotExist) {
		for _, derived := range []string{hostnameFile, publicKeyFile} {
			if _, ok, _ := lstatAt(dirfd, derived); ok {
				return nil, fmt.Errorf("%s is missing but %s exists: %w", secretPath, derived, ErrKeyMismatch)
			}
		}
		return nil, fmt.Errorf("no key in %s: %w", where, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	k, err := ParseSecretKeyFile(b)
	clear(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", secretPath, err)
	}
	checks := []struct {
		name  string
		size  int
		check func([]byte) error
	}{
		{publicKeyFile, publicKeyFileBytes, k.checkPublicKeyFile},
		{hostnameFile, 128, k.checkHostnameFile},
	}
	for _, c := range checks {
		path := filepath.Join(where, c.name)
		b, err := readFileAt(dirfd, where, c.name, c.size)
		if errors.Is(err, fs.ErrNotExist) && !strict {
			continue
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s is missing: %w", path, ErrKeyMismatch)
		}
		if err != nil {
			return nil, err
		}
		if err := c.check(b); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return k, nil
}

// readSmallFile reads a regular file of at most max bytes (one more is read to detect a
// longer file, which is then reported with its true size by the parser's length check).
func readSmallFile(path string, max int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file: %w", path, ErrBadInput)
	}
	return io.ReadAll(io.LimitReader(f, int64(max)+1))
}

// Ensure returns the app's key, creating one from crypto/rand if the app has none.
// It never replaces a key that fails to load.
func (ks *KeyStore) Ensure(app string) (key *Key, created bool, err error) {
	return ks.EnsureIn(context.Background(), app)
}

// EnsureIn is Ensure, an existing key's files checked with the watch in ctx's view (see
// dirwatch.Settled: a reconcile pass looks at the keys it found in place once for all).
func (ks *KeyStore) EnsureIn(ctx context.Context, app string) (key *Key, created bool, err error) {
	k, err := ks.load(ctx, app)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, false, err
	}
	k, err = GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, err
	}
	if err := ks.write(app, k, nil); err != nil {
		return nil, false, fmt.Errorf("onion: create key for %q: %w", app, err)
	}
	return k, true, nil
}

// Import stores a key from source for app and returns it. source is one of:
//   - a HiddenServiceDir written by tor or by mkp224o (its authorized_clients/, if present,
//     replaces the app's client list);
//   - a bare hs_ed25519_secret_key file (96 bytes);
//   - the ADD_ONION blob "ED25519-V3:<base64 of 64 bytes>", given as is or in a file.
//
// Importing the key the app already has is a no-op; a different key needs force.
func (ks *KeyStore) Import(app, source string, force bool) (*Key, error) {
	if err := checkAppName(app); err != nil {
		return nil, err
	}
	k, clients, err := ReadKeySource(source)
	if err != nil {
		return nil, fmt.Errorf("onion: import %q: %w", app, err)
	}
	if err := ks.Save(app, k, clients, force); err != nil {
		return nil, err
	}
	return k, nil
}

// ReadKeySource reads a key (and, from a HiddenServiceDir with authorized_clients/, the
// clients) from one of the sources Import accepts. clients is nil when the source has no
// client list.
func ReadKeySource(source string) (*Key, []AuthorizedClient, error) {
	if strings.HasPrefix(strings.TrimSpace(source), addOnionPrefix) {
		k, err := ParseAddOnionBlob(source)
		return k, nil, err
	}
	fi, err := os.Stat(source)
	if err != nil {
		// The source is not repeated: it may be a key typed with a typo in its prefix.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, nil, errkind.BadInputf("source: not an %s key, and no such file or directory (%w)", addOnionPrefix, err)
	}
	if fi.IsDir() {
		k, err := loadKeyDir(source, false)
		if errors.Is(err, ErrNotFound) {
			err = fmt.Errorf("%w (%w)", err, ErrBadInput)
		}
		if err != nil {
			return nil, nil, err
		}
		clients, err := readClientsDir(filepath.Join(source, authorizedClients))
		if err != nil {
			return nil, nil, err
		}
		return k, clients, nil
	}
	b, err := readSmallFile(source, 4096)
	if err != nil {
		return nil, nil, err
	}
	defer clear(b)
	if len(b) == secretKeyFileBytes && string(b[:32]) == secretKeyHeader {
		k, err := ParseSecretKeyFile(b)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", source, err)
		}
		return k, nil, nil
	}
	if strings.HasPrefix(strings.TrimSpace(string(b)), addOnionPrefix) {
		k, err := ParseAddOnionBlob(string(b))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", source, err)
		}
		return k, nil, nil
	}
	return nil, nil, fmt.Errorf("%s: neither an hs_ed25519_secret_key file (%d bytes with a v3 header) nor an %s blob: %w",
		source, secretKeyFileBytes, addOnionPrefix, ErrBadInput)
}

// Save stores key for app. clients == nil keeps the app's current client list; a non-nil
// slice (even empty) replaces it. Saving the app's current key is allowed; a different key,
// or replacing a key that does not load, needs force.
func (ks *KeyStore) Save(app string, key *Key, clients []AuthorizedClient, force bool) error {
	if err := checkAppName(app); err != nil {
		return err
	}
	if key == nil {
		return fmt.Errorf("onion: save %q: nil key: %w", app, ErrBadInput)
	}
	if err := checkClientList(clients); err != nil {
		return fmt.Errorf("onion: save %q: %w", app, err)
	}
	old, err := ks.Load(app)
	switch {
	case errors.Is(err, ErrNotFound):
		old = nil
	case err != nil && !force:
		return fmt.Errorf("%w (the stored key does not load; force replaces it)", err)
	case err != nil:
		old = nil
	case !old.Equal(key) && !force:
		return fmt.Errorf("onion: %q has %s: %w", app, old.Address(), ErrKeyExists)
	}
	sameKey := old != nil && old.Equal(key)
	if !sameKey {
		if other, err := ks.appWithKey(key, app); err != nil {
			return err
		} else if other != "" {
			return fmt.Errorf("onion: save %q: %s is the key of app %q: %w", app, key.Address(), other, ErrKeyInUse)
		}
	}
	if old != nil {
		current, err := ks.Clients(app)
		switch {
		case err != nil && !force:
			return err
		case err != nil:
		case clients == nil && sameKey:
			return nil // nothing changes
		case clients == nil:
			clients = current
		case sameKey && sameClients(current, clients):
			return nil
		}
	}
	if err := ks.write(app, key, clients); err != nil {
		return fmt.Errorf("onion: save %q: %w", app, err)
	}
	return nil
}

// appWithKey returns the app, other than except, whose stored address is key's ("" if none).
// It reads the hostname files: a broken app is skipped here and reported by Load.
func (ks *KeyStore) appWithKey(key *Key, except string) (string, error) {
	entries, err := os.ReadDir(ks.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	want := key.Address()
	for _, e := range entries {
		if !e.IsDir() || e.Name() == except || !names.IsApp(e.Name()) {
			continue
		}
		b, err := readSmallFile(filepath.Join(ks.Dir, e.Name(), hostnameFile), 128)
		if err == nil && strings.TrimSpace(strings.ToLower(string(b))) == want {
			return e.Name(), nil
		}
	}
	return "", nil
}

func checkClientList(clients []AuthorizedClient) error {
	seen := map[string]bool{}
	for _, c := range clients {
		if err := checkClientName(c.Name); err != nil {
			return err
		}
		if seen[c.Name] {
			return fmt.Errorf("client %q listed twice: %w", c.Name, ErrBadInput)
		}
		seen[c.Name] = true
	}
	return nil
}

func sameClients(a, b []AuthorizedClient) bool {
	if len(a) != len(b) {
		return false
	}
	byName := map[string][32]byte{}
	for _, c := range a {
		byName[c.Name] = c.PublicKey
	}
	for _, c := range b {
		if pub, ok := byName[c.Name]; !ok || pub != c.PublicKey {
			return false
		}
	}
	return true
}

// write replaces the app's directory with one holding key and clients, atomically.
func (ks *KeyStore) write(app string, key *Key, clients []AuthorizedClient) error {
	staged, err := ks.stage(app, key, clients)
	if err != nil {
		return err
	}
	c, err := ks.commit(app, staged)
	if err != nil {
		os.RemoveAll(staged)
		return err
	}
	c.finish()
	return nil
}

// stage writes a complete app directory under a temporary name in ks.Dir.
func (ks *KeyStore) stage(app string, key *Key, clients []AuthorizedClient) (dir string, err error) {
	if err := os.MkdirAll(ks.Dir, 0o700); err != nil {
		return "", err
	}
	dir, err = os.MkdirTemp(ks.Dir, ".stage-"+app+"-")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	fd, err := openDir(dir, true)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	if err := writeHiddenServiceFiles(fd, dir, key, clients, writeNew); err != nil {
		return "", err
	}
	return dir, fsync(fd, dir)
}

// writeFunc writes one file into an open directory.
type writeFunc func(dirfd int, name string, data []byte) error

// writeNew creates a new 0600 file (in a staging directory: no temporary name is needed).
func writeNew(dirfd int, name string, data []byte) error {
	return atomicfile.WriteNewAt(dirfd, name, data, 0o600)
}

// replaceFile replaces a file atomically (temporary file and rename) with a 0600 one, unless it
// already holds data.
func replaceFile(dirfd int, name string, data []byte) error {
	_, err := atomicfile.WriteFileAt(dirfd, name, data, 0o600)
	return err
}

// writeHiddenServiceFiles writes the key files and authorized_clients/ (exactly clients:
// other .auth files are removed) into the directory open at dirfd, all relative to it. The
// caller fsyncs dirfd.
func writeHiddenServiceFiles(dirfd int, where string, key *Key, clients []AuthorizedClient, write writeFunc) error {
	secret := key.secretKeyFile()
	defer clear(secret)
	files := []struct {
		name string
		data []byte
	}{
		{secretKeyFile, secret},
		{publicKeyFile, key.publicKeyFile()},
		{hostnameFile, key.hostnameFile()},
	}
	for _, f := range files {
		if err := write(dirfd, f.name, f.data); err != nil {
			return err
		}
	}
	if err := unix.Mkdirat(dirfd, authorizedClients, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("mkdir %s: %w", filepath.Join(where, authorizedClients), err)
	}
	authWhere := filepath.Join(where, authorizedClients)
	afd, err := openDirAt(dirfd, where, authorizedClients)
	if err != nil {
		return err
	}
	defer unix.Close(afd)
	for _, c := range clients {
		if err := write(afd, c.Name+authFileSuffix, c.authFile()); err != nil {
			return err
		}
	}
	if err := removeStaleAuthFiles(afd, authWhere, clients); err != nil {
		return err
	}
	return fsync(afd, authWhere)
}

// removeStaleAuthFiles removes the .auth files of clients not in keep.
func removeStaleAuthFiles(afd int, where string, keep []AuthorizedClient) error {
	entries, err := readDirNames(afd, where)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e, authFileSuffix)
		if !ok || slices.ContainsFunc(keep, func(c AuthorizedClient) bool { return c.Name == name }) {
			continue
		}
		if err := unix.Unlinkat(afd, e, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove %s: %w", filepath.Join(where, e), err)
		}
	}
	return nil
}

// commit is a staged app directory swapped into place, with the old one kept until finish.
type commit struct {
	ks         *KeyStore
	app        string
	staged     string // after the swap: the old directory, if there was one
	hadOld     bool
	rolledBack bool
}

func (ks *KeyStore) commit(app, staged string) (*commit, error) {
	if ks.failCommit != nil {
		if err := ks.failCommit(app); err != nil {
			return nil, err
		}
	}
	target := ks.appDir(app)
	c := &commit{ks: ks, app: app, staged: staged}
	_, err := os.Lstat(target)
	switch {
	case err == nil:
		c.hadOld = true
		err = exchangeDirs(staged, target)
	case errors.Is(err, fs.ErrNotExist):
		err = renameNoReplace(staged, target)
	}
	if err != nil {
		return nil, err
	}
	return c, atomicfile.SyncDir(ks.Dir)
}

// rollback puts the previous directory (or nothing) back.
func (c *commit) rollback() error {
	target := c.ks.appDir(c.app)
	var err error
	if c.hadOld {
		err = exchangeDirs(c.staged, target)
	} else {
		err = os.Rename(target, c.staged)
	}
	if err == nil {
		c.rolledBack = true
		err = atomicfile.SyncDir(c.ks.Dir)
	}
	return err
}

// finish removes what the swap left behind: the old directory, or after a rollback the new.
func (c *commit) finish() { os.RemoveAll(c.staged) }

// Export writes the app's key and authorized_clients/ into dir, a HiddenServiceDir that a
// plain tor serves as is (HiddenServiceDir dir). dir is created 0700 if needed; an existing
// dir may hold the same key (its files are refreshed, stale .auth files removed) but not
// a different one.
//
// dir is the user's, and may hold symlinks someone planted to make a root process write or
// delete files elsewhere. Export opens dir once (refusing a symlink there), refuses a symlink
// or any other non-regular file in place of every file it writes or deletes, and does all its
// work relative to that directory descriptor, never through a path again.
func (ks *KeyStore) Export(app, dir string) error {
	k, err := ks.Load(app)
	if err != nil {
		return err
	}
	clients, err := ks.Clients(app)
	if err != nil {
		return err
	}
	if err := exportKey(dir, k, clients); err != nil {
		return fmt.Errorf("onion: export %q: %w", app, err)
	}
	return nil
}

func exportKey(dir string, k *Key, clients []AuthorizedClient) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fd, err := openDir(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := checkExportEntries(fd, dir); err != nil {
		return err
	}
	existing, err := loadKeyDirAt(fd, dir, false)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return fmt.Errorf("%s already holds key files that do not load (%w): %w", dir, err, ErrKeyExists)
	case !existing.Equal(k):
		return fmt.Errorf("%s holds %s: %w", dir, existing.Address(), ErrKeyExists)
	}
	// tor refuses a HiddenServiceDir that others can read.
	if err := unix.Fchmod(fd, 0o700); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	if err := writeHiddenServiceFiles(fd, dir, k, clients, replaceFile); err != nil {
		return err
	}
	return fsync(fd, dir)
}

// checkExportEntries refuses, before anything is written, a symlink or other non-regular file
// where Export writes a key file or an .auth file, and anything but a directory at
// authorized_clients.
func checkExportEntries(fd int, dir string) error {
	for _, name := range []string{secretKeyFile, publicKeyFile, hostnameFile} {
		if err := checkRegularAt(fd, dir, name); err != nil {
			return err
		}
	}
	st, ok, err := lstatAt(fd, authorizedClients)
	if err != nil || !ok {
		return err
	}
	authWhere := filepath.Join(dir, authorizedClients)
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return errkind.BadInputf("%s is not a directory (a symlink?): refused", authWhere)
	}
	afd, err := openDirAt(fd, dir, authorizedClients)
	if err != nil {
		return err
	}
	defer unix.Close(afd)
	entries, err := readDirNames(afd, authWhere)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasSuffix(e, authFileSuffix) {
			if err := checkRegularAt(afd, authWhere, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkRegularAt accepts a missing name or a regular file.
func checkRegularAt(dirfd int, where, name string) error {
	st, ok, err := lstatAt(dirfd, name)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(where, name), err)
	}
	if ok && st.Mode&unix.S_IFMT != unix.S_IFREG {
		return errkind.BadInputf("%s is not a regular file (a symlink?): refused", filepath.Join(where, name))
	}
	return nil
}

// Remove deletes the app's key and clients. Removing an app without a key is not an error.
func (ks *KeyStore) Remove(app string) error {
	if err := checkAppName(app); err != nil {
		return err
	}
	target := ks.appDir(app)
	trash, err := os.MkdirTemp(ks.Dir, ".remove-"+app+"-")
	if errors.Is(err, fs.ErrNotExist) {
		return nil // no store, no key
	}
	if err != nil {
		return fmt.Errorf("onion: remove %q: %w", app, err)
	}
	defer os.RemoveAll(trash)
	// One rename takes the key out of the store, so a crash never leaves half a key.
	err = os.Rename(target, filepath.Join(trash, app))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("onion: remove %q: %w", app, err)
	}
	return atomicfile.SyncDir(ks.Dir)
}

// Apps lists the apps that have a key directory, sorted by name, without reading the keys (List
// loads and checks them). With a watch (FollowFiles), Dir is read again only after something
// happened in it.
func (ks *KeyStore) Apps() ([]string, error) {
	ks.cache.mu.Lock()
	watch := ks.cache.watch
	ks.cache.mu.Unlock()
	entries, err := ks.listed.ReadDir(watch, ks.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("onion: list keys: %w", err)
	}
	var apps []string
	for _, e := range entries {
		if e.IsDir() && names.IsApp(e.Name()) { // staging directories start with '.', lock files are files
			apps = append(apps, e.Name())
		}
	}
	return apps, nil
}

// List reports every app with a key directory, sorted by name. An app whose key does not
// load is listed with Err set.
func (ks *KeyStore) List() ([]AppKey, error) {
	apps, err := ks.Apps()
	if err != nil {
		return nil, err
	}
	var out []AppKey
	for _, app := range apps {
		ak := AppKey{App: app}
		k, err := ks.Load(ak.App)
		if err != nil {
			ak.Err = err
			out = append(out, ak)
			continue
		}
		ak.Address = k.Address()
		clients, err := ks.Clients(ak.App)
		if err != nil {
			ak.Err = err
		}
		for _, c := range clients {
			ak.Clients = append(ak.Clients, c.Name)
		}
		out = append(out, ak)
	}
	return out, nil
}

// Cleanup removes what an interrupted write left in the store (staging and removal
// directories) and puts back an app directory left under its ".swap" name by the two-rename
// fallback. Call it under the store's lock, for example when the daemon starts.
func (ks *KeyStore) Cleanup() error {
	entries, err := os.ReadDir(ks.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("onion: cleanup: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(ks.Dir, name)
		switch {
		case strings.HasPrefix(name, ".stage-"), strings.HasPrefix(name, ".remove-"):
			errs = append(errs, os.RemoveAll(path))
		case strings.HasSuffix(name, ".swap") && names.IsApp(strings.TrimSuffix(name, ".swap")):
			app := filepath.Join(ks.Dir, strings.TrimSuffix(name, ".swap"))
			if _, err := os.Lstat(app); errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, os.Rename(path, app))
			} else {
				errs = append(errs, os.RemoveAll(path))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("onion: cleanup: %w", err)
	}
	return atomicfile.SyncDir(ks.Dir)
}
