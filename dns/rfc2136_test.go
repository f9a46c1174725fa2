package dns_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/dns/dnstest"
)

func newPublisher(t *testing.T, named *dnstest.Named, ledger string, mod func(*dns.RFC2136Config)) *dns.RFC2136 {
	t.Helper()
	cfg := dns.RFC2136Config{
		Server: named.Addr(), Zone: named.Zone(), TSIG: named.Key(),
		LedgerPath: ledger, RetryMax: 300 * time.Millisecond, Timeout: 2 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := dns.NewRFC2136(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// lookup asks named (with dig) for a name's A and AAAA records.
func lookup(t *testing.T, named *dnstest.Named, name string) []string {
	t.Helper()
	var out []string
	for _, typ := range []string{"A", "AAAA"} {
		res := dnstest.DigT(t, "@127.0.0.1", "-p", strconv.Itoa(named.Port()), "+short", name, typ)
		out = append(out, strings.Fields(res)...)
	}
	slices.Sort(out)
	return out
}

func waitLookup(t *testing.T, named *dnstest.Named, name string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := lookup(t, named, name)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s at named: %q, want %q", name, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRFC2136AppearChangeDisappear: records published to a real BIND9 by
// signed dynamic update appear, follow an address change, and are removed.
func TestRFC2136AppearChangeDisappear(t *testing.T) {
	dnstest.NeedDig(t)
	named := dnstest.New(t, dnstest.NamedOptions{})
	ledger := filepath.Join(t.TempDir(), "state", "dns-ledger.json")
	p := newPublisher(t, named, ledger, nil)

	mustSet(t, p, rec("blog.box.example", "2001:db8:1::10"), rec("blog.box.example", "192.0.2.10"), rec("wiki.box.example", "2001:db8:1::20"))
	if got := lookup(t, named, "blog.box.example"); !slices.Equal(got, []string{"192.0.2.10", "2001:db8:1::10"}) {
		t.Fatalf("blog after first Set: %q", got)
	}
	if out := dnstest.DigT(t, "@127.0.0.1", "-p", strconv.Itoa(named.Port()), "blog.box.example", "AAAA"); !strings.Contains(out, "\t60\tIN\tAAAA") {
		t.Errorf("TTL 60 expected:\n%s", out)
	}
	mustSet(t, p, rec("blog.box.example", "2001:db8:1::99"), rec("wiki.box.example", "2001:db8:1::20"))
	if got := lookup(t, named, "blog.box.example"); !slices.Equal(got, []string{"2001:db8:1::99"}) {
		t.Fatalf("blog after address change: %q", got)
	}
	st := p.Status()
	if st.Mode != dns.ModeRFC2136 || st.Pending || st.Rejected || len(st.Published) != 2 || st.Servers[0] != named.Addr() {
		t.Fatalf("status %+v", st)
	}
	mustSet(t, p) // the app is gone: nothing published
	if got := lookup(t, named, "blog.box.example"); len(got) != 0 {
		t.Fatalf("blog after removal: %q", got)
	}
	if got := lookup(t, named, "wiki.box.example"); len(got) != 0 {
		t.Fatalf("wiki after removal: %q", got)
	}
	if got := lookup(t, named, "ns1.box.example"); !slices.Equal(got, []string{"127.0.0.1"}) {
		t.Fatalf("a record onionpod did not publish was touched: %q", got)
	}
	fi, err := os.Stat(ledger)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ledger %v %v", fi, err)
	}
	if di, _ := os.Stat(filepath.Dir(ledger)); di.Mode().Perm() != 0o700 {
		t.Fatalf("ledger dir mode %v", di.Mode())
	}
}

// TestRFC2136Algorithms: each HMAC that BIND and Knot use signs an update
// that BIND accepts.
func TestRFC2136Algorithms(t *testing.T) {
	dnstest.NeedDig(t)
	algs := []string{"hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"}
	var keys []dns.TSIGKey
	for _, a := range algs {
		keys = append(keys, dnstest.RandomKey("key-"+a+".", a))
	}
	named := dnstest.New(t, dnstest.NamedOptions{Keys: keys})
	for i, k := range keys {
		p := newPublisher(t, named, filepath.Join(t.TempDir(), "ledger.json"), func(c *dns.RFC2136Config) { c.TSIG = k })
		name := algs[i] + ".box.example"
		mustSet(t, p, rec(name, "2001:db8::"+strconv.Itoa(i+1)))
		if got := lookup(t, named, name); !slices.Equal(got, []string{"2001:db8::" + strconv.Itoa(i+1)}) {
			t.Errorf("%s: %q", algs[i], got)
		}
	}
}

// TestRFC2136ServerDown: named is stopped, an update is made (Set reports
// it pending), named is started again, and Run delivers the update without
// another Set.
func TestRFC2136ServerDown(t *testing.T) {
	dnstest.NeedDig(t)
	named := dnstest.New(t, dnstest.NamedOptions{})
	var reports atomic.Int32
	p := newPublisher(t, named, filepath.Join(t.TempDir(), "ledger.json"), func(c *dns.RFC2136Config) {
		c.OnError = func(error) { reports.Add(1) }
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	mustSet(t, p, rec("blog.box.example", "2001:db8:1::10"))
	if err := named.Stop(); err != nil {
		t.Fatal(err)
	}
	err := p.Set(context.Background(), []dns.Record{rec("blog.box.example", "2001:db8:1::11")})
	if !errors.Is(err, dns.ErrPending) {
		t.Fatalf("Set with named down: %v, want ErrPending", err)
	}
	if st := p.Status(); !st.Pending || st.LastError == "" || st.Published[0].Addr.String() != "2001:db8:1::10" {
		t.Fatalf("status while down: %+v", st)
	}
	time.Sleep(1500 * time.Millisecond) // Run retries a few times meanwhile
	startCtx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	if err := named.Start(startCtx); err != nil {
		t.Fatal(err)
	}
	waitLookup(t, named, "blog.box.example", "2001:db8:1::11")
	if st := p.Status(); st.Pending || st.LastError != "" {
		t.Fatalf("status after recovery: %+v", st)
	}
	if n := reports.Load(); n != 1 {
		t.Errorf("the outage was reported %d times, want once", n)
	}
}

// TestRFC2136Rejected: a wrong TSIG secret, an unknown key and a zone the
// server does not serve are reported once as permanent errors, without the
// secret, and are not retried.
func TestRFC2136Rejected(t *testing.T) {
	dnstest.NeedDig(t)
	named := dnstest.New(t, dnstest.NamedOptions{})
	wrong := dnstest.RandomKey(named.Key().Name, "hmac-sha256")
	for _, c := range []struct {
		name, want string
		mod        func(*dns.RFC2136Config)
	}{
		{"wrong secret", "BADSIG", func(c *dns.RFC2136Config) { c.TSIG = wrong }},
		{"unknown key", "BADKEY", func(c *dns.RFC2136Config) { c.TSIG = dnstest.RandomKey("stranger.", "hmac-sha256") }},
		{"other zone", "NOTAUTH", func(c *dns.RFC2136Config) { c.Zone = "other.example" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			var reports atomic.Int32
			p := newPublisher(t, named, filepath.Join(t.TempDir(), "ledger.json"), func(cfg *dns.RFC2136Config) {
				c.mod(cfg)
				cfg.OnError = func(error) { reports.Add(1) }
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			defer func() { cancel(); <-done }()
			before := strings.Count(named.Log(), "client @")
			err := p.Set(context.Background(), []dns.Record{rec("blog."+p.Zone(), "2001:db8::1")})
			if !errors.Is(err, dns.ErrRejected) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Set: %v, want ErrRejected with %s", err, c.want)
			}
			if strings.Contains(err.Error(), wrong.Secret) || strings.Contains(err.Error(), named.Key().Secret) {
				t.Fatalf("error shows a secret: %v", err)
			}
			// The same set again is answered from the rejection, and Run
			// does not retry it.
			if err2 := p.Set(context.Background(), []dns.Record{rec("blog."+p.Zone(), "2001:db8::1")}); !errors.Is(err2, dns.ErrRejected) {
				t.Fatalf("second Set: %v", err2)
			}
			time.Sleep(1200 * time.Millisecond)
			// named logs each refused request once ("client @...").
			if n := strings.Count(named.Log(), "client @"); n != before+1 {
				t.Errorf("named logged %d refused requests, want 1: retried?", n-before)
			}
			st := p.Status()
			if !st.Rejected || st.Pending || !strings.Contains(st.LastError, c.want) || len(st.Published) != 0 {
				t.Errorf("status %+v", st)
			}
			if reports.Load() != 0 {
				t.Errorf("Run reported %d background errors; Set already returned it", reports.Load())
			}
		})
	}
	if got := lookup(t, named, "blog.box.example"); len(got) != 0 {
		t.Fatalf("rejected updates changed the zone: %q", got)
	}
}

// TestRFC2136LedgerRestart: a new publisher on the same ledger (a restart
// of onionpod) neither duplicates records nor forgets to delete them, and
// delivers an update left pending by the previous run.
func TestRFC2136LedgerRestart(t *testing.T) {
	dnstest.NeedDig(t)
	named := dnstest.New(t, dnstest.NamedOptions{})
	ledger := filepath.Join(t.TempDir(), "ledger.json")
	p1 := newPublisher(t, named, ledger, nil)
	mustSet(t, p1, rec("a.box.example", "2001:db8::a"), rec("b.box.example", "2001:db8::b"))

	p2 := newPublisher(t, named, ledger, nil) // restart
	if got := p2.Published(); len(got) != 2 {
		t.Fatalf("ledger after restart: %v", got)
	}
	mustSet(t, p2, rec("a.box.example", "2001:db8::a"))
	waitLookup(t, named, "a.box.example", "2001:db8::a") // once, not twice
	waitLookup(t, named, "b.box.example")                // deleted from the ledger, no AXFR needed

	// An update made while the server is down, then a restart of onionpod
	// before the server is back: the new run delivers it.
	if err := named.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p2.Set(context.Background(), []dns.Record{rec("c.box.example", "2001:db8::c")}); !errors.Is(err, dns.ErrPending) {
		t.Fatalf("Set while down: %v", err)
	}
	p3 := newPublisher(t, named, ledger, nil)
	if st := p3.Status(); !st.Pending || len(st.Desired) != 1 || len(st.Published) != 1 {
		t.Fatalf("restarted publisher status %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := named.Start(ctx); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p3.Run(runCtx) }()
	defer func() { stop(); <-done }()
	waitLookup(t, named, "c.box.example", "2001:db8::c")
	waitLookup(t, named, "a.box.example")

	// A ledger of another zone is refused rather than silently forgotten.
	if _, err := dns.NewRFC2136(dns.RFC2136Config{Server: named.Addr(), Zone: "other.example", TSIG: named.Key(), LedgerPath: ledger}); !errors.Is(err, dns.ErrBadInput) {
		t.Fatalf("ledger of another zone: %v", err)
	}
}
