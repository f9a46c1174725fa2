package onion

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"

	"github.com/cretz/bine/torutil"
	bineed "github.com/cretz/bine/torutil/ed25519"
)

// fixedReader returns the same byte forever: deterministic keys for tests.
type fixedReader byte

func (r fixedReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

func mustKey(t testing.TB, seed byte) *Key {
	t.Helper()
	k, err := GenerateKey(fixedReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestAddressMatchesBine(t *testing.T) {
	// Two independent implementations of rend-spec-v3 must agree, for many random keys.
	for range 50 {
		k, err := GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		pub := bineed.PrivateKey(k.secret[:]).PublicKey()
		if !bytes.Equal(pub, k.PublicKey()) {
			t.Fatalf("public key differs from bine's")
		}
		want := torutil.OnionServiceIDFromV3PublicKey(pub) + ".onion"
		if k.Address() != want {
			t.Fatalf("Address() = %s, bine says %s", k.Address(), want)
		}
		got, err := ParseAddress(k.Address())
		if err != nil || !bytes.Equal(got, pub) {
			t.Fatalf("ParseAddress(%s) = %x, %v", k.Address(), got, err)
		}
	}
}

func TestUnclampedScalarReducedLikeTor(t *testing.T) {
	// Vanity generators leave scalars unclamped. s and s+6l (top bit set) are the same
	// scalar mod l, so they must give the same public key and address.
	k := mustKey(t, 7)
	l, _ := new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)
	le := func(b []byte) *big.Int {
		be := make([]byte, len(b))
		for i := range b {
			be[i] = b[len(b)-1-i]
		}
		return new(big.Int).SetBytes(be)
	}
	s := le(k.secret[:32])
	s.Add(s, new(big.Int).Mul(l, big.NewInt(6)))
	be := s.FillBytes(make([]byte, 32))
	var expanded [64]byte
	for i := range 32 {
		expanded[i] = be[31-i]
	}
	copy(expanded[32:], k.secret[32:])
	if expanded[31]&0x80 == 0 {
		t.Fatal("test scalar does not have its top bit set")
	}
	k2, err := keyFromExpanded(expanded[:])
	if err != nil {
		t.Fatal(err)
	}
	if k2.Address() != k.Address() {
		t.Fatalf("s+6l gives %s, s gives %s", k2.Address(), k.Address())
	}
}

func TestZeroScalarRefused(t *testing.T) {
	_, err := keyFromExpanded(make([]byte, 64))
	if !errors.Is(err, ErrBadInput) {
		t.Fatalf("zero scalar: %v, want ErrBadInput", err)
	}
}

func TestKeyNeverPrintsSecret(t *testing.T) {
	k := mustKey(t, 1)
	secrets := []string{
		base64.StdEncoding.EncodeToString(k.secret[:]),
		base64.RawStdEncoding.EncodeToString(k.secret[:20]),
		hex.EncodeToString(k.secret[:20]),
		fmt.Sprint(k.secret[:8]),
		fmt.Sprint(k.secret[0], k.secret[1], k.secret[2]),
	}
	values := []any{k, *k, struct{ K *Key }{k}, struct{ K Key }{*k}, Service{App: "a", Key: k}, []*Key{k}}
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
			out := fmt.Sprintf(verb, v)
			for _, s := range secrets {
				if strings.Contains(out, s) {
					t.Fatalf("fmt %s of %T prints the secret: %s", verb, v, out)
				}
			}
		}
	}
	if got := fmt.Sprint(k); !strings.Contains(got, k.Address()) || !strings.Contains(got, "redacted") {
		t.Fatalf("String() = %q, want the address and 'redacted'", got)
	}
}

func TestParseSecretKeyFile(t *testing.T) {
	k := mustKey(t, 2)
	good := k.secretKeyFile()
	got, err := ParseSecretKeyFile(good)
	if err != nil || !got.Equal(k) {
		t.Fatalf("round trip: %v", err)
	}
	badHeader := bytes.Clone(good)
	badHeader[5] = 'X'
	cases := map[string][]byte{
		"empty":       nil,
		"short":       good[:95],
		"long":        append(bytes.Clone(good), 0),
		"bad header":  badHeader,
		"public file": k.publicKeyFile(),
		"zero key":    append([]byte(secretKeyHeader), make([]byte, 64)...),
	}
	for name, b := range cases {
		if _, err := ParseSecretKeyFile(b); !errors.Is(err, ErrBadInput) {
			t.Errorf("%s: err = %v, want ErrBadInput", name, err)
		}
	}
}

func TestParseAddOnionBlob(t *testing.T) {
	k := mustKey(t, 3)
	blob := k.addOnionBlob()
	for _, s := range []string{blob, strings.TrimRight(blob, "="), "  " + blob + "\n"} {
		got, err := ParseAddOnionBlob(s)
		if err != nil || !got.Equal(k) {
			t.Fatalf("ParseAddOnionBlob(%d chars): %v", len(s), err)
		}
	}
	for name, s := range map[string]string{
		"no prefix":     strings.TrimPrefix(blob, addOnionPrefix),
		"rsa":           "RSA1024:" + strings.TrimPrefix(blob, addOnionPrefix),
		"short":         blob[:len(blob)-4],
		"not base64":    addOnionPrefix + strings.Repeat("!", 88),
		"63 bytes":      addOnionPrefix + base64.StdEncoding.EncodeToString(make([]byte, 63)),
		"bad padding":   strings.TrimRight(blob, "=") + "A=",
		"new key":       "NEW:ED25519-V3",
		"lowercase tag": "ed25519-v3:" + strings.TrimPrefix(blob, addOnionPrefix),
	} {
		if _, err := ParseAddOnionBlob(s); !errors.Is(err, ErrBadInput) {
			t.Errorf("%s: err = %v, want ErrBadInput", name, err)
		}
	}
}

func TestParseAddress(t *testing.T) {
	k := mustKey(t, 4)
	addr := k.Address()
	for _, s := range []string{addr, strings.TrimSuffix(addr, ".onion"), strings.ToUpper(addr)} {
		if !ValidAddress(s) {
			t.Errorf("ValidAddress(%q) = false", s)
		}
	}
	flip := []byte(addr)
	if flip[10] == 'a' {
		flip[10] = 'b'
	} else {
		flip[10] = 'a'
	}
	for _, s := range []string{"", "example.onion", addr[:55] + ".onion", string(flip),
		strings.TrimSuffix(addr, "d.onion") + "a.onion", // version byte changes
		"www." + addr, addr + ".onion", strings.Repeat("1", 56) + ".onion"} {
		if ValidAddress(s) {
			t.Errorf("ValidAddress(%q) = true", s)
		}
	}
}
