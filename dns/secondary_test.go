package dns_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/dns/dnstest"
)

// TestServerFeedsBINDSecondary: a real BIND9 configured as a secondary of the
// built-in server (TSIG) loads the zone by transfer, and after each Set the
// server's NOTIFY makes it transfer the new serial: the records a registrar's
// secondary would serve to the world follow the box.
func TestServerFeedsBINDSecondary(t *testing.T) {
	dnstest.NeedDig(t)
	key := dnstest.RandomKey("secondary-key.", "hmac-sha512")
	port, err := dnstest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	secAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s, srvPort := startServer(t, dns.ServerConfig{
		TSIGKeys:    []dns.TSIGKey{key},
		Secondaries: []dns.Secondary{{Addr: secAddr, KeyName: key.Name}},
	})
	mustSet(t, s, rec("blog.box.example", "2001:db8:1::10"))

	named := dnstest.New(t, dnstest.NamedOptions{
		Zone: zone, Port: port, Keys: []dns.TSIGKey{key},
		Primary: net.JoinHostPort("127.0.0.1", srvPort),
	})
	waitSecondary := func(name, want string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			out, _ := dnstest.Dig(context.Background(), "@127.0.0.1", "-p", strconv.Itoa(named.Port()), "+short", name, "AAAA")
			if strings.TrimSpace(out) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("secondary serves %s AAAA %q, want %q\nnamed log:\n%s", name, out, want, named.Log())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitSecondary("blog.box.example", "2001:db8:1::10")

	start := time.Now()
	mustSet(t, s, rec("blog.box.example", "2001:db8:1::99"), rec("wiki.box.example", "2001:db8:1::20"))
	waitSecondary("blog.box.example", "2001:db8:1::99")
	waitSecondary("wiki.box.example", "2001:db8:1::20")
	t.Logf("secondary caught up %v after Set (NOTIFY + transfer)", time.Since(start))
	ctx := context.Background()
	if got, err := named.Serial(ctx); err != nil || got != s.Serial() {
		t.Fatalf("secondary serial %d (%v), primary %d", got, err, s.Serial())
	}
	st := s.Status()
	if len(st.Secondaries) != 1 || st.Secondaries[0].Notified != s.Serial() || st.Secondaries[0].LastError != "" {
		t.Fatalf("secondary status %+v, serial %d", st.Secondaries, s.Serial())
	}

	mustSet(t, s) // everything removed
	waitSecondary("blog.box.example", "")
}
