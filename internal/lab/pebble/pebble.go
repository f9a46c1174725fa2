// Package pebble runs Pebble, Let's Encrypt's ACME test server (Debian's pebble package), for the
// lab and the tests: in a network namespace of the caller's choosing, with its own HTTPS
// certificate (made here), its DNS-01 checks asked of a DNS server the caller names, and
// certificates of a chosen validity. It never skips validation (PEBBLE_VA_ALWAYS_VALID is never
// set): a certificate it issues proves the challenge's TXT record was served. Optionally it also
// runs pebble-challtestsrv, Pebble's DNS test server, whose TXT records are set over HTTP.
package pebble

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/onionpod/onionpod/internal/lab/hostcheck"
)

// Options configure a Pebble.
type Options struct {
	// Dir holds its config, HTTPS certificate and log (created).
	Dir string
	// Netns is the network namespace it runs in ("" = the caller's).
	Netns string
	// Addr is the address it listens on (default ::1): the ACME directory on port 14000, the
	// management API (the issuing root) on 15000.
	Addr netip.Addr
	// DNSServer is where its validation asks for TXT records ("[2001:db8:1::53]:53").
	DNSServer string
	// Validity of the certificates it issues (0: Pebble's default, years).
	Validity time.Duration
	// ChallTestSrv also runs pebble-challtestsrv, answering DNS on ChallTestDNS (its TXT records
	// set by SetTXT); DNSServer is then ignored.
	ChallTestSrv bool
}

// Ports of the ACME directory, the management API, and challtestsrv's DNS and management.
const (
	ACMEPort       = 14000
	ManagementPort = 15000
	challDNSPort   = 8053
	challMgmtPort  = 8055
)

// Pebble is a running Pebble.
type Pebble struct {
	opts  Options
	procs []*exec.Cmd
	http  *http.Client
}

// Needs are the machine's parts a Pebble needs.
func Needs() []hostcheck.Part { return []hostcheck.Part{hostcheck.Pebble, hostcheck.UtilLinux} }

// Start starts Pebble (and challtestsrv) and returns once its directory answers.
func Start(ctx context.Context, opts Options) (_ *Pebble, err error) {
	if err := hostcheck.Missing(Needs()...); err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	if !opts.Addr.IsValid() {
		opts.Addr = netip.MustParseAddr("::1")
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	p := &Pebble{opts: opts}
	defer func() {
		if err != nil {
			p.Stop()
		}
	}()
	if err := p.writeFiles(); err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(p.CACertFile())
	pool.AppendCertsFromPEM(pem)
	p.http = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext:     p.dial,
	}}
	if opts.ChallTestSrv {
		if err := p.run("challtestsrv", "pebble-challtestsrv", "-defaultIPv4", "", "-defaultIPv6", "",
			"-dns01", p.hostPort(challDNSPort), "-http01", "", "-https01", "", "-tlsalpn01", "",
			"-management", p.hostPort(challMgmtPort)); err != nil {
			return nil, err
		}
		opts.DNSServer = p.ChallTestDNS()
	}
	if err := p.run("pebble", "pebble", "-config", filepath.Join(opts.Dir, "pebble.json"), "-dnsserver", opts.DNSServer); err != nil {
		return nil, err
	}
	if err := p.waitReady(ctx, func() error {
		resp, err := p.http.Get(p.DirectoryURL())
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = errors.New(resp.Status)
			}
		}
		return err
	}, "pebble"); err != nil {
		return nil, err
	}
	if opts.ChallTestSrv {
		if err := p.waitReady(ctx, func() error { return p.SetTXT(ctx, "ready.test.") }, "challtestsrv"); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *Pebble) hostPort(port int) string {
	return netip.AddrPortFrom(p.opts.Addr, uint16(port)).String()
}

// DirectoryURL is the ACME directory.
func (p *Pebble) DirectoryURL() string { return "https://" + p.hostPort(ACMEPort) + "/dir" }

// CACertFile is the PEM file of the root of Pebble's own HTTPS certificate (what an ACME client
// must trust to talk to it: onionpod's tls.ca_root).
func (p *Pebble) CACertFile() string { return filepath.Join(p.opts.Dir, "https-root.pem") }

// ChallTestDNS is challtestsrv's DNS address.
func (p *Pebble) ChallTestDNS() string { return p.hostPort(challDNSPort) }

// dial reaches Pebble inside its namespace from this process.
func (p *Pebble) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if p.opts.Netns == "" {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	return dialIn(ctx, p.opts.Netns, network, addr)
}

// Dir is where Pebble keeps its files.
func (p *Pebble) Dir() string { return p.opts.Dir }

// writeFiles makes Pebble's HTTPS root and certificate (kept when Dir has them: a Pebble started
// again on the same Dir is trusted by the same root), and its config.
func (p *Pebble) writeFiles() error {
	if _, err := os.Stat(filepath.Join(p.opts.Dir, "https-key.pem")); err == nil {
		return p.writeConfig(nil)
	}
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "onionpod lab pebble HTTPS root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return err
	}
	root, _ := x509.ParseCertificate(rootDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "pebble"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		DNSNames: []string{"localhost", "pebble"}, IPAddresses: []net.IP{net.IPv6loopback, net.IPv4(127, 0, 0, 1), p.opts.Addr.AsSlice()},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, &key.PublicKey, rootKey)
	if err != nil {
		return err
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	files := map[string][]byte{
		"https-root.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}),
		"https-cert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"https-key.pem":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}
	return p.writeConfig(files)
}

func (p *Pebble) writeConfig(files map[string][]byte) error {
	if files == nil {
		files = map[string][]byte{}
	}
	config := map[string]any{"pebble": map[string]any{
		"listenAddress":                  p.hostPort(ACMEPort),
		"managementListenAddress":        p.hostPort(ManagementPort),
		"certificate":                    filepath.Join(p.opts.Dir, "https-cert.pem"),
		"privateKey":                     filepath.Join(p.opts.Dir, "https-key.pem"),
		"httpPort":                       5002,
		"tlsPort":                        5001,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"certificateValidityPeriod":      uint64(p.opts.Validity / time.Second),
	}}
	files["pebble.json"], _ = json.MarshalIndent(config, "", "  ")
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(p.opts.Dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// run starts one of Pebble's programs in the namespace, logging to Dir/NAME.log.
func (p *Pebble) run(name string, argv ...string) error {
	logf, err := os.OpenFile(filepath.Join(p.opts.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("pebble: %w", err)
	}
	defer logf.Close()
	if p.opts.Netns != "" {
		argv = append([]string{"nsenter", "--net=" + p.opts.Netns, "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Validation is never skipped; no nonce is rejected on purpose; every order is validated.
	cmd.Env = append(withoutPebbleEnv(os.Environ()), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pebble: start %s: %w", name, err)
	}
	p.procs = append(p.procs, cmd)
	return nil
}

func withoutPebbleEnv(env []string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, "PEBBLE_") {
			out = append(out, e)
		}
	}
	return out
}

func (p *Pebble) waitReady(ctx context.Context, ready func() error, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			log, _ := os.ReadFile(filepath.Join(p.opts.Dir, name+".log"))
			return fmt.Errorf("pebble: %s does not answer: %v\n%s", name, err, log)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// IssuingRoot returns the PEM root certificate Pebble signs with (what a client trusts to verify
// the certificates it issues). It changes with every start.
func (p *Pebble) IssuingRoot(ctx context.Context) ([]byte, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+p.hostPort(ManagementPort)+"/roots/0", nil)
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("pebble: issuing root: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return nil, fmt.Errorf("pebble: issuing root: %s %v", resp.Status, err)
	}
	return body, nil
}

// SetTXT sets (or, with no values, clears) challtestsrv's TXT record at name.
func (p *Pebble) SetTXT(ctx context.Context, name string, values ...string) error {
	if err := p.challtest(ctx, "clear-txt", map[string]string{"host": name}); err != nil {
		return err
	}
	for _, v := range values {
		if err := p.challtest(ctx, "set-txt", map[string]string{"host": name, "value": v}); err != nil {
			return err
		}
	}
	return nil
}

func (p *Pebble) challtest(ctx context.Context, path string, body map[string]string) error {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+p.hostPort(challMgmtPort)+"/"+path, strings.NewReader(string(b)))
	resp, err := p.http.Do(req)
	if err != nil {
		return fmt.Errorf("pebble: challtestsrv %s: %w", path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("pebble: challtestsrv %s: %s", path, resp.Status)
	}
	return nil
}

// Stop stops Pebble (by PID: the processes Start started) and waits for them.
func (p *Pebble) Stop() error {
	var errs []error
	for _, c := range p.procs {
		if c.Process == nil {
			continue
		}
		c.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() {
			c.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			c.Process.Kill()
			<-done
		}
	}
	p.procs = nil
	return errors.Join(errs...)
}
