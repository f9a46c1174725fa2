package onion

import (
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"io"

	"filippo.io/edwards25519"
)

// Key is a v3 onion service key: the 64-byte expanded ed25519 secret key that tor stores in
// hs_ed25519_secret_key, and its public key. The secret never leaves the package except into
// key files, backups and the control connection: Key prints as its address only.
type Key struct {
	secret [64]byte
	public [32]byte
	id     string // ServiceID, derived once (a key is never changed)
}

// GenerateKey makes a new key from 32 random bytes read from rand (crypto/rand.Reader in
// production), expanded and clamped the way tor does it.
func GenerateKey(rand io.Reader) (*Key, error) {
	var seed [32]byte
	if _, err := io.ReadFull(rand, seed[:]); err != nil {
		return nil, fmt.Errorf("onion: generate key: %w", err)
	}
	expanded := sha512.Sum512(seed[:])
	clear(seed[:])
	expanded[0] &= 248
	expanded[31] &= 127
	expanded[31] |= 64
	k, err := keyFromExpanded(expanded[:])
	clear(expanded[:])
	return k, err
}

// identityPoint is the encoding of the neutral element: the public key of a zero scalar.
var identityPoint = [32]byte{1}

// keyFromExpanded builds a Key from a 64-byte expanded secret key (scalar || PRF secret).
// The public key is scalar·B with the scalar reduced mod l first, as tor computes it: vanity
// generators such as mkp224o produce scalars that are not clamped.
func keyFromExpanded(b []byte) (*Key, error) {
	if len(b) != 64 {
		return nil, fmt.Errorf("onion: expanded secret key: want 64 bytes, got %d: %w", len(b), ErrBadInput)
	}
	k := &Key{}
	copy(k.secret[:], b)
	var wide [64]byte
	copy(wide[:], b[:32])
	s, err := edwards25519.NewScalar().SetUniformBytes(wide[:])
	clear(wide[:])
	if err != nil {
		return nil, fmt.Errorf("onion: expanded secret key: %w", err)
	}
	copy(k.public[:], new(edwards25519.Point).ScalarBaseMult(s).Bytes())
	s.Set(edwards25519.NewScalar())
	if k.public == identityPoint {
		return nil, fmt.Errorf("onion: expanded secret key: scalar is zero: %w", ErrBadInput)
	}
	k.id = serviceIDFromPublic(k.public[:])
	return k, nil
}

// Address is the onion address: 56 base32 characters and ".onion".
func (k *Key) Address() string { return k.ServiceID() + ".onion" }

// ServiceID is the address without ".onion", as tor's control port names services.
func (k *Key) ServiceID() string {
	if k.id != "" {
		return k.id
	}
	return serviceIDFromPublic(k.public[:])
}

// PublicKey returns a copy of the 32-byte ed25519 public key.
func (k *Key) PublicKey() []byte { return append([]byte(nil), k.public[:]...) }

// Equal reports whether both keys hold the same secret.
func (k *Key) Equal(o *Key) bool {
	if k == nil || o == nil {
		return k == o
	}
	var diff byte
	for i := range k.secret {
		diff |= k.secret[i] ^ o.secret[i]
	}
	return diff == 0
}

// String prints the address only: a Key never prints its secret. The printing methods have
// value receivers so that a Key value, not only a *Key, prints redacted.
func (k Key) String() string {
	return "onion.Key(" + addressFromPublic(k.public[:]) + ", secret redacted)"
}

// GoString is String, so %#v does not print the secret either.
func (k Key) GoString() string { return k.String() }

// Format prints String for every verb, so no fmt verb can print the secret.
func (k Key) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// addOnionBlob is the key in ADD_ONION's syntax. It holds the secret: only the control
// connection uses it.
func (k *Key) addOnionBlob() string {
	return addOnionPrefix + base64.StdEncoding.EncodeToString(k.secret[:])
}
