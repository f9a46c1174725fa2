package probe

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// loopbackZone answers every name with 127.0.0.1 (a unit test of the probe's HTTPS, not of DNS).
type loopbackZone struct{}

func (loopbackZone) Lookup(ctx context.Context, name string, v6 bool) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

// portDialer connects to port of the address asked (the test's HTTPS server stands in for :443).
type portDialer struct{ port string }

func (d portDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(addr)
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", net.JoinHostPort(host, d.port))
}

// testCA makes a root and a certificate it signs for name.
func testCA(t *testing.T, name string) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "probe test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
}

// TestProbeHTTPS: an app whose HTTPS front serves it is probed at https://NAME/ (port 443), its
// certificate verified for NAME against the prober's roots: a 200 there is ok (over TLS), a
// certificate the roots do not know or that names another host fails at hop tls, and an app
// without a front is still fetched over plain HTTP.
func TestProbeHTTPS(t *testing.T) {
	roots, cert := testCA(t, "blog.box.example")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "blog.box.example" || r.TLS == nil {
			w.WriteHeader(http.StatusMisdirectedRequest)
		}
		io.WriteString(w, "blog")
	}), ErrorLog: log.New(io.Discard, "", 0)} // the refused handshakes below
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ctx := t.Context()

	p := &Prober{Resolver: loopbackZone{}, LAN: portDialer{port}, Roots: roots}
	r := p.ProbePath(ctx, Target{App: "blog", Name: "blog.box.example.", IPv4: true, HTTPS: true}, PathIPv4)
	if !r.OK || r.Status != 200 || !r.TLS || r.Addr != "127.0.0.1:443" {
		t.Errorf("over HTTPS: %+v, want ok, 200, over TLS to 127.0.0.1:443", r)
	}
	for _, c := range []struct {
		what string
		p    *Prober
		name string
	}{
		{"a root the prober does not trust", &Prober{Resolver: loopbackZone{}, LAN: portDialer{port}}, "blog.box.example."},
		{"a certificate for another name", p, "wiki.box.example."},
	} {
		r := c.p.ProbePath(ctx, Target{App: "x", Name: c.name, IPv4: true, HTTPS: true}, PathIPv4)
		if r.OK || r.Hop != HopTLS || r.Err == "" {
			t.Errorf("%s: %+v, want a failure at hop tls", c.what, r)
		} else {
			t.Logf("%s: %s", c.what, r.Err)
		}
	}
	plain := &Prober{Resolver: loopbackZone{}, LAN: portDialer{serve(t, 200, "plain")[len("127.0.0.1:"):]}}
	if r := plain.ProbePath(ctx, Target{App: "x", Name: "x.box.example.", IPv4: true}, PathIPv4); !r.OK || r.TLS || r.Addr != "127.0.0.1:80" {
		t.Errorf("without a front: %+v, want ok over plain HTTP on 80", r)
	}
}
