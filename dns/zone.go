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
	names   map[string]*answer // key: lowercase wire name; NODATA answer
	nx      answer             // NXDOMAIN with the SOA (uncompressed)
	soa     *mdns.SOA
	xfr     []mdns.RR // SOA, NS, addresses (a transfer adds the final SOA)
	records []Record  // the onionpod records, normalized
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

// buildSnapshot packs every answer of the zone. records must be normalized.
func buildSnapshot(z *zoneData, serial uint32, records []Record) (*snapshot, error) {
	soa := z.soaRR(serial)
	s := &snapshot{
		serial:  serial,
		answers: make(map[string]*answer),
		names:   make(map[string]*answer),
		soa:     soa,
		records: records,
	}
	var err error
	if s.zone, err = wireName(z.zone); err != nil {
		return nil, fmt.Errorf("dns: zone %s: %w", z.zone, err)
	}
	sets, glue := collectRRsets(z, soa, records)
	for name := range existingNames(sets, z.zone) {
		if err := s.packName(name, sets[name], glue); err != nil {
			return nil, err
		}
	}
	if s.nx, err = nxdomainAnswer(soa); err != nil {
		return nil, err
	}
	s.xfr = transferOrder(sets, z.zone)
	return s, nil
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

// packName packs the answers of one existing name: NODATA, one per type
// it holds (an NS answer with the glue), and ANY.
func (s *snapshot) packName(name string, types map[uint16][]mdns.RR, glue []mdns.RR) error {
	wire, err := wireName(name)
	if err != nil {
		return fmt.Errorf("dns: name %s: %w", name, err)
	}
	nodata, err := packAnswer(name, mdns.TypeNone, nil, []mdns.RR{s.soa}, nil, mdns.RcodeSuccess)
	if err != nil {
		return err
	}
	s.names[string(wire)] = nodata
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
