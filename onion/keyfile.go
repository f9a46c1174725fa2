package onion

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
)

// Tor's HiddenServiceDir file names.
const (
	secretKeyFile      = "hs_ed25519_secret_key"
	publicKeyFile      = "hs_ed25519_public_key"
	hostnameFile       = "hostname"
	authorizedClients  = "authorized_clients"
	authFileSuffix     = ".auth"
	addOnionPrefix     = "ED25519-V3:"
	secretKeyHeader    = "== ed25519v1-secret: type0 ==\x00\x00\x00"
	publicKeyHeader    = "== ed25519v1-public: type0 ==\x00\x00\x00"
	secretKeyFileBytes = 32 + 64
	publicKeyFileBytes = 32 + 32
)

// ParseSecretKeyFile parses the contents of an hs_ed25519_secret_key file (written by tor or
// by mkp224o): the 32-byte header "== ed25519v1-secret: type0 ==" padded with NULs, then the
// 64-byte expanded secret key.
func ParseSecretKeyFile(b []byte) (*Key, error) {
	if len(b) != secretKeyFileBytes {
		return nil, fmt.Errorf("onion: %s: want %d bytes, got %d: %w", secretKeyFile, secretKeyFileBytes, len(b), ErrBadInput)
	}
	if string(b[:32]) != secretKeyHeader {
		return nil, fmt.Errorf("onion: %s: not a v3 secret key (bad header): %w", secretKeyFile, ErrBadInput)
	}
	k, err := keyFromExpanded(b[32:])
	if err != nil {
		return nil, fmt.Errorf("onion: %s: %w", secretKeyFile, err)
	}
	return k, nil
}

// parsePublicKeyFile parses an hs_ed25519_public_key file.
func parsePublicKeyFile(b []byte) ([]byte, error) {
	if len(b) != publicKeyFileBytes {
		return nil, fmt.Errorf("want %d bytes, got %d: %w", publicKeyFileBytes, len(b), ErrBadInput)
	}
	if string(b[:32]) != publicKeyHeader {
		return nil, fmt.Errorf("not a v3 public key (bad header): %w", ErrBadInput)
	}
	return b[32:], nil
}

// ParseAddOnionBlob parses the key syntax of ADD_ONION and tor's "PrivateKey=" reply:
// "ED25519-V3:" then base64 of the 64-byte expanded secret key, padded (88 characters) or
// not (86). Surrounding white space is ignored.
func ParseAddOnionBlob(s string) (*Key, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, addOnionPrefix)
	if !ok {
		return nil, fmt.Errorf("onion: key blob: want prefix %q: %w", addOnionPrefix, ErrBadInput)
	}
	var raw []byte
	var err error
	switch len(rest) {
	case 88:
		raw, err = base64.StdEncoding.Strict().DecodeString(rest)
	case 86:
		raw, err = base64.RawStdEncoding.Strict().DecodeString(rest)
	default:
		return nil, fmt.Errorf("onion: key blob: want 86 or 88 base64 characters after %q, got %d: %w", addOnionPrefix, len(rest), ErrBadInput)
	}
	if err != nil || len(raw) != 64 {
		return nil, fmt.Errorf("onion: key blob: not base64 of 64 bytes: %w", ErrBadInput)
	}
	k, err := keyFromExpanded(raw)
	clear(raw)
	if err != nil {
		return nil, fmt.Errorf("onion: key blob: %w", err)
	}
	return k, nil
}

// secretKeyFile returns the hs_ed25519_secret_key contents.
func (k *Key) secretKeyFile() []byte {
	b := make([]byte, 0, secretKeyFileBytes)
	b = append(b, secretKeyHeader...)
	return append(b, k.secret[:]...)
}

func (k *Key) publicKeyFile() []byte {
	b := make([]byte, 0, publicKeyFileBytes)
	b = append(b, publicKeyHeader...)
	return append(b, k.public[:]...)
}

func (k *Key) hostnameFile() []byte { return []byte(k.Address() + "\n") }

// checkPublicKeyFile checks hs_ed25519_public_key contents against the key.
func (k *Key) checkPublicKeyFile(b []byte) error {
	pub, err := parsePublicKeyFile(b)
	if err != nil {
		return err
	}
	if !bytes.Equal(pub, k.public[:]) {
		return fmt.Errorf("public key is not the one of %s: %w", secretKeyFile, ErrKeyMismatch)
	}
	return nil
}

// checkHostnameFile checks hostname contents against the key.
func (k *Key) checkHostnameFile(b []byte) error {
	got := strings.ToLower(strings.TrimSpace(string(b)))
	if !strings.HasSuffix(got, ".onion") || !ValidAddress(got) {
		return fmt.Errorf("not a v3 onion address: %w", ErrBadInput)
	}
	if got != k.Address() {
		return fmt.Errorf("%s is not the address of %s (%s): %w", got, secretKeyFile, k.Address(), ErrKeyMismatch)
	}
	return nil
}
