package onion

import (
	"crypto/ecdh"
	"encoding/base32"
	"fmt"
	"io"
	"strings"
)

// authKeyEncoding is tor's base32 for x25519 keys: upper case, no padding, 52 characters.
var authKeyEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

const authPrefix = "descriptor:x25519:"

// AuthorizedClient is a client allowed to reach a service with v3 client authorization: a
// name (the file name in authorized_clients/) and its x25519 public key.
type AuthorizedClient struct {
	Name      string
	PublicKey [32]byte
}

// AuthLine is the client's line in tor's authorized_clients/<name>.auth format:
// "descriptor:x25519:<base32 public key>".
func (c AuthorizedClient) AuthLine() string {
	return authPrefix + authKeyEncoding.EncodeToString(c.PublicKey[:])
}

// authFile is the content of authorized_clients/<name>.auth.
func (c AuthorizedClient) authFile() []byte { return []byte(c.AuthLine() + "\n") }

// parseAuthFile parses "descriptor:x25519:<base32 public key>" (tor's .auth format).
func parseAuthFile(b []byte) ([32]byte, error) {
	var pub [32]byte
	s := strings.TrimSpace(string(b))
	rest, ok := strings.CutPrefix(s, authPrefix)
	if !ok {
		return pub, fmt.Errorf("want %q and a base32 x25519 key: %w", authPrefix, ErrBadInput)
	}
	raw, err := authKeyEncoding.DecodeString(strings.ToUpper(rest))
	if err != nil || len(raw) != 32 {
		return pub, fmt.Errorf("want 52 base32 characters after %q: %w", authPrefix, ErrBadInput)
	}
	copy(pub[:], raw)
	return pub, nil
}

// ClientCredential is what a client needs to reach a client-auth service. It is returned once,
// when the client is added: onionpod keeps only the public half. It prints redacted; call
// AuthPrivate or PrivateKey to show the secret on purpose.
type ClientCredential struct {
	App     string
	Client  string
	Address string
	private [32]byte
}

// AuthPrivate is the line of a tor client's ClientOnionAuthDir/<name>.auth_private file:
// "<56 chars>:descriptor:x25519:<base32 private key>".
func (c ClientCredential) AuthPrivate() string {
	return strings.TrimSuffix(c.Address, ".onion") + ":" + authPrefix + c.PrivateKey()
}

// PrivateKey is the base32 x25519 private key alone, as Tor Browser asks for it.
func (c ClientCredential) PrivateKey() string {
	return authKeyEncoding.EncodeToString(c.private[:])
}

// String prints no secret.
func (c ClientCredential) String() string {
	return fmt.Sprintf("onion.ClientCredential(app=%s, client=%s, %s, secret redacted)", c.App, c.Client, c.Address)
}

// GoString is String.
func (c ClientCredential) GoString() string { return c.String() }

// Format prints String for every verb.
func (c ClientCredential) Format(f fmt.State, _ rune) { io.WriteString(f, c.String()) }

// newClientKeys makes an x25519 key pair.
func newClientKeys(rand io.Reader) (priv, pub [32]byte, err error) {
	k, err := ecdh.X25519().GenerateKey(rand)
	if err != nil {
		return priv, pub, err
	}
	copy(priv[:], k.Bytes())
	copy(pub[:], k.PublicKey().Bytes())
	return priv, pub, nil
}

// ParseAuthorizedClient parses the contents of a tor .auth file.
func ParseAuthorizedClient(name string, content []byte) (AuthorizedClient, error) {
	if err := checkClientName(name); err != nil {
		return AuthorizedClient{}, err
	}
	pub, err := parseAuthFile(content)
	if err != nil {
		return AuthorizedClient{}, fmt.Errorf("onion: client %q: %w", name, err)
	}
	return AuthorizedClient{Name: name, PublicKey: pub}, nil
}
