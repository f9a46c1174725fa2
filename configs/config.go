// Package configs holds onionpod's daemon configuration: the TOML schema, the embedded defaults,
// strict loading (an unknown key is an error naming the key and its line) and Validate, whose errors
// say where the problem is (for example `dns.zone: ...`).
package configs

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/onionpod/onionpod/internal/errkind"
)

// DefaultPath is where the daemon and the CLI look for the config when neither --config nor
// $ONIONPOD_CONFIG names one.
const DefaultPath = "/etc/onionpod/onionpod.toml"

// CurrentVersion is the config schema version this build reads.
const CurrentVersion = 1

// ErrInvalid marks every error caused by the config's content (syntax, unknown keys, bad values):
// internal/errkind's BadInput (the CLI exits 2).
var ErrInvalid = errkind.BadInput

//go:embed defaults.toml
var defaultsTOML []byte

// invalidError carries a content error and marks it as ErrInvalid without repeating that text.
type invalidError struct{ err error }

func (e *invalidError) Error() string   { return e.err.Error() }
func (e *invalidError) Unwrap() []error { return []error{ErrInvalid, e.err} }

func invalid(err error) error { return &invalidError{err} }

// problems formats field errors under one heading: one line for one problem, an indented list for more.
func problems(heading string, errs []error) error {
	if len(errs) == 1 {
		return invalid(fmt.Errorf("%s: %w", heading, errs[0]))
	}
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = "  " + e.Error()
	}
	return invalid(fmt.Errorf("%s: %d problems:\n%s", heading, len(errs), strings.Join(lines, "\n")))
}

// Config is the daemon's configuration. Zero values never reach the daemon: Load starts from the
// embedded defaults and lays the file's keys over them.
type Config struct {
	Version  int     `toml:"version"`
	StateDir string  `toml:"state_dir"`
	API      API     `toml:"api"`
	Network  Network `toml:"network"`
	DNS      DNS     `toml:"dns"`
	Tor      Tor     `toml:"tor"`
	TLS      TLS     `toml:"tls"`
	Edge     Edge    `toml:"edge"`

	Dashboard Dashboard `toml:"dashboard"`
	Metrics   Metrics   `toml:"metrics"`
	Probes    Probes    `toml:"probes"`
	Images    Images    `toml:"images"`
}

// Images configures how images are pulled.
type Images struct {
	// InsecureRegistries are registries ("host:port", "[2001:db8::1]:5000") reached over plain
	// HTTP: a registry on the LAN without a certificate. Loopback and RFC 1918 registries are
	// always reached over HTTP.
	InsecureRegistries []string `toml:"insecure_registries"`
}

// TLS configures the apps' HTTPS: certificates from an ACME CA by DNS-01 challenges published
// through onionpod's DNS, and a TLS front in each clearnet app's pod.
type TLS struct {
	Mode      string `toml:"mode"`      // "off" or "acme"
	Directory string `toml:"directory"` // the CA's ACME directory URL
	Email     string `toml:"email"`     // the ACME account's contact ("" = none)
	CARoot    string `toml:"ca_root"`   // PEM file of roots for a private CA's HTTPS ("" = system)
	// OnionLocation sends Onion-Location on the HTTPS responses of apps with an onion service
	// (each app may turn it off).
	OnionLocation bool `toml:"onion_location"`
}

// Edge routes visitors of the box's own (single, often dynamic) IPv4 address to the apps: :443 by
// TLS server name, :80 by Host, and publishes that address as every clearnet app's A record.
type Edge struct {
	Mode  string `toml:"mode"`  // "off" or "on"
	HTTPS string `toml:"https"` // where it listens for TLS, e.g. "0.0.0.0:443"
	HTTP  string `toml:"http"`  // where it listens for plain HTTP, e.g. "0.0.0.0:80"
}

// API is the local control socket the CLI uses.
type API struct {
	Socket string `toml:"socket"`
	Group  string `toml:"group"` // group besides root allowed to use the socket; "" = root only
}

// Network configures how pods are wired to the LAN.
type Network struct {
	Uplink     string   `toml:"uplink"`     // interface name or "auto"
	ULAPrefix  string   `toml:"ula_prefix"` // fdXX::/64 giving the host a path to every pod
	IPv4       bool     `toml:"ipv4"`       // ask the LAN's DHCP server for an IPv4 address per pod
	CNIPaths   []string `toml:"cni_paths"`
	NetnsDir   string   `toml:"netns_dir"`
	DHCPSocket string   `toml:"dhcp_socket"`
}

// DNS configures how pods' addresses are published.
type DNS struct {
	Mode        string      `toml:"mode"` // "builtin" or "rfc2136"
	Zone        string      `toml:"zone"`
	TTL         int         `toml:"ttl"`
	Listen      []string    `toml:"listen"`      // builtin: addresses to serve on
	NS          []string    `toml:"ns"`          // builtin: NS names (default ns1.ZONE)
	TSIG        []TSIGKey   `toml:"tsig"`        // keys for AXFR (builtin) or UPDATE (rfc2136)
	Secondaries []Secondary `toml:"secondaries"` // builtin: who may AXFR the zone and gets NOTIFYs
	RFC2136     RFC2136     `toml:"rfc2136"`
}

// TSIGKey is a shared secret for DNS transaction signatures. The secret is read from SecretFile
// (or given inline as Secret, for labs); it never appears in errors.
type TSIGKey struct {
	Name       string `toml:"name"`
	Algorithm  string `toml:"algorithm"`
	Secret     string `toml:"secret"`
	SecretFile string `toml:"secret_file"`
}

// Secondary is a DNS server allowed to transfer the built-in zone.
type Secondary struct {
	Address string `toml:"address"`
	Key     string `toml:"key"`
}

// RFC2136 names the owner's primary DNS server for dynamic updates.
type RFC2136 struct {
	Server string `toml:"server"`
	Key    string `toml:"key"`
}

// Tor configures the tor that carries the onion services.
type Tor struct {
	Mode         string   `toml:"mode"`    // "managed" or "system"
	Control      string   `toml:"control"` // "unix:/path" or "tcp:host:port"
	Auth         string   `toml:"auth"`    // "cookie", "password" or "none"
	PasswordFile string   `toml:"password_file"`
	Binary       string   `toml:"binary"`
	SocksPort    int      `toml:"socks_port"`
	TorrcExtra   []string `toml:"torrc_extra"`
}

// Default returns the embedded defaults.
func Default() *Config {
	var c Config
	if err := decodeStrict(defaultsTOML, "defaults.toml", &c); err != nil {
		panic(fmt.Sprintf("configs: embedded defaults are broken: %v", err))
	}
	return &c
}

// Load reads the file at path over the defaults and validates the result. Every error caused by the
// file's content wraps ErrInvalid. A missing file is an error (use Default for none).
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes TOML (name is used in messages) over the defaults and validates the result.
func Parse(data []byte, name string) (*Config, error) {
	c := Default()
	if err := decodeStrict(data, name, c); err != nil {
		return nil, err
	}
	if errs := c.problems(); len(errs) > 0 {
		return nil, problems("config "+name, errs)
	}
	return c, nil
}

func decodeStrict(data []byte, name string, into *Config) error {
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(into)
	if err == nil {
		return nil
	}
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		errs := make([]error, 0, len(strict.Errors))
		for _, e := range strict.Errors {
			line, _ := e.Position()
			errs = append(errs, fmt.Errorf("line %d: unknown key %q", line, strings.Join(e.Key(), ".")))
		}
		return problems("config "+name, errs)
	}
	var syntax *toml.DecodeError
	if errors.As(err, &syntax) {
		line, col := syntax.Position()
		return invalid(fmt.Errorf("config %s: line %d, column %d: %s", name, line, col, trimTOML(syntax.Error())))
	}
	return invalid(fmt.Errorf("config %s: %s", name, trimTOML(err.Error())))
}

func trimTOML(s string) string { return strings.TrimPrefix(s, "toml: ") }

// Path picks the config file: the flag if set, else $ONIONPOD_CONFIG, else DefaultPath.
func Path(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("ONIONPOD_CONFIG"); env != "" {
		return env
	}
	return DefaultPath
}

// LoadOrDefault loads path; when path is DefaultPath and the file does not exist, it returns the
// defaults, so a fresh box works without a config file.
func LoadOrDefault(path string) (*Config, error) {
	if filepath.Clean(path) == DefaultPath {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return Default(), nil
		}
	}
	return Load(path)
}

// SecretOf returns the TSIG key's secret, reading SecretFile when set. Only the daemon calls it
// (the CLI never reads secret files). A secret that is not base64 is ErrInvalid; the error never
// shows the secret.
func (k TSIGKey) SecretOf() (string, error) {
	if k.SecretFile == "" {
		return k.Secret, nil
	}
	data, err := os.ReadFile(k.SecretFile)
	if err != nil {
		return "", fmt.Errorf("config: dns.tsig %q: secret_file: %w", k.Name, err)
	}
	secret := parseSecret(data)
	clear(data)
	if !isBase64(secret) {
		return "", invalid(fmt.Errorf("config: dns.tsig %q: secret_file %s: the secret is not base64", k.Name, k.SecretFile))
	}
	return secret, nil
}

// parseSecret accepts a bare base64 secret or a BIND key block as written by tsig-keygen
// (`key "name" { algorithm hmac-sha256; secret "..."; };`).
func parseSecret(data []byte) string {
	if m := bindSecret.FindSubmatch(data); m != nil {
		return string(m[1])
	}
	return string(bytes.TrimSpace(data))
}

var bindSecret = regexp.MustCompile(`secret\s+"([^"]+)"`)

// Where each owner keeps its state under state_dir (the README's "Where state lives").

// KeysDir holds the apps' onion keys, in Tor's HiddenServiceDir layout.
func (c *Config) KeysDir() string { return filepath.Join(c.StateDir, "onion") }

// ImagesDir holds image layers and unpacked roots.
func (c *Config) ImagesDir() string { return filepath.Join(c.StateDir, "images") }

// NetworkDir holds ULA leases, the CNI cache and conflists.
func (c *Config) NetworkDir() string { return filepath.Join(c.StateDir, "network") }

// DNSDir holds the built-in zone's serial and records, or the RFC 2136 ledger.
func (c *Config) DNSDir() string { return filepath.Join(c.StateDir, "dns") }

// TLSDir holds the ACME accounts and the apps' certificates (0600 bundles of key and chain).
func (c *Config) TLSDir() string { return filepath.Join(c.StateDir, "tls") }

// TorDir holds the managed tor's torrc and data directory.
func (c *Config) TorDir() string { return filepath.Join(c.StateDir, "tor") }
