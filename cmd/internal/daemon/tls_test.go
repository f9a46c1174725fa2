package daemon

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/onionpod/onionpod/certs"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/front"
)

// recordingPublisher keeps the last set (a unit test of dnsSets' pure logic).
type recordingPublisher struct{ last []dns.Record }

func (p *recordingPublisher) Set(_ context.Context, r []dns.Record) error {
	p.last = slices.Clone(r)
	return nil
}
func (p *recordingPublisher) Status() dns.Status { return dns.Status{Published: p.last} }

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

func TestWebPort(t *testing.T) {
	for _, c := range []struct {
		ports []store.Port
		want  uint16
		ok    bool
	}{
		{[]store.Port{{Public: 80, Target: 8080}}, 8080, true},
		{[]store.Port{{Public: 8000, Target: 8000}, {Public: 80, Target: 3000}}, 3000, true},
		{[]store.Port{{Public: 8000, Target: 8000}}, 8000, true},
		{[]store.Port{{Public: 80, Target: 80}, {Public: 443, Target: 443}}, 0, false}, // its own TLS
		{[]store.Port{{Public: 80, Target: front.TLSPort}}, 0, false},
		{nil, 0, false},
	} {
		got, ok := webPort(store.App{Name: "a", Ports: c.ports})
		if got != c.want || ok != c.ok {
			t.Errorf("%v: %d %t, want %d %t", c.ports, got, ok, c.want, c.ok)
		}
	}
	if _, ok := webPort(store.App{Name: "a", OnionOnly: true, Ports: []store.Port{{Public: 80, Target: 80}}}); ok {
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
