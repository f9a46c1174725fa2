package daemon

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/onionpod/onionpod/certs"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/front"
)

// recordingPublisher keeps the last set (a unit test of dnsSets' pure logic).
type recordingPublisher struct{ last []dns.Record }

func (p *recordingPublisher) Set(_ context.Context, r []dns.Record) error {
	p.last = slices.Clone(r)
	return nil
}
func (p *recordingPublisher) Status() dns.Status {
	return dns.Status{Published: slices.Clone(p.last)} // the caller's own copy (reconcile.Publisher)
}

// TestDNSSetsUnion: the zone gets the apps' addresses, the pending challenges and the box's IPv4
// for the edge's names (not for an app with an IPv4 of its own); each part changes alone, and
// the reconciler sees address records only.
func TestDNSSetsUnion(t *testing.T) {
	pub := &recordingPublisher{}
	s := &dnsSets{pub: pub}
	ctx := context.Background()
	blog := dns.Record{Name: "blog.box.example.", Addr: netip.MustParseAddr("2001:db8:1::10")}
	wikiV4 := dns.Record{Name: "wiki.box.example.", Addr: netip.MustParseAddr("192.0.2.150")}
	s.Set(ctx, []dns.Record{blog, wikiV4})
	s.SetChallenges(ctx, []certs.Challenge{{Name: "_acme-challenge.blog.box.example.", Value: "v"}})
	s.setEdge(ctx, []string{"blog.box.example.", "wiki.box.example."}, netip.MustParseAddr("192.0.2.2"))
	want := []dns.Record{blog, wikiV4, {Name: "_acme-challenge.blog.box.example.", TXT: "v"},
		{Name: "blog.box.example.", Addr: netip.MustParseAddr("192.0.2.2")}}
	if !slices.Equal(pub.last, want) {
		t.Errorf("zone %v, want %v", pub.last, want)
	}
	s.Set(ctx, []dns.Record{blog}) // the reconciler's next pass
	s.SetChallenges(ctx, nil)
	if len(pub.last) != 3 { // blog AAAA, blog A (edge), wiki A (edge: its own IPv4 is gone)
		t.Errorf("zone %v", pub.last)
	}
	for _, r := range s.Status().Published {
		if !r.IsAddress() {
			t.Errorf("the reconciler sees %v", r)
		}
	}
}

// TestWebPort: the front serves public port 80's target, else the first port's, and names the
// container listening there; an app with its own TLS, or ports that take the front's, gets none.
func TestWebPort(t *testing.T) {
	one := []store.Container{{Name: "a", Image: "registry.example/a:1"}}
	two := []store.Container{{Name: "db", Image: "registry.example/db:1"}, {Name: "web", Image: "registry.example/web:1"}}
	for _, c := range []struct {
		containers []store.Container
		ports      []store.Port
		want       store.Port
		ok         bool
	}{
		{one, []store.Port{{Public: 80, Target: 8080}}, store.Port{Public: 80, Target: 8080, Container: "a"}, true},
		{one, []store.Port{{Public: 8000, Target: 8000}, {Public: 80, Target: 3000}}, store.Port{Public: 80, Target: 3000, Container: "a"}, true},
		{one, []store.Port{{Public: 8000, Target: 8000}}, store.Port{Public: 8000, Target: 8000, Container: "a"}, true},
		{two, []store.Port{{Public: 5432, Target: 5432, Container: "db"}, {Public: 80, Target: 3000, Container: "web"}},
			store.Port{Public: 80, Target: 3000, Container: "web"}, true},
		{two, []store.Port{{Public: 8000, Target: 8000, Container: "web"}, {Public: 5432, Target: 5432, Container: "db"}},
			store.Port{Public: 8000, Target: 8000, Container: "web"}, true},
		{one, []store.Port{{Public: 80, Target: 80}, {Public: 443, Target: 443}}, store.Port{}, false}, // its own TLS
		{one, []store.Port{{Public: 80, Target: front.TLSPort}}, store.Port{}, false},
		{one, nil, store.Port{}, false},
	} {
		got, ok := webPort(store.App{Name: "a", Containers: c.containers, Ports: c.ports})
		if got != c.want || ok != c.ok {
			t.Errorf("%v: %v %t, want %v %t", c.ports, got, ok, c.want, c.ok)
		}
	}
	if _, ok := webPort(store.App{Name: "a", Containers: one, OnionOnly: true, Ports: []store.Port{{Public: 80, Target: 80}}}); ok {
		t.Error("an onion-only app got a front")
	}
}

// TestUnitBinary: a binary a dynamic user cannot reach (a private /tmp, a closed directory) is
// not what a front unit runs.
func TestUnitBinary(t *testing.T) {
	dir := t.TempDir() // under /tmp
	bin := filepath.Join(dir, "onionpod")
	os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755)
	if reachable(bin) {
		t.Errorf("%s is reachable", bin)
	}
	if !reachable("/bin/sh") && !reachable("/usr/bin/sh") {
		t.Error("/bin/sh is not reachable")
	}
}

// TestFrontUnitOfContainers: the front of an app of several containers proxies to the port of
// the container that serves the web port, and comes and goes with that container's unit (an app
// of several has no onionpod-pod-APP.service).
func TestFrontUnitOfContainers(t *testing.T) {
	cfg := configs.Default()
	cfg.DNS.Zone = "box.example"
	cfg.Network.ULAPrefix = "fd00:1::/64"
	tp := &tlsParts{cfg: cfg, self: "/usr/bin/onionpod"}
	app := store.App{Name: "notes", Onion: true,
		Containers: []store.Container{{Name: "db", Image: "registry.example/db:1"}, {Name: "web", Image: "registry.example/web:1"}},
		Ports:      []store.Port{{Public: 5432, Target: 5432, Container: "db"}, {Public: 80, Target: 3000, Container: "web"}}}
	u, err := tp.frontUnit(app, strings.Repeat("n", 56)+".onion")
	if err != nil {
		t.Fatal(err)
	}
	content := string(u.Content)
	for _, want := range []string{"PartOf=onionpod-pod-notes_web.service", "Requires=onionpod-net-notes.service",
		`"--target" "3000"`, `"--host" "notes.box.example"`, `"--onion" "nnnn`} {
		if !strings.Contains(content, want) {
			t.Errorf("no %s in:\n%s", want, content)
		}
	}
	app.NoOnionLocation = true
	if u, _ := tp.frontUnit(app, strings.Repeat("n", 56)+".onion"); strings.Contains(string(u.Content), "--onion") {
		t.Errorf("an app without Onion-Location: %s", u.Content)
	}
}
