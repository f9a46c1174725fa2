package dns_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/dns/dnstest"
	"github.com/onionpod/onionpod/dns/internal/multihome"
)

const zone = "box.example."

func startServer(t *testing.T, cfg dns.ServerConfig) (*dns.Server, string) {
	t.Helper()
	if cfg.Zone == "" {
		cfg.Zone = zone
	}
	if len(cfg.Listen) == 0 {
		cfg.Listen = []string{"127.0.0.1:0"}
	}
	s, err := dns.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	_, port, _ := net.SplitHostPort(s.Addrs()[0].String())
	return s, port
}

func mustSet(t *testing.T, s interface {
	Set(context.Context, []dns.Record) error
}, recs ...dns.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Set(ctx, recs); err != nil {
		t.Fatal(err)
	}
}

func rec(name, addr string) dns.Record {
	return dns.Record{Name: name, Addr: netip.MustParseAddr(addr)}
}

// answers extracts the answer section lines of dig output as "name type data".
func section(out, name string) []string {
	var lines []string
	in := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, ";; "+name+" SECTION:"):
			in = true
		case in && strings.TrimSpace(l) == "":
			in = false
		case in:
			f := strings.Fields(l)
			if len(f) >= 5 {
				lines = append(lines, f[0]+" "+f[3]+" "+strings.Join(f[4:], " "))
			}
		}
	}
	return lines
}

func wantStatus(t *testing.T, out, status, flags string) {
	t.Helper()
	if !strings.Contains(out, "status: "+status+",") {
		t.Errorf("want status %s:\n%s", status, out)
	}
	m := regexp.MustCompile(`;; flags: ([a-z ]*);`).FindStringSubmatch(out)
	if m == nil || m[1] != flags {
		t.Errorf("want flags %q:\n%s", flags, out)
	}
}

// TestServerAnswersDig queries the built-in server with the real dig: the
// answers a user or a resolver sees for the zone's names.
func TestServerAnswersDig(t *testing.T) {
	dnstest.NeedDig(t)
	s, port := startServer(t, dns.ServerConfig{
		NS: []dns.NameServer{{Host: "ns1.box.example", Addrs: []netip.Addr{netip.MustParseAddr("2001:db8::53")}}},
	})
	mustSet(t, s,
		rec("blog.box.example", "2001:db8:1::10"),
		rec("blog.box.example", "2001:db8:1::11"),
		rec("blog.box.example", "192.0.2.10"),
		rec("wiki.apps.box.example", "2001:db8:1::20"),
	)
	dig := func(args ...string) string {
		return dnstest.DigT(t, append([]string{"@127.0.0.1", "-p", port}, args...)...)
	}

	out := dig("blog.box.example", "AAAA")
	wantStatus(t, out, "NOERROR", "qr aa rd") // RD echoed, RA never set
	if got := section(out, "ANSWER"); strings.Join(got, "|") != "blog.box.example. AAAA 2001:db8:1::10|blog.box.example. AAAA 2001:db8:1::11" {
		t.Errorf("AAAA answer %q", got)
	}
	if !strings.Contains(out, "60\tIN\tAAAA") {
		t.Errorf("TTL 60 expected:\n%s", out)
	}
	out = dig("+norec", "BLOG.Box.EXAMPLE", "A")
	wantStatus(t, out, "NOERROR", "qr aa")
	if !strings.Contains(out, ";BLOG.Box.EXAMPLE.\t\tIN\tA") { // the question keeps the client's case
		t.Errorf("question case not kept:\n%s", out)
	}
	if got := section(out, "ANSWER"); len(got) != 1 || !strings.HasSuffix(got[0], "A 192.0.2.10") {
		t.Errorf("A answer %q", got)
	}

	out = dig("box.example", "SOA")
	wantStatus(t, out, "NOERROR", "qr aa rd")
	soa := section(out, "ANSWER")
	if len(soa) != 1 || !strings.HasPrefix(soa[0], "box.example. SOA ns1.box.example. hostmaster.box.example. "+strconv.FormatUint(uint64(s.Serial()), 10)+" ") {
		t.Errorf("SOA %q, serial %d", soa, s.Serial())
	}
	out = dig("box.example", "NS")
	if got := section(out, "ANSWER"); len(got) != 1 || got[0] != "box.example. NS ns1.box.example." {
		t.Errorf("NS %q", got)
	}
	if got := section(out, "ADDITIONAL"); len(got) != 1 || got[0] != "ns1.box.example. AAAA 2001:db8::53" {
		t.Errorf("NS glue %q", got)
	}

	// NXDOMAIN and NODATA carry the SOA in the authority section.
	for _, q := range [][]string{{"nope.box.example", "AAAA", "NXDOMAIN"}, {"x.blog.box.example", "A", "NXDOMAIN"},
		{"blog.box.example", "TXT", "NOERROR"}, {"apps.box.example", "AAAA", "NOERROR"}} {
		out = dig(q[0], q[1])
		wantStatus(t, out, q[2], "qr aa rd")
		if len(section(out, "ANSWER")) != 0 {
			t.Errorf("%s %s: unexpected answer:\n%s", q[0], q[1], out)
		}
		if auth := section(out, "AUTHORITY"); len(auth) != 1 || !strings.HasPrefix(auth[0], "box.example. SOA ") {
			t.Errorf("%s %s: authority %q", q[0], q[1], auth)
		}
	}

	// Outside the zone, and other classes: REFUSED, not authoritative.
	out = dig("example.org", "A")
	wantStatus(t, out, "REFUSED", "qr rd")
	out = dig("example.", "A") // the parent of the zone
	wantStatus(t, out, "REFUSED", "qr rd")
	out = dig("+norec", "version.bind", "CH", "TXT")
	wantStatus(t, out, "REFUSED", "qr")

	// EDNS: the OPT record is answered with our UDP size; without EDNS none.
	out = dig("blog.box.example", "AAAA")
	if !strings.Contains(out, "; EDNS: version: 0, flags:; udp: 1232") {
		t.Errorf("EDNS OPT not answered:\n%s", out)
	}
	out = dig("+noedns", "blog.box.example", "AAAA")
	if strings.Contains(out, "OPT PSEUDOSECTION") || len(section(out, "ANSWER")) != 2 {
		t.Errorf("answer without EDNS:\n%s", out)
	}
	out = dig("+edns=1", "+noednsnegotiation", "blog.box.example", "AAAA")
	wantStatus(t, out, "BADVERS", "qr rd")

	// TCP gives the same answer.
	out = dig("+tcp", "blog.box.example", "AAAA")
	wantStatus(t, out, "NOERROR", "qr aa rd")
	if len(section(out, "ANSWER")) != 2 {
		t.Errorf("TCP answer:\n%s", out)
	}
	out = dig("+tcp", "nope.box.example", "AAAA")
	wantStatus(t, out, "NXDOMAIN", "qr aa rd")
}

// TestServerTruncation: an answer larger than the client's UDP size comes
// back with TC over UDP, and complete over TCP (dig retries by itself).
func TestServerTruncation(t *testing.T) {
	dnstest.NeedDig(t)
	s, port := startServer(t, dns.ServerConfig{})
	var recs []dns.Record
	for i := 1; i <= 60; i++ {
		recs = append(recs, rec("big.box.example", fmt.Sprintf("2001:db8:2::%x", i)))
	}
	mustSet(t, s, recs...)
	out := dnstest.DigT(t, "@127.0.0.1", "-p", port, "+ignore", "+noedns", "big.box.example", "AAAA")
	wantStatus(t, out, "NOERROR", "qr aa tc rd")
	if len(section(out, "ANSWER")) != 0 {
		t.Errorf("truncated answer should be empty:\n%s", out)
	}
	out = dnstest.DigT(t, "@127.0.0.1", "-p", port, "+ignore", "+bufsize=4096", "big.box.example", "AAAA")
	wantStatus(t, out, "NOERROR", "qr aa tc rd") // 60*28 bytes > 1232, our limit
	out = dnstest.DigT(t, "@127.0.0.1", "-p", port, "big.box.example", "AAAA")
	if n := len(section(out, "ANSWER")); n != 60 || !strings.Contains(out, "(TCP)") {
		t.Errorf("retry over TCP gave %d answers:\n%s", n, out)
	}
}

// TestServerAXFR: transfers are refused without TSIG, with an unknown key
// or a wrong secret, and served, signed, to a configured secondary's key,
// also when the zone needs several messages.
func TestServerAXFR(t *testing.T) {
	dnstest.NeedDig(t)
	key := dnstest.RandomKey("xfr.box.example.", "hmac-sha256")
	other := dnstest.RandomKey("other.", "hmac-sha512")
	s, port := startServer(t, dns.ServerConfig{
		TSIGKeys:    []dns.TSIGKey{key, other},
		Secondaries: []dns.Secondary{{Addr: "127.0.0.1:9", KeyName: key.Name}},
	})
	var recs []dns.Record
	for i := 0; i < 1500; i++ {
		recs = append(recs, rec(fmt.Sprintf("app%d.box.example", i), fmt.Sprintf("2001:db8:3::%x", i+1)))
	}
	mustSet(t, s, recs...)
	ctx := context.Background()
	axfr := func(args ...string) (string, error) {
		return dnstest.Dig(ctx, append([]string{"@127.0.0.1", "-p", port, "+tries=1", "+time=3"}, append(args, "box.example", "AXFR")...)...)
	}

	for name, args := range map[string][]string{
		"no key":                nil,
		"unknown key":           {"-y", "hmac-sha256:stranger.:" + key.Secret},
		"wrong secret":          {"-y", "hmac-sha256:" + key.Name + ":" + other.Secret},
		"not a secondary's key": {"-y", "hmac-sha512:" + other.Name + ":" + other.Secret},
	} {
		out, err := axfr(args...)
		if !strings.Contains(out, "Transfer failed") && err == nil {
			t.Errorf("%s: transfer not refused:\n%s", name, out)
		}
		if strings.Contains(out, "app1.box.example") {
			t.Errorf("%s: zone data leaked:\n%s", name, out)
		}
	}

	out, err := axfr("-y", "hmac-sha256:"+key.Name+":"+key.Secret)
	if err != nil {
		t.Fatal(err)
	}
	// SOA, NS, 1500 records, SOA.
	if !strings.Contains(out, "XFR size: 1503 records") {
		t.Errorf("signed AXFR incomplete:\n%.2000s", out)
	}
	if m := regexp.MustCompile(`messages (\d+)`).FindStringSubmatch(out); m == nil || m[1] == "1" {
		t.Errorf("expected several messages (each signed and verified by dig):\n%s", out[len(out)-300:])
	}
	if strings.Contains(out, "tsig verify failure") || strings.Contains(out, "TSIG error") {
		t.Errorf("TSIG failure:\n%s", out[len(out)-500:])
	}
	// AXFR over UDP is refused even with the key (dig always uses TCP).
	m := new(mdns.Msg)
	m.SetAxfr("box.example.")
	m.SetTsig(key.Name, mdns.HmacSHA256, 300, time.Now().Unix())
	c := &mdns.Client{Net: "udp", TsigSecret: map[string]string{key.Name: key.Secret}}
	r, _, err := c.Exchange(m, "127.0.0.1:"+port)
	if err != nil || r.Rcode != mdns.RcodeRefused || len(r.Answer) != 0 {
		t.Errorf("AXFR over UDP: %v %v", err, r)
	}
}

// TestServerStateKept: the serial only goes forward and, with the records,
// survives a restart of the server (a new process on the same state dir).
func TestServerStateKept(t *testing.T) {
	dnstest.NeedDig(t)
	dir := t.TempDir()
	s, port := startServer(t, dns.ServerConfig{StateDir: dir})
	first := s.Serial()
	mustSet(t, s, rec("blog.box.example", "2001:db8::1"))
	second := s.Serial()
	if second <= first {
		t.Fatalf("serial %d after change, was %d", second, first)
	}
	mustSet(t, s, rec("blog.box.example.", "2001:db8::1")) // the same set: no change
	if s.Serial() != second {
		t.Fatalf("unchanged Set bumped the serial to %d", s.Serial())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_ = port

	s2, port2 := startServer(t, dns.ServerConfig{StateDir: dir})
	if s2.Serial() != second {
		t.Fatalf("serial after restart %d, want %d", s2.Serial(), second)
	}
	out := dnstest.DigT(t, "@127.0.0.1", "-p", port2, "+short", "box.example", "SOA")
	if f := strings.Fields(out); len(f) < 3 || f[2] != strconv.FormatUint(uint64(second), 10) {
		t.Fatalf("dig SOA after restart: %q, want serial %d", out, second)
	}
	if out := dnstest.DigT(t, "@127.0.0.1", "-p", port2, "+short", "blog.box.example", "AAAA"); strings.TrimSpace(out) != "2001:db8::1" {
		t.Fatalf("record not kept across restart: %q", out)
	}
	mustSet(t, s2)
	if s2.Serial() <= second || len(s2.Records()) != 0 {
		t.Fatalf("after removing everything: serial %d, records %v", s2.Serial(), s2.Records())
	}
	if out := dnstest.DigT(t, "@127.0.0.1", "-p", port2, "blog.box.example", "AAAA"); !strings.Contains(out, "NXDOMAIN") {
		t.Fatalf("removed record still served:\n%s", out)
	}

	// A configuration change of the apex (here the TTL) also moves the serial.
	_ = s2.Close()
	s3, _ := startServer(t, dns.ServerConfig{StateDir: dir, TTL: 300 * time.Second})
	if s3.Serial() <= s2.Serial() {
		t.Fatalf("TTL change kept serial %d", s3.Serial())
	}
}

// TestServerListensOnBothFamilies: one server on IPv6 and IPv4 loopback,
// each address serving UDP and TCP, and Status naming where it serves.
func TestServerListensOnBothFamilies(t *testing.T) {
	dnstest.NeedDig(t)
	s, _ := startServer(t, dns.ServerConfig{Listen: []string{"[::1]:0", "127.0.0.1:0"}, UDPSockets: 2})
	mustSet(t, s, rec("blog.box.example", "2001:db8::1"))
	addrs := s.Addrs()
	if len(addrs) != 4 {
		t.Fatalf("Addrs = %v, want UDP and TCP for two addresses", addrs)
	}
	for _, a := range addrs {
		host, port, _ := net.SplitHostPort(a.String())
		args := []string{"@" + host, "-p", port, "+short", "blog.box.example", "AAAA"}
		if a.Network() == "tcp" {
			args = append(args, "+tcp")
		}
		if out := dnstest.DigT(t, args...); strings.TrimSpace(out) != "2001:db8::1" {
			t.Errorf("%s %s: %q", a.Network(), a, out)
		}
	}
	st := s.Status()
	if st.Mode != dns.ModeBuiltin || st.Zone != zone || len(st.Servers) != 4 || st.Serial != s.Serial() || len(st.Published) != 1 {
		t.Fatalf("status %+v", st)
	}
}

// TestServerAnswersFromQueriedAddress: the server on the wildcard address
// (the default ":53" form) of a multi-homed host answers dig at each of the
// host's addresses (two global IPv6 like a static and a SLAAC one, two
// link-local, two IPv4 reached through the dual-stack socket) from the
// address dig asked: dig, like every resolver, drops an answer from
// another address ("reply from unexpected source"). TCP too.
func TestServerAnswersFromQueriedAddress(t *testing.T) {
	dnstest.NeedDig(t)
	mh := multihome.New(t)
	s, err := dns.NewServer(dns.ServerConfig{Zone: zone, Listen: []string{":0"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := mh.Do(mh.Server, func() error { return s.Start(context.Background()) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	mustSet(t, s, rec("blog.box.example", "2001:db8::1"))
	_, port, _ := net.SplitHostPort(s.Addrs()[0].String())
	addrs := append(append(mh.V6[:], mh.LinkLocal[:]...), mh.V4[:]...)
	for _, a := range addrs {
		for _, tcp := range []string{"+notcp", "+tcp"} {
			var out string
			err := mh.Do(mh.Client, func() (err error) {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				out, err = dnstest.Dig(ctx, "@"+a.String(), "-p", port, "+tries=1", "+time=2", "+short", tcp, "blog.box.example", "AAAA")
				return err
			})
			if err != nil || strings.TrimSpace(out) != "2001:db8::1" {
				t.Errorf("dig @%s %s: %q %v", a, tcp, out, err)
			}
		}
	}
}
