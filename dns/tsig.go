package dns

import (
	"encoding/base64"
	"fmt"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/onionpod/onionpod/internal/errkind"
)

// TSIGKey is a shared secret for transaction signatures (RFC 8945), as
// written in BIND's `key` statement or Knot's `key` section.
type TSIGKey struct {
	// Name of the key, e.g. "onionpod." (a domain name; the final dot is optional).
	Name string `json:"name"`
	// Algorithm is hmac-sha256 (the default when empty), hmac-sha1,
	// hmac-sha224, hmac-sha384 or hmac-sha512.
	Algorithm string `json:"algorithm,omitempty"`
	// Secret is the base64 key material. It never appears in errors,
	// logs or the String form.
	Secret string `json:"secret"`
}

// String names the key and its algorithm, never the secret.
func (k TSIGKey) String() string {
	alg := k.Algorithm
	if alg == "" {
		alg = "hmac-sha256"
	}
	return fmt.Sprintf("TSIG key %s (%s)", k.Name, alg)
}

// GoString keeps the secret out of %#v.
func (k TSIGKey) GoString() string { return k.String() }

// Format keeps the secret out of every fmt verb.
func (k TSIGKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

// tsigAlgorithms maps the names BIND and Knot use to the wire names.
var tsigAlgorithms = map[string]string{
	"hmac-sha1":   mdns.HmacSHA1,
	"hmac-sha224": mdns.HmacSHA224,
	"hmac-sha256": mdns.HmacSHA256,
	"hmac-sha384": mdns.HmacSHA384,
	"hmac-sha512": mdns.HmacSHA512,
}

// tsigKey is a validated key in the forms miekg/dns wants.
type tsigKey struct {
	name      string // canonical key name
	algorithm string // wire algorithm name, e.g. "hmac-sha256."
	secret    string // base64, as given
}

// resolve validates the key and returns its canonical form.
func (k TSIGKey) resolve() (tsigKey, error) {
	name, err := canonicalName("TSIG key name", k.Name)
	if err != nil {
		return tsigKey{}, err
	}
	if name == "." {
		return tsigKey{}, errkind.BadInputf("dns: TSIG key name %q: the root is not a key name", k.Name)
	}
	algName := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(k.Algorithm)), ".")
	if algName == "" {
		algName = "hmac-sha256"
	}
	alg, ok := tsigAlgorithms[algName]
	if !ok {
		return tsigKey{}, errkind.BadInputf("dns: TSIG key %s: algorithm %q not supported (hmac-sha1, hmac-sha224, hmac-sha256, hmac-sha384, hmac-sha512)", name, k.Algorithm)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(k.Secret))
	if err != nil || len(raw) == 0 {
		return tsigKey{}, errkind.BadInputf("dns: TSIG key %s: secret is not base64 or empty", name)
	}
	return tsigKey{name: name, algorithm: alg, secret: base64.StdEncoding.EncodeToString(raw)}, nil
}
