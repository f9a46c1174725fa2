package probe

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// ZoneResolver asks the zone's authoritative server directly (the built-in server, or the RFC
// 2136 primary), so a probe checks what the box published, not what some cache remembers.
type ZoneResolver struct {
	// Server is "host:port" of the authoritative server.
	Server string
}

// Lookup asks Server for name's AAAA (v6) or A records.
func (r ZoneResolver) Lookup(ctx context.Context, name string, v6 bool) ([]netip.Addr, error) {
	qtype := dns.TypeA
	if v6 {
		qtype = dns.TypeAAAA
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(strings.ToLower(name)), qtype)
	m.RecursionDesired = false
	c := &dns.Client{Net: "udp"}
	in, _, err := c.ExchangeContext(ctx, m, r.Server)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, m, r.Server)
	}
	if err != nil {
		return nil, fmt.Errorf("asking %s for %s: %w", r.Server, name, err)
	}
	if in.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("%s answers %s for %s", r.Server, dns.RcodeToString[in.Rcode], name)
	}
	var out []netip.Addr
	for _, rr := range in.Answer {
		switch rr := rr.(type) {
		case *dns.AAAA:
			if a, ok := netip.AddrFromSlice(rr.AAAA); ok && v6 {
				out = append(out, a)
			}
		case *dns.A:
			if a, ok := netip.AddrFromSlice(rr.A.To4()); ok && !v6 {
				out = append(out, a)
			}
		}
	}
	return out, nil
}
