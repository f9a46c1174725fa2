package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/onionpod/onionpod/internal/atomicfile"
)

// Realm is which side a request came in on: the LAN side needs the login; the onion side is
// reached only by devices holding a client-auth key.
type Realm byte

// The realms. A session of one is never valid in the other.
const (
	RealmLAN   Realm = 'L'
	RealmOnion Realm = 'O'
)

const (
	sessionCookie = "onionpod_session"
	flashCookie   = "onionpod_flash"
	loginKeyFile  = "login.key"
	loginKeyBytes = 20
)

var keyEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// loginKeys holds the login key: the secret the CLI prints (`onionpod dashboard login`), and
// from which sessions and CSRF tokens are derived, so a new key ends every session.
type loginKeys struct {
	path string
	mu   sync.Mutex
	key  []byte
}

// loadLoginKey reads the key at dir/login.key, making one (0600) when there is none.
func loadLoginKey(dir string) (*loginKeys, error) {
	k := &loginKeys{path: filepath.Join(dir, loginKeyFile)}
	b, err := os.ReadFile(k.path)
	switch {
	case err == nil && len(b) == loginKeyBytes:
		k.key = b
		return k, nil
	case err == nil:
		return nil, fmt.Errorf("dashboard: %s is damaged (%d bytes): remove it for a new login key", k.path, len(b))
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	return k, k.rotate()
}

// rotate makes a new key: every session ends.
func (k *loginKeys) rotate() error {
	b := make([]byte, loginKeyBytes)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(k.path), 0o700); err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	if _, err := atomicfile.WriteFile(k.path, b, 0o600); err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	k.mu.Lock()
	k.key = b
	k.mu.Unlock()
	return nil
}

// Printed is the key as the owner types it: 32 base32 characters in groups of four.
func (k *loginKeys) printed() string {
	k.mu.Lock()
	s := keyEncoding.EncodeToString(k.key)
	k.mu.Unlock()
	var groups []string
	for len(s) > 4 {
		groups = append(groups, s[:4])
		s = s[4:]
	}
	return strings.Join(append(groups, s), "-")
}

// matches reports whether typed is the key (any case, dashes and spaces ignored), in constant time.
func (k *loginKeys) matches(typed string) bool {
	typed = strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(typed))
	got, err := keyEncoding.DecodeString(typed)
	if err != nil || len(got) != loginKeyBytes {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return subtle.ConstantTimeCompare(got, k.key) == 1
}

func (k *loginKeys) mac(parts ...[]byte) []byte {
	k.mu.Lock()
	h := hmac.New(sha256.New, k.key)
	k.mu.Unlock()
	for _, p := range parts {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	return h.Sum(nil)
}

// session is a signed session: realm, random id, expiry.
type session struct {
	realm  Realm
	id     [16]byte
	expiry time.Time
}

const sessionLen = 1 + 16 + 8 + 32

// newSession mints a session of realm lasting d.
func (k *loginKeys) newSession(realm Realm, d time.Duration, now time.Time) (session, string) {
	s := session{realm: realm, expiry: now.Add(d)}
	rand.Read(s.id[:])
	return s, k.encode(s)
}

func (k *loginKeys) encode(s session) string {
	b := make([]byte, 0, sessionLen)
	b = append(b, byte(s.realm))
	b = append(b, s.id[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(s.expiry.Unix()))
	b = append(b, k.mac([]byte("onionpod-session"), b)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// parse checks a session cookie's value for realm at now.
func (k *loginKeys) parse(v string, realm Realm, now time.Time) (session, bool) {
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(b) != sessionLen || Realm(b[0]) != realm {
		return session{}, false
	}
	body, sum := b[:sessionLen-32], b[sessionLen-32:]
	if !hmac.Equal(sum, k.mac([]byte("onionpod-session"), body)) {
		return session{}, false
	}
	s := session{realm: realm, expiry: time.Unix(int64(binary.BigEndian.Uint64(body[17:])), 0)}
	copy(s.id[:], body[1:17])
	if !now.Before(s.expiry) {
		return session{}, false
	}
	return s, true
}

// csrf is the session's anti-forgery token, put in every form.
func (k *loginKeys) csrf(s session) string {
	return base64.RawURLEncoding.EncodeToString(k.mac([]byte("onionpod-csrf"), []byte{byte(s.realm)}, s.id[:])[:24])
}

func (k *loginKeys) csrfOK(s session, token string) bool {
	return subtle.ConstantTimeCompare([]byte(token), []byte(k.csrf(s))) == 1
}

// sameOrigin refuses a cross-site POST: a browser's Sec-Fetch-Site, or its Origin against Host.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	if origin := r.Header.Get("Origin"); origin != "" && origin != "null" {
		o := strings.TrimPrefix(strings.TrimPrefix(origin, "http://"), "https://")
		return o == r.Host
	}
	return true
}

func setSessionCookie(w http.ResponseWriter, value string, expiry time.Time) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: value, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Expires: expiry})
}
