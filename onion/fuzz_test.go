package onion

import (
	"bytes"
	"strings"
	"testing"

	"filippo.io/age"
)

// Every parser of untrusted bytes must return an error, never panic, and whatever it accepts
// must be consistent.

func FuzzParseSecretKeyFile(f *testing.F) {
	k, _ := GenerateKey(fixedReader(1))
	f.Add(k.secretKeyFile())
	f.Add(k.publicKeyFile())
	f.Add([]byte(secretKeyHeader))
	f.Add(append([]byte(secretKeyHeader), make([]byte, 64)...))
	f.Add(append([]byte(secretKeyHeader), bytes.Repeat([]byte{0xff}, 64)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseSecretKeyFile(b)
		if err != nil {
			return
		}
		if !bytes.Equal(k.secretKeyFile(), b) {
			t.Fatal("accepted file does not round-trip")
		}
		if !ValidAddress(k.Address()) {
			t.Fatalf("accepted key gives an invalid address %s", k.Address())
		}
	})
}

func FuzzParseAddOnionBlob(f *testing.F) {
	k, _ := GenerateKey(fixedReader(2))
	f.Add(k.addOnionBlob())
	f.Add(strings.TrimRight(k.addOnionBlob(), "="))
	f.Add("ED25519-V3:")
	f.Add("ED25519-V3:" + strings.Repeat("A", 86))
	f.Add("RSA1024:abc")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseAddOnionBlob(s)
		if err != nil {
			return
		}
		again, err := ParseAddOnionBlob(k.addOnionBlob())
		if err != nil || !again.Equal(k) {
			t.Fatal("accepted blob does not round-trip")
		}
	})
}

func FuzzParseAddress(f *testing.F) {
	k, _ := GenerateKey(fixedReader(3))
	f.Add(k.Address())
	f.Add(strings.ToUpper(k.ServiceID()))
	f.Add("x.onion")
	f.Fuzz(func(t *testing.T, s string) {
		pub, err := ParseAddress(s)
		if err != nil {
			return
		}
		if !strings.EqualFold(strings.TrimSuffix(strings.ToLower(s), ".onion"), serviceIDFromPublic(pub)) {
			t.Fatalf("ParseAddress(%q) accepted a different address", s)
		}
	})
}

func FuzzParseAuthFile(f *testing.F) {
	f.Add([]byte("descriptor:x25519:" + strings.Repeat("A", 52) + "\n"))
	f.Add([]byte("descriptor:x25519:"))
	f.Add([]byte("descriptor:ed25519:" + strings.Repeat("A", 52)))
	f.Fuzz(func(t *testing.T, b []byte) {
		pub, err := parseAuthFile(b)
		if err != nil {
			return
		}
		c := AuthorizedClient{Name: "x", PublicKey: pub}
		if again, err := parseAuthFile(c.authFile()); err != nil || again != pub {
			t.Fatal("accepted .auth does not round-trip")
		}
	})
}

func FuzzDecodeBackup(f *testing.F) {
	k, _ := GenerateKey(fixedReader(4))
	doc := backupDoc{Format: backupFormat, Version: 1, Apps: []backupApp{{App: "blog", Address: k.Address(), SecretKey: k.addOnionBlob(),
		Clients: []backupClient{{Name: "a", Auth: "descriptor:x25519:" + strings.Repeat("A", 52)}}}}}
	b, _ := jsonMarshal(doc)
	f.Add(b)
	f.Add([]byte(`{"format":"onionpod-onion-backup","version":1,"apps":[]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, b []byte) {
		items, err := decodeBackup(b)
		if err != nil {
			return
		}
		for _, it := range items {
			if checkAppName(it.app) != nil || it.key == nil {
				t.Fatalf("accepted an invalid app %q", it.app)
			}
		}
	})
}

// FuzzRestore feeds arbitrary bytes to Restore (age X25519, cheap to try): it must fail
// cleanly or restore only verified keys.
func FuzzRestore(f *testing.F) {
	id, err := age.ParseX25519Identity(testIdentity)
	if err != nil {
		f.Fatal(err)
	}
	ks := &KeyStore{Dir: f.TempDir() + "/seed"}
	ks.Ensure("blog")
	ks.AddClient("blog", "alice")
	var buf bytes.Buffer
	if _, err := Backup(&buf, ks, nil, []age.Recipient{id.Recipient()}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte("age-encryption.org/v1\n-> X25519 abc\n--- abc\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		target := &KeyStore{Dir: t.TempDir() + "/keys"}
		restored, err := Restore(bytes.NewReader(b), target, []age.Identity{id}, false)
		if err != nil {
			return
		}
		for _, r := range restored {
			k, err := target.Load(r.App)
			if err != nil || k.Address() != r.Address {
				t.Fatalf("restored %s does not load: %v", r.App, err)
			}
		}
	})
}
