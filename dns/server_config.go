package dns

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/onionpod/onionpod/dns/internal/udpbatch"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
)

// ServerConfig configures the built-in authoritative server.
type ServerConfig struct {
	// Zone is the apex the server is authoritative for, e.g. "box.example".
	Zone string
	// NS are the zone's name servers. Default: "ns1.ZONE" (without
	// address records: give Addrs when the name server is inside the zone
	// and must be found by others).
	NS []NameServer
	// Contact is the SOA mailbox, "hostmaster@box.example" or
	// "hostmaster.box.example." (default hostmaster.ZONE).
	Contact string
	// Listen are the UDP and TCP addresses to serve on. Default "[::]:53"
	// (both families). Port 0 lets the kernel choose; see Addrs.
	Listen []string
	// TTL of every record and of negative answers (default 60s).
	TTL time.Duration
	// StateDir keeps the serial and the records across restarts (file
	// zone.json, written atomically). Empty: nothing is kept.
	StateDir string
	// TSIGKeys are the keys secondaries sign with.
	TSIGKeys []TSIGKey
	// Secondaries may transfer the zone (AXFR, or IXFR answered in full,
	// over TCP, signed with their key) and get a NOTIFY on every change.
	Secondaries []Secondary
	// UDPSockets is the number of UDP sockets per listen address, bound
	// with SO_REUSEPORT, each served by its own thread. Default: one per
	// CPU the process may run on, each thread bound to its CPU, and each
	// datagram steered to the socket of the CPU that processed it.
	UDPSockets int
}

// NameServer is an NS record of the zone, with the addresses served for it
// when its host name is inside the zone (glue).
type NameServer struct {
	Host  string       `json:"host"`
	Addrs []netip.Addr `json:"addrs,omitempty"`
}

// Secondary is a server that copies the zone from this one.
type Secondary struct {
	// Addr is where NOTIFY goes: "host:port" or "host" (port 53).
	Addr string `json:"addr"`
	// KeyName names one of ServerConfig.TSIGKeys. Transfers must be
	// signed with it; the NOTIFY messages are signed with it too.
	KeyName string `json:"key_name"`
}

type secondary struct {
	addr string
	key  tsigKey
}

// serverSetup is a validated, canonical configuration.
type serverSetup struct {
	zone        zoneData
	listen      []string
	stateDir    string
	keys        map[string]tsigKey
	secondaries []secondary
	udpSockets  int
}

const defaultTTL = 60 * time.Second

func (c ServerConfig) setup() (*serverSetup, error) {
	zone, err := canonicalZone(c.Zone)
	if err != nil {
		return nil, err
	}
	ttl := c.TTL
	if ttl == 0 {
		ttl = defaultTTL
	}
	if ttl < time.Second || ttl > 7*24*time.Hour {
		return nil, errkind.BadInputf("dns: TTL %s: want 1s to 168h", ttl)
	}
	s := &serverSetup{
		zone:       zoneData{zone: zone, ttl: uint32(ttl / time.Second)},
		stateDir:   c.StateDir,
		keys:       map[string]tsigKey{},
		udpSockets: c.UDPSockets,
	}
	ns := c.NS
	if len(ns) == 0 {
		ns = []NameServer{{Host: "ns1." + zone}}
	}
	for i, n := range ns {
		host, err := canonicalName(fmt.Sprintf("NS[%d]", i), n.Host)
		if err != nil {
			return nil, err
		}
		out := NameServer{Host: host}
		for _, a := range n.Addrs {
			a = a.Unmap()
			if !a.IsValid() || a.IsUnspecified() || a.Zone() != "" {
				return nil, errkind.BadInputf("dns: NS %s: address %q not usable", host, a)
			}
			out.Addrs = append(out.Addrs, a)
		}
		s.zone.ns = append(s.zone.ns, out)
	}
	if s.zone.contact, err = contactName(c.Contact, zone); err != nil {
		return nil, err
	}
	s.listen = c.Listen
	if len(s.listen) == 0 {
		s.listen = []string{"[::]:53"}
	}
	for _, l := range s.listen {
		if _, _, err := net.SplitHostPort(l); err != nil {
			return nil, errkind.BadInputf("dns: listen address %q: want host:port", l)
		}
	}
	for _, k := range c.TSIGKeys {
		rk, err := k.resolve()
		if err != nil {
			return nil, err
		}
		if _, dup := s.keys[rk.name]; dup {
			return nil, errkind.BadInputf("dns: TSIG key %s: defined twice", rk.name)
		}
		s.keys[rk.name] = rk
	}
	for _, sec := range c.Secondaries {
		addr, err := withDefaultPort(sec.Addr)
		if err != nil {
			return nil, err
		}
		name, err := canonicalName("secondary "+addr+" key", sec.KeyName)
		if err != nil {
			return nil, err
		}
		k, ok := s.keys[name]
		if !ok {
			return nil, errkind.BadInputf("dns: secondary %s: key %s is not among the TSIG keys", addr, name)
		}
		s.secondaries = append(s.secondaries, secondary{addr: addr, key: k})
	}
	if s.udpSockets < 0 || s.udpSockets > udpbatch.MaxSockets {
		return nil, errkind.BadInputf("dns: UDPSockets %d: want 0 to %d", s.udpSockets, udpbatch.MaxSockets)
	}
	return s, nil
}

// contactName turns "user@domain" or a domain name into the SOA RNAME.
func contactName(contact, zone string) (string, error) {
	if contact == "" {
		return "hostmaster." + strings.TrimPrefix(zone, "."), nil
	}
	if user, domain, ok := strings.Cut(contact, "@"); ok {
		if !names.IsLabel(user) {
			return "", errkind.BadInputf("dns: contact %q: the mailbox must be a plain label", contact)
		}
		contact = user + "." + domain
	}
	return canonicalName("contact", contact)
}

// withDefaultPort adds port 53 to a bare host.
func withDefaultPort(addr string) (string, error) {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr, nil
	}
	host := strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	if host == "" {
		return "", errkind.BadInputf("dns: address %q: want host or host:port", addr)
	}
	return net.JoinHostPort(host, "53"), nil
}

// fingerprint identifies the apex data, so a configuration change (TTL,
// name servers, contact) bumps the serial like a record change does.
func (z *zoneData) fingerprint() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s|%s|%d", z.zone, z.contact, z.ttl)
	for _, n := range z.ns {
		fmt.Fprintf(h, "|%s", n.Host)
		for _, a := range n.Addrs {
			fmt.Fprintf(h, ",%s", a)
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}
