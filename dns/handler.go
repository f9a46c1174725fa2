package dns

import "encoding/binary"

const bitTC = 1 << 9

// udpLimit is the largest UDP response the client can take.
func (q *query) udpLimit() int {
	if !q.edns {
		return minUDPSize
	}
	return min(max(int(q.udpSize), minUDPSize), maxUDPSize)
}

var refusedAnswer = answer{flags: rcodeRefused}

// respond writes the answer to a parsed query into out and returns it. It
// does not allocate: the answer was packed ahead of time, only the header,
// the question (with the client's letter case) and the OPT record are
// written per query. limit is the largest response allowed.
func (s *snapshot) respond(req, key []byte, q *query, out []byte, limit int) []byte {
	var ans *answer
	extRcode := uint8(0)
	switch {
	case q.edns && q.ednsVersion != 0:
		ans, extRcode = &answer{}, rcodeBadVers>>4
	case q.qclass != classIN:
		ans = &refusedAnswer
	default:
		ans = s.answers[string(key[:q.nameLen+2])]
		switch {
		case ans != nil:
		case s.names[string(key[:q.nameLen])]:
			ans = &s.nodata
		case hasZoneSuffix(key[:q.nameLen], s.zone):
			ans = &s.nx
		default:
			ans = &refusedAnswer
		}
	}
	qlen := q.questionEnd - headerLen
	size := headerLen + qlen + len(ans.tail)
	if q.edns {
		size += optLen
	}
	if size > limit || size > len(out) {
		return truncated(req, q, out, extRcode)
	}
	flags := bitQR | q.flags&(bitRD|bitCD) | ans.flags
	ar := ans.ar
	if q.edns {
		ar++
	}
	putHeader(out, q.id, flags, 1, ans.an, ans.ns, ar)
	copy(out[headerLen:], req[headerLen:q.questionEnd])
	n := copy(out[q.questionEnd:], ans.tail) + q.questionEnd
	if q.edns {
		n += putOPT(out[n:], q.do, extRcode)
	}
	return out[:n]
}

// truncated answers with the question only and TC set.
func truncated(req []byte, q *query, out []byte, extRcode uint8) []byte {
	ar := uint16(0)
	if q.edns {
		ar = 1
	}
	putHeader(out, q.id, bitQR|bitTC|flagAA|q.flags&(bitRD|bitCD), 1, 0, 0, ar)
	copy(out[headerLen:], req[headerLen:q.questionEnd])
	n := q.questionEnd
	if q.edns {
		n += putOPT(out[n:], q.do, extRcode)
	}
	return out[:n]
}

// formErr answers a request whose question could not be read: the header
// with RCODE FORMERR and no sections.
func formErr(req []byte, out []byte) []byte {
	id := binary.BigEndian.Uint16(req)
	flags := binary.BigEndian.Uint16(req[2:])
	putHeader(out, id, bitQR|flags&(opcodeMsk|bitRD|bitCD)|rcodeFormErr, 0, 0, 0, 0)
	return out[:headerLen]
}

func putHeader(out []byte, id, flags, qd, an, ns, ar uint16) {
	binary.BigEndian.PutUint16(out[0:], id)
	binary.BigEndian.PutUint16(out[2:], flags)
	binary.BigEndian.PutUint16(out[4:], qd)
	binary.BigEndian.PutUint16(out[6:], an)
	binary.BigEndian.PutUint16(out[8:], ns)
	binary.BigEndian.PutUint16(out[10:], ar)
}

// putOPT writes an OPT record advertising maxUDPSize, copying the DO bit.
func putOPT(out []byte, do bool, extRcode uint8) int {
	out[0] = 0 // root
	binary.BigEndian.PutUint16(out[1:], typeOPT)
	binary.BigEndian.PutUint16(out[3:], maxUDPSize)
	out[5] = extRcode
	out[6] = 0 // version
	out[7] = 0
	if do {
		out[7] = 0x80
	}
	out[8] = 0
	binary.BigEndian.PutUint16(out[9:], 0)
	return optLen
}
