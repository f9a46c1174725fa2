package onion

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/onionpod/onionpod/internal/dirwatch"
)

func newStore(t *testing.T) *KeyStore {
	t.Helper()
	return &KeyStore{Dir: filepath.Join(t.TempDir(), "keys")}
}

// snapshot returns every file under dir with its mode and content, to prove that a failed
// operation changed nothing.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path == dir {
			return fs.SkipAll
		}
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		line := strings.TrimPrefix(path, dir) + " " + fi.Mode().String()
		if d.Type().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestEnsureWritesTorLayout(t *testing.T) {
	ks := newStore(t)
	k, created, err := ks.Ensure("blog")
	if err != nil || !created {
		t.Fatalf("Ensure: %v, created=%v", err, created)
	}
	dir := filepath.Join(ks.Dir, "blog")
	wantModes := map[string]fs.FileMode{
		"":                fs.ModeDir | 0o700,
		secretKeyFile:     0o600,
		publicKeyFile:     0o600,
		hostnameFile:      0o600,
		authorizedClients: fs.ModeDir | 0o700,
	}
	for name, mode := range wantModes {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), mode)
		}
	}
	host, _ := os.ReadFile(filepath.Join(dir, hostnameFile))
	if string(host) != k.Address()+"\n" {
		t.Errorf("hostname = %q, want %q", host, k.Address()+"\n")
	}
	sec, _ := os.ReadFile(filepath.Join(dir, secretKeyFile))
	if len(sec) != 96 || string(sec[:32]) != "== ed25519v1-secret: type0 ==\x00\x00\x00" {
		t.Errorf("secret key file: %d bytes, header %q", len(sec), sec[:32])
	}
	pub, _ := os.ReadFile(filepath.Join(dir, publicKeyFile))
	if len(pub) != 64 || string(pub[:32]) != "== ed25519v1-public: type0 ==\x00\x00\x00" || !bytes.Equal(pub[32:], k.PublicKey()) {
		t.Errorf("public key file wrong: %q", pub)
	}
	// Same key on every later call, and no stray files.
	k2, created, err := ks.Ensure("blog")
	if err != nil || created || !k2.Equal(k) {
		t.Fatalf("second Ensure: %v created=%v same=%v", err, created, k2.Equal(k))
	}
	entries, _ := os.ReadDir(ks.Dir)
	if len(entries) != 1 {
		t.Errorf("store holds %d entries, want 1 (no leftovers of staging)", len(entries))
	}
}

func TestLoadRefusesMismatchNamingTheFile(t *testing.T) {
	other := mustKey(t, 9)
	cases := map[string]func(dir string){
		hostnameFile: func(dir string) {
			os.WriteFile(filepath.Join(dir, hostnameFile), other.hostnameFile(), 0o600)
		},
		publicKeyFile: func(dir string) {
			os.WriteFile(filepath.Join(dir, publicKeyFile), other.publicKeyFile(), 0o600)
		},
		secretKeyFile: func(dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, secretKeyFile))
			os.WriteFile(filepath.Join(dir, secretKeyFile), b[:90], 0o600)
		},
	}
	w, err := dirwatch.New()
	if err != nil {
		t.Skipf("no inotify: %v", err)
	}
	defer w.Close()
	for file, corrupt := range cases {
		t.Run(file, func(t *testing.T) {
			ks := newStore(t)
			ks.FollowFiles(w)
			if _, _, err := ks.Ensure("blog"); err != nil {
				t.Fatal(err)
			}
			for range 3 { // loaded (and kept, then vouched for by the watch) before the damage
				if _, err := ks.Load("blog"); err != nil {
					t.Fatal(err)
				}
			}
			corrupt(filepath.Join(ks.Dir, "blog"))
			before := snapshot(t, ks.Dir)
			_, err := ks.Load("blog")
			if err == nil || !strings.Contains(err.Error(), filepath.Join(ks.Dir, "blog", file)) {
				t.Fatalf("Load: %v, want an error naming %s", err, file)
			}
			// Ensure must not paper over it with a new key.
			if _, _, err := ks.Ensure("blog"); err == nil {
				t.Fatal("Ensure replaced a key that does not load")
			}
			if snapshot(t, ks.Dir) != before {
				t.Fatal("a failed load changed the store")
			}
		})
	}
}

func TestEnsureDoesNotRecreateLostSecret(t *testing.T) {
	ks := newStore(t)
	if _, _, err := ks.Ensure("blog"); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(ks.Dir, "blog", secretKeyFile))
	if _, _, err := ks.Ensure("blog"); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("Ensure after losing the secret: %v, want ErrKeyMismatch (never a silent new key)", err)
	}
}

func TestBadAppNames(t *testing.T) {
	ks := newStore(t)
	for _, name := range []string{"", "Blog", "blog_1", "-blog", "blog-", "../x", ".", "a/b", strings.Repeat("a", 64), ".stage-x"} {
		if _, _, err := ks.Ensure(name); !errors.Is(err, ErrBadInput) {
			t.Errorf("Ensure(%q): %v, want ErrBadInput", name, err)
		}
		if _, err := ks.Import(name, "x", false); !errors.Is(err, ErrBadInput) {
			t.Errorf("Import(%q): %v, want ErrBadInput", name, err)
		}
	}
	if _, err := os.Stat(ks.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Error("bad names created the store")
	}
	if _, err := ks.AddClient("blog", "bad/name"); !errors.Is(err, ErrBadInput) {
		t.Errorf("AddClient with a bad client name: %v", err)
	}
}

func TestImportSources(t *testing.T) {
	k := mustKey(t, 5)
	src := t.TempDir()
	// A HiddenServiceDir with one client, as tor lays it out.
	hs := filepath.Join(src, "hs")
	os.MkdirAll(filepath.Join(hs, authorizedClients), 0o700)
	os.WriteFile(filepath.Join(hs, secretKeyFile), k.secretKeyFile(), 0o600)
	os.WriteFile(filepath.Join(hs, publicKeyFile), k.publicKeyFile(), 0o600)
	os.WriteFile(filepath.Join(hs, hostnameFile), k.hostnameFile(), 0o600)
	alice := AuthorizedClient{Name: "alice", PublicKey: [32]byte{1, 2, 3}}
	os.WriteFile(filepath.Join(hs, authorizedClients, "alice.auth"), alice.authFile(), 0o600)
	os.WriteFile(filepath.Join(hs, authorizedClients, "notes.txt"), []byte("ignored like tor does"), 0o600)
	bare := filepath.Join(src, "bare_secret_key")
	os.WriteFile(bare, k.secretKeyFile(), 0o600)
	blobFile := filepath.Join(src, "blob.txt")
	os.WriteFile(blobFile, []byte(k.addOnionBlob()+"\n"), 0o600)

	for name, source := range map[string]string{
		"dir": hs, "bare file": bare, "blob file": blobFile,
		"blob": k.addOnionBlob(), "unpadded blob": strings.TrimRight(k.addOnionBlob(), "="),
	} {
		t.Run(name, func(t *testing.T) {
			ks := newStore(t)
			got, err := ks.Import("app", source, false)
			if err != nil || got.Address() != k.Address() {
				t.Fatalf("Import: %v", err)
			}
			loaded, err := ks.Load("app")
			if err != nil || !loaded.Equal(k) {
				t.Fatalf("Load after import: %v", err)
			}
			clients, err := ks.Clients("app")
			if err != nil {
				t.Fatal(err)
			}
			if name == "dir" && (len(clients) != 1 || clients[0] != alice) {
				t.Fatalf("clients = %v, want alice from authorized_clients/", clients)
			}
			// The same key again is a no-op.
			if _, err := ks.Import("app", source, false); err != nil {
				t.Fatalf("re-import of the same key: %v", err)
			}
		})
	}
}

func TestImportRefusesBadSources(t *testing.T) {
	k := mustKey(t, 5)
	dir := t.TempDir()
	mismatch := filepath.Join(dir, "mismatch")
	os.Mkdir(mismatch, 0o700)
	os.WriteFile(filepath.Join(mismatch, secretKeyFile), k.secretKeyFile(), 0o600)
	os.WriteFile(filepath.Join(mismatch, hostnameFile), mustKey(t, 6).hostnameFile(), 0o600)
	empty := filepath.Join(dir, "empty")
	os.Mkdir(empty, 0o700)
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, bytes.Repeat([]byte("x"), 96), 0o600)
	for name, source := range map[string]string{
		"missing": filepath.Join(dir, "nope"), "empty dir": empty, "junk file": junk,
		"hostname of another key": mismatch, "bad blob": "ED25519-V3:abc",
	} {
		ks := newStore(t)
		_, err := ks.Import("app", source, false)
		if err == nil {
			t.Errorf("%s: imported", name)
		}
		if strings.Contains(fmtErr(err), base64Secret(k)) {
			t.Errorf("%s: error prints the secret", name)
		}
		if _, err := os.Stat(ks.Dir); err == nil {
			if s := snapshot(t, ks.Dir); s != "" && s != " drwx------" {
				t.Errorf("%s: a refused import wrote %q", name, s)
			}
		}
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func base64Secret(k *Key) string { return strings.TrimPrefix(k.addOnionBlob(), addOnionPrefix) }

func TestImportNeedsForceForAnotherKey(t *testing.T) {
	ks := newStore(t)
	old, _, err := ks.Ensure("app")
	if err != nil {
		t.Fatal(err)
	}
	cred, err := ks.AddClient("app", "bob")
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, ks.Dir)
	k := mustKey(t, 8)
	_, err = ks.Import("app", k.addOnionBlob(), false)
	if !errors.Is(err, ErrKeyExists) || !strings.Contains(err.Error(), old.Address()) {
		t.Fatalf("Import over another key: %v, want ErrKeyExists naming the current address", err)
	}
	if snapshot(t, ks.Dir) != before {
		t.Fatal("a refused import changed the store")
	}
	if _, err := ks.Import("app", k.addOnionBlob(), true); err != nil {
		t.Fatal(err)
	}
	got, _ := ks.Load("app")
	if !got.Equal(k) {
		t.Fatal("force did not replace the key")
	}
	// A blob carries no client list: the app keeps its clients.
	clients, _ := ks.Clients("app")
	if len(clients) != 1 || clients[0].Name != cred.Client {
		t.Fatalf("clients after forced import: %v", clients)
	}
}

func TestExportAndRemove(t *testing.T) {
	ks := newStore(t)
	k, _, _ := ks.Ensure("app")
	if _, err := ks.AddClient("app", "alice"); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "hs")
	if err := ks.Export("app", out); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(out)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("export dir mode %v, want 0700 (tor refuses others)", fi.Mode())
	}
	got, err := loadKeyDir(out, true)
	if err != nil || !got.Equal(k) {
		t.Fatalf("exported dir does not load: %v", err)
	}
	clients, _ := readClientsDir(filepath.Join(out, authorizedClients))
	if len(clients) != 1 || clients[0].Name != "alice" {
		t.Fatalf("exported clients: %v", clients)
	}
	// Again into the same dir, after revoking alice: her file goes.
	ks.RemoveClient("app", "alice")
	if err := ks.Export("app", out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, authorizedClients, "alice.auth")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("re-export kept a revoked client")
	}
	// Never over another key.
	other := newStore(t)
	other.Ensure("app")
	if err := other.Export("app", out); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("export over another key: %v", err)
	}
	if err := ks.Remove("app"); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Load("app"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load after Remove: %v", err)
	}
	if err := ks.Remove("app"); err != nil {
		t.Fatalf("second Remove: %v (delete is idempotent)", err)
	}
	if s := snapshot(t, ks.Dir); s != " drwx------" {
		t.Fatalf("store after remove: %q", s)
	}
}

func TestListAndClients(t *testing.T) {
	ks := newStore(t)
	if l, err := ks.List(); err != nil || len(l) != 0 {
		t.Fatalf("List of a missing store: %v %v", l, err)
	}
	a, _, _ := ks.Ensure("a")
	b, _, _ := ks.Ensure("b")
	os.WriteFile(filepath.Join(ks.Dir, "LOCK"), nil, 0o600)
	os.Mkdir(filepath.Join(ks.Dir, ".stage-x-1"), 0o700)
	cred, err := ks.AddClient("b", "phone")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.AddClient("b", "phone"); !errors.Is(err, ErrClientExists) {
		t.Fatalf("second AddClient: %v", err)
	}
	if _, err := ks.AddClient("nope", "phone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("AddClient to an app without key: %v", err)
	}
	os.WriteFile(filepath.Join(ks.Dir, "a", hostnameFile), []byte("garbage"), 0o600)
	l, err := ks.List()
	if err != nil || len(l) != 2 {
		t.Fatalf("List = %v, %v", l, err)
	}
	if l[0].App != "a" || l[0].Err == nil {
		t.Errorf("broken app a listed as %+v, want Err set", l[0])
	}
	if l[1].App != "b" || l[1].Address != b.Address() || len(l[1].Clients) != 1 || l[1].Clients[0] != "phone" {
		t.Errorf("b listed as %+v", l[1])
	}
	_ = a
	// The .auth file is tor's format, and the credential is the matching private key.
	auth, _ := os.ReadFile(filepath.Join(ks.Dir, "b", authorizedClients, "phone.auth"))
	if !strings.HasPrefix(string(auth), "descriptor:x25519:") || len(strings.TrimSpace(string(auth))) != len("descriptor:x25519:")+52 {
		t.Fatalf(".auth file = %q", auth)
	}
	line := cred.AuthPrivate()
	wantPrefix := strings.TrimSuffix(b.Address(), ".onion") + ":descriptor:x25519:"
	if !strings.HasPrefix(line, wantPrefix) || len(line) != len(wantPrefix)+52 {
		t.Fatalf("auth_private line = %q", line)
	}
	if strings.Contains(fmt.Sprintf("%v %+v %#v %s", cred, cred, cred, cred), cred.PrivateKey()) {
		t.Fatal("ClientCredential prints its private key")
	}
	if err := ks.RemoveClient("b", "phone"); err != nil {
		t.Fatal(err)
	}
	if err := ks.RemoveClient("b", "phone"); err != nil {
		t.Fatalf("second RemoveClient: %v", err)
	}
	if c, _ := ks.Clients("b"); len(c) != 0 {
		t.Fatalf("clients after remove: %v", c)
	}
}

func TestOneKeyPerApp(t *testing.T) {
	ks := newStore(t)
	k, _, _ := ks.Ensure("blog")
	if _, err := ks.Import("copy", k.addOnionBlob(), true); !errors.Is(err, ErrKeyInUse) || !strings.Contains(err.Error(), `"blog"`) {
		t.Fatalf("importing blog's key into another app: %v, want ErrKeyInUse naming blog", err)
	}
	if _, err := ks.Load("copy"); !errors.Is(err, ErrNotFound) {
		t.Fatal("the refused import wrote the key")
	}
}

func TestCleanupAfterInterruptedWrites(t *testing.T) {
	ks := newStore(t)
	k, _, _ := ks.Ensure("blog")
	ks.Ensure("wiki")
	// A crash after staging, during a remove, and between the two renames of the fallback.
	os.MkdirAll(filepath.Join(ks.Dir, ".stage-blog-123", "authorized_clients"), 0o700)
	os.MkdirAll(filepath.Join(ks.Dir, ".remove-x-1", "x"), 0o700)
	os.Rename(filepath.Join(ks.Dir, "blog"), filepath.Join(ks.Dir, "blog.swap"))
	if err := ks.Cleanup(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(ks.Dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "blog wiki" {
		t.Fatalf("after cleanup: %v", names)
	}
	if got, err := ks.Load("blog"); err != nil || !got.Equal(k) {
		t.Fatalf("blog not put back: %v", err)
	}
}

// Clients keeps each app's list by the identities of its directory and files: a client added or
// removed, or a .auth file changed by hand, is read again.
func TestClientsFollowTheDisk(t *testing.T) {
	t.Run("stat", func(t *testing.T) { testClientsFollowTheDisk(t, nil) })
	w, err := dirwatch.New()
	if err != nil {
		t.Skipf("no inotify: %v", err)
	}
	defer w.Close()
	t.Run("watch", func(t *testing.T) { testClientsFollowTheDisk(t, w) })
}

func testClientsFollowTheDisk(t *testing.T, w *dirwatch.Watch) {
	ks := newStore(t)
	ks.FollowFiles(w)
	if _, _, err := ks.Ensure("blog"); err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		t.Helper()
		cs, err := ks.Clients("blog")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range cs {
			out = append(out, c.Name)
		}
		return out
	}
	for range 3 { // checked, then vouched for by the watch
		if got := names(); len(got) != 0 {
			t.Fatalf("clients of a new key: %v", got)
		}
	}
	if _, err := ks.AddClient("blog", "phone"); err != nil {
		t.Fatal(err)
	}
	if got := names(); !slices.Equal(got, []string{"phone"}) {
		t.Fatalf("after AddClient: %v", got)
	}
	if _, err := ks.AddClient("blog", "laptop"); err != nil {
		t.Fatal(err)
	}
	if got := names(); !slices.Equal(got, []string{"laptop", "phone"}) {
		t.Fatalf("after a second AddClient: %v", got)
	}
	before, _ := ks.Clients("blog")
	// phone.auth rewritten in place with laptop's key: the list shows the new key.
	dir := filepath.Join(ks.Dir, "blog", authorizedClients)
	auth, _ := os.ReadFile(filepath.Join(dir, "laptop.auth"))
	if err := os.WriteFile(filepath.Join(dir, "phone.auth"), auth, 0o600); err != nil {
		t.Fatal(err)
	}
	cs, _ := ks.Clients("blog")
	if len(cs) != 2 || cs[1].PublicKey != before[0].PublicKey || cs[1].PublicKey == before[1].PublicKey {
		t.Fatalf("after phone.auth was changed by hand: %+v", cs)
	}
	if err := ks.RemoveClient("blog", "laptop"); err != nil {
		t.Fatal(err)
	}
	if got := names(); !slices.Equal(got, []string{"phone"}) {
		t.Fatalf("after RemoveClient: %v", got)
	}
}

// Apps follows the key directory: a key created by another KeyStore (another process) is
// listed, a key removed is not.
func TestAppsFollowTheDisk(t *testing.T) {
	w, err := dirwatch.New()
	if err != nil {
		t.Skipf("no inotify: %v", err)
	}
	defer w.Close()
	ks := newStore(t)
	ks.FollowFiles(w)
	other := &KeyStore{Dir: ks.Dir}
	want := func(what string, apps ...string) {
		t.Helper()
		for range 3 {
			if got, err := ks.Apps(); err != nil || !slices.Equal(got, apps) {
				t.Fatalf("%s: Apps = %q, %v; want %q", what, got, err, apps)
			}
		}
	}
	want("none")
	if _, _, err := other.Ensure("blog"); err != nil {
		t.Fatal(err)
	}
	want("blog created", "blog")
	if _, _, err := other.Ensure("wiki"); err != nil {
		t.Fatal(err)
	}
	want("wiki created", "blog", "wiki")
	if err := other.Remove("blog"); err != nil {
		t.Fatal(err)
	}
	want("blog removed", "wiki")
}
