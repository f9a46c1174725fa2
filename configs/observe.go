package configs

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"time"
)

// Dashboard configures the web dashboard the daemon serves: on the listen addresses (the LAN
// side, behind a login), and as its own onion service with client authorization once
// `onionpod dashboard enable` made its key (served to tor on OnionSocket).
type Dashboard struct {
	Enabled bool `toml:"enabled"`
	// Listen are where the LAN side is served: "loopback" (127.0.0.1 and ::1), "ula" (the
	// host's address in network.ula_prefix, prefix::1), or literal "ADDR" or "[ADDR]:PORT".
	Listen []string `toml:"listen"`
	// Port is the port of "loopback", "ula" and literal addresses without one.
	Port int `toml:"port"`
	// OnionSocket is the unix socket tor forwards the dashboard's .onion to ("": next to the
	// tor control socket, which only tor and root can reach).
	OnionSocket string `toml:"onion_socket"`
	// OnionLogin also asks for the login on the .onion (client authorization alone admits
	// only the owner's devices).
	OnionLogin bool `toml:"onion_login"`
	// Session is how long a login lasts.
	Session Duration `toml:"session"`
}

// Metrics configures the Prometheus endpoint (GET /metrics, no login: keep it off the LAN).
type Metrics struct {
	Enabled bool     `toml:"enabled"`
	Listen  []string `toml:"listen"` // as dashboard.listen
	Port    int      `toml:"port"`
}

// Probes configures the reachability probes of every app.
type Probes struct {
	Enabled bool `toml:"enabled"`
	// Interval between two probes of one app (spread over it for all apps).
	Interval Duration `toml:"interval"`
	// OnionTimeout and ClearnetTimeout bound one probe.
	OnionTimeout    Duration `toml:"onion_timeout"`
	ClearnetTimeout Duration `toml:"clearnet_timeout"`
	// History is how many results are kept per app and path.
	History int `toml:"history"`
	// Clearnet probes the apps' DNS names from a LAN vantage point: a macvlan of the box's own
	// on the uplink (the box cannot reach its pods' LAN addresses itself).
	Clearnet bool `toml:"clearnet"`
	// VantageIPv4 is a static "ADDR/LEN" for the vantage point's IPv4 probes ("" = none).
	VantageIPv4 string `toml:"vantage_ipv4"`
	// DNSServer is where names are looked up ("" = the built-in server on loopback, or the
	// RFC 2136 primary).
	DNSServer string `toml:"dns_server"`
}

// Duration is a time.Duration written as "30s", "5m".
type Duration time.Duration

// UnmarshalText reads "30s", "5m", "1h30m".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration like 30s or 5m", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D is the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (c *Config) validateObservability(bad reporter) {
	checkListen := func(where string, listen []string, port int) {
		if port < 1 || port > 65535 {
			bad(where+".port", "%d is not a port", port)
		}
		for i, l := range listen {
			if _, err := ListenAddrs(l, port, netip.Prefix{}); err != nil {
				bad(fmt.Sprintf("%s.listen[%d]", where, i), "%s", err)
			}
		}
	}
	d := c.Dashboard
	checkListen("dashboard", d.Listen, d.Port)
	if d.OnionSocket != "" && !filepath.IsAbs(d.OnionSocket) {
		bad("dashboard.onion_socket", "%q must be an absolute path", d.OnionSocket)
	}
	if d.Session.D() < time.Minute || d.Session.D() > 90*24*time.Hour {
		bad("dashboard.session", "%s must be between 1m and 2160h", d.Session.D())
	}
	m := c.Metrics
	checkListen("metrics", m.Listen, m.Port)
	if d.Enabled && m.Enabled && d.Port == m.Port {
		bad("metrics.port", "%d is dashboard.port too", m.Port)
	}
	p := c.Probes
	if p.Interval.D() < 10*time.Second {
		bad("probes.interval", "%s is shorter than 10s", p.Interval.D())
	}
	for _, t := range []struct {
		where string
		v     Duration
	}{{"probes.onion_timeout", p.OnionTimeout}, {"probes.clearnet_timeout", p.ClearnetTimeout}} {
		if t.v.D() < time.Second || t.v.D() > 5*time.Minute {
			bad(t.where, "%s must be between 1s and 5m", t.v.D())
		}
	}
	if p.History < 1 || p.History > 1000 {
		bad("probes.history", "%d must be between 1 and 1000", p.History)
	}
	if p.VantageIPv4 != "" {
		if pfx, err := netip.ParsePrefix(p.VantageIPv4); err != nil || !pfx.Addr().Is4() {
			bad("probes.vantage_ipv4", "%q is not an IPv4 address with its prefix length (192.0.2.250/24)", p.VantageIPv4)
		}
	}
	if p.DNSServer != "" && !validHostPort(p.DNSServer) {
		bad("probes.dns_server", "%q is not host:port", p.DNSServer)
	}
}

// ListenAddrs expands one listen entry of dashboard.listen or metrics.listen into "host:port"
// addresses: "loopback" is 127.0.0.1 and [::1], "ula" is the host's address in ula (prefix::1;
// with an invalid ula only the syntax is checked), an address without a port gets port.
func ListenAddrs(entry string, port int, ula netip.Prefix) ([]string, error) {
	p := fmt.Sprint(port)
	switch entry {
	case "loopback":
		return []string{net.JoinHostPort("127.0.0.1", p), net.JoinHostPort("::1", p)}, nil
	case "ula":
		if !ula.IsValid() {
			return []string{net.JoinHostPort("fd00::1", p)}, nil
		}
		b := ula.Masked().Addr().As16()
		b[15] = 1
		return []string{net.JoinHostPort(netip.AddrFrom16(b).String(), p)}, nil
	}
	if a, err := netip.ParseAddr(entry); err == nil {
		return []string{net.JoinHostPort(a.String(), p)}, nil
	}
	if ap, err := netip.ParseAddrPort(entry); err == nil && ap.Port() != 0 {
		return []string{ap.String()}, nil
	}
	return nil, fmt.Errorf("%q is not \"loopback\", \"ula\", an IP address or [ADDR]:PORT", entry)
}

// DashboardOnionSocket is where tor forwards the dashboard's .onion.
func (c *Config) DashboardOnionSocket() string {
	if c.Dashboard.OnionSocket != "" {
		return c.Dashboard.OnionSocket
	}
	if network, addr, err := ParseControl(c.Tor.Control); err == nil && network == "unix" {
		return filepath.Join(filepath.Dir(addr), "dashboard.sock")
	}
	return "/run/onionpod/dashboard.sock"
}

// DashboardDir holds the dashboard's login key and its onion service's key and clients.
func (c *Config) DashboardDir() string { return filepath.Join(c.StateDir, "dashboard") }
