package dns_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/dns/dnstest"
)

// TestServerCountsQueries: real queries of each kind, over UDP and TCP, are
// counted by the response code they were answered with; a request left
// unanswered (a response) is not counted.
func TestServerCountsQueries(t *testing.T) {
	key := dnstest.RandomKey("xfr.box.example.", "hmac-sha256")
	s, port := startServer(t, dns.ServerConfig{
		TSIGKeys:    []dns.TSIGKey{key},
		Secondaries: []dns.Secondary{{Addr: "127.0.0.1:9", KeyName: key.Name}},
	})
	mustSet(t, s, rec("blog.box.example", "2001:db8:1::10"), rec("blog.box.example", "192.0.2.10"))
	addr := net.JoinHostPort("127.0.0.1", port)
	if got := s.QueryCounts(); !maps.Equal(got, map[string]uint64{"NOERROR": 0, "FORMERR": 0, "SERVFAIL": 0,
		"NXDOMAIN": 0, "NOTIMP": 0, "REFUSED": 0, "NOTAUTH": 0, "BADVERS": 0}) {
		t.Errorf("before any query: %v", got)
	}

	ask := func(network string, m *mdns.Msg, secret map[string]string, want int) {
		t.Helper()
		c := &mdns.Client{Net: network, Timeout: 5 * time.Second, TsigSecret: secret}
		r, _, err := c.Exchange(m, addr)
		if r == nil {
			t.Fatalf("%s %v: no answer: %v", network, m.Question, err)
		}
		if r.Rcode != want {
			t.Errorf("%s %v: %s, want %s", network, m.Question, mdns.RcodeToString[r.Rcode], mdns.RcodeToString[want])
		}
	}
	query := func(name string, qtype uint16) *mdns.Msg {
		m := new(mdns.Msg)
		m.SetQuestion(name, qtype)
		return m
	}
	withEDNS := func(m *mdns.Msg, version uint8) *mdns.Msg {
		m.SetEdns0(1232, false)
		m.IsEdns0().SetVersion(version)
		return m
	}
	signed := func(m *mdns.Msg, name string) *mdns.Msg {
		m.SetTsig(name, mdns.HmacSHA256, 300, time.Now().Unix())
		return m
	}

	// A response sent to the server is dropped, uncounted.
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	resp := query("blog.box.example.", mdns.TypeA)
	resp.Response = true
	if b, err := resp.Pack(); err == nil {
		c.Write(b)
	}
	c.Close()

	for _, net := range []string{"udp", "tcp"} {
		ask(net, query("blog.box.example.", mdns.TypeAAAA), nil, mdns.RcodeSuccess)
		ask(net, withEDNS(query("BLOG.box.example.", mdns.TypeA), 0), nil, mdns.RcodeSuccess)
		ask(net, query("blog.box.example.", mdns.TypeTXT), nil, mdns.RcodeSuccess) // NODATA
		ask(net, query("nope.box.example.", mdns.TypeAAAA), nil, mdns.RcodeNameError)
		ask(net, withEDNS(query("nope.box.example.", mdns.TypeA), 0), nil, mdns.RcodeNameError)
		ask(net, query("example.org.", mdns.TypeA), nil, mdns.RcodeRefused)
		ask(net, withEDNS(query("blog.box.example.", mdns.TypeA), 1), nil, mdns.RcodeBadVers)
		two := query("blog.box.example.", mdns.TypeA)
		two.Question = append(two.Question, two.Question[0])
		ask(net, two, nil, mdns.RcodeFormatError)
		notify := query("box.example.", mdns.TypeSOA)
		notify.Opcode = mdns.OpcodeNotify
		ask(net, notify, nil, mdns.RcodeNotImplemented)
		update := new(mdns.Msg)
		update.SetUpdate("box.example.")
		ask(net, update, nil, mdns.RcodeRefused)
		// A signed query with a key the server does not have: NOTAUTH
		// (BADKEY in the TSIG record).
		stranger := dnstest.RandomKey("stranger.", "hmac-sha256")
		ask(net, signed(query("blog.box.example.", mdns.TypeA), stranger.Name), map[string]string{stranger.Name: stranger.Secret}, mdns.RcodeNotAuth)
		// A signed query with a secondary's key: the hot path's answer, signed.
		ask(net, signed(withEDNS(query("blog.box.example.", mdns.TypeA), 0), key.Name), map[string]string{key.Name: key.Secret}, mdns.RcodeSuccess)
		ask(net, signed(withEDNS(query("blog.box.example.", mdns.TypeA), 1), key.Name), map[string]string{key.Name: key.Secret}, mdns.RcodeBadVers)
	}
	// A zone transfer (several messages would count once).
	tr := &mdns.Transfer{TsigSecret: map[string]string{key.Name: key.Secret}}
	axfr := new(mdns.Msg)
	axfr.SetAxfr("box.example.")
	envs, err := tr.In(signed(axfr, key.Name), addr)
	if err != nil {
		t.Fatal(err)
	}
	for e := range envs {
		if e.Error != nil {
			t.Fatal(e.Error)
		}
	}

	want := map[string]uint64{"NOERROR": 2*4 + 1, "NXDOMAIN": 2 * 2, "REFUSED": 2 * 2, "BADVERS": 2 * 2, "FORMERR": 2,
		"NOTIMP": 2, "NOTAUTH": 2, "SERVFAIL": 0}
	if got := s.QueryCounts(); !maps.Equal(got, want) {
		t.Errorf("QueryCounts:\n got %v\nwant %v", got, want)
	}
}

// TestRFC2136CountsUpdates: an update a real BIND applies counts as ok, one
// it refuses (a wrong TSIG secret) and one it never answers (down) as
// failed.
func TestRFC2136CountsUpdates(t *testing.T) {
	dnstest.NeedDig(t)
	named := dnstest.New(t, dnstest.NamedOptions{})
	ctx := context.Background()

	p := newPublisher(t, named, filepath.Join(t.TempDir(), "ledger.json"), nil)
	mustSet(t, p, rec("blog.box.example", "2001:db8:1::10"))
	mustSet(t, p, rec("blog.box.example", "2001:db8:1::11"))
	if ok, failed := p.UpdateCounts(); ok != 2 || failed != 0 {
		t.Errorf("after two applied updates: ok %d, failed %d; want 2, 0", ok, failed)
	}

	wrong := newPublisher(t, named, filepath.Join(t.TempDir(), "ledger.json"), func(c *dns.RFC2136Config) {
		c.TSIG = dnstest.RandomKey(named.Key().Name, "hmac-sha256")
	})
	if err := wrong.Set(ctx, []dns.Record{rec("wiki.box.example", "2001:db8:1::20")}); !errors.Is(err, dns.ErrRejected) {
		t.Fatalf("Set with a wrong secret: %v", err)
	}
	if ok, failed := wrong.UpdateCounts(); ok != 0 || failed != 1 {
		t.Errorf("after a refused update: ok %d, failed %d; want 0, 1", ok, failed)
	}

	if err := named.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.Set(ctx, []dns.Record{rec("blog.box.example", "2001:db8:1::12")}); !errors.Is(err, dns.ErrPending) {
		t.Fatalf("Set with the server down: %v", err)
	}
	if ok, failed := p.UpdateCounts(); ok != 2 || failed != 1 {
		t.Errorf("after an unanswered update: ok %d, failed %d; want 2, 1", ok, failed)
	}
}

// ExampleServer_QueryCounts shows the counters a scrape reads.
func ExampleServer_QueryCounts() {
	s, err := dns.NewServer(dns.ServerConfig{Zone: "box.example", Listen: []string{"127.0.0.1:0"}})
	if err != nil {
		panic(err)
	}
	if err := s.Start(context.Background()); err != nil {
		panic(err)
	}
	defer s.Close()
	c := new(mdns.Client)
	m := new(mdns.Msg)
	m.SetQuestion("nope.box.example.", mdns.TypeAAAA)
	if _, _, err := c.Exchange(m, s.Addrs()[0].String()); err != nil {
		panic(err)
	}
	counts := s.QueryCounts()
	fmt.Println(counts["NXDOMAIN"], counts["NOERROR"])
	// Output: 1 0
}
