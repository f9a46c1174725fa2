package front

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Certs holds the certificate a front serves. Load swaps it atomically: a handshake in progress
// finishes with the certificate it picked, the next one gets the new certificate, and no
// connection is dropped. The zero value holds none.
type Certs struct {
	cur atomic.Pointer[tls.Certificate]
}

// ErrNoCertificate is what a handshake gets while no certificate is loaded.
var ErrNoCertificate = errors.New("front: no certificate yet")

// Load parses a PEM bundle (the private key and the certificate chain, leaf first, in any order
// of blocks) and serves it from now on. A bundle whose key does not match its leaf is refused and
// the certificate already loaded stays.
func (c *Certs) Load(bundle []byte) error {
	cert, err := ParseBundle(bundle)
	if err != nil {
		return err
	}
	c.cur.Store(cert)
	return nil
}

// ParseBundle reads a PEM bundle of a private key and a certificate chain. Its errors never
// repeat the key.
func ParseBundle(bundle []byte) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(bundle, bundle)
	if err != nil {
		return nil, fmt.Errorf("front: certificate bundle: %w", err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("front: certificate bundle: %w", err)
		}
	}
	return &cert, nil
}

// Current is the certificate served now (nil if none).
func (c *Certs) Current() *tls.Certificate { return c.cur.Load() }

// Valid reports whether a certificate is loaded and valid at t.
func (c *Certs) Valid(t time.Time) bool {
	cert := c.cur.Load()
	return cert != nil && !t.Before(cert.Leaf.NotBefore) && t.Before(cert.Leaf.NotAfter)
}

// GetCertificate is tls.Config.GetCertificate.
func (c *Certs) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if cert := c.cur.Load(); cert != nil {
		return cert, nil
	}
	return nil, ErrNoCertificate
}
