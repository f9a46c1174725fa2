package certs

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab/hostcheck"
	"github.com/onionpod/onionpod/internal/lab/pebble"
)

// challTestPublisher publishes challenges as TXT records of Pebble's DNS test server (a real DNS
// server that Pebble's validation queries). The daemon publishes through onionpod's own DNS
// instead; the e2e tests cover that.
type challTestPublisher struct {
	p    *pebble.Pebble
	mu   sync.Mutex
	last map[string]bool
	sets int
}

func (c *challTestPublisher) SetChallenges(ctx context.Context, chs []Challenge) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sets++
	byName := map[string][]string{}
	for _, ch := range chs {
		byName[ch.Name] = append(byName[ch.Name], ch.Value)
	}
	for name := range c.last {
		if _, ok := byName[name]; !ok {
			if err := c.p.SetTXT(ctx, name); err != nil {
				return err
			}
		}
	}
	c.last = map[string]bool{}
	for name, values := range byName {
		if err := c.p.SetTXT(ctx, name, values...); err != nil {
			return err
		}
		c.last[name] = true
	}
	return nil
}

func startPebble(t *testing.T, validity time.Duration) *pebble.Pebble {
	t.Helper()
	if err := hostcheck.Missing(pebble.Needs()...); err != nil {
		t.Skipf("Pebble: %v (bash .ci/install-deps)", err)
	}
	p, err := pebble.Start(t.Context(), pebble.Options{Dir: t.TempDir(), Validity: validity, ChallTestSrv: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	return p
}

func newManager(t *testing.T, p *pebble.Pebble, dir string, pub ChallengePublisher) *Manager {
	t.Helper()
	m, err := New(Config{Dir: dir, DirectoryURL: p.DirectoryURL(), Email: "owner@box.example", CARoot: p.CACertFile(),
		Publisher: pub, CheckServers: []string{p.ChallTestDNS()}, Log: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func run(t *testing.T, m *Manager) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		m.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// waitCert waits for app's certificate, other than the one of serial not.
func waitCert(t *testing.T, m *Manager, app string, not string, d time.Duration) Cert {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c, ok := m.Get(app); ok && serial(t, c) != not {
			return c
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no new certificate for %s after %v; status %+v", app, d, m.Status())
	return Cert{}
}

func leaf(t *testing.T, c Cert) *x509.Certificate {
	t.Helper()
	rest := c.Bundle
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			t.Fatal("no certificate in the bundle")
		}
		if b.Type == "CERTIFICATE" {
			l, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
	}
}

func serial(t *testing.T, c Cert) string { return leaf(t, c).SerialNumber.String() }

// verify checks c's chain against Pebble's issuing root, as a browser would.
func verify(t *testing.T, p *pebble.Pebble, c Cert) {
	t.Helper()
	rootPEM, err := p.IssuingRoot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	rest := c.Bundle
	first := true
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" && !first {
			ic, _ := x509.ParseCertificate(b.Bytes)
			inter.AddCert(ic)
		}
		if b.Type == "CERTIFICATE" {
			first = false
		}
	}
	if _, err := leaf(t, c).Verify(x509.VerifyOptions{DNSName: c.Name, Roots: roots, Intermediates: inter}); err != nil {
		t.Errorf("the chain does not verify against Pebble's root: %v", err)
	}
}

// TestObtainRenewAndKeep: a wanted name gets a certificate by DNS-01 (Pebble checks the TXT
// record on a real DNS server), which verifies against Pebble's root and is kept 0600; it is
// renewed by itself two thirds into its life; a restarted manager serves the kept one.
func TestObtainRenewAndKeep(t *testing.T) {
	p := startPebble(t, 24*time.Second)
	dir := filepath.Join(t.TempDir(), "tls")
	pub := &challTestPublisher{p: p}
	m := newManager(t, p, dir, pub)
	run(t, m)
	if err := m.Want(map[string]string{"blog": "Blog.box.example."}); err != nil {
		t.Fatal(err)
	}
	first := waitCert(t, m, "blog", "", 30*time.Second)
	if first.Name != "blog.box.example" {
		t.Errorf("name %q", first.Name)
	}
	verify(t, p, first)
	st, err := os.Stat(BundlePath(dir, "blog"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("bundle on disk: %v %v, want mode 0600", st.Mode(), err)
	}
	if s := m.Status(); len(s) != 1 || s[0].Issuer == "" || s[0].LastError != "" || !s[0].RenewAt.After(time.Now()) {
		t.Errorf("status %+v", s)
	}
	if pub.last["_acme-challenge.blog.box.example."] {
		t.Error("the challenge record was not withdrawn")
	}

	renewed := waitCert(t, m, "blog", serial(t, first), 30*time.Second)
	life := first.NotAfter.Sub(first.NotBefore)
	if got := time.Since(first.NotBefore); got < life/2 {
		t.Errorf("renewed %v into a %v life, want about two thirds", got, life)
	}
	verify(t, p, renewed)

	again := newManager(t, p, dir, pub)
	again.Want(map[string]string{"blog": "blog.box.example"})
	if c, ok := again.Get("blog"); !ok || serial(t, c) != serial(t, renewed) {
		t.Error("a new manager does not serve the kept certificate")
	}
}

// TestFailedRenewalKeepsTheCertificate: with the CA gone, a renewal fails with an error that
// says why, the certificate in place stays, and status shows both.
func TestFailedRenewalKeepsTheCertificate(t *testing.T) {
	p := startPebble(t, time.Hour)
	m := newManager(t, p, filepath.Join(t.TempDir(), "tls"), &challTestPublisher{p: p})
	run(t, m)
	m.Want(map[string]string{"blog": "blog.box.example"})
	first := waitCert(t, m, "blog", "", 30*time.Second)
	p.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	err := m.Renew(ctx, "blog")
	if err == nil {
		t.Fatal("renewed with the CA stopped")
	}
	t.Logf("renew: %v", err)
	if !strings.Contains(err.Error(), "blog.box.example") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("the error does not say what failed: %v", err)
	}
	if c, ok := m.Get("blog"); !ok || serial(t, c) != serial(t, first) {
		t.Error("the certificate in place was dropped")
	}
	s := m.Status()[0]
	if s.LastError == "" || s.Failures != 1 || s.NotAfter.IsZero() || s.Issuer == "" {
		t.Errorf("status %+v: want the old certificate and the error", s)
	}
	if err := m.Renew(ctx, "wiki"); !errors.Is(err, ErrUnknownApp) {
		t.Errorf("renew of an unknown app: %v", err)
	}
}

// TestBadConfig: a malformed CA root, a bad URL or e-mail are refused before anything runs, each
// naming its field.
func TestBadConfig(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "root.pem")
	os.WriteFile(junk, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"), 0o600)
	errs := CheckConfig("http://acme.example/dir", "not an address", junk)
	var all []string
	for _, e := range errs {
		all = append(all, e.Error())
	}
	got := strings.Join(all, "\n")
	for _, want := range []string{"tls.directory", "tls.email", "tls.ca_root"} {
		if !strings.Contains(got, want) {
			t.Errorf("no problem named %s in:\n%s", want, got)
		}
	}
	_, err := New(Config{Dir: dir, DirectoryURL: "https://acme.example/dir", CARoot: junk, Publisher: &challTestPublisher{}})
	if !errors.Is(err, ErrBadInput) {
		t.Errorf("New with a malformed root: %v", err)
	}
}

// TestForgottenAccount: a CA that forgot the account (reset, or a new test CA at the same
// directory URL) gets a new registration at once, and the renewal succeeds.
func TestForgottenAccount(t *testing.T) {
	p := startPebble(t, time.Hour)
	dir := filepath.Join(t.TempDir(), "tls")
	m := newManager(t, p, dir, &challTestPublisher{p: p})
	run(t, m)
	m.Want(map[string]string{"blog": "blog.box.example"})
	first := waitCert(t, m, "blog", "", 30*time.Second)
	p.Stop()
	p2, err := pebble.Start(t.Context(), pebble.Options{Dir: p.Dir(), Validity: time.Hour, ChallTestSrv: true})
	if err != nil { // same address and HTTPS root, no memory of the account
		t.Fatal(err)
	}
	defer p2.Stop()
	m.acme.cfg.Publisher = &challTestPublisher{p: p2}
	if err := m.Renew(t.Context(), "blog"); err != nil {
		t.Fatalf("renew with a CA that forgot the account: %v", err)
	}
	if c, _ := m.Get("blog"); serial(t, c) == serial(t, first) {
		t.Error("not renewed")
	}
}

// TestForget: a removed app's certificate goes: its bundle leaves the disk and a new manager
// serves none; an app still wanted is refused.
func TestForget(t *testing.T) {
	p := startPebble(t, time.Hour)
	dir := filepath.Join(t.TempDir(), "tls")
	pub := &challTestPublisher{p: p}
	m := newManager(t, p, dir, pub)
	run(t, m)
	m.Want(map[string]string{"blog": "blog.box.example", "wiki": "wiki.box.example"})
	waitCert(t, m, "blog", "", 30*time.Second)
	waitCert(t, m, "wiki", "", 30*time.Second)
	if err := m.Forget("blog"); !errors.Is(err, ErrBadInput) {
		t.Errorf("Forget of a wanted app: %v", err)
	}
	m.Want(map[string]string{"wiki": "wiki.box.example"}) // blog removed
	if err := m.Forget("blog"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(BundlePath(dir, "blog")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("blog's bundle: %v, want it gone", err)
	}
	if _, err := os.Stat(BundlePath(dir, "wiki")); err != nil {
		t.Errorf("wiki's bundle: %v", err)
	}
	if err := m.Forget("blog"); err != nil {
		t.Errorf("Forget again: %v", err)
	}
	again := newManager(t, p, dir, pub)
	again.Want(map[string]string{"blog": "blog.box.example"})
	if _, ok := again.Get("blog"); ok {
		t.Error("a new manager serves the removed app's certificate")
	}
}
