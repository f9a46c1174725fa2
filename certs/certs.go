package certs

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
)

// ErrBadInput marks errors caused by the configuration or the caller's input.
var ErrBadInput = errkind.BadInput

// ErrUnknownApp is what Renew says of an app that wants no certificate.
var ErrUnknownApp = errkind.NotFound

// Config configures a Manager.
type Config struct {
	// Dir holds the account keys and the certificates (created 0700).
	Dir string
	// DirectoryURL is the CA's ACME directory (https://...).
	DirectoryURL string
	// Email is the account's contact ("" = none).
	Email string
	// CARoot is a PEM file of root certificates to trust for the ACME server's HTTPS, for a
	// private CA; "" trusts the system's roots.
	CARoot string
	// Publisher publishes the TXT records of pending challenges.
	Publisher ChallengePublisher
	// CheckServers are authoritative DNS servers ("host:port") asked for a challenge's record
	// before the CA is told to look; none: the CA is told at once.
	CheckServers []string
	// Log gets one line per issuance and failure (nil: discarded).
	Log *slog.Logger
	// RetryMax caps the pause between attempts after failures (default 1 h).
	RetryMax time.Duration
}

// Challenge is the TXT record of one pending DNS-01 challenge.
type Challenge struct {
	Name  string // "_acme-challenge.blog.box.example."
	Value string
}

// ChallengePublisher publishes the TXT records of the pending challenges: each call replaces
// the whole set of the previous one (nil: none pending).
type ChallengePublisher interface {
	SetChallenges(ctx context.Context, challenges []Challenge) error
}

// Cert is an app's current certificate.
type Cert struct {
	App, Name string
	// Bundle is the PEM private key followed by the chain, leaf first.
	Bundle              []byte
	Issuer              string
	NotBefore, NotAfter time.Time
}

// renewAt is when the certificate is due for renewal: two thirds into its lifetime.
func (c *Cert) renewAt() time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)
}

// Status is what `onionpod status` shows of an app's certificate.
type Status struct {
	App  string `json:"app"`
	Name string `json:"name"`
	// Issuer, NotBefore and NotAfter are of the certificate served now (empty: none yet).
	Issuer    string    `json:"issuer,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	// RenewAt is when the next attempt is due.
	RenewAt time.Time `json:"renew_at,omitzero"`
	// LastRenewal is when the certificate in place was obtained by this daemon.
	LastRenewal time.Time `json:"last_renewal,omitzero"`
	// LastError is the last attempt's failure, "" after a success.
	LastError   string    `json:"last_error,omitempty"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	Failures    int       `json:"failures,omitempty"`
	// Working: an attempt is under way.
	Working bool `json:"working,omitempty"`
}

// Manager keeps the wanted apps' certificates valid. Its methods are safe for concurrent use.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	acme   *acmeClient
	certs  string // Dir/certs
	wakeCh chan struct{}

	mu      sync.Mutex
	want    map[string]string // app -> DNS name
	apps    map[string]*appState
	changes chan struct{}
}

type appState struct {
	cert        *Cert
	lastRenewal time.Time
	lastErr     error
	lastAttempt time.Time
	failures    int
	next        time.Time // earliest next attempt after failures
	forced      []chan error
	working     bool
}

// New checks cfg and loads the certificates kept in cfg.Dir. It contacts no server.
func New(cfg Config) (*Manager, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = time.Hour
	}
	m := &Manager{cfg: cfg, log: cfg.Log, certs: filepath.Join(cfg.Dir, "certs"), wakeCh: make(chan struct{}, 1),
		want: map[string]string{}, apps: map[string]*appState{}, changes: make(chan struct{}, 1)}
	for _, d := range []string{cfg.Dir, m.certs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
	}
	var err error
	if m.acme, err = newACMEClient(cfg, m); err != nil {
		return nil, err
	}
	m.loadKept()
	return m, nil
}

// CheckConfig reports what is wrong with the ACME settings (URL, e-mail, CA root file), each
// problem naming its field (tls.directory, tls.email, tls.ca_root); it contacts no server.
func CheckConfig(directory, email, caRoot string) []error {
	var errs []error
	if u, err := url.Parse(directory); err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, errors.New("tls.directory: want the CA's ACME directory, an https:// URL"))
	}
	if email != "" && (strings.Count(email, "@") != 1 || strings.HasPrefix(email, "@") || strings.HasSuffix(email, "@") ||
		strings.ContainsAny(email, " \t\r\n<>\"")) {
		errs = append(errs, errors.New("tls.email: not an e-mail address"))
	}
	if caRoot != "" {
		if _, err := loadRoots(caRoot); err != nil {
			errs = append(errs, fmt.Errorf("tls.ca_root: %w", err))
		}
	}
	return errs
}

func (cfg Config) check() error {
	var errs []error
	if !filepath.IsAbs(cfg.Dir) {
		errs = append(errs, errors.New("dir must be an absolute path"))
	}
	if cfg.Publisher == nil {
		errs = append(errs, errors.New("no challenge publisher"))
	}
	errs = append(errs, CheckConfig(cfg.DirectoryURL, cfg.Email, cfg.CARoot)...)
	if len(errs) > 0 {
		return fmt.Errorf("certs: %w: %w", ErrBadInput, errors.Join(errs...))
	}
	return nil
}

// loadRoots reads a PEM file of CA certificates; it must hold at least one, and nothing else.
func loadRoots(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var roots []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s holds a %s block: want certificates only", path, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		roots = append(roots, c)
	}
	if len(strings.TrimSpace(string(data))) > 0 || len(roots) == 0 {
		return nil, fmt.Errorf("%s is not a PEM file of certificates", path)
	}
	return roots, nil
}

// Want declares the apps that need a certificate, by app name, with their DNS name
// ("blog.box.example"): each call replaces the last. A new name is obtained at once; the
// certificate of an app no longer wanted stays on disk (a stopped app may come back) but is no
// longer renewed, until Forget drops it.
func (m *Manager) Want(apps map[string]string) error {
	clean := map[string]string{}
	for app, name := range apps {
		name = strings.ToLower(strings.TrimSuffix(name, "."))
		if !names.IsApp(app) || !names.IsHostname(name) {
			return fmt.Errorf("certs: app %q: %w: name %q", app, ErrBadInput, name)
		}
		clean[app] = name
	}
	m.mu.Lock()
	m.want = clean
	for app := range clean {
		if m.apps[app] == nil {
			m.apps[app] = &appState{}
		}
	}
	m.mu.Unlock()
	m.wake()
	return nil
}

// Get returns an app's current certificate, if it has one for the name it is wanted under.
func (m *Manager) Get(app string) (Cert, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.apps[app]
	if st == nil || st.cert == nil || st.cert.Name != m.want[app] {
		return Cert{}, false
	}
	return *st.cert, true
}

// Changes receives a value whenever a certificate or a status changed.
func (m *Manager) Changes() <-chan struct{} { return m.changes }

func (m *Manager) changed() {
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

func (m *Manager) wake() {
	select {
	case m.wakeCh <- struct{}{}:
	default:
	}
}

// Renew obtains a new certificate for app now, and waits for the outcome (or ctx's end). The
// certificate in place stays if it fails.
func (m *Manager) Renew(ctx context.Context, app string) error {
	done := make(chan error, 1)
	m.mu.Lock()
	st := m.apps[app]
	if _, wanted := m.want[app]; !wanted || st == nil {
		m.mu.Unlock()
		return fmt.Errorf("certs: %q: %w: no clearnet app of that name wants a certificate", app, ErrUnknownApp)
	}
	st.forced = append(st.forced, done)
	m.mu.Unlock()
	m.wake()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status reports every wanted app's certificate, sorted by app.
func (m *Manager) Status() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Status, 0, len(m.want))
	for app, name := range m.want {
		st := m.apps[app]
		s := Status{App: app, Name: name, LastRenewal: st.lastRenewal, LastAttempt: st.lastAttempt,
			Failures: st.failures, Working: st.working}
		if st.cert != nil && st.cert.Name == name {
			s.Issuer, s.NotBefore, s.NotAfter = st.cert.Issuer, st.cert.NotBefore, st.cert.NotAfter
		}
		if st.lastErr != nil {
			s.LastError = st.lastErr.Error()
		}
		s.RenewAt = m.dueLocked(app, st)
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].App < out[j].App })
	return out
}

// dueLocked is when app's next attempt is due.
func (m *Manager) dueLocked(app string, st *appState) time.Time {
	if len(st.forced) > 0 {
		return time.Time{}
	}
	due := st.next
	if st.cert != nil && st.cert.Name == m.want[app] {
		if r := st.cert.renewAt(); r.After(due) {
			due = r
		}
	}
	return due
}

// Run obtains and renews certificates until ctx ends: one app at a time, the most urgent first.
func (m *Manager) Run(ctx context.Context) {
	for {
		app, due := m.nextDue()
		wait := time.Until(due)
		if app != "" && wait <= 0 {
			m.attempt(ctx, app)
			continue
		}
		if app == "" {
			wait = time.Hour
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			m.failForced(ctx.Err())
			return
		case <-m.wakeCh:
		case <-t.C:
		}
		t.Stop()
	}
}

func (m *Manager) nextDue() (string, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	best, bestDue := "", time.Time{}
	for app := range m.want {
		due := m.dueLocked(app, m.apps[app])
		if best == "" || due.Before(bestDue) || due.Equal(bestDue) && app < best {
			best, bestDue = app, due
		}
	}
	return best, bestDue
}

func (m *Manager) failForced(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, st := range m.apps {
		for _, ch := range st.forced {
			ch <- err
		}
		st.forced = nil
	}
}

// attempt obtains a certificate for app and records the outcome.
func (m *Manager) attempt(ctx context.Context, app string) {
	m.mu.Lock()
	name, st := m.want[app], m.apps[app]
	forced := st.forced
	st.forced, st.working = nil, true
	m.mu.Unlock()
	m.changed()

	start := time.Now()
	cert, err := m.obtain(ctx, app, name)

	m.mu.Lock()
	if err == nil {
		if m.apps[app] == st {
			err = m.save(cert)
		} else { // forgotten meanwhile (the app was removed): nothing of it is kept
			err = fmt.Errorf("certs: %q: %w: the app was removed", app, ErrUnknownApp)
		}
	}
	st.working, st.lastAttempt = false, start
	if err != nil {
		st.failures++
		st.lastErr = err
		st.next = time.Now().Add(m.backoff(st))
		m.log.Warn("certificate not obtained", "app", app, "name", name, "failures", st.failures,
			"retry", time.Until(st.next).Round(time.Second), "err", err)
	} else {
		st.cert, st.lastRenewal, st.lastErr, st.failures, st.next = cert, time.Now(), nil, 0, time.Time{}
		m.log.Info("certificate obtained", "app", app, "name", name, "issuer", cert.Issuer,
			"not_after", cert.NotAfter.Format(time.RFC3339), "took", time.Since(start).Round(time.Millisecond))
	}
	m.mu.Unlock()
	for _, ch := range forced {
		ch <- err
	}
	m.changed()
}

// backoff is the pause after st's failures: from a thirtieth of the certificate's lifetime (90
// days: 1 min, capped there; a 60-second test certificate: 2 s), doubling, up to RetryMax; with
// no certificate yet, from 30 s.
func (m *Manager) backoff(st *appState) time.Duration {
	base := 30 * time.Second
	if st.cert != nil {
		base = min(max(st.cert.NotAfter.Sub(st.cert.NotBefore)/30, time.Second), time.Minute)
	}
	d := base
	for i := 1; i < st.failures && d < m.cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, m.cfg.RetryMax)
}

// Forget drops a removed app's certificate: its bundle on disk and what the manager knows of it.
// An app still wanted is refused (ErrBadInput); one with nothing to drop is no error.
func (m *Manager) Forget(app string) error {
	if !names.IsApp(app) {
		return fmt.Errorf("certs: app %q: %w: not an app name", app, ErrBadInput)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, wanted := m.want[app]; wanted {
		return fmt.Errorf("certs: app %q: %w: it still wants a certificate", app, ErrBadInput)
	}
	delete(m.apps, app)
	if err := os.Remove(m.bundlePath(app)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("certs: forget %s: %w", app, err)
	}
	return atomicfile.SyncDir(m.certs)
}

// save writes app's bundle (0600, atomically).
func (m *Manager) save(c *Cert) error {
	if _, err := atomicfile.WriteFile(m.bundlePath(c.App), c.Bundle, 0o600); err != nil {
		return fmt.Errorf("certs: save %s: %w", c.App, err)
	}
	return nil
}

func (m *Manager) bundlePath(app string) string { return filepath.Join(m.certs, app+".pem") }

// BundlePath is where an app's bundle is kept under dir (Config.Dir): what a front unit loads
// as its credential at start.
func BundlePath(dir, app string) string { return filepath.Join(dir, "certs", app+".pem") }

// loadKept reads the bundles on disk; a damaged one is set aside (a new certificate is then
// obtained when the app is wanted).
func (m *Manager) loadKept() {
	entries, _ := os.ReadDir(m.certs)
	for _, e := range entries {
		app, ok := strings.CutSuffix(e.Name(), ".pem")
		if !ok || !names.IsApp(app) || !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(m.certs, e.Name())
		data, err := os.ReadFile(path)
		var c *Cert
		if err == nil {
			c, err = parseBundle(app, data)
		}
		if err != nil {
			moved, qerr := atomicfile.Quarantine(path, time.Now().Unix())
			m.log.Warn("damaged certificate bundle set aside", "app", app, "moved_to", moved, "err", errors.Join(err, qerr))
			continue
		}
		m.apps[app] = &appState{cert: c}
	}
}

// parseBundle reads a kept bundle: a private key and a chain whose leaf names one DNS name.
func parseBundle(app string, data []byte) (*Cert, error) {
	var leaf *x509.Certificate
	hasKey := false
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch {
		case block.Type == "CERTIFICATE" && leaf == nil:
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, err
			}
			leaf = c
		case strings.HasSuffix(block.Type, "PRIVATE KEY"):
			hasKey = true
		}
	}
	if leaf == nil || !hasKey || len(leaf.DNSNames) == 0 {
		return nil, errors.New("not a bundle of a private key and a certificate")
	}
	issuer := leaf.Issuer.CommonName
	if issuer == "" {
		issuer = leaf.Issuer.String()
	}
	return &Cert{App: app, Name: strings.ToLower(leaf.DNSNames[0]), Bundle: data, Issuer: issuer,
		NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter}, nil
}
