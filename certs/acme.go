package certs

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge/dns01"
	"github.com/go-acme/lego/v5/lego"
	legolog "github.com/go-acme/lego/v5/log"
	"github.com/go-acme/lego/v5/registration"
	mdns "github.com/miekg/dns"

	"github.com/onionpod/onionpod/internal/atomicfile"
)

// acmeClient is lego's client, made on first use (it fetches the CA's directory), with the
// account of this CA directory, and the DNS-01 provider publishing through Config.Publisher.
type acmeClient struct {
	cfg  Config
	http *http.Client

	mu     sync.Mutex // one ACME conversation at a time
	client *lego.Client

	pmu     sync.Mutex
	pending map[Challenge]int
}

func newACMEClient(cfg Config, m *Manager) (*acmeClient, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CARoot != "" {
		roots, err := loadRoots(cfg.CARoot)
		if err != nil {
			return nil, fmt.Errorf("certs: %w: tls.ca_root: %w", ErrBadInput, err)
		}
		pool := x509.NewCertPool()
		for _, r := range roots {
			pool.AddCert(r)
		}
		tlsConfig.RootCAs = pool
	}
	// lego's process-wide settings (see the package doc).
	legolog.SetDefault(slog.New(levelAtLeast{m.log.Handler(), slog.LevelWarn}))
	if len(cfg.CheckServers) > 0 {
		dns01.SetDefaultClient(dns01.NewClient(&dns01.Options{RecursiveNameservers: cfg.CheckServers, Timeout: 5 * time.Second}))
	}
	return &acmeClient{cfg: cfg, pending: map[Challenge]int{}, http: &http.Client{
		Timeout: time.Minute,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 15 * time.Second}).DialContext,
			TLSHandshakeTimeout:   15 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			TLSClientConfig:       tlsConfig,
		},
	}}, nil
}

// levelAtLeast keeps lego's step-by-step info lines out of the daemon's log.
type levelAtLeast struct {
	slog.Handler
	min slog.Level
}

func (h levelAtLeast) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

// account is what is kept of the ACME account of one CA directory (0600).
type account struct {
	Directory string `json:"directory"`
	Email     string `json:"email,omitempty"`
	URL       string `json:"url,omitempty"` // the account's location once registered
	Key       string `json:"key"`           // PEM
	key       crypto.Signer
}

func (a *account) GetEmail() string { return a.Email }
func (a *account) GetRegistration() *acme.ExtendedAccount {
	if a.URL == "" {
		return nil
	}
	return &acme.ExtendedAccount{Location: a.URL}
}
func (a *account) GetPrivateKey() crypto.Signer { return a.key }

func (c *acmeClient) accountPath() string {
	sum := sha256.Sum256([]byte(c.cfg.DirectoryURL))
	return filepath.Join(c.cfg.Dir, "account-"+hex.EncodeToString(sum[:6])+".json")
}

// loadAccount reads this directory's account, or makes a new key (not yet registered).
func (c *acmeClient) loadAccount() (*account, error) {
	path := c.accountPath()
	data, err := os.ReadFile(path)
	if err == nil {
		var a account
		if err := json.Unmarshal(data, &a); err == nil && a.Directory == c.cfg.DirectoryURL {
			if a.key, err = certcrypto.ParsePEMPrivateKey([]byte(a.Key)); err == nil {
				if a.Email != c.cfg.Email {
					a.URL = "" // register again with the new contact (the CA finds the key's account)
					a.Email = c.cfg.Email
				}
				return &a, nil
			}
		}
		moved, _ := atomicfile.Quarantine(path, time.Now().Unix())
		c.logger().Warn("damaged ACME account file set aside", "moved_to", moved)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err := certcrypto.GeneratePrivateKey(certcrypto.EC256)
	if err != nil {
		return nil, err
	}
	return &account{Directory: c.cfg.DirectoryURL, Email: c.cfg.Email, key: key,
		Key: string(pem.EncodeToMemory(certcrypto.PEMBlock(key)))}, nil
}

func (c *acmeClient) saveAccount(a *account) error {
	data, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	_, err = atomicfile.WriteFile(c.accountPath(), append(data, '\n'), 0o600)
	return err
}

func (c *acmeClient) logger() *slog.Logger { return c.cfg.Log }

// ready returns lego's client, registering the account first if needed.
func (c *acmeClient) ready(ctx context.Context) (*lego.Client, error) {
	if c.client != nil {
		return c.client, nil
	}
	a, err := c.loadAccount()
	if err != nil {
		return nil, fmt.Errorf("account: %w", err)
	}
	lc := lego.NewConfig(a)
	lc.CADirURL = c.cfg.DirectoryURL
	lc.HTTPClient = c.http
	lc.UserAgent = "onionpod"
	client, err := lego.NewClient(lc)
	if err != nil {
		return nil, fmt.Errorf("ACME server %s: %w", c.cfg.DirectoryURL, err)
	}
	if a.URL == "" {
		reg, err := client.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true})
		if err != nil {
			return nil, fmt.Errorf("register the ACME account: %w", err)
		}
		a.URL = reg.Location
		if err := c.saveAccount(a); err != nil {
			return nil, fmt.Errorf("account: %w", err)
		}
	}
	if err := client.Challenge.SetDNS01Provider(c, dns01.WrapPreCheck(c.precheck)); err != nil {
		return nil, err
	}
	c.client = client
	return client, nil
}

// obtain gets a new certificate (and key) for name.
func (m *Manager) obtain(ctx context.Context, app, name string) (*Cert, error) {
	c := m.acme
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var res *certificate.Resource
	for try := 0; ; try++ {
		client, err := c.ready(ctx)
		if err != nil {
			return nil, fmt.Errorf("certs: %s: %w", name, err)
		}
		res, err = client.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: []string{name}, Bundle: true, KeyType: certcrypto.EC256})
		var problem *acme.ProblemDetails
		if err != nil && try == 0 && errors.As(err, &problem) && problem.Type == "urn:ietf:params:acme:error:accountDoesNotExist" {
			// The CA forgot the account (a CA that was reset): register again, at once.
			c.client = nil
			os.Remove(c.accountPath())
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("certs: %s: %w%s", name, err, hint(err))
		}
		break
	}
	bundle := append(append([]byte{}, res.PrivateKey...), res.Certificate...)
	cert, err := parseBundle(app, bundle)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: the CA's answer: %w", name, err)
	}
	if cert.Name != name {
		return nil, fmt.Errorf("certs: %s: the CA issued a certificate for %s", name, cert.Name)
	}
	return cert, nil
}

// hint says what a CA's refusal to see the challenge record usually means.
func hint(err error) string {
	var problem *acme.ProblemDetails
	msg := err.Error()
	if errors.As(err, &problem) || strings.Contains(msg, "urn:ietf:params:acme:error:") {
		if strings.Contains(msg, "TXT") || strings.Contains(msg, "DNS") || strings.Contains(msg, ":dns") {
			return " (the CA could not read the challenge's TXT record: the zone must be delegated to the DNS server onionpod publishes to, as the CA's resolvers see it)"
		}
	}
	return ""
}

// Present publishes a challenge's TXT record (lego's challenge.Provider).
func (c *acmeClient) Present(ctx context.Context, domain, _, keyAuth string) error {
	return c.change(ctx, challengeOf(domain, keyAuth), 1)
}

// CleanUp withdraws it.
func (c *acmeClient) CleanUp(ctx context.Context, domain, _, keyAuth string) error {
	return c.change(ctx, challengeOf(domain, keyAuth), -1)
}

// Timeout bounds the wait for the record to be served (lego's challenge.ProviderTimeout).
func (c *acmeClient) Timeout() (timeout, interval time.Duration) {
	return time.Minute, 250 * time.Millisecond
}

func challengeOf(domain, keyAuth string) Challenge {
	sum := sha256.Sum256([]byte(keyAuth))
	return Challenge{Name: "_acme-challenge." + strings.TrimSuffix(strings.ToLower(domain), ".") + ".",
		Value: base64.RawURLEncoding.EncodeToString(sum[:])}
}

func (c *acmeClient) change(ctx context.Context, ch Challenge, delta int) error {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	c.pending[ch] += delta
	if c.pending[ch] <= 0 {
		delete(c.pending, ch)
	}
	set := make([]Challenge, 0, len(c.pending))
	for p := range c.pending {
		set = append(set, p)
	}
	slices.SortFunc(set, func(a, b Challenge) int { return strings.Compare(a.Name+a.Value, b.Name+b.Value) })
	if err := c.cfg.Publisher.SetChallenges(ctx, set); err != nil {
		return fmt.Errorf("publish the challenge record: %w", err)
	}
	return nil
}

// precheck asks every check server for the record; the CA is told to look once all serve it.
func (c *acmeClient) precheck(ctx context.Context, domain, _, value string, _ dns01.PreCheckFunc) (bool, error) {
	name := "_acme-challenge." + strings.TrimSuffix(strings.ToLower(domain), ".") + "."
	for _, server := range c.cfg.CheckServers {
		ok, err := servesTXT(ctx, server, name, value)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// servesTXT asks server (authoritatively, no recursion) whether name has the TXT value.
func servesTXT(ctx context.Context, server, name, value string) (bool, error) {
	q := new(mdns.Msg)
	q.SetQuestion(name, mdns.TypeTXT)
	q.RecursionDesired = false
	cl := &mdns.Client{Timeout: 3 * time.Second}
	r, _, err := cl.ExchangeContext(ctx, q, server)
	if err != nil {
		return false, nil // not answering yet: ask again
	}
	if r.Rcode == mdns.RcodeRefused || r.Rcode == mdns.RcodeNotAuth {
		return false, fmt.Errorf("DNS server %s is not authoritative for %s (%s)", server, name, mdns.RcodeToString[r.Rcode])
	}
	for _, rr := range r.Answer {
		if txt, ok := rr.(*mdns.TXT); ok && strings.Join(txt.Txt, "") == value {
			return true, nil
		}
	}
	return false, nil
}
