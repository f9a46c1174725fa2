package daemon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/onionpod/onionpod/cmd/internal/metrics"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/dns/dnstest"
)

// scrapeDNS is the onionpod_dns_ lines of a scrape of the metrics the daemon builds for p.
func scrapeDNS(t *testing.T, p *parts) []string {
	t.Helper()
	m := metrics.New(metrics.Options{DNS: queryCounter(p), Updates: updateCounter(p)})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out []string
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, "onionpod_dns_") {
			out = append(out, l)
		}
	}
	return out
}

func parseConfig(t *testing.T, toml string) *configs.Config {
	t.Helper()
	cfg, err := configs.Parse([]byte(fmt.Sprintf("state_dir = %q\n", t.TempDir())+toml), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestMetricsCountDNS: the daemon's metrics carry the counts of the DNS part its config builds:
// the built-in server's answers by response code (after real queries), the RFC 2136 publisher's
// updates to a real BIND; each mode without the other's series.
func TestMetricsCountDNS(t *testing.T) {
	port, err := dnstest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := parseConfig(t, fmt.Sprintf("[dns]\nmode = \"builtin\"\nzone = \"box.example\"\nlisten = [\"127.0.0.1:%d\"]\n", port))
	srv, err := builtinDNS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.Set(t.Context(), []dns.Record{{Name: "blog.box.example.", Addr: netip.MustParseAddr("2001:db8::1")}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"blog.box.example.", "blog.box.example.", "nope.box.example.", "example.org."} {
		m := new(mdns.Msg)
		m.SetQuestion(name, mdns.TypeAAAA)
		if _, _, err := new(mdns.Client).Exchange(m, fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
			t.Fatal(err)
		}
	}
	got := strings.Join(scrapeDNS(t, &parts{dnsSrv: srv}), "\n")
	for _, want := range []string{`onionpod_dns_queries_total{rcode="NOERROR"} 2`, `onionpod_dns_queries_total{rcode="NXDOMAIN"} 1`,
		`onionpod_dns_queries_total{rcode="REFUSED"} 1`, `onionpod_dns_queries_total{rcode="FORMERR"} 0`} {
		if !strings.Contains(got, want) {
			t.Errorf("builtin mode: no %s in\n%s", want, got)
		}
	}
	if strings.Contains(got, "onionpod_dns_updates_total") {
		t.Errorf("builtin mode has update counts:\n%s", got)
	}

	dnstest.NeedDig(t)
	named := dnstest.New(t, dnstest.NamedOptions{})
	key := named.Key()
	cfg = parseConfig(t, fmt.Sprintf(`[dns]
mode = "rfc2136"
zone = %q
[[dns.tsig]]
name = %q
algorithm = %q
secret = %q
[dns.rfc2136]
server = %q
key = %q
`, named.Zone(), key.Name, key.Algorithm, key.Secret, named.Addr(), key.Name))
	upd, err := rfc2136DNS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := upd.Set(context.Background(), []dns.Record{{Name: "blog." + named.Zone(), Addr: netip.MustParseAddr("2001:db8::1")}}); err != nil {
		t.Fatal(err)
	}
	got = strings.Join(scrapeDNS(t, &parts{dnsUpd: upd}), "\n")
	for _, want := range []string{`onionpod_dns_updates_total{result="ok"} 1`, `onionpod_dns_updates_total{result="failed"} 0`} {
		if !strings.Contains(got, want) {
			t.Errorf("rfc2136 mode: no %s in\n%s", want, got)
		}
	}
	if strings.Contains(got, "onionpod_dns_queries_total") {
		t.Errorf("rfc2136 mode has query counts:\n%s", got)
	}
}
