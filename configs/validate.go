package configs

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Validate checks every field and returns all problems at once, each prefixed by where it is
// (`dns.zone: ...`). The error wraps ErrInvalid. It touches nothing outside the struct: secret
// files are not read (only the daemon reads them: see CheckSecrets).
func (c *Config) Validate() error {
	if errs := c.problems(); len(errs) > 0 {
		return problems("config", errs)
	}
	return nil
}

func (c *Config) problems() []error {
	var errs []error
	bad := func(where, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", where, fmt.Sprintf(format, args...)))
	}
	if c.Version != CurrentVersion {
		bad("version", "%d is not supported (this onionpod reads version %d)", c.Version, CurrentVersion)
	}
	if !filepath.IsAbs(c.StateDir) {
		bad("state_dir", "%q must be an absolute path", c.StateDir)
	}
	if !filepath.IsAbs(c.API.Socket) {
		bad("api.socket", "%q must be an absolute path", c.API.Socket)
	}
	c.validateNetwork(bad)
	c.validateDNS(bad)
	c.validateTor(bad)
	c.validateTLS(bad)
	c.validateObservability(bad)
	for i, r := range c.Images.InsecureRegistries {
		if r == "" || strings.ContainsAny(r, "/ \t\n@") || strings.Contains(r, "://") {
			bad(fmt.Sprintf("images.insecure_registries[%d]", i), "%q: want a registry as references name it (host:port)", r)
		}
	}
	return errs
}

type reporter func(where, format string, args ...any)

func (c *Config) validateNetwork(bad reporter) {
	n := c.Network
	if n.Uplink != "auto" && !validIfName(n.Uplink) {
		bad("network.uplink", "%q is not an interface name (or \"auto\")", n.Uplink)
	}
	if p, err := netip.ParsePrefix(n.ULAPrefix); err != nil {
		bad("network.ula_prefix", "%q is not a prefix like fd12:3456:789a:1::/64", n.ULAPrefix)
	} else if p.Bits() != 64 || !p.Addr().Is6() || p.Addr().As16()[0] != 0xfd || p.Masked() != p {
		bad("network.ula_prefix", "%q must be a unique local /64 (fdXX:XXXX:XXXX:XXXX::/64)", n.ULAPrefix)
	}
	if len(n.CNIPaths) == 0 {
		bad("network.cni_paths", "needs at least one directory")
	}
	for i, p := range n.CNIPaths {
		if !filepath.IsAbs(p) {
			bad(fmt.Sprintf("network.cni_paths[%d]", i), "%q must be an absolute path", p)
		}
	}
	// Under /run (a tmpfs): a pod's network unit runs only where its namespace is not named
	// (pods.Spec.NetUp), so no name may outlive the boot.
	if !filepath.IsAbs(n.NetnsDir) || !strings.HasPrefix(filepath.Clean(n.NetnsDir), "/run/") {
		bad("network.netns_dir", "%q must be an absolute path under /run (names that end with the boot)", n.NetnsDir)
	}
	if !filepath.IsAbs(n.DHCPSocket) {
		bad("network.dhcp_socket", "%q must be an absolute path", n.DHCPSocket)
	}
}

func (c *Config) validateDNS(bad reporter) {
	d := c.DNS
	if !ValidDomain(d.Zone) {
		bad("dns.zone", "%q is not a domain name", d.Zone)
	}
	if d.TTL < 1 || d.TTL > 86400 {
		bad("dns.ttl", "%d must be between 1 and 86400 seconds", d.TTL)
	}
	keys := map[string]bool{}
	for i, k := range d.TSIG {
		where := fmt.Sprintf("dns.tsig[%d]", i)
		if !ValidDomain(k.Name) {
			bad(where+".name", "%q is not a key name", k.Name)
		}
		keys[canonical(k.Name)] = true
		switch k.Algorithm {
		case "", "hmac-sha256", "hmac-sha1", "hmac-sha224", "hmac-sha384", "hmac-sha512":
		default:
			bad(where+".algorithm", "%q is not one of hmac-sha256, hmac-sha1, hmac-sha224, hmac-sha384, hmac-sha512", k.Algorithm)
		}
		switch {
		case (k.Secret == "") == (k.SecretFile == ""):
			bad(where, "needs exactly one of secret or secret_file")
		case k.SecretFile != "" && !filepath.IsAbs(k.SecretFile):
			bad(where+".secret_file", "%q must be an absolute path", k.SecretFile)
		case k.Secret != "" && !isBase64(k.Secret):
			bad(where, "the secret is not base64") // never print the secret itself
		}
	}
	switch d.Mode {
	case "builtin":
		if len(d.Listen) == 0 {
			bad("dns.listen", "builtin mode needs at least one address to serve on")
		}
		for i, l := range d.Listen {
			if !validHostPort(l) {
				bad(fmt.Sprintf("dns.listen[%d]", i), "%q is not host:port (IPv6 in brackets)", l)
			}
		}
		for i, n := range d.NS {
			if !ValidDomain(n) {
				bad(fmt.Sprintf("dns.ns[%d]", i), "%q is not a domain name", n)
			}
		}
		for i, s := range d.Secondaries {
			where := fmt.Sprintf("dns.secondaries[%d]", i)
			if !validHostPort(s.Address) {
				bad(where+".address", "%q is not host:port (IPv6 in brackets)", s.Address)
			}
			if !keys[canonical(s.Key)] {
				bad(where+".key", "%q is not one of dns.tsig's names", s.Key)
			}
		}
	case "rfc2136":
		if !validHostPort(d.RFC2136.Server) {
			bad("dns.rfc2136.server", "%q is not host:port of your primary", d.RFC2136.Server)
		}
		if !keys[canonical(d.RFC2136.Key)] {
			bad("dns.rfc2136.key", "%q is not one of dns.tsig's names", d.RFC2136.Key)
		}
	default:
		bad("dns.mode", "%q must be \"builtin\" or \"rfc2136\"", d.Mode)
	}
}

func (c *Config) validateTor(bad reporter) {
	t := c.Tor
	switch t.Mode {
	case "managed", "system":
	default:
		bad("tor.mode", "%q must be \"managed\" or \"system\"", t.Mode)
	}
	if network, _, err := ParseControl(t.Control); err != nil {
		bad("tor.control", "%s", err)
	} else if t.Mode == "managed" && network != "unix" {
		bad("tor.control", "%q: the managed tor listens on a unix socket (unix:/path)", t.Control)
	}
	switch t.Auth {
	case "cookie", "none":
	case "password":
		if t.PasswordFile == "" {
			bad("tor.password_file", "auth = \"password\" needs password_file")
		}
	default:
		bad("tor.auth", "%q must be \"cookie\", \"password\" or \"none\"", t.Auth)
	}
	if t.Mode == "managed" && !filepath.IsAbs(t.Binary) {
		bad("tor.binary", "%q must be an absolute path", t.Binary)
	}
	if t.SocksPort < 0 || t.SocksPort > 65535 {
		bad("tor.socks_port", "%d is not a port", t.SocksPort)
	}
	for i, line := range t.TorrcExtra {
		if strings.ContainsAny(line, "\n\r") {
			bad(fmt.Sprintf("tor.torrc_extra[%d]", i), "must be a single line")
		}
	}
}

func (c *Config) validateTLS(bad reporter) {
	t := c.TLS
	switch t.Mode {
	case "off":
	case "acme":
		if u, err := url.Parse(t.Directory); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("tls.directory", "%q is not the https:// URL of an ACME directory", t.Directory)
		}
		if t.Email != "" && !validEmail(t.Email) {
			bad("tls.email", "%q is not an e-mail address", t.Email)
		}
		if t.CARoot != "" {
			if err := checkRoots(t.CARoot); err != nil {
				bad("tls.ca_root", "%s", err)
			}
		}
	default:
		bad("tls.mode", "%q must be \"off\" or \"acme\"", t.Mode)
	}
	e := c.Edge
	switch e.Mode {
	case "off", "on":
	default:
		bad("edge.mode", "%q must be \"off\" or \"on\"", e.Mode)
	}
	if !validHostPort(e.HTTPS) {
		bad("edge.https", "%q is not host:port", e.HTTPS)
	}
	if !validHostPort(e.HTTP) {
		bad("edge.http", "%q is not host:port", e.HTTP)
	}
}

func validEmail(s string) bool {
	local, domain, ok := strings.Cut(s, "@")
	return ok && local != "" && ValidDomain(domain) && !strings.ContainsAny(local, " \t\r\n<>\"@")
}

// checkRoots checks that path is a PEM file of certificates, and nothing else.
func checkRoots(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%q must be an absolute path", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cannot be read: %s", rootCause(err))
	}
	n := 0
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("%s holds a %s block: want certificates only", path, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("%s: certificate %d: %s", path, n+1, rootCause(err))
		}
		n++
	}
	if n == 0 || strings.TrimSpace(string(data)) != "" {
		return fmt.Errorf("%s is not a PEM file of certificates", path)
	}
	return nil
}

// ParseControl splits a tor control endpoint ("unix:/path" or "tcp:host:port") into a network and
// an address for net.Dial.
func ParseControl(s string) (network, addr string, err error) {
	switch {
	case strings.HasPrefix(s, "unix:"):
		addr = strings.TrimPrefix(s, "unix:")
		if !filepath.IsAbs(addr) {
			return "", "", fmt.Errorf("%q: the socket path must be absolute", s)
		}
		return "unix", addr, nil
	case strings.HasPrefix(s, "tcp:"):
		addr = strings.TrimPrefix(s, "tcp:")
		if !validHostPort(addr) {
			return "", "", fmt.Errorf("%q: expected tcp:host:port", s)
		}
		return "tcp", addr, nil
	}
	return "", "", fmt.Errorf("%q: expected unix:/path or tcp:host:port", s)
}

// ValidDomain reports whether s is a syntactically valid DNS name (with or without the final dot).
func ValidDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if !validLabel(label) {
			return false
		}
	}
	return true
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for _, r := range l {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func canonical(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

func validIfName(s string) bool {
	return s != "" && len(s) < 16 && !strings.ContainsAny(s, "/ \t\n:") && s != "." && s != ".."
}

func validHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return false
	}
	p, err := strconv.Atoi(port)
	return err == nil && p >= 0 && p <= 65535
}

func isBase64(secret string) bool {
	_, err := base64.StdEncoding.DecodeString(secret)
	return err == nil && secret != ""
}

// CheckSecrets reads every TSIG secret_file and checks its secret, as far as the caller may: a
// file it has no permission to read is listed in unchecked (by where it is in the config), not
// reported as a problem, since only the daemon, as root, needs to read it. Problems (a missing
// file, a secret that is not base64) are returned as one error wrapping ErrInvalid, which never
// shows a secret.
func (c *Config) CheckSecrets() (unchecked []string, err error) {
	var errs []error
	for i, k := range c.DNS.TSIG {
		if k.SecretFile == "" {
			continue
		}
		where := fmt.Sprintf("dns.tsig[%d].secret_file", i)
		_, err := k.SecretOf()
		switch {
		case errors.Is(err, fs.ErrPermission):
			unchecked = append(unchecked, fmt.Sprintf("%s: not checked: %s cannot be read by this user (the daemon reads it as root)", where, k.SecretFile))
		case errors.Is(err, ErrInvalid):
			errs = append(errs, fmt.Errorf("%s: the secret in %s is not base64", where, k.SecretFile))
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: cannot be read: %s", where, rootCause(err)))
		}
	}
	if len(errs) > 0 {
		return unchecked, problems("config", errs)
	}
	return unchecked, nil
}

func rootCause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}
