package onion

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"filippo.io/age/agessh"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
)

// The backup is an age file whose plaintext is this versioned JSON document.
const (
	backupFormat   = "onionpod-onion-backup"
	backupVersion  = 1
	maxBackupBytes = 16 << 20
)

type backupDoc struct {
	Format  string      `json:"format"`
	Version int         `json:"version"`
	Created time.Time   `json:"created"`
	Apps    []backupApp `json:"apps"`
}

type backupApp struct {
	App       string         `json:"app"`
	Address   string         `json:"address"`
	SecretKey string         `json:"secret_key"` // the ADD_ONION blob
	Clients   []backupClient `json:"clients"`
}

// Format prints the entry without its secret key, for every verb.
func (a backupApp) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "onion.backupApp(%s, %s, %d client(s), secret redacted)", a.App, a.Address, len(a.Clients))
}

type backupClient struct {
	Name string `json:"name"`
	Auth string `json:"auth"` // the .auth file line: descriptor:x25519:<base32>
}

// Backup writes one age-encrypted file holding the keys and client lists of apps (all apps
// of the store when apps is empty) for the recipients, and returns what it wrote.
func Backup(w io.Writer, ks *KeyStore, apps []string, recipients []age.Recipient) ([]AppKey, error) {
	if len(recipients) == 0 {
		return nil, fmt.Errorf("onion: backup: no passphrase or recipient: %w", ErrBadInput)
	}
	if len(apps) == 0 {
		all, err := ks.List()
		if err != nil {
			return nil, err
		}
		for _, a := range all {
			if a.Err != nil {
				return nil, fmt.Errorf("onion: backup: %w", a.Err)
			}
			apps = append(apps, a.App)
		}
		if len(apps) == 0 {
			return nil, fmt.Errorf("onion: backup: no keys in %s: %w", ks.Dir, ErrNotFound)
		}
	}
	doc := backupDoc{Format: backupFormat, Version: backupVersion, Created: time.Now().UTC()}
	var done []AppKey
	for _, app := range apps {
		if slices.ContainsFunc(doc.Apps, func(a backupApp) bool { return a.App == app }) {
			continue
		}
		k, err := ks.Load(app)
		if err != nil {
			return nil, fmt.Errorf("onion: backup: %w", err)
		}
		clients, err := ks.Clients(app)
		if err != nil {
			return nil, fmt.Errorf("onion: backup: %w", err)
		}
		ba := backupApp{App: app, Address: k.Address(), SecretKey: k.addOnionBlob(), Clients: []backupClient{}}
		ak := AppKey{App: app, Address: k.Address()}
		for _, c := range clients {
			ba.Clients = append(ba.Clients, backupClient{Name: c.Name, Auth: strings.TrimSpace(string(c.authFile()))})
			ak.Clients = append(ak.Clients, c.Name)
		}
		doc.Apps = append(doc.Apps, ba)
		done = append(done, ak)
	}
	plain, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	enc, err := age.Encrypt(w, recipients...)
	if err != nil {
		return nil, fmt.Errorf("onion: backup: %w", err)
	}
	if _, err := enc.Write(plain); err != nil {
		return nil, fmt.Errorf("onion: backup: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("onion: backup: %w", err)
	}
	return done, nil
}

// RestoredApp is one app written (or found unchanged) by Restore.
type RestoredApp struct {
	App     string `json:"app"`
	Address string `json:"address"`
	// Result is "created" (the app had no key), "replaced" (it had another key: force),
	// "updated" (same key, the backup's client list applied: force) or "unchanged".
	Result string `json:"result"`
	// ClientsAdded, ClientsRemoved and ClientsChanged compare the backup's client list with
	// the one on the box: clients only the backup has, clients only the box has, and clients
	// both have with different keys. ClientsApplied says whether the backup's list was
	// written: for a created or replaced app, always; for an app that keeps its key, only
	// with force. Without force a restore never changes who may connect to such an app: the
	// differences are only reported (restore --force applies them).
	ClientsAdded   []string `json:"clients_added,omitempty"`
	ClientsRemoved []string `json:"clients_removed,omitempty"`
	ClientsChanged []string `json:"clients_changed,omitempty"`
	ClientsApplied bool     `json:"clients_applied"`
}

// ClientsDiffer reports whether the backup's client list differs from the box's.
func (r RestoredApp) ClientsDiffer() bool {
	return len(r.ClientsAdded)+len(r.ClientsRemoved)+len(r.ClientsChanged) > 0
}

// diffClients fills in how the backup's clients differ from the box's (current).
func (r *RestoredApp) diffClients(current, backup []AuthorizedClient) {
	onBox := map[string][32]byte{}
	for _, c := range current {
		onBox[c.Name] = c.PublicKey
	}
	inBackup := map[string]bool{}
	for _, c := range backup {
		inBackup[c.Name] = true
		pub, ok := onBox[c.Name]
		switch {
		case !ok:
			r.ClientsAdded = append(r.ClientsAdded, c.Name)
		case pub != c.PublicKey:
			r.ClientsChanged = append(r.ClientsChanged, c.Name)
		}
	}
	for _, c := range current {
		if !inBackup[c.Name] {
			r.ClientsRemoved = append(r.ClientsRemoved, c.Name)
		}
	}
	slices.Sort(r.ClientsAdded)
	slices.Sort(r.ClientsRemoved)
	slices.Sort(r.ClientsChanged)
}

// restoreItem is a verified app of a backup.
type restoreItem struct {
	app     string
	key     *Key
	clients []AuthorizedClient
}

// Restore decrypts a backup, verifies every app in it (name, key, address derived from the
// key, clients), and only then writes them all or nothing: each app directory is staged
// next to the store and swapped in, and a failure swaps every app back. A wrong passphrase
// or identity, or a modified byte, is ErrDecrypt and changes nothing. An app that has a
// different key (or one that does not load) is replaced only with force.
//
// Who may connect to an app that keeps its key changes only with force: without it, its
// authorized clients stay as they are on the box (a client revoked since the backup stays
// revoked, a locked service stays locked), and the differences are reported in the result.
// An app the box does not have gets the backup's clients.
func Restore(r io.Reader, ks *KeyStore, identities []age.Identity, force bool) ([]RestoredApp, error) {
	if len(identities) == 0 {
		return nil, fmt.Errorf("onion: restore: no passphrase or identity: %w", ErrBadInput)
	}
	items, err := readBackup(r, identities)
	if err != nil {
		return nil, err
	}
	// Decide everything before writing anything.
	results, todo, err := ks.planRestore(items, force)
	if err != nil {
		return nil, err
	}
	if err := ks.writeAll(items, todo); err != nil {
		return nil, fmt.Errorf("onion: restore: nothing written: %w", err)
	}
	return results, nil
}

// readBackup decrypts a backup and decodes what it holds, verified. The plaintext is cleared
// once decoded.
func readBackup(r io.Reader, identities []age.Identity) ([]restoreItem, error) {
	plainReader, err := age.Decrypt(r, identities...)
	if err != nil {
		return nil, fmt.Errorf("onion: restore: %w%s", ErrDecrypt, decryptReason(err))
	}
	plain, err := io.ReadAll(io.LimitReader(plainReader, maxBackupBytes+1))
	if err != nil {
		return nil, fmt.Errorf("onion: restore: %w: the payload does not authenticate", ErrDecrypt)
	}
	defer clear(plain)
	if len(plain) > maxBackupBytes {
		return nil, fmt.Errorf("onion: restore: backup larger than %d bytes: %w", maxBackupBytes, ErrBadInput)
	}
	items, err := decodeBackup(plain)
	if err != nil {
		return nil, fmt.Errorf("onion: restore: %w", err)
	}
	return items, nil
}

// planRestore decides what restoring items does to each app (results) and which items are
// written (todo, their indexes). Any conflict refuses the whole restore, naming every one.
func (ks *KeyStore) planRestore(items []restoreItem, force bool) (results []RestoredApp, todo []int, _ error) {
	results = make([]RestoredApp, len(items))
	var conflicts []error
	inBackup := map[string]bool{}
	for _, it := range items {
		inBackup[it.app] = true
	}
	for i, it := range items {
		results[i] = RestoredApp{App: it.app, Address: it.key.Address()}
		if other, err := ks.appWithKey(it.key, it.app); err != nil {
			return nil, nil, fmt.Errorf("onion: restore: %w", err)
		} else if other != "" && !inBackup[other] {
			conflicts = append(conflicts, fmt.Errorf("onion: %q: %s is the key of app %q: %w", it.app, it.key.Address(), other, ErrKeyInUse))
			continue
		}
		write, conflict := ks.decideRestore(it, force, &results[i])
		if conflict != nil {
			conflicts = append(conflicts, conflict)
			continue
		}
		if write {
			results[i].ClientsApplied = true
			todo = append(todo, i)
		}
	}
	if len(conflicts) > 0 {
		return nil, nil, fmt.Errorf("onion: restore: nothing written: %w", errors.Join(conflicts...))
	}
	return results, todo, nil
}

// decideRestore compares it with what the box has of its app and sets res.Result and the
// client differences. write says whether it is to be written; conflict, why it may not be
// without force.
func (ks *KeyStore) decideRestore(it restoreItem, force bool, res *RestoredApp) (write bool, conflict error) {
	old, err := ks.Load(it.app)
	switch {
	case errors.Is(err, ErrNotFound):
		res.Result = "created"
		res.diffClients(nil, it.clients)
	case err != nil && !force:
		return false, fmt.Errorf("%w (force replaces it)", err)
	case err != nil:
		res.Result = "replaced"
		res.diffClients(nil, it.clients)
	case !old.Equal(it.key) && !force:
		return false, fmt.Errorf("onion: %q has %s, the backup %s: %w", it.app, old.Address(), it.key.Address(), ErrKeyExists)
	default:
		current, err := ks.Clients(it.app)
		if err != nil && !force {
			return false, fmt.Errorf("%w (force replaces the client list)", err)
		}
		res.diffClients(current, it.clients)
		switch {
		case !old.Equal(it.key):
			res.Result = "replaced"
		case err == nil && !res.ClientsDiffer():
			res.Result = "unchanged"
			return false, nil
		case !force:
			// Same key, other clients: the box's list stays; the result says what differs.
			res.Result = "unchanged"
			return false, nil
		default:
			res.Result = "updated"
		}
	}
	return true, nil
}

// writeAll stages every app, then swaps them in one by one; if any step fails, the swapped
// ones are swapped back.
func (ks *KeyStore) writeAll(items []restoreItem, todo []int) (err error) {
	var staged []string
	defer func() {
		for _, dir := range staged {
			if dir != "" {
				os.RemoveAll(dir)
			}
		}
	}()
	for _, i := range todo {
		dir, err := ks.stage(items[i].app, items[i].key, items[i].clients)
		if err != nil {
			return err
		}
		staged = append(staged, dir)
	}
	var commits []*commit
	for n, i := range todo {
		c, err := ks.commit(items[i].app, staged[n])
		if err != nil {
			var rollbackErrs []error
			for j := len(commits) - 1; j >= 0; j-- {
				if rerr := commits[j].rollback(); rerr != nil {
					rollbackErrs = append(rollbackErrs, fmt.Errorf("roll back %q: %w", commits[j].app, rerr))
					continue
				}
				commits[j].finish() // removes the new directory it swapped out
			}
			return errors.Join(append([]error{err}, rollbackErrs...)...)
		}
		commits = append(commits, c)
		staged[n] = "" // the commit owns it now
	}
	for _, c := range commits {
		c.finish()
	}
	return nil
}

// decodeBackup parses and verifies the plaintext of a backup.
func decodeBackup(plain []byte) ([]restoreItem, error) {
	dec := json.NewDecoder(bytes.NewReader(plain))
	dec.DisallowUnknownFields()
	var doc backupDoc
	if err := dec.Decode(&doc); err != nil {
		return nil, errkind.BadInputf("not an onionpod backup: %s", jsonProblem(err))
	}
	if dec.More() {
		return nil, fmt.Errorf("not an onionpod backup: trailing data: %w", ErrBadInput)
	}
	if doc.Format != backupFormat {
		return nil, errkind.BadInputf("not an onionpod backup (format is not %q)", backupFormat)
	}
	if doc.Version != backupVersion {
		return nil, fmt.Errorf("backup version %d, this onionpod reads %d: %w", doc.Version, backupVersion, ErrBadInput)
	}
	if len(doc.Apps) == 0 {
		return nil, fmt.Errorf("backup holds no apps: %w", ErrBadInput)
	}
	items := make([]restoreItem, 0, len(doc.Apps))
	seen, seenKeys := map[string]bool{}, map[string]bool{}
	for i, a := range doc.Apps {
		where := fmt.Sprintf("apps[%d]", i)
		if !names.IsApp(a.App) {
			return nil, errkind.BadInputf("%s: app: not an app name (a DNS label)", where)
		}
		where = fmt.Sprintf("apps[%d] (%s)", i, a.App)
		if seen[a.App] {
			return nil, fmt.Errorf("%s: listed twice: %w", where, ErrBadInput)
		}
		seen[a.App] = true
		k, err := ParseAddOnionBlob(a.SecretKey)
		if err != nil {
			return nil, fmt.Errorf("%s: secret_key: %w", where, err)
		}
		if strings.ToLower(a.Address) != k.Address() {
			return nil, fmt.Errorf("%s: address is not the one of its key (%s): %w", where, k.Address(), ErrKeyMismatch)
		}
		if seenKeys[k.Address()] {
			return nil, fmt.Errorf("%s: the same key as another app: %w", where, ErrBadInput)
		}
		seenKeys[k.Address()] = true
		it := restoreItem{app: a.App, key: k, clients: []AuthorizedClient{}}
		for j, c := range a.Clients {
			if !validClientName(c.Name) {
				return nil, errkind.BadInputf("%s: clients[%d]: name: not a client name", where, j)
			}
			ac, err := ParseAuthorizedClient(c.Name, []byte(c.Auth))
			if err != nil {
				return nil, fmt.Errorf("%s: clients[%d]: %w", where, j, err)
			}
			it.clients = append(it.clients, ac)
		}
		if err := checkClientList(it.clients); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		items = append(items, it)
	}
	return items, nil
}

// decryptReason says why age refused a backup, without age's own words: they may quote the
// file, and a file given as a backup by mistake may be a key.
func decryptReason(err error) string {
	var noMatch *age.NoIdentityMatchError
	switch {
	case errors.As(err, &noMatch):
		return ""
	case strings.Contains(err.Error(), "header"):
		return ": not an age-encrypted file, or its header is damaged"
	}
	return ": the payload does not authenticate"
}

// jsonProblem describes a JSON decoding error without quoting the input (a backup's plaintext
// holds secret keys): the offset of a syntax error, the field of a type error.
func jsonProblem(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("invalid JSON at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %s has the wrong type", typ.Field)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return "unknown field"
	}
	return "invalid JSON"
}

// PassphraseRecipient encrypts a backup with a passphrase (age scrypt, its default work factor).
func PassphraseRecipient(passphrase string) (age.Recipient, error) {
	if passphrase == "" {
		return nil, fmt.Errorf("onion: empty passphrase: %w", ErrBadInput)
	}
	return age.NewScryptRecipient(passphrase)
}

// PassphraseIdentity decrypts a backup made with PassphraseRecipient.
func PassphraseIdentity(passphrase string) (age.Identity, error) {
	if passphrase == "" {
		return nil, fmt.Errorf("onion: empty passphrase: %w", ErrBadInput)
	}
	return age.NewScryptIdentity(passphrase)
}

// ParseRecipient parses an age recipient ("age1...") or an SSH public key line
// ("ssh-ed25519 AAAA...", "ssh-rsa AAAA...").
func ParseRecipient(s string) (age.Recipient, error) {
	s = strings.TrimSpace(s)
	var r age.Recipient
	var err error
	if strings.HasPrefix(s, "ssh-") {
		r, err = agessh.ParseRecipient(s)
	} else {
		var rs []age.Recipient
		rs, err = age.ParseRecipients(strings.NewReader(s))
		if err == nil && len(rs) != 1 {
			err = errors.New("want exactly one recipient")
		}
		if err == nil {
			r = rs[0]
		}
	}
	if err != nil {
		// Neither the input nor age's error (which quotes it) is repeated: it may be a secret
		// key given by mistake.
		if strings.HasPrefix(strings.ToUpper(s), "AGE-SECRET-KEY-") {
			return nil, errkind.BadInputf("onion: recipient: that is an age identity (a secret key), not a recipient (age1...)")
		}
		return nil, errkind.BadInputf("onion: recipient: want an age recipient (age1...) or an SSH public key line (ssh-ed25519 AAAA..., ssh-rsa AAAA...)")
	}
	return r, nil
}

// ParseIdentities parses an age identity file (AGE-SECRET-KEY-... lines) or an unencrypted
// SSH private key (PEM). The error never quotes the file.
func ParseIdentities(b []byte) ([]age.Identity, error) {
	if bytes.Contains(b, []byte("-----BEGIN")) {
		id, err := agessh.ParseIdentity(b)
		if err != nil {
			var missing interface{ Error() string }
			if errors.As(err, &missing) && strings.Contains(err.Error(), "passphrase") {
				return nil, fmt.Errorf("onion: identity: passphrase-protected SSH keys are not supported: %w", ErrBadInput)
			}
			return nil, fmt.Errorf("onion: identity: not a usable SSH private key: %w", ErrBadInput)
		}
		return []age.Identity{id}, nil
	}
	ids, err := age.ParseIdentities(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("onion: identity: not an age identity file: %w", ErrBadInput)
	}
	return ids, nil
}
