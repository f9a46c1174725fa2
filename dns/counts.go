package dns

import (
	"encoding/binary"
	"strconv"
	"sync"
	"sync/atomic"

	mdns "github.com/miekg/dns"
)

// Answers are counted by response code without a cache line shared
// between the UDP threads: each socket's reader counts in an array of its
// own (rcodeCounts, padded so no neighbour's writes land on its lines),
// written by that thread only, and QueryCounts sums the arrays when asked.
// TCP connections, far fewer, share one array.

// rcodeSlots are the response codes counted apart: the header's 0-15 and
// the extended ones up to BADCOOKIE (23); anything above counts in the
// last slot.
const rcodeSlots = 32

// cacheLine is the padding around a counter array: two lines, since
// x86's adjacent-line prefetcher moves lines in pairs.
const cacheLine = 128

// rcodeCounts counts answers by response code.
type rcodeCounts struct {
	_ [cacheLine]byte
	n [rcodeSlots]atomic.Uint64
	_ [cacheLine]byte
}

// add counts one answer with response code rcode.
func (c *rcodeCounts) add(rcode int) {
	c.n[min(uint(rcode), rcodeSlots-1)].Add(1)
}

// queryCounts are a server's answer counters: one array per UDP socket,
// one for TCP.
type queryCounts struct {
	tcp rcodeCounts

	mu  sync.Mutex
	udp []*rcodeCounts
}

// register adds the array of one more UDP socket's reader.
func (q *queryCounts) register(c *rcodeCounts) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.udp = append(q.udp, c)
}

// reportedRcodes are the codes the server sends, reported even at zero (a
// series that appears only with its first answer hides its first increase
// from Prometheus' rate()).
var reportedRcodes = []int{mdns.RcodeSuccess, mdns.RcodeFormatError, mdns.RcodeServerFailure, mdns.RcodeNameError,
	mdns.RcodeNotImplemented, mdns.RcodeRefused, mdns.RcodeNotAuth, rcodeBadVers}

// sum adds up the arrays: answers by response code name.
func (q *queryCounts) sum() map[string]uint64 {
	var total [rcodeSlots]uint64
	add := func(c *rcodeCounts) {
		for i := range c.n {
			total[i] += c.n[i].Load()
		}
	}
	add(&q.tcp)
	q.mu.Lock()
	for _, c := range q.udp {
		add(c)
	}
	q.mu.Unlock()
	out := make(map[string]uint64, len(reportedRcodes))
	for _, rc := range reportedRcodes {
		out[rcodeString(rc)] = 0
	}
	for rc, n := range total {
		if n > 0 {
			out[rcodeString(rc)] = n
		}
	}
	return out
}

// rcodeString names a response code as dig does; 16 is BADVERS (in a
// message's header and OPT record; BADSIG is the same number in a TSIG
// record's error field).
func rcodeString(rc int) string {
	switch {
	case rc == rcodeBadVers:
		return "BADVERS"
	case rc == rcodeSlots-1:
		return "OTHER"
	}
	if s, ok := mdns.RcodeToString[rc]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(rc)
}

// QueryCounts are the queries the server answered since it started (UDP
// and TCP; a zone transfer counts once), by response code name: NOERROR,
// NXDOMAIN, REFUSED, FORMERR, NOTAUTH, ... The codes the server sends are
// always there, at zero until their first answer. Requests dropped
// unanswered (too short to answer, responses) are not counted.
func (s *Server) QueryCounts() map[string]uint64 { return s.counts.sum() }

// rcodeOf reads the response code of a message: the header's four bits,
// extended by an OPT record's eight (RFC 6891 6.1.3). It walks the
// message: for the slow path's answers, which the hot path does not know.
func rcodeOf(msg []byte) int {
	if len(msg) < headerLen {
		return 0
	}
	rc := int(msg[3] & 0xF)
	qd := int(binary.BigEndian.Uint16(msg[4:]))
	an, ns, ar := int(binary.BigEndian.Uint16(msg[6:])), int(binary.BigEndian.Uint16(msg[8:])), int(binary.BigEndian.Uint16(msg[10:]))
	if ar == 0 {
		return rc
	}
	off, ok := headerLen, true
	for i := 0; i < qd; i++ {
		if off, ok = skipName(msg, off); !ok || off+4 > len(msg) {
			return rc
		}
		off += 4
	}
	for i := 0; i < an+ns+ar; i++ {
		if off, ok = skipName(msg, off); !ok || off+10 > len(msg) {
			return rc
		}
		if i >= an+ns && binary.BigEndian.Uint16(msg[off:]) == typeOPT {
			return rc | int(msg[off+4])<<4
		}
		off += 10 + int(binary.BigEndian.Uint16(msg[off+8:]))
	}
	return rc
}
