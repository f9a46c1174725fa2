package dns

import (
	"encoding/binary"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	mdns "github.com/miekg/dns"
)

// answer is a response packed ahead of time: everything after the question,
// plus the header fields that go with it. Names in tail may point (by
// compression) into the question at offset 12, so a tail is only valid after
// a question whose name has the same labels (in any case).
type answer struct {
	flags      uint16 // AA and RCODE bits of the header
	an, ns, ar uint16 // section counts of tail
	tail       []byte
}

// zoneData is the apex of the zone: what the configuration defines.
type zoneData struct {
	zone    string // canonical apex, e.g. "box.example."
	ns      []NameServer
	contact string // SOA RNAME as a domain name
	ttl     uint32
}

// snapshot is an immutable view of the zone served by the hot path. A Set
// builds a new one and swaps it in atomically.
type snapshot struct {
	serial  uint32
	zone    []byte             // lowercase wire form of the apex
	answers map[string]*answer // key: lowercase wire name + qtype (2 bytes)
	names   map[string]bool    // key: lowercase wire name; every name that exists answers nodata
	nx      answer             // NXDOMAIN with the SOA (uncompressed)
	nodata  answer             // NODATA with the SOA (uncompressed, so the same after any name)
	soa     *mdns.SOA
	xfr     []mdns.RR // SOA, NS, addresses (a transfer adds the final SOA)
	records []Record  // the onionpod records, normalized
	// byName are the records by owner name (sub-slices of records): a later snapshot takes the
	// packed answers of a name whose records did not change from this one.
	byName map[string][]Record
}

const (
	flagAA    = 1 << 10
	soaRetry  = 600
	soaExpire = 14 * 24 * 3600
)

func (z *zoneData) soaRR(serial uint32) *mdns.SOA {
	return &mdns.SOA{
		Hdr:     mdns.RR_Header{Name: z.zone, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: z.ttl},
		Ns:      z.ns[0].Host,
		Mbox:    z.contact,
		Serial:  serial,
		Refresh: 3600,
		Retry:   soaRetry,
		Expire:  soaExpire,
		Minttl:  z.ttl,
	}
}

func addrRR(name string, a netip.Addr, ttl uint32) mdns.RR {
	if a.Is4() {
		return &mdns.A{Hdr: mdns.RR_Header{Name: name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: ttl}, A: a.AsSlice()}
	}
	return &mdns.AAAA{Hdr: mdns.RR_Header{Name: name, Rrtype: mdns.TypeAAAA, Class: mdns.ClassINET, Ttl: ttl}, AAAA: a.AsSlice()}
}

// recordRR is the resource record of a normalized Record.
func recordRR(r Record, ttl uint32) mdns.RR {
	if r.TXT != "" {
		return &mdns.TXT{Hdr: mdns.RR_Header{Name: r.Name, Rrtype: mdns.TypeTXT, Class: mdns.ClassINET, Ttl: ttl}, Txt: []string{r.TXT}}
	}
	return addrRR(r.Name, r.Addr, ttl)
}

// wireName packs a canonical (lowercase) name into wire form.
func wireName(name string) ([]byte, error) {
	buf := make([]byte, 256)
	n, err := mdns.PackDomainName(name, buf, 0, nil, false)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func typeKey(wire []byte, qtype uint16) string {
	k := make([]byte, len(wire)+2)
	copy(k, wire)
	binary.BigEndian.PutUint16(k[len(wire):], qtype)
	return string(k)
}

// buildSnapshot packs every answer of the zone. records must be normalized. prev (nil: none) is
// the snapshot served until now, of the same zone data: the answers of a name whose records are
// the same in both are taken from it rather than packed again (at 1000 names, a change of one
// packs one name's, not 3000 answers). Only the serial's answers (the apex's SOA, and NODATA and
// NXDOMAIN, which carry the SOA) are always new.
func buildSnapshot(z *zoneData, serial uint32, records []Record, prev *snapshot) (*snapshot, error) {
	soa := z.soaRR(serial)
	s := &snapshot{
		serial:  serial,
		answers: make(map[string]*answer, 3*len(records)),
		names:   make(map[string]bool, len(records)),
		soa:     soa,
		records: records,
		byName:  recordsByName(records),
	}
	var err error
	if s.zone, err = wireName(z.zone); err != nil {
		return nil, fmt.Errorf("dns: zone %s: %w", z.zone, err)
	}
	if s.nx, err = nxdomainAnswer(soa); err != nil {
		return nil, err
	}
	s.nodata = answer{flags: flagAA, ns: 1, tail: s.nx.tail}
	sets, glue := collectRRsets(z, soa, records)
	for name := range existingNames(sets, z.zone) {
		if err := s.packName(name, sets[name], glue, s.reusable(prev, z, name)); err != nil {
			return nil, err
		}
	}
	s.xfr = transferOrder(sets, z.zone)
	return s, nil
}

// recordsByName groups normalized (sorted) records by owner name, as sub-slices.
func recordsByName(records []Record) map[string][]Record {
	out := map[string][]Record{}
	for i := 0; i < len(records); {
		j := i + 1
		for j < len(records) && records[j].Name == records[i].Name {
			j++
		}
		out[records[i].Name] = records[i:j:j]
		i = j
	}
	return out
}

// reusable returns prev when its answers for name are still right for s: not the apex (its SOA
// answer carries the serial) and the same records for name in both (what else a name's answers
// hold, the glue of in-zone name servers, is the zone data's, the same in both).
func (s *snapshot) reusable(prev *snapshot, z *zoneData, name string) *snapshot {
	if prev == nil || name == z.zone || !slices.Equal(prev.byName[name], s.byName[name]) {
		return nil
	}
	return prev
}

// rrsets are the zone's records by owner name and type.
type rrsets map[string]map[uint16][]mdns.RR

func (sets rrsets) add(rr mdns.RR) {
	h := rr.Header()
	if sets[h.Name] == nil {
		sets[h.Name] = map[uint16][]mdns.RR{}
	}
	for _, old := range sets[h.Name][h.Rrtype] {
		if mdns.IsDuplicate(old, rr) {
			return
		}
	}
	sets[h.Name][h.Rrtype] = append(sets[h.Name][h.Rrtype], rr)
}

// collectRRsets gathers the apex (SOA, NS, glue of in-zone name servers)
// and the records. glue is what an NS answer carries as additional data.
func collectRRsets(z *zoneData, soa *mdns.SOA, records []Record) (sets rrsets, glue []mdns.RR) {
	sets = rrsets{}
	sets.add(soa)
	for _, ns := range z.ns {
		sets.add(&mdns.NS{Hdr: mdns.RR_Header{Name: z.zone, Rrtype: mdns.TypeNS, Class: mdns.ClassINET, Ttl: z.ttl}, Ns: ns.Host})
		if inZone(ns.Host, z.zone) {
			for _, a := range ns.Addrs {
				rr := addrRR(ns.Host, a, z.ttl)
				sets.add(rr)
				glue = append(glue, rr)
			}
		}
	}
	for _, r := range records {
		sets.add(recordRR(r, z.ttl))
	}
	return sets, glue
}

// existingNames are every owner name and every empty non-terminal between
// it and the apex: the names that answer NODATA rather than NXDOMAIN.
func existingNames(sets rrsets, zone string) map[string]bool {
	exists := map[string]bool{}
	for name := range sets {
		for n := name; inZone(n, zone); {
			exists[n] = true
			if n == zone {
				break
			}
			i, _ := mdns.NextLabel(n, 0)
			n = n[i:]
		}
	}
	return exists
}

// packName packs the answers of one existing name: one per type it holds (an NS answer with
// the glue), and ANY; they are taken from prev when it is not nil (see reusable). Every name
// answers NODATA for the other types.
func (s *snapshot) packName(name string, types map[uint16][]mdns.RR, glue []mdns.RR, prev *snapshot) error {
	wire, err := wireName(name)
	if err != nil {
		return fmt.Errorf("dns: name %s: %w", name, err)
	}
	s.names[string(wire)] = true
	if prev != nil && s.takeAnswers(prev, wire, types) {
		return nil
	}
	var all []mdns.RR
	for _, t := range slices.Sorted(maps.Keys(types)) {
		rrs := types[t]
		all = append(all, rrs...)
		var extra []mdns.RR
		if t == mdns.TypeNS {
			extra = glue
		}
		a, err := packAnswer(name, t, rrs, nil, extra, mdns.RcodeSuccess)
		if err != nil {
			return err
		}
		s.answers[typeKey(wire, t)] = a
	}
	if len(all) > 0 {
		a, err := packAnswer(name, mdns.TypeANY, all, nil, nil, mdns.RcodeSuccess)
		if err != nil {
			return err
		}
		s.answers[typeKey(wire, mdns.TypeANY)] = a
	}
	return nil
}

// takeAnswers copies the answers of the name wire for types (and ANY) from prev; false, copying
// nothing, when prev lacks one.
func (s *snapshot) takeAnswers(prev *snapshot, wire []byte, types map[uint16][]mdns.RR) bool {
	keys := make([]string, 0, len(types)+1)
	for t := range types {
		keys = append(keys, typeKey(wire, t))
	}
	if len(types) > 0 {
		keys = append(keys, typeKey(wire, mdns.TypeANY))
	}
	for _, k := range keys {
		if prev.answers[k] == nil {
			return false
		}
	}
	for _, k := range keys {
		s.answers[k] = prev.answers[k]
	}
	return true
}

// nxdomainAnswer is NXDOMAIN with the SOA in authority, packed without
// compression because the question name is not known ahead of time.
func nxdomainAnswer(soa *mdns.SOA) (answer, error) {
	buf := make([]byte, 512)
	n, err := mdns.PackRR(soa, buf, 0, nil, false)
	if err != nil {
		return answer{}, fmt.Errorf("dns: pack SOA: %w", err)
	}
	return answer{flags: flagAA | mdns.RcodeNameError, ns: 1, tail: buf[:n]}, nil
}

// transferOrder is the zone as a transfer sends it: SOA, NS, then the
// addresses and challenge texts by name (the transfer adds the closing SOA).
func transferOrder(sets rrsets, zone string) []mdns.RR {
	xfr := []mdns.RR{sets[zone][mdns.TypeSOA][0]}
	xfr = append(xfr, sets[zone][mdns.TypeNS]...)
	for _, name := range slices.Sorted(maps.Keys(sets)) {
		for _, t := range []uint16{mdns.TypeA, mdns.TypeAAAA, mdns.TypeTXT} {
			xfr = append(xfr, sets[name][t]...)
		}
	}
	return xfr
}

// packAnswer packs a response for (name, qtype) and keeps what follows the
// question. Compression pointers into the question stay valid because the
// question is copied from the query at the same offset with the same labels.
func packAnswer(name string, qtype uint16, an, ns, extra []mdns.RR, rcode int) (*answer, error) {
	m := &mdns.Msg{Compress: true}
	m.Question = []mdns.Question{{Name: name, Qtype: qtype, Qclass: mdns.ClassINET}}
	m.Answer, m.Ns, m.Extra = an, ns, extra
	m.Rcode = rcode
	wire, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("dns: pack answer for %s: %w", name, err)
	}
	qlen := 0
	for wire[12+qlen] != 0 {
		qlen += int(wire[12+qlen]) + 1
	}
	start := 12 + qlen + 1 + 4
	return &answer{
		flags: flagAA | uint16(rcode),
		an:    uint16(len(an)),
		ns:    uint16(len(ns)),
		ar:    uint16(len(extra)),
		tail:  slices.Clone(wire[start:]),
	}, nil
}
