package onion

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/cretz/bine/control"
)

// The secret of these tests is recognisable: its base64 form is "SecretMarkerSecretMarker...",
// so any piece of it in an error (a quoted input, a truncated line) shows.
const secretMarker = "SecretMarker"

var markedSecretB64 = strings.Repeat(secretMarker, 8)[:85] + "A=="

// leaks reports which piece of the marked secret s holds ("" when none): any 8 consecutive
// characters of its base64 form, or the hex of its first bytes.
func leaks(s string, secret []byte) string {
	for i := 0; i+8 <= len(markedSecretB64)-3; i++ {
		if w := markedSecretB64[i : i+8]; strings.Contains(s, w) {
			return w
		}
	}
	if h := hex.EncodeToString(secret[:8]); strings.Contains(s, h) {
		return h
	}
	if b := string(secret[:8]); strings.Contains(s, b) {
		return fmt.Sprintf("%q", b)
	}
	return ""
}

// encryptPlain encrypts a backup plaintext as Backup would, for crafted documents.
func encryptPlain(t *testing.T, plain string) []byte {
	t.Helper()
	rec, _ := testAgePair(t)
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, rec)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(plain))
	w.Close()
	return buf.Bytes()
}

// TestErrorsNeverHoldSecrets feeds broken key sources, blobs and backups that hold a
// recognisable secret (typos around a real key, a key in the wrong field, a key file given
// as a backup or as a recipient) and checks that no error message repeats any of it.
func TestErrorsNeverHoldSecrets(t *testing.T) {
	blob := addOnionPrefix + markedSecretB64
	k, err := ParseAddOnionBlob(blob)
	if err != nil {
		t.Fatalf("the marked secret is not a key: %v", err)
	}
	secret := k.secret[:]
	other := mustKey(t, 9)
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hsDir := filepath.Join(dir, "hs")
	os.Mkdir(hsDir, 0o700)
	os.WriteFile(filepath.Join(hsDir, secretKeyFile), append([]byte("== ed25519v1-secret: type1 ==\x00\x00\x00"), secret...), 0o600)
	authDir := filepath.Join(dir, "hs2", authorizedClients)
	os.MkdirAll(authDir, 0o700)
	os.WriteFile(filepath.Join(dir, "hs2", secretKeyFile), other.secretKeyFile(), 0o600)
	os.WriteFile(filepath.Join(authDir, "phone.auth"), []byte("descriptor:x25519:"+markedSecretB64), 0o600)

	sources := map[string]string{
		"base64 alone":              markedSecretB64,
		"prefix without dash":       "ED25519V3:" + markedSecretB64,
		"prefix in lower case":      "ed25519-v3:" + markedSecretB64,
		"prefix with a space":       "ED25519-V3 " + markedSecretB64,
		"one character too many":    blob + "A",
		"cut short":                 blob[:60],
		"file: base64 alone":        file("b64", markedSecretB64+"\n"),
		"file: key = blob":          file("assign", "key = "+blob+"\n"),
		"file: blob, a char more":   file("long", blob+"A\n"),
		"file: 96 bytes, bad head":  file("head", string(append([]byte("== ed25519v1-secret: type1 ==\x00\x00\x00"), secret...))),
		"dir: bad head":             hsDir,
		"dir: client key is secret": filepath.Join(dir, "hs2"),
	}
	var errs []error
	for name, src := range sources {
		_, _, err := ReadKeySource(src)
		errs = append(errs, fmt.Errorf("ReadKeySource %s: %w", name, err))
		_, err = newStore(t).Import("app", src, false)
		errs = append(errs, fmt.Errorf("Import %s: %w", name, err))
	}
	for name, s := range map[string]string{"blob + A": blob + "A", "blob, no prefix": markedSecretB64, "blob, bad char": blob[:20] + "!" + blob[21:]} {
		_, err := ParseAddOnionBlob(s)
		errs = append(errs, fmt.Errorf("ParseAddOnionBlob %s: %w", name, err))
	}
	_, err = ParseSecretKeyFile(append([]byte("== ed25519v1-secret: type1 ==\x00\x00\x00"), secret...))
	errs = append(errs, fmt.Errorf("ParseSecretKeyFile: %w", err))

	// Backups: a key file given instead of a backup, and crafted documents with the secret in
	// each field.
	_, id := testAgePair(t)
	okApp := fmt.Sprintf(`{"app":"chat","address":%q,"secret_key":%q,"clients":[]}`, other.Address(), other.addOnionBlob())
	docs := map[string]string{
		"format":          fmt.Sprintf(`{"format":%q,"version":1,"created":"2026-01-01T00:00:00Z","apps":[%s]}`, markedSecretB64, okApp),
		"unknown field":   fmt.Sprintf(`{"format":"onionpod-onion-backup","version":1,%q:1,"apps":[%s]}`, markedSecretB64, okApp),
		"version":         fmt.Sprintf(`{"format":"onionpod-onion-backup","version":%q,"apps":[%s]}`, markedSecretB64, okApp),
		"syntax":          `{"format":"onionpod-onion-backup","version":1,"apps":[` + markedSecretB64 + `]}`,
		"trailing":        fmt.Sprintf(`{"format":"onionpod-onion-backup","version":1,"apps":[%s]} %q`, okApp, markedSecretB64),
		"app":             fmt.Sprintf(`{"format":"onionpod-onion-backup","version":1,"apps":[{"app":%q,"address":%q,"secret_key":%q,"clients":[]}]}`, markedSecretB64, other.Address(), other.addOnionBlob()),
		"address":         fmt.Sprintf(`{"format":"onionpod-onion-backup","version":1,"apps":[{"app":"chat","address":%q,"secret_key":%q,"clients":[]}]}`, markedSecretB64, other.addOnionBlob()),
		"address is blob": fmt.Sprintf(`{"format":"onionpod-onion-backup","version":1,"apps":[{"app":"chat","address":%q,"secret_key":%q,"clients":[]}]}`, blob, other.addOnionBlob()),
		"secret_key":      fmt.Sprintf(`{"format":"onionpod-onion-backup","version":1,"apps":[{"app":"chat","address":%q,"secret_key":%q,"clients":[]}]}`, k.Address(), blob+"A"),
		"client name":     fmt.Sprintf(`{"format":"onionpod-onion-backup","version":1,"apps":[{"app":"chat","address":%q,"secret_key":%q,"clients":[{"name":%q,"auth":"x"}]}]}`, other.Address(), other.addOnionBlob(), markedSecretB64),
		"client auth":     fmt.Sprintf(`{"format":"onionpod-onion-backup","version":1,"apps":[{"app":"chat","address":%q,"secret_key":%q,"clients":[{"name":"phone","auth":%q}]}]}`, other.Address(), other.addOnionBlob(), "descriptor:x25519:"+markedSecretB64),
	}
	for name, doc := range docs {
		_, err := Restore(bytes.NewReader(encryptPlain(t, doc)), newStore(t), []age.Identity{id}, false)
		errs = append(errs, fmt.Errorf("Restore, secret in %s: %w", name, err))
	}
	for name, data := range map[string]string{
		"a blob file":         blob + "\n",
		"a secret key file":   string(k.secretKeyFile()),
		"an age-like header":  "age-encryption.org/v1\n-> X25519 " + markedSecretB64 + "\n--- " + markedSecretB64 + "\n",
		"an age-like stanza":  "age-encryption.org/v1\n" + markedSecretB64 + "\n",
		"an age-like closing": "age-encryption.org/v1\n-> scrypt abc 10\n" + markedSecretB64 + "\n--- " + markedSecretB64 + "\n",
	} {
		_, err := Restore(strings.NewReader(data), newStore(t), []age.Identity{id}, false)
		errs = append(errs, fmt.Errorf("Restore of %s: %w", name, err))
	}
	for name, s := range map[string]string{"base64": markedSecretB64, "age1 + base64": "age1" + markedSecretB64, "ssh-ed25519 + base64": "ssh-ed25519 " + markedSecretB64, "blob": blob} {
		_, err := ParseRecipient(s)
		errs = append(errs, fmt.Errorf("ParseRecipient %s: %w", name, err))
	}
	_, err = ParseIdentities([]byte(markedSecretB64 + "\n"))
	errs = append(errs, fmt.Errorf("ParseIdentities: %w", err))

	for _, err := range errs {
		if strings.HasSuffix(err.Error(), ": %!w(<nil>)") {
			t.Errorf("no error: %v", err)
			continue
		}
		if w := leaks(err.Error(), secret); w != "" {
			t.Errorf("error repeats the secret (%s): %v", w, err)
		}
	}
}

// TestRecipientErrorDoesNotRepeatAnIdentity: an age identity (a secret key) given where a
// recipient is expected is refused without repeating it.
func TestRecipientErrorDoesNotRepeatAnIdentity(t *testing.T) {
	_, err := ParseRecipient(testIdentity)
	if err == nil {
		t.Fatal("an identity parsed as a recipient")
	}
	if strings.Contains(err.Error(), testIdentity[len("AGE-SECRET-KEY-1"):][:10]) {
		t.Fatalf("error repeats the identity: %v", err)
	}
	if !strings.Contains(err.Error(), "identity") {
		t.Errorf("error does not say it is an identity: %v", err)
	}
}

// TestTorReplyErrorsAreRedacted: should tor ever quote an ADD_ONION argument in an error
// reply, the key it holds does not reach the error (and so Status and the logs).
func TestTorReplyErrorsAreRedacted(t *testing.T) {
	k, err := ParseAddOnionBlob(addOnionPrefix + markedSecretB64)
	if err != nil {
		t.Fatal(err)
	}
	svc := Service{App: "app", Key: k, Ports: []Port{{Virtual: 80, Target: "127.0.0.1:8080"}}}
	m := NewManager(ControlConfig{Network: "unix", Address: "/nonexistent"})
	m.services["app"] = &svcState{svc: svc}
	reply := &control.Response{Err: &textproto.Error{Code: 512, Msg: "Invalid argument " + k.addOnionBlob()}, Reply: "Invalid argument " + k.addOnionBlob()}
	got := m.recordLocked(op{id: k.ServiceID(), app: "app", cmd: svc.addOnionCommand()}, reply)
	if got == nil {
		t.Fatal("no error for a failed ADD_ONION")
	}
	if w := leaks(got.Error(), k.secret[:]); w != "" {
		t.Fatalf("error repeats the key (%s): %v", w, got)
	}
	if st := m.Status()["app"]; leaks(st.Err, k.secret[:]) != "" {
		t.Fatalf("status repeats the key: %s", st.Err)
	}
}

// TestInternalValuesNeverPrintSecrets: the package's own values that hold a key as text (a
// backup entry, a planned ADD_ONION) print redacted with every fmt verb.
func TestInternalValuesNeverPrintSecrets(t *testing.T) {
	k, err := ParseAddOnionBlob(addOnionPrefix + markedSecretB64)
	if err != nil {
		t.Fatal(err)
	}
	svc := Service{App: "app", Key: k, Ports: []Port{{Virtual: 80, Target: "127.0.0.1:8080"}}}
	values := []any{
		backupApp{App: "app", Address: k.Address(), SecretKey: k.addOnionBlob()},
		op{id: k.ServiceID(), app: "app", cmd: svc.addOnionCommand()},
		[]op{{cmd: svc.addOnionCommand()}},
		restoreItem{app: "app", key: k},
		svc,
	}
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			if out := fmt.Sprintf(verb, v); leaks(out, k.secret[:]) != "" {
				t.Errorf("fmt %s of %T prints the secret: %s", verb, v, out)
			}
		}
	}
}

func TestControlConfigNeverPrintsPassword(t *testing.T) {
	c := ControlConfig{Network: "tcp", Address: "127.0.0.1:9051", Auth: "password", Password: "hunter2-" + secretMarker}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		if out := fmt.Sprintf(verb, c); strings.Contains(out, secretMarker) || !strings.Contains(out, "127.0.0.1:9051") {
			t.Errorf("fmt %s of ControlConfig: %s", verb, out)
		}
	}
}
