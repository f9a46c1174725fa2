package dns

import "encoding/binary"

// Header bits and wire constants used by the hot path.
const (
	headerLen = 12

	bitQR     = 1 << 15
	bitRD     = 1 << 8
	bitCD     = 1 << 4
	opcodeMsk = 0xF << 11

	typeOPT  = 41
	typeTSIG = 250
	typeIXFR = 251
	typeAXFR = 252
	classIN  = 1

	rcodeFormErr  = 1
	rcodeServFail = 2
	rcodeNotImp   = 4
	rcodeRefused  = 5
	rcodeBadVers  = 16 // extended: 1 in the OPT record, 0 in the header

	// maxUDPSize is the largest UDP response we send and the size we
	// advertise in EDNS (the DNS flag day 2020 value: no fragmentation).
	maxUDPSize = 1232
	minUDPSize = 512

	optLen = 11 // an OPT RR without options
)

// query is what the hot path learns from a request, without allocating.
type query struct {
	id          uint16
	flags       uint16
	qtype       uint16
	qclass      uint16
	questionEnd int // offset just past the question in the request
	nameLen     int // length of the lowercase wire name at the start of key
	edns        bool
	ednsVersion uint8
	do          bool
	udpSize     uint16
	tsig        bool // a TSIG RR is present: the slow path handles it
}

// parseStatus tells the caller what to do with a request.
type parseStatus int

const (
	parseOK      parseStatus = iota
	parseDrop                // not worth an answer (too short, or a response)
	parseFormErr             // answer FORMERR with what we have
	parseSlow                // opcode or content for the slow path
)

// parseQuery reads the header, the single question and the EDNS and TSIG
// records of req. The lowercase wire name followed by the qtype is written
// into key (at least 257 bytes); q.nameLen tells where the name ends.
func parseQuery(req []byte, key []byte, q *query) parseStatus {
	counts, st := parseHeader(req, q)
	if st != parseOK {
		return st
	}
	off, st := parseQuestion(req, key, q)
	if st != parseOK {
		return st
	}
	if q.qtype == typeAXFR || q.qtype == typeIXFR {
		return parseSlow
	}
	return parseRecords(req, off, counts, q)
}

// sectionCounts are the numbers of answer, authority and additional
// records of a request.
type sectionCounts struct{ an, ns, ar uint16 }

// parseHeader reads the ID and flags and checks that the request is a
// plain query with one question.
func parseHeader(req []byte, q *query) (sectionCounts, parseStatus) {
	if len(req) < headerLen {
		return sectionCounts{}, parseDrop
	}
	q.id = binary.BigEndian.Uint16(req)
	q.flags = binary.BigEndian.Uint16(req[2:])
	q.questionEnd = headerLen
	if q.flags&bitQR != 0 {
		return sectionCounts{}, parseDrop
	}
	if q.flags&opcodeMsk != 0 {
		return sectionCounts{}, parseSlow
	}
	if binary.BigEndian.Uint16(req[4:]) != 1 {
		return sectionCounts{}, parseFormErr
	}
	return sectionCounts{
		an: binary.BigEndian.Uint16(req[6:]),
		ns: binary.BigEndian.Uint16(req[8:]),
		ar: binary.BigEndian.Uint16(req[10:]),
	}, parseOK
}

// parseQuestion lowercases the question's name into key, followed by the
// qtype, and returns the offset just past the question. No compression is
// possible in the first name of a message.
func parseQuestion(req, key []byte, q *query) (int, parseStatus) {
	off, k := headerLen, 0
	for {
		if off >= len(req) {
			return 0, parseFormErr
		}
		l := int(req[off])
		if l == 0 {
			key[k] = 0
			k++
			off++
			break
		}
		if l > 63 || off+1+l > len(req) || k+1+l+1 > 255 {
			return 0, parseFormErr
		}
		key[k] = byte(l)
		for i := 1; i <= l; i++ {
			c := req[off+i]
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			key[k+i] = c
		}
		k += 1 + l
		off += 1 + l
	}
	if off+4 > len(req) {
		return 0, parseFormErr
	}
	q.nameLen = k
	q.qtype = binary.BigEndian.Uint16(req[off:])
	q.qclass = binary.BigEndian.Uint16(req[off+2:])
	key[k] = req[off]
	key[k+1] = req[off+1]
	off += 4
	q.questionEnd = off
	q.edns, q.tsig, q.do, q.ednsVersion, q.udpSize = false, false, false, 0, 0
	return off, parseOK
}

// parseRecords walks the other sections from off looking for the OPT
// record (EDNS) and a TSIG record, which sends the request to the slow path.
func parseRecords(req []byte, off int, c sectionCounts, q *query) parseStatus {
	total := int(c.an) + int(c.ns) + int(c.ar)
	for i := 0; i < total; i++ {
		start := off
		var ok bool
		if off, ok = skipName(req, off); !ok || off+10 > len(req) {
			return parseFormErr
		}
		rrtype := binary.BigEndian.Uint16(req[off:])
		class := binary.BigEndian.Uint16(req[off+2:])
		ttl := binary.BigEndian.Uint32(req[off+4:])
		rdlen := int(binary.BigEndian.Uint16(req[off+8:]))
		off += 10
		if off+rdlen > len(req) {
			return parseFormErr
		}
		off += rdlen
		inAdditional := i >= int(c.an)+int(c.ns)
		switch rrtype {
		case typeOPT:
			// One OPT, in the additional section, owned by the root.
			if !inAdditional || q.edns || req[start] != 0 {
				return parseFormErr
			}
			q.edns = true
			q.udpSize = class
			q.ednsVersion = uint8(ttl >> 16)
			q.do = ttl&(1<<15) != 0
		case typeTSIG:
			// TSIG must be the last record.
			if !inAdditional || i != total-1 {
				return parseFormErr
			}
			q.tsig = true
		}
	}
	if q.tsig {
		return parseSlow
	}
	return parseOK
}

// skipName steps over a possibly compressed name.
func skipName(msg []byte, off int) (int, bool) {
	for n := 0; n < 128; n++ {
		if off >= len(msg) {
			return 0, false
		}
		l := int(msg[off])
		switch {
		case l == 0:
			return off + 1, true
		case l&0xC0 == 0xC0:
			if off+2 > len(msg) {
				return 0, false
			}
			return off + 2, true
		case l > 63:
			return 0, false
		default:
			off += 1 + l
		}
	}
	return 0, false
}

// hasZoneSuffix reports whether the lowercase wire name ends with the zone
// apex at a label boundary.
func hasZoneSuffix(name, zone []byte) bool {
	if len(name) < len(zone) {
		return false
	}
	start := len(name) - len(zone)
	off := 0
	for off < start {
		off += int(name[off]) + 1
	}
	if off != start {
		return false
	}
	return string(name[start:]) == string(zone)
}
