package dns_test

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/dns/dnstest"
)

// diffQuery is one query of the differential corpus.
type diffQuery struct {
	name  string
	qtype uint16
	edns  int // EDNS UDP size; 0: no EDNS, -1: EDNS version 1
	do    bool
	tcp   bool
}

func (q diffQuery) String() string {
	return fmt.Sprintf("%s %s edns=%d do=%v tcp=%v", q.name, mdns.TypeToString[q.qtype], q.edns, q.do, q.tcp)
}

// diffCorpus: every name kind (apex, name server, app names with A and
// AAAA or only AAAA, an empty non-terminal, a name too big for UDP,
// NXDOMAIN below and beside names, out of zone, the parent), in several
// letter cases, with every type that behaves differently, without and with
// EDNS (sizes, DO, an unknown version), over UDP and TCP.
func diffCorpus() []diffQuery {
	names := []string{
		"box.example.", "BOX.example.", "ns1.box.example.", "blog.box.example.", "bLoG.BoX.eXaMpLe.",
		"wiki.apps.box.example.", "apps.box.example.", "APPS.box.example.", "big.box.example.",
		"nope.box.example.", "x.blog.box.example.", "a.b.c.box.example.", "NOPE.BOX.EXAMPLE.",
		"example.org.", "example.", "xbox.example.", "box.example.org.",
	}
	types := []uint16{
		mdns.TypeA, mdns.TypeAAAA, mdns.TypeANY, mdns.TypeSOA, mdns.TypeNS, mdns.TypeCNAME, mdns.TypeTXT,
		mdns.TypeMX, mdns.TypeSRV, mdns.TypePTR, mdns.TypeCAA, mdns.TypeDNSKEY, mdns.TypeHTTPS, 65280,
	}
	var out []diffQuery
	for _, n := range names {
		for _, t := range types {
			out = append(out, diffQuery{name: n, qtype: t}, diffQuery{name: n, qtype: t, edns: 1232, do: true})
		}
	}
	for _, n := range []string{"big.box.example.", "blog.box.example.", "nope.box.example.", "box.example."} {
		for _, t := range []uint16{mdns.TypeAAAA, mdns.TypeANY, mdns.TypeNS} {
			for _, size := range []int{0, 512, 1232, 4096, -1} {
				out = append(out, diffQuery{name: n, qtype: t, edns: size})
				out = append(out, diffQuery{name: n, qtype: t, edns: size, tcp: true})
			}
		}
	}
	return out
}

// diffView is what must agree between two servers' answers.
type diffView struct {
	Rcode             string
	AA, TC, QR, RD    bool
	Question          string
	EDNS, DO          bool
	Answer, Authority []string
}

func viewOf(r *mdns.Msg) diffView {
	v := diffView{Rcode: mdns.RcodeToString[r.Rcode], AA: r.Authoritative, TC: r.Truncated, QR: r.Response, RD: r.RecursionDesired}
	if len(r.Question) == 1 {
		v.Question = r.Question[0].String()
	}
	if o := r.IsEdns0(); o != nil {
		v.EDNS, v.DO = true, o.Do()
	}
	rrs := func(in []mdns.RR) []string {
		var out []string
		for _, rr := range in {
			rr = mdns.Copy(rr)
			rr.Header().Ttl = 0
			if soa, ok := rr.(*mdns.SOA); ok {
				soa.Serial = 0 // each server counts its own
			}
			out = append(out, strings.ToLower(rr.String())) // names compare without case
		}
		slices.Sort(out)
		return out
	}
	v.Answer, v.Authority = rrs(r.Answer), rrs(r.Ns)
	if v.TC {
		v.Answer = nil // a truncated answer may hold what fit: TC is what counts
	}
	return v
}

func exchangeView(t *testing.T, q diffQuery, addr string) diffView {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(q.name, q.qtype)
	m.Id = 0x4242
	m.RecursionDesired = true
	switch {
	case q.edns > 0:
		m.SetEdns0(uint16(q.edns), q.do)
	case q.edns < 0:
		m.SetEdns0(1232, q.do)
		m.IsEdns0().SetVersion(1)
	}
	c := &mdns.Client{Net: "udp", Timeout: 3 * time.Second, UDPSize: 65535}
	if q.tcp {
		c.Net = "tcp"
	}
	var r *mdns.Msg
	var err error
	for try := 0; try < 3; try++ {
		if r, _, err = c.Exchange(m, addr); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("%v at %s: %v", q, addr, err)
	}
	return viewOf(r)
}

// TestServerAgreesWithBIND is a differential test: BIND9's named and the
// built-in server hold the same zone (the apex, its name server and the
// same app records, published to named by RFC 2136), and every query of
// the corpus must get the same answer from both: RCODE, the AA, TC, QR
// and RD flags, the question as asked (letter case included), EDNS and
// its DO bit, the answer and authority sections (as sets, TTLs and the SOA
// serial aside; truncated answers by TC alone). Additional sections are
// not compared: named runs with minimal-responses and leaves NS glue out.
func TestServerAgreesWithBIND(t *testing.T) {
	dnstest.NeedDig(t)
	named := dnstest.New(t, dnstest.NamedOptions{})
	s, port := startServer(t, dns.ServerConfig{
		NS: []dns.NameServer{{Host: "ns1.box.example", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}},
	})
	recs := []dns.Record{
		rec("blog.box.example", "2001:db8:1::10"), rec("blog.box.example", "2001:db8:1::11"), rec("blog.box.example", "192.0.2.10"),
		rec("wiki.apps.box.example", "2001:db8:1::20"), rec("a.b.box.example", "2001:db8:1::30"),
	}
	for i := 1; i <= 60; i++ {
		recs = append(recs, rec("big.box.example", fmt.Sprintf("2001:db8:2::%x", i)))
	}
	mustSet(t, s, recs...)
	p := newPublisher(t, named, filepath.Join(t.TempDir(), "ledger.json"), nil)
	mustSet(t, p, recs...)

	builtin := "127.0.0.1:" + port
	bind := "127.0.0.1:" + strconv.Itoa(named.Port())
	corpus := diffCorpus()
	differ := 0
	for _, q := range corpus {
		want, got := exchangeView(t, q, bind), exchangeView(t, q, builtin)
		if fmt.Sprintf("%+v", want) != fmt.Sprintf("%+v", got) {
			differ++
			t.Errorf("%v:\n  BIND     %+v\n  built-in %+v", q, want, got)
		}
	}
	t.Logf("%d queries compared, %d differ", len(corpus), differ)
}
