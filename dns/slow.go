package dns

import (
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	mdns "github.com/miekg/dns"
)

// The slow path: signed requests, zone transfers and opcodes other than
// QUERY. It uses miekg/dns to parse and build messages; none of it is on
// the path of an ordinary query.

// tsigRoom is the space kept for a TSIG record in a UDP answer.
const tsigRoom = 160

// xfrChunk is the largest (uncompressed) size of one transfer message.
const xfrChunk = 16 * 1024

// signer signs the responses to one signed request.
type signer struct {
	key  *tsigKey
	req  *mdns.TSIG
	mac  string // request MAC, then the MAC of the previous response
	next bool   // later messages of a transfer: timers only
}

// sign packs r, with a TSIG when the request had a valid one.
func (g *signer) sign(r *mdns.Msg) ([]byte, error) {
	if g == nil || g.key == nil {
		return r.Pack()
	}
	r.SetTsig(g.key.name, g.key.algorithm, g.req.Fudge, time.Now().Unix())
	wire, mac, err := mdns.TsigGenerate(r, g.key.secret, g.mac, g.next)
	if err != nil {
		return nil, err
	}
	g.mac, g.next = mac, true
	return wire, nil
}

func (s *Server) slow(w *worker, req, out []byte, tcp bool) [][]byte {
	m := new(mdns.Msg)
	if err := m.Unpack(req); err != nil || len(m.Question) != 1 {
		return [][]byte{formErr(req, out)}
	}
	if m.Response {
		return nil
	}
	var g *signer
	if t := m.IsTsig(); t != nil {
		if !validName(t.Hdr.Name) || !validName(t.Algorithm) {
			return [][]byte{formErr(req, out)}
		}
		k, ok := s.setup.keys[mdns.CanonicalName(t.Hdr.Name)]
		if !ok || k.algorithm != mdns.CanonicalName(t.Algorithm) {
			return packed(tsigFailure(m, t, mdns.RcodeBadKey, nil))
		}
		err := mdns.TsigVerify(req, k.secret, "", false)
		switch {
		case errors.Is(err, mdns.ErrTime):
			return packed(tsigFailure(m, t, mdns.RcodeBadTime, &k))
		case err != nil:
			return packed(tsigFailure(m, t, mdns.RcodeBadSig, nil))
		}
		g = &signer{key: &k, req: t, mac: t.MAC}
	}
	reply := func(rcode int) [][]byte {
		r := new(mdns.Msg)
		r.SetRcode(m, rcode)
		r.RecursionAvailable = false
		return packed(g.sign(r))
	}
	switch m.Opcode {
	case mdns.OpcodeQuery:
	case mdns.OpcodeUpdate:
		return reply(mdns.RcodeRefused)
	default: // NOTIFY (we are the primary), STATUS, ...
		return reply(mdns.RcodeNotImplemented)
	}
	q := m.Question[0]
	if q.Qtype == mdns.TypeAXFR || q.Qtype == mdns.TypeIXFR {
		return s.transfer(m, g, tcp)
	}
	// A signed ordinary query (a secondary checking the SOA): the hot
	// path's answer, signed.
	limit := maxMsgSize
	if !tcp {
		limit = w.q.udpLimit() - tsigRoom
	}
	ans := s.snap.Load().respond(req, w.key[:], &w.q, out, limit)
	r := new(mdns.Msg)
	if err := r.Unpack(ans); err != nil {
		return reply(mdns.RcodeServerFailure)
	}
	return packed(g.sign(r))
}

// transfer answers AXFR (and IXFR, in full) to a secondary's signed
// request over TCP.
func (s *Server) transfer(m *mdns.Msg, g *signer, tcp bool) [][]byte {
	reply := func(rcode int) [][]byte {
		r := new(mdns.Msg)
		r.SetRcode(m, rcode)
		return packed(g.sign(r))
	}
	if g == nil || !s.isSecondaryKey(g.key.name) {
		return reply(mdns.RcodeRefused)
	}
	if mdns.CanonicalName(m.Question[0].Name) != s.setup.zone.zone {
		return reply(mdns.RcodeNotAuth)
	}
	snap := s.snap.Load()
	if !tcp {
		if m.Question[0].Qtype == mdns.TypeIXFR {
			// RFC 1995: an answer with only the SOA sends the client to TCP.
			r := new(mdns.Msg)
			r.SetReply(m)
			r.Authoritative = true
			r.Answer = []mdns.RR{snap.soa}
			return packed(g.sign(r))
		}
		return reply(mdns.RcodeRefused)
	}
	if m.Question[0].Qtype == mdns.TypeIXFR && len(m.Ns) == 1 {
		// RFC 1995 4: a client that already has our serial gets the SOA alone.
		if have, ok := m.Ns[0].(*mdns.SOA); ok && !serialGreater(snap.serial, have.Serial) {
			r := new(mdns.Msg)
			r.SetReply(m)
			r.Authoritative = true
			r.Answer = []mdns.RR{snap.soa}
			return packed(g.sign(r))
		}
	}
	rrs := append(append([]mdns.RR{}, snap.xfr...), snap.soa)
	var out [][]byte
	for len(rrs) > 0 {
		r := new(mdns.Msg)
		r.SetReply(m)
		r.Authoritative = true
		r.Compress = true
		size := 0
		for len(rrs) > 0 && (len(r.Answer) == 0 || size+mdns.Len(rrs[0]) <= xfrChunk) {
			size += mdns.Len(rrs[0])
			r.Answer = append(r.Answer, rrs[0])
			rrs = rrs[1:]
		}
		wire, err := g.sign(r)
		if err != nil {
			return reply(mdns.RcodeServerFailure)
		}
		out = append(out, wire)
	}
	return out
}

func (s *Server) isSecondaryKey(name string) bool {
	for _, sec := range s.setup.secondaries {
		if sec.key.name == name {
			return true
		}
	}
	return false
}

// tsigFailure answers a request whose TSIG failed (RFC 8945 5.2): NOTAUTH
// with the TSIG error; unsigned except for BADTIME, which is signed (with
// key) and carries the server's time.
func tsigFailure(m *mdns.Msg, t *mdns.TSIG, code int, key *tsigKey) ([]byte, error) {
	r := new(mdns.Msg)
	r.SetRcode(m, mdns.RcodeNotAuth)
	rr := &mdns.TSIG{
		Hdr:        mdns.RR_Header{Name: t.Hdr.Name, Rrtype: mdns.TypeTSIG, Class: mdns.ClassANY},
		Algorithm:  t.Algorithm,
		TimeSigned: t.TimeSigned,
		Fudge:      t.Fudge,
		OrigId:     m.Id,
		Error:      uint16(code),
	}
	secret, mac := "", ""
	if code == mdns.RcodeBadTime && key != nil {
		now := uint64(time.Now().Unix())
		var b [6]byte
		for i := range b {
			b[5-i] = byte(now >> (8 * i))
		}
		rr.OtherLen, rr.OtherData = 6, hex.EncodeToString(b[:])
		secret, mac = key.secret, t.MAC
	}
	r.Extra = append(r.Extra, rr)
	wire, _, err := mdns.TsigGenerate(r, secret, mac, false)
	if err != nil {
		return nil, fmt.Errorf("dns: tsig error response: %w", err)
	}
	return wire, nil
}

func packed(wire []byte, err error) [][]byte {
	if err != nil {
		return nil
	}
	return [][]byte{wire}
}

// validName reports whether a name from a request can be echoed back.
func validName(name string) bool {
	_, ok := mdns.IsDomainName(name)
	return ok && name != ""
}
