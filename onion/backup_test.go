package onion

import (
	"bytes"
	"crypto/ecdh"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
)

// testIdentity is a fixed age identity, so fuzz corpora stay valid between runs.
const testIdentity = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"

func testAgePair(t testing.TB) (age.Recipient, age.Identity) {
	t.Helper()
	id, err := age.ParseX25519Identity(testIdentity)
	if err != nil {
		t.Fatal(err)
	}
	return id.Recipient(), id
}

// fastPassphrase is a scrypt recipient with a low work factor, to keep tests fast.
func fastPassphrase(t testing.TB, pass string) (age.Recipient, age.Identity) {
	t.Helper()
	r, err := age.NewScryptRecipient(pass)
	if err != nil {
		t.Fatal(err)
	}
	r.SetWorkFactor(10)
	id, err := PassphraseIdentity(pass)
	if err != nil {
		t.Fatal(err)
	}
	return r, id
}

func storeWithApps(t *testing.T, apps ...string) (*KeyStore, map[string]string) {
	t.Helper()
	ks := newStore(t)
	addrs := map[string]string{}
	for _, app := range apps {
		k, _, err := ks.Ensure(app)
		if err != nil {
			t.Fatal(err)
		}
		addrs[app] = k.Address()
	}
	return ks, addrs
}

func TestBackupWipeRestore(t *testing.T) {
	ks, addrs := storeWithApps(t, "blog", "wiki", "chat")
	if _, err := ks.AddClient("chat", "alice"); err != nil {
		t.Fatal(err)
	}
	wantClients, _ := ks.Clients("chat")
	rec, id := fastPassphrase(t, "correct horse battery staple")
	var buf bytes.Buffer
	done, err := Backup(&buf, ks, nil, []age.Recipient{rec})
	if err != nil || len(done) != 3 {
		t.Fatalf("Backup: %v, %v", done, err)
	}
	if bytes.Contains(buf.Bytes(), []byte("blog")) || bytes.Contains(buf.Bytes(), []byte(strings.TrimSuffix(addrs["blog"], ".onion"))) {
		t.Fatal("backup is not encrypted")
	}
	if err := os.RemoveAll(ks.Dir); err != nil {
		t.Fatal(err)
	}
	restored, err := Restore(bytes.NewReader(buf.Bytes()), ks, []age.Identity{id}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(restored) != 3 {
		t.Fatalf("restored %v", restored)
	}
	for _, r := range restored {
		if r.Result != "created" || r.Address != addrs[r.App] {
			t.Errorf("restored %+v, want created with %s", r, addrs[r.App])
		}
		k, err := ks.Load(r.App)
		if err != nil || k.Address() != addrs[r.App] {
			t.Errorf("%s after restore: %v", r.App, err)
		}
	}
	if got, _ := ks.Clients("chat"); !sameClients(got, wantClients) || len(got) != 1 {
		t.Errorf("clients after restore: %v", got)
	}
	// Restoring again onto the same keys changes nothing.
	again, err := Restore(bytes.NewReader(buf.Bytes()), ks, []age.Identity{id}, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range again {
		if r.Result != "unchanged" {
			t.Errorf("second restore: %+v", r)
		}
	}
}

func TestBackupSelectedAppsWithRecipient(t *testing.T) {
	ks, addrs := storeWithApps(t, "blog", "wiki")
	rec, id := testAgePair(t)
	var buf bytes.Buffer
	if _, err := Backup(&buf, ks, []string{"wiki"}, []age.Recipient{rec}); err != nil {
		t.Fatal(err)
	}
	fresh := newStore(t)
	restored, err := Restore(&buf, fresh, []age.Identity{id}, false)
	if err != nil || len(restored) != 1 || restored[0].App != "wiki" || restored[0].Address != addrs["wiki"] {
		t.Fatalf("Restore: %v, %v", restored, err)
	}
	if _, err := Backup(&buf, ks, []string{"nope"}, []age.Recipient{rec}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("backup of an unknown app: %v", err)
	}
	if _, err := Backup(&buf, ks, nil, nil); !errors.Is(err, ErrBadInput) {
		t.Fatalf("backup without recipients: %v", err)
	}
}

func TestRestoreRefusesWrongPassphraseAndTampering(t *testing.T) {
	ks, _ := storeWithApps(t, "blog", "wiki")
	rec, _ := fastPassphrase(t, "right")
	var buf bytes.Buffer
	if _, err := Backup(&buf, ks, nil, []age.Recipient{rec}); err != nil {
		t.Fatal(err)
	}
	backup := buf.Bytes()
	// Restore target: a store where blog has another key (force would be needed) and
	// wiki is missing; nothing of it may change.
	target := newStore(t)
	target.Ensure("blog")
	before := snapshot(t, target.Dir)

	_, wrong := fastPassphrase(t, "wrong")
	_, err := Restore(bytes.NewReader(backup), target, []age.Identity{wrong}, true)
	if !errors.Is(err, ErrDecrypt) {
		t.Fatalf("wrong passphrase: %v, want ErrDecrypt", err)
	}
	_, right := fastPassphrase(t, "right")
	// Flip one byte in the header, in the middle, and in the last byte.
	for _, pos := range []int{20, len(backup) / 2, len(backup) - 1} {
		bad := bytes.Clone(backup)
		bad[pos] ^= 0x01
		_, err := Restore(bytes.NewReader(bad), target, []age.Identity{right}, true)
		if !errors.Is(err, ErrDecrypt) {
			t.Errorf("byte %d flipped: %v, want ErrDecrypt", pos, err)
		}
	}
	_, err = Restore(bytes.NewReader(backup[:len(backup)-10]), target, []age.Identity{right}, true)
	if !errors.Is(err, ErrDecrypt) {
		t.Errorf("truncated: %v, want ErrDecrypt", err)
	}
	if snapshot(t, target.Dir) != before {
		t.Fatal("a refused restore changed the store")
	}
}

func TestRestoreNeedsForceForAnotherKey(t *testing.T) {
	ks, addrs := storeWithApps(t, "blog", "wiki")
	rec, id := testAgePair(t)
	var buf bytes.Buffer
	if _, err := Backup(&buf, ks, nil, []age.Recipient{rec}); err != nil {
		t.Fatal(err)
	}
	target := newStore(t)
	oldBlog, _, _ := target.Ensure("blog")
	before := snapshot(t, target.Dir)
	_, err := Restore(bytes.NewReader(buf.Bytes()), target, []age.Identity{id}, false)
	if !errors.Is(err, ErrKeyExists) || !strings.Contains(err.Error(), oldBlog.Address()) {
		t.Fatalf("restore over another key: %v, want ErrKeyExists", err)
	}
	if snapshot(t, target.Dir) != before {
		t.Fatal("a refused restore wrote wiki anyway (not all or nothing)")
	}
	restored, err := Restore(bytes.NewReader(buf.Bytes()), target, []age.Identity{id}, true)
	if err != nil {
		t.Fatal(err)
	}
	results := map[string]string{}
	for _, r := range restored {
		results[r.App] = r.Result
	}
	if results["blog"] != "replaced" || results["wiki"] != "created" {
		t.Fatalf("results %v", results)
	}
	if k, _ := target.Load("blog"); k.Address() != addrs["blog"] {
		t.Fatal("force did not restore blog's key")
	}
}

func TestRestoreRollsBackWhenACommitFails(t *testing.T) {
	ks, _ := storeWithApps(t, "aaa", "bbb", "ccc")
	rec, id := testAgePair(t)
	var buf bytes.Buffer
	if _, err := Backup(&buf, ks, nil, []age.Recipient{rec}); err != nil {
		t.Fatal(err)
	}
	target := newStore(t)
	target.Ensure("aaa") // will be replaced (force), then must come back
	before := snapshot(t, target.Dir)
	target.failCommit = func(app string) error {
		if app == "ccc" {
			return errors.New("disk full")
		}
		return nil
	}
	_, err := Restore(bytes.NewReader(buf.Bytes()), target, []age.Identity{id}, true)
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Restore: %v", err)
	}
	if after := snapshot(t, target.Dir); after != before {
		t.Fatalf("store not rolled back:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestRestoreVerifiesAddresses(t *testing.T) {
	k := mustKey(t, 1)
	valid := func() backupDoc {
		return backupDoc{Format: backupFormat, Version: 1, Apps: []backupApp{{App: "blog", Address: k.Address(), SecretKey: k.addOnionBlob(), Clients: []backupClient{}}}}
	}
	cases := map[string]func(*backupDoc){
		"address of another key": func(d *backupDoc) { d.Apps[0].Address = mustKey(t, 2).Address() },
		"bad app name":           func(d *backupDoc) { d.Apps[0].App = "../etc" },
		"twice":                  func(d *backupDoc) { d.Apps = append(d.Apps, d.Apps[0]) },
		"version 2":              func(d *backupDoc) { d.Version = 2 },
		"other format":           func(d *backupDoc) { d.Format = "x" },
		"no apps":                func(d *backupDoc) { d.Apps = nil },
		"bad client":             func(d *backupDoc) { d.Apps[0].Clients = []backupClient{{Name: "a", Auth: "descriptor:x25519:AAAA"}} },
		"bad key":                func(d *backupDoc) { d.Apps[0].SecretKey = "ED25519-V3:AAAA" },
	}
	rec, id := testAgePair(t)
	for name, mutate := range cases {
		doc := valid()
		mutate(&doc)
		plain, _ := jsonMarshal(doc)
		var buf bytes.Buffer
		w, _ := age.Encrypt(&buf, rec)
		w.Write(plain)
		w.Close()
		target := newStore(t)
		_, err := Restore(&buf, target, []age.Identity{id}, true)
		if !errors.Is(err, ErrBadInput) && !errors.Is(err, ErrKeyMismatch) {
			t.Errorf("%s: %v, want ErrBadInput or ErrKeyMismatch", name, err)
		}
		if _, err := os.Stat(target.Dir); err == nil {
			t.Errorf("%s: store written", name)
		}
	}
}

func TestParseRecipientsAndIdentities(t *testing.T) {
	_, id := testAgePair(t)
	r, err := ParseRecipient(id.(*age.X25519Identity).Recipient().String())
	if err != nil {
		t.Fatal(err)
	}
	ids, err := ParseIdentities([]byte("# comment\n" + testIdentity + "\n"))
	if err != nil || len(ids) != 1 {
		t.Fatal(err)
	}
	ks, addrs := storeWithApps(t, "blog")
	var buf bytes.Buffer
	if _, err := Backup(&buf, ks, nil, []age.Recipient{r}); err != nil {
		t.Fatal(err)
	}
	got, err := Restore(&buf, newStore(t), ids, false)
	if err != nil || got[0].Address != addrs["blog"] {
		t.Fatalf("restore with parsed identity: %v", err)
	}
	for _, bad := range []string{"", "age1xyz", "ssh-ed25519 AAAA", "hello"} {
		if _, err := ParseRecipient(bad); !errors.Is(err, ErrBadInput) {
			t.Errorf("ParseRecipient(%q): %v", bad, err)
		}
	}
	if _, err := ParseIdentities([]byte("-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n-----END OPENSSH PRIVATE KEY-----\n")); !errors.Is(err, ErrBadInput) {
		t.Errorf("bad ssh key: %v", err)
	}
	if _, err := PassphraseRecipient(""); !errors.Is(err, ErrBadInput) {
		t.Errorf("empty passphrase: %v", err)
	}
}

func TestSSHRecipient(t *testing.T) {
	if _, err := os.Stat("/usr/bin/ssh-keygen"); err != nil {
		t.Skip("ssh-keygen not installed")
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "id")
	if out, err := runCmd("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	pub, _ := os.ReadFile(key + ".pub")
	priv, _ := os.ReadFile(key)
	r, err := ParseRecipient(string(pub))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := ParseIdentities(priv)
	if err != nil {
		t.Fatal(err)
	}
	ks, addrs := storeWithApps(t, "blog")
	var buf bytes.Buffer
	if _, err := Backup(&buf, ks, nil, []age.Recipient{r}); err != nil {
		t.Fatal(err)
	}
	got, err := Restore(&buf, newStore(t), ids, false)
	if err != nil || got[0].Address != addrs["blog"] {
		t.Fatalf("restore with an SSH key: %v", err)
	}
}

func TestClientCredentialMatchesAuthFile(t *testing.T) {
	ks, _ := storeWithApps(t, "blog")
	cred, err := ks.AddClient("blog", "alice")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := authKeyEncoding.DecodeString(cred.PrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ecdh.X25519().NewPrivateKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	clients, _ := ks.Clients("blog")
	if !bytes.Equal(priv.PublicKey().Bytes(), clients[0].PublicKey[:]) {
		t.Fatal("the credential's private key is not the pair of the stored public key")
	}
	_ = fmt.Sprint
}

func TestRestoreRefusesAKeyAnotherAppHas(t *testing.T) {
	ks, _ := storeWithApps(t, "blog")
	rec, id := testAgePair(t)
	var buf bytes.Buffer
	if _, err := Backup(&buf, ks, nil, []age.Recipient{rec}); err != nil {
		t.Fatal(err)
	}
	// The target has blog's key under another name.
	k, _ := ks.Load("blog")
	target := newStore(t)
	if err := target.Save("renamed", k, nil, false); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, target.Dir)
	if _, err := Restore(bytes.NewReader(buf.Bytes()), target, []age.Identity{id}, true); !errors.Is(err, ErrKeyInUse) {
		t.Fatalf("restore: %v, want ErrKeyInUse", err)
	}
	if snapshot(t, target.Dir) != before {
		t.Fatal("refused restore changed the store")
	}
}

func clientNames(t *testing.T, ks *KeyStore, app string) []string {
	t.Helper()
	clients, err := ks.Clients(app)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, c := range clients {
		names = append(names, c.Name)
	}
	return names
}

func restoredByApp(t *testing.T, rs []RestoredApp) map[string]RestoredApp {
	t.Helper()
	out := map[string]RestoredApp{}
	for _, r := range rs {
		out[r.App] = r
	}
	return out
}

// TestRestoreKeepsClientsWithoutForce: a restore without force never changes who may reach an
// app that keeps its key: a client revoked since the backup stays revoked, a client added
// since stays, a locked service does not become open to everyone. It reports what differs,
// and force applies the backup's lists.
func TestRestoreKeepsClientsWithoutForce(t *testing.T) {
	ks, _ := storeWithApps(t, "chat", "wiki", "blog")
	for _, c := range [][2]string{{"chat", "alice"}, {"chat", "bob"}} {
		if _, err := ks.AddClient(c[0], c[1]); err != nil {
			t.Fatal(err)
		}
	}
	rec, id := testAgePair(t)
	var buf bytes.Buffer
	if _, err := Backup(&buf, ks, nil, []age.Recipient{rec}); err != nil {
		t.Fatal(err)
	}
	backup := buf.Bytes()

	// Since the backup: alice revoked, carol added to chat; wiki locked to dave; blog as it was.
	if err := ks.RemoveClient("chat", "alice"); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{"chat", "carol"}, {"wiki", "dave"}} {
		if _, err := ks.AddClient(c[0], c[1]); err != nil {
			t.Fatal(err)
		}
	}
	bobBefore, _ := os.ReadFile(filepath.Join(ks.Dir, "chat", authorizedClients, "bob.auth"))
	before := snapshot(t, ks.Dir)

	rs, err := Restore(bytes.NewReader(backup), ks, []age.Identity{id}, false)
	if err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, ks.Dir); after != before {
		t.Fatalf("a restore without force changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if got := clientNames(t, ks, "chat"); strings.Join(got, ",") != "bob,carol" {
		t.Errorf("chat clients after restore: %v, want bob,carol (alice stays revoked)", got)
	}
	if got := clientNames(t, ks, "wiki"); strings.Join(got, ",") != "dave" {
		t.Errorf("wiki clients after restore: %v, want dave (still locked)", got)
	}
	by := restoredByApp(t, rs)
	chat, wiki, blog := by["chat"], by["wiki"], by["blog"]
	if chat.Result != "unchanged" || strings.Join(chat.ClientsAdded, ",") != "alice" || strings.Join(chat.ClientsRemoved, ",") != "carol" || chat.ClientsApplied {
		t.Errorf("chat: %+v, want unchanged, would add alice and remove carol, not applied", chat)
	}
	if wiki.Result != "unchanged" || len(wiki.ClientsAdded) != 0 || strings.Join(wiki.ClientsRemoved, ",") != "dave" || wiki.ClientsApplied {
		t.Errorf("wiki: %+v, want unchanged, would remove dave, not applied", wiki)
	}
	if blog.Result != "unchanged" || len(blog.ClientsAdded)+len(blog.ClientsRemoved)+len(blog.ClientsChanged) != 0 {
		t.Errorf("blog: %+v, want unchanged with no differences", blog)
	}

	// With force, the backup's lists are applied.
	rs, err = Restore(bytes.NewReader(backup), ks, []age.Identity{id}, true)
	if err != nil {
		t.Fatal(err)
	}
	by = restoredByApp(t, rs)
	if by["chat"].Result != "updated" || !by["chat"].ClientsApplied || by["wiki"].Result != "updated" || by["blog"].Result != "unchanged" {
		t.Errorf("forced restore: %+v", rs)
	}
	if got := clientNames(t, ks, "chat"); strings.Join(got, ",") != "alice,bob" {
		t.Errorf("chat clients after a forced restore: %v, want alice,bob", got)
	}
	if got := clientNames(t, ks, "wiki"); len(got) != 0 {
		t.Errorf("wiki clients after a forced restore: %v, want none", got)
	}
	if bobAfter, _ := os.ReadFile(filepath.Join(ks.Dir, "chat", authorizedClients, "bob.auth")); !bytes.Equal(bobAfter, bobBefore) {
		t.Error("bob's key changed")
	}
}

// TestRestoreReportsChangedClientKey: the same client name with another key is a difference
// too (reported as changed), kept without force.
func TestRestoreReportsChangedClientKey(t *testing.T) {
	ks, _ := storeWithApps(t, "chat")
	if _, err := ks.AddClient("chat", "alice"); err != nil {
		t.Fatal(err)
	}
	rec, id := testAgePair(t)
	var buf bytes.Buffer
	if _, err := Backup(&buf, ks, nil, []age.Recipient{rec}); err != nil {
		t.Fatal(err)
	}
	ks.RemoveClient("chat", "alice")
	if _, err := ks.AddClient("chat", "alice"); err != nil { // a new key for alice
		t.Fatal(err)
	}
	before := snapshot(t, ks.Dir)
	rs, err := Restore(bytes.NewReader(buf.Bytes()), ks, []age.Identity{id}, false)
	if err != nil {
		t.Fatal(err)
	}
	if snapshot(t, ks.Dir) != before {
		t.Fatal("a restore without force replaced alice's key")
	}
	if r := rs[0]; r.Result != "unchanged" || strings.Join(r.ClientsChanged, ",") != "alice" || r.ClientsApplied {
		t.Fatalf("%+v, want alice reported as changed, not applied", r)
	}
}
