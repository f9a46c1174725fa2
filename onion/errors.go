package onion

import (
	"errors"

	"github.com/onionpod/onionpod/internal/errkind"
)

// Sentinel errors callers branch on. Errors returned by this package wrap them with %w.
var (
	// ErrBadInput: a malformed key, address, app or client name, backup, or service.
	// The CLI maps it to exit code 2.
	ErrBadInput = errkind.BadInput
	// ErrNotFound: the app has no key, or the client is not authorized.
	ErrNotFound = errkind.NotFound
	// ErrKeyExists: the app already has a different key; pass force to replace it.
	ErrKeyExists = errors.New("app already has a different key (use --force to replace it)")
	// ErrKeyMismatch: files of a stored key disagree with each other (public key or hostname
	// not derived from the secret key), or a backup's address does not match its key.
	ErrKeyMismatch = errors.New("key files do not match")
	// ErrDecrypt: a backup cannot be decrypted or authenticated: wrong passphrase or identity,
	// or the file was modified.
	ErrDecrypt = errors.New("cannot decrypt backup (wrong passphrase or identity, or the file was modified)")
	// ErrTorUnavailable: the Tor control connection is down. The desired set is kept and
	// applied when tor comes back.
	ErrTorUnavailable = errors.New("tor control connection unavailable")
)

// ErrClientExists: the client is already authorized for the app.
var ErrClientExists = errors.New("client already authorized")

// ErrKeyInUse: another app already has this key (one key, one address, per app).
var ErrKeyInUse = errors.New("key already used by another app")
