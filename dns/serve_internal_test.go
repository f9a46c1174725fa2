package dns

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

var testKey = TSIGKey{Name: "xfr.", Algorithm: "hmac-sha256", Secret: "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ="}

// newTestServer builds a server (not started) holding count AAAA names and
// an A record for every tenth one.
func newTestServer(t testing.TB, count int) *Server {
	t.Helper()
	s, err := NewServer(ServerConfig{
		Zone:        "box.example",
		TSIGKeys:    []TSIGKey{testKey},
		Secondaries: []Secondary{{Addr: "127.0.0.1:9", KeyName: "xfr."}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var recs []Record
	for i := 0; i < count; i++ {
		name := fmt.Sprintf("app%d.box.example.", i)
		recs = append(recs, Record{Name: name, Addr: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)})})
		if i%10 == 0 {
			recs = append(recs, Record{Name: name, Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})})
		}
	}
	if err := s.Set(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	return s
}

func packQuery(t testing.TB, name string, qtype uint16, edns bool) []byte {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 0x1234
	if edns {
		m.SetEdns0(4096, true)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestServeNoAllocs: the hot path answers AAAA, A, NXDOMAIN, NODATA and
// REFUSED queries, with and without EDNS, and counts them (as a UDP
// socket's reader does), without allocating.
func TestServeNoAllocs(t *testing.T) {
	s := newTestServer(t, 100)
	u := &udpWorker{s: s}
	w := &u.w
	out := make([]byte, maxMsgSize)
	for _, q := range []struct {
		name  string
		qtype uint16
		rcode int
		an    int
	}{
		{"app7.box.example.", mdns.TypeAAAA, mdns.RcodeSuccess, 1},
		{"APP10.Box.Example.", mdns.TypeA, mdns.RcodeSuccess, 1},
		{"nx.box.example.", mdns.TypeAAAA, mdns.RcodeNameError, 0},
		{"app7.box.example.", mdns.TypeMX, mdns.RcodeSuccess, 0},
		{"example.org.", mdns.TypeA, mdns.RcodeRefused, 0},
	} {
		for _, edns := range []bool{false, true} {
			req := packQuery(t, q.name, q.qtype, edns)
			before := u.counts.n[q.rcode].Load()
			allocs := testing.AllocsPerRun(100, func() { u.Answer(req, out) })
			if allocs != 0 {
				t.Errorf("%s %d edns=%v: %v allocations per query", q.name, q.qtype, edns, allocs)
			}
			if n := u.counts.n[q.rcode].Load() - before; n != 101 { // AllocsPerRun runs it once more first
				t.Errorf("%s %d edns=%v: %d answers counted as %s, want 101", q.name, q.qtype, edns, n, rcodeString(q.rcode))
			}
			resp, _ := s.serve(w, req, out, false)
			r := new(mdns.Msg)
			if err := r.Unpack(resp); err != nil {
				t.Fatalf("%s: unpack: %v", q.name, err)
			}
			if r.Id != 0x1234 || r.Rcode != q.rcode || len(r.Answer) != q.an || r.Question[0].Name != q.name {
				t.Errorf("%s %d: %v", q.name, q.qtype, r)
			}
			if (r.IsEdns0() != nil) != edns {
				t.Errorf("%s: EDNS in answer %v, in query %v", q.name, r.IsEdns0() != nil, edns)
			}
			if edns && !r.IsEdns0().Do() {
				t.Errorf("%s: DO bit not copied", q.name)
			}
		}
	}
}

// FuzzServe feeds arbitrary bytes to the request handler (UDP and TCP,
// fast and slow path). It must never panic, and every answer must be a
// well-formed DNS response to the same ID that fits the transport.
func FuzzServe(f *testing.F) {
	s := newTestServer(f, 20)
	f.Add(packQuery(f, "app1.box.example.", mdns.TypeAAAA, false))
	f.Add(packQuery(f, "app1.box.example.", mdns.TypeANY, true))
	f.Add(packQuery(f, "nx.box.example.", mdns.TypeA, true))
	f.Add(packQuery(f, "box.example.", mdns.TypeAXFR, false))
	signed := new(mdns.Msg)
	signed.SetAxfr("box.example.")
	signed.SetTsig("xfr.", mdns.HmacSHA256, 300, time.Now().Unix())
	if b, _, err := mdns.TsigGenerate(signed, testKey.Secret, "", false); err == nil {
		f.Add(b)
	}
	upd := new(mdns.Msg)
	upd.SetUpdate("box.example.")
	if b, err := upd.Pack(); err == nil {
		f.Add(b)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0xc0, 12, 0, 1, 0, 1})
	f.Add([]byte("garbage"))
	w := new(worker)
	out := make([]byte, maxMsgSize)
	f.Fuzz(func(t *testing.T, req []byte) {
		for _, tcp := range []bool{false, true} {
			resp, more := s.serve(w, append([]byte(nil), req...), out, tcp)
			for _, m := range append([][]byte{resp}, more...) {
				if m == nil {
					continue
				}
				if len(m) < headerLen || binary.BigEndian.Uint16(m) != binary.BigEndian.Uint16(req) || m[2]&0x80 == 0 {
					t.Fatalf("bad response header % x to % x", m[:min(len(m), 12)], req)
				}
				if !tcp && len(m) > maxUDPSize {
					t.Fatalf("UDP response of %d bytes", len(m))
				}
				r := new(mdns.Msg)
				if err := r.Unpack(m); err != nil {
					t.Fatalf("response does not parse: %v\nreq % x\nresp % x", err, req, m)
				}
			}
		}
	})
}

// naiveServe is how a plain miekg/dns handler answers: unpack, look up,
// build a reply, pack. It is the alternative the benchmark compares with.
type naiveZone map[string][]mdns.RR

func (z naiveZone) serve(req []byte) []byte {
	m := new(mdns.Msg)
	if err := m.Unpack(req); err != nil || len(m.Question) != 1 {
		return nil
	}
	r := new(mdns.Msg)
	r.SetReply(m)
	r.Authoritative = true
	q := m.Question[0]
	rrs := z[mdns.CanonicalName(q.Name)]
	for _, rr := range rrs {
		if rr.Header().Rrtype == q.Qtype {
			r.Answer = append(r.Answer, rr)
		}
	}
	if rrs == nil {
		r.Rcode = mdns.RcodeNameError
	}
	if o := m.IsEdns0(); o != nil {
		r.SetEdns0(maxUDPSize, o.Do())
	}
	b, _ := r.Pack()
	return b
}

// BenchmarkServe compares the hot path with a naive miekg/dns handler on
// the benchmark mix (80% AAAA, 10% A, 10% NXDOMAIN) of a 100-name zone.
func BenchmarkServe(b *testing.B) {
	s := newTestServer(b, 100)
	naive := naiveZone{}
	for _, r := range s.Records() {
		naive[r.Name] = append(naive[r.Name], addrRR(r.Name, r.Addr, 60))
	}
	var reqs [][]byte
	for i := 0; i < 100; i++ {
		switch {
		case i%10 == 0:
			reqs = append(reqs, packQuery(b, fmt.Sprintf("app%d.box.example.", i), mdns.TypeA, i%20 == 0))
		case i%10 == 1:
			reqs = append(reqs, packQuery(b, fmt.Sprintf("nx%d.box.example.", i), mdns.TypeAAAA, false))
		default:
			reqs = append(reqs, packQuery(b, fmt.Sprintf("app%d.box.example.", i), mdns.TypeAAAA, i%3 == 0))
		}
	}
	w := new(worker)
	out := make([]byte, maxMsgSize)
	b.Run("builtin", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			s.serve(w, reqs[i%len(reqs)], out, false)
		}
	})
	b.Run("miekg-naive", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			naive.serve(reqs[i%len(reqs)])
		}
	})
	// What counting the answers costs: the hot path as a UDP socket's
	// reader runs it (answer, then count), against the hot path alone,
	// interleaved.
	u := &udpWorker{s: s}
	b.Run("builtin-counted", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			u.Answer(reqs[i%len(reqs)], out)
		}
	})
	b.Run("counting", func(b *testing.B) {
		var tc, tu time.Duration
		for b.Loop() {
			t0 := time.Now()
			for j := 0; j < 100; j++ {
				u.Answer(reqs[j], out)
			}
			t1 := time.Now()
			for j := 0; j < 100; j++ {
				s.serve(w, reqs[j], out, false)
			}
			tc, tu = tc+t1.Sub(t0), tu+time.Since(t1)
		}
		b.ReportMetric(float64(tc)/float64(tu), "x-time-counted/uncounted")
	})
	b.Run("ratio", func(b *testing.B) {
		var tb, tn time.Duration
		for i := 0; b.Loop(); i++ {
			t0 := time.Now()
			for j := 0; j < 100; j++ {
				s.serve(w, reqs[j], out, false)
			}
			t1 := time.Now()
			for j := 0; j < 100; j++ {
				naive.serve(reqs[j])
			}
			tb, tn = tb+t1.Sub(t0), tn+time.Since(t1)
		}
		b.ReportMetric(float64(tn)/float64(tb), "x-faster-than-naive")
	})
}

// A Set that changes one name of many packs that name's answers again and takes the others'
// from the snapshot it replaces; every name then answers what the new set holds, and NODATA and
// NXDOMAIN carry the new serial.
func TestSetRepacksOnlyChangedNames(t *testing.T) {
	s := newTestServer(t, 50)
	old := s.snap.Load()
	recs := s.Records()
	changed, removed, kept := "app7.box.example.", "app8.box.example.", "app9.box.example."
	var next []Record
	for _, r := range recs {
		switch r.Name {
		case removed:
		case changed:
			next = append(next, Record{Name: changed, Addr: netip.MustParseAddr("2001:db8::77")})
		default:
			next = append(next, r)
		}
	}
	next = append(next, Record{Name: "new.box.example.", Addr: netip.MustParseAddr("2001:db8::99")})
	if err := s.Set(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	snap := s.snap.Load()
	if snap.serial == old.serial {
		t.Fatal("the serial did not move")
	}
	ask := func(name string, qtype uint16) *mdns.Msg {
		t.Helper()
		out := make([]byte, maxMsgSize)
		resp, _ := s.serve(new(worker), packQuery(t, name, qtype, false), out, false)
		m := new(mdns.Msg)
		if err := m.Unpack(resp); err != nil {
			t.Fatalf("%s %s: %v", name, mdns.TypeToString[qtype], err)
		}
		return m
	}
	wantAAAA := func(name, addr string) {
		t.Helper()
		m := ask(name, mdns.TypeAAAA)
		if m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 1 || m.Answer[0].(*mdns.AAAA).AAAA.String() != addr {
			t.Errorf("%s AAAA: %v, want %s", name, m, addr)
		}
	}
	wantAAAA(changed, "2001:db8::77")
	wantAAAA("new.box.example.", "2001:db8::99")
	wantAAAA(kept, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 10}).String())
	if m := ask(removed, mdns.TypeAAAA); m.Rcode != mdns.RcodeNameError || len(m.Ns) != 1 || m.Ns[0].(*mdns.SOA).Serial != snap.serial {
		t.Errorf("removed name: %v, want NXDOMAIN with serial %d", m, snap.serial)
	}
	if m := ask(kept, mdns.TypeTXT); m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 0 || len(m.Ns) != 1 || m.Ns[0].(*mdns.SOA).Serial != snap.serial {
		t.Errorf("NODATA of a kept name: %v, want the SOA with serial %d", m, snap.serial)
	}
	if m := ask("box.example.", mdns.TypeSOA); len(m.Answer) != 1 || m.Answer[0].(*mdns.SOA).Serial != snap.serial {
		t.Errorf("SOA: %v, want serial %d", m, snap.serial)
	}
	key := func(name string, qtype uint16) string {
		w, _ := wireName(name)
		return typeKey(w, qtype)
	}
	if snap.answers[key(kept, mdns.TypeAAAA)] != old.answers[key(kept, mdns.TypeAAAA)] {
		t.Error("the answer of a name whose records did not change was packed again")
	}
	if snap.answers[key(changed, mdns.TypeAAAA)] == old.answers[key(changed, mdns.TypeAAAA)] {
		t.Error("the answer of a changed name was taken from the old snapshot")
	}
}

// BenchmarkSetOneChanged is a Set of a 1000-name zone in which one name's address changed (what
// an expose or a removal at 1000 apps costs the built-in server), its state saved as always; then
// the packing alone, side by side: the answers of the changed name only (what Set does), and of
// every name (what it did before).
func BenchmarkSetOneChanged(b *testing.B) {
	recs := make([]Record, 1000)
	for i := range recs {
		recs[i] = Record{Name: fmt.Sprintf("app%d.box.example.", i), Addr: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})}
	}
	s, err := NewServer(ServerConfig{Zone: "box.example", StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	changed := func(i int) []Record {
		recs[0].Addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 12: 1, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
		out, err := normalizeRecords(s.Zone(), recs)
		if err != nil {
			b.Fatal(err)
		}
		return out
	}
	b.Run("set", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if err := s.Set(context.Background(), changed(i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, whole := range []bool{false, true} {
		name := map[bool]string{false: "pack-changed-name", true: "pack-every-name"}[whole]
		b.Run(name, func(b *testing.B) {
			cur := s.snap.Load()
			prev := cur
			if whole {
				prev = nil
			}
			for i := 0; b.Loop(); i++ {
				if _, err := buildSnapshot(&s.setup.zone, cur.serial+1, changed(i), prev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
