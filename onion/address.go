package onion

import (
	"crypto/sha3"
	"encoding/base32"
	"fmt"
	"strings"
)

var onionBase32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// serviceIDFromPublic is base32(pub || checksum[:2] || 0x03) in lowercase, as rend-spec-v3
// defines it.
func serviceIDFromPublic(pub []byte) string {
	var raw [35]byte
	copy(raw[:], pub)
	sum := addressChecksum(pub)
	raw[32], raw[33], raw[34] = sum[0], sum[1], 0x03
	return strings.ToLower(onionBase32.EncodeToString(raw[:]))
}

func addressFromPublic(pub []byte) string { return serviceIDFromPublic(pub) + ".onion" }

func addressChecksum(pub []byte) [32]byte {
	h := sha3.New256()
	h.Write([]byte(".onion checksum"))
	h.Write(pub)
	h.Write([]byte{0x03})
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// ParseAddress checks a v3 onion address ("<56 chars>.onion", or the 56 characters alone,
// any case) and returns the ed25519 public key it encodes. It checks the length, the base32
// alphabet, the version byte and the checksum.
func ParseAddress(s string) ([]byte, error) {
	id := strings.TrimSuffix(strings.ToLower(s), ".onion")
	if len(id) != 56 {
		return nil, fmt.Errorf("onion: address %q: want 56 base32 characters before .onion: %w", s, ErrBadInput)
	}
	raw, err := onionBase32.DecodeString(strings.ToUpper(id))
	if err != nil || len(raw) != 35 {
		return nil, fmt.Errorf("onion: address %q: not base32: %w", s, ErrBadInput)
	}
	if raw[34] != 0x03 {
		return nil, fmt.Errorf("onion: address %q: version %d, want 3: %w", s, raw[34], ErrBadInput)
	}
	sum := addressChecksum(raw[:32])
	if raw[32] != sum[0] || raw[33] != sum[1] {
		return nil, fmt.Errorf("onion: address %q: bad checksum: %w", s, ErrBadInput)
	}
	return raw[:32], nil
}

// ValidAddress reports whether s is a well-formed v3 onion address.
func ValidAddress(s string) bool {
	_, err := ParseAddress(s)
	return err == nil
}
