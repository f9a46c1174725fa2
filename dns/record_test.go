package dns_test

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/onionpod/onionpod/dns"
)

func TestAppRecords(t *testing.T) {
	got, err := dns.AppRecords("Blog", "Box.Example",
		netip.MustParseAddr("2001:db8:1::10"),
		netip.MustParseAddr("fe80::1"),           // link-local: useless to others
		netip.MustParseAddr("::ffff:192.0.2.10"), // mapped: an A record
		netip.MustParseAddr("::1"),
		netip.MustParseAddr("2001:db8:1::10"), // duplicate
		netip.Addr{},
	)
	if err != nil {
		t.Fatal(err)
	}
	want := "[blog.box.example. A 192.0.2.10 blog.box.example. AAAA 2001:db8:1::10]"
	if fmt.Sprint(got) != want {
		t.Fatalf("AppRecords = %v, want %v", got, want)
	}
	if n, err := dns.AppName("wiki", "box.example."); err != nil || n != "wiki.box.example." {
		t.Fatalf("AppName = %q, %v", n, err)
	}
	for _, bad := range []string{"", "blog_1", "-x", "a.b", strings.Repeat("a", 64)} {
		if _, err := dns.AppRecords(bad, "box.example"); !errors.Is(err, dns.ErrBadInput) {
			t.Errorf("app %q: %v, want ErrBadInput", bad, err)
		}
	}
}

func TestServerConfigRefusesBadInput(t *testing.T) {
	key := dns.TSIGKey{Name: "k.", Secret: "c2VjcmV0"}
	for name, cfg := range map[string]dns.ServerConfig{
		"no zone":          {},
		"bad zone":         {Zone: "box..example"},
		"bad TTL":          {Zone: "box.example", TTL: 1},
		"bad listen":       {Zone: "box.example", Listen: []string{"53"}},
		"bad algorithm":    {Zone: "box.example", TSIGKeys: []dns.TSIGKey{{Name: "k.", Algorithm: "hmac-md5", Secret: "c2VjcmV0"}}},
		"bad secret":       {Zone: "box.example", TSIGKeys: []dns.TSIGKey{{Name: "k.", Secret: "not base64!"}}},
		"unknown key":      {Zone: "box.example", TSIGKeys: []dns.TSIGKey{key}, Secondaries: []dns.Secondary{{Addr: "192.0.2.1", KeyName: "other."}}},
		"duplicate key":    {Zone: "box.example", TSIGKeys: []dns.TSIGKey{key, key}},
		"bad contact":      {Zone: "box.example", Contact: "a.b@box.example"},
		"unusable NS addr": {Zone: "box.example", NS: []dns.NameServer{{Host: "ns1.box.example", Addrs: []netip.Addr{{}}}}},
	} {
		if _, err := dns.NewServer(cfg); !errors.Is(err, dns.ErrBadInput) {
			t.Errorf("%s: %v, want ErrBadInput", name, err)
		}
	}
}

func TestSetRefusesRecordsOutsideZone(t *testing.T) {
	s, err := dns.NewServer(dns.ServerConfig{Zone: "box.example"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []dns.Record{rec("blog.example.org", "2001:db8::1"), rec("example", "2001:db8::1"), {Name: "blog.box.example"}} {
		if err := s.Set(t.Context(), []dns.Record{r}); !errors.Is(err, dns.ErrBadInput) {
			t.Errorf("%v: %v, want ErrBadInput", r, err)
		}
	}
	if len(s.Records()) != 0 {
		t.Fatalf("a refused Set changed the records: %v", s.Records())
	}
}

// TestSecretsStayHidden: a TSIG key printed in any way, or in an error of
// a rejected configuration, never shows its secret.
func TestSecretsStayHidden(t *testing.T) {
	secret := "c3VwZXItc2VjcmV0LWtleS1tYXRlcmlhbA=="
	k := dns.TSIGKey{Name: "onionpod.", Algorithm: "hmac-sha512", Secret: secret}
	cfg := dns.RFC2136Config{Server: "192.0.2.1", Zone: "box.example", TSIG: k}
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %q", k, k, k, k, k), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg)} {
		if strings.Contains(s, secret) || strings.Contains(s, "c3VwZXIt") {
			t.Fatalf("secret printed: %s", s)
		}
	}
	if _, err := dns.NewRFC2136(cfg); err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("missing ledger path: %v", err)
	}
	k.Algorithm = "hmac-md5"
	if _, err := dns.NewServer(dns.ServerConfig{Zone: "box.example", TSIGKeys: []dns.TSIGKey{k}}); err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("bad algorithm: %v", err)
	}
}

// TestNamesRefuseControlCharacters: a name with a control character (a
// line break that a hand edit or a bad config adds) is bad input wherever
// it would reach zone data or a state file, never trimmed and accepted.
func TestNamesRefuseControlCharacters(t *testing.T) {
	s, err := dns.NewServer(dns.ServerConfig{Zone: "box.example"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"blog.box.example\n", "\tblog.box.example", "blog.box.example\r", "blog.box.example\u2028"} {
		err := s.Set(t.Context(), []dns.Record{{Name: name, Addr: netip.MustParseAddr("2001:db8::1")}})
		if !errors.Is(err, dns.ErrBadInput) || strings.Contains(err.Error(), name) {
			t.Errorf("record name %q: %v, want ErrBadInput without the value", name, err)
		}
	}
	for name, cfg := range map[string]dns.ServerConfig{
		"zone":    {Zone: "box.example\r\n"},
		"NS":      {Zone: "box.example", NS: []dns.NameServer{{Host: "ns1.box.example\n"}}},
		"contact": {Zone: "box.example", Contact: "hostmaster@box.example\n"},
		"key":     {Zone: "box.example", TSIGKeys: []dns.TSIGKey{{Name: "k.\n", Secret: "c2VjcmV0"}}},
	} {
		if _, err := dns.NewServer(cfg); !errors.Is(err, dns.ErrBadInput) {
			t.Errorf("%s with a line break: %v, want ErrBadInput", name, err)
		}
	}
	if len(s.Records()) != 0 {
		t.Fatalf("records %v", s.Records())
	}
}
