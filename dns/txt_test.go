package dns_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/dns/dnstest"
)

const challengeName = "_acme-challenge.blog.box.example."

func txt(name, value string) dns.Record { return dns.Record{Name: name, TXT: value} }

// TestServerTXT: the built-in server serves an ACME challenge's TXT record while it is set: the
// name then exists (another type is NODATA), and once withdrawn it is NXDOMAIN again; the
// address records beside it are untouched.
func TestServerTXT(t *testing.T) {
	dnstest.NeedDig(t)
	s, port := startServer(t, dns.ServerConfig{})
	dig := func(args ...string) string {
		return dnstest.DigT(t, append([]string{"@127.0.0.1", "-p", port, "+norec"}, args...)...)
	}
	addr := rec("blog.box.example", "2001:db8:1::10")
	out := dig(challengeName, "TXT")
	wantStatus(t, out, "NXDOMAIN", "qr aa")

	const value = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
	mustSet(t, s, addr, txt(challengeName, value), txt(challengeName, "second-value-of-a-wildcard-order"))
	out = dig(strings.ToUpper(challengeName), "TXT")
	wantStatus(t, out, "NOERROR", "qr aa")
	got := section(out, "ANSWER")
	if len(got) != 2 || !strings.Contains(strings.Join(got, "|"), `TXT "`+value+`"`) {
		t.Errorf("TXT answer %q", got)
	}
	out = dig(challengeName, "A")
	wantStatus(t, out, "NOERROR", "qr aa") // NODATA: the name exists
	if len(section(out, "ANSWER")) != 0 || len(section(out, "AUTHORITY")) != 1 {
		t.Errorf("NODATA expected (no answer, the SOA in authority):\n%s", out)
	}
	out = dig("blog.box.example", "TXT")
	wantStatus(t, out, "NOERROR", "qr aa")
	if len(section(out, "ANSWER")) != 0 {
		t.Errorf("the app's name has no TXT:\n%s", out)
	}

	mustSet(t, s, addr)
	wantStatus(t, dig(challengeName, "TXT"), "NXDOMAIN", "qr aa")
	if got := section(dig("blog.box.example", "AAAA"), "ANSWER"); len(got) != 1 {
		t.Errorf("the address went with the challenge: %q", got)
	}
	for _, bad := range []dns.Record{
		txt(challengeName, ""), txt(challengeName, `a"b`), txt(challengeName, "a\nb"),
		txt(challengeName, strings.Repeat("x", 256)), {Name: challengeName, TXT: "x", Addr: addr.Addr},
		txt("_acme-challenge.other.example.", "x"),
	} {
		if err := s.Set(t.Context(), []dns.Record{bad}); !errors.Is(err, dns.ErrBadInput) {
			t.Errorf("Set(%q): %v, want ErrBadInput", bad.String(), err)
		}
	}
}

// TestRFC2136TXT: a challenge's TXT record reaches a real BIND by signed update, and goes away.
func TestRFC2136TXT(t *testing.T) {
	dnstest.NeedDig(t)
	named := dnstest.New(t, dnstest.NamedOptions{})
	p := newPublisher(t, named, t.TempDir()+"/ledger.json", nil)
	dig := func() string {
		return dnstest.DigT(t, "@127.0.0.1", "-p", strconv.Itoa(named.Port()), "+short", challengeName, "TXT")
	}
	mustSet(t, p, rec("blog.box.example", "2001:db8:1::10"), txt(challengeName, "token-value"))
	if got := strings.TrimSpace(dig()); got != `"token-value"` {
		t.Fatalf("TXT at named: %q", got)
	}
	mustSet(t, p, rec("blog.box.example", "2001:db8:1::10"))
	if got := strings.TrimSpace(dig()); got != "" {
		t.Fatalf("TXT still at named: %q", got)
	}
	if got := lookup(t, named, "blog.box.example"); len(got) != 1 {
		t.Fatalf("the address: %q", got)
	}
}
