package dns

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/genvalue"
	"github.com/onionpod/onionpod/internal/names"
)

// Record is one record onionpod publishes: AAAA when Addr is IPv6, A when it
// is IPv4, and TXT when TXT is set instead (an ACME DNS-01 challenge:
// "_acme-challenge.blog.box.example." while a certificate is being obtained).
type Record struct {
	// Name is the fully qualified owner name, e.g. "blog.box.example.".
	Name string `json:"name"`
	// Addr is the address served for Name.
	Addr netip.Addr `json:"addr"`
	// TXT is the text served for Name (one string, printable ASCII, at most
	// 255 bytes); Addr is then unset.
	TXT string `json:"txt,omitempty"`
}

// Type is "AAAA" for an IPv6 address, "A" for an IPv4 one, "TXT" for text.
func (r Record) Type() string {
	switch {
	case r.TXT != "":
		return "TXT"
	case r.Addr.Is4():
		return "A"
	}
	return "AAAA"
}

// IsAddress reports whether the record is an A or AAAA record.
func (r Record) IsAddress() bool { return r.TXT == "" }

// String formats the record like a zone file line without TTL and class.
func (r Record) String() string {
	if r.TXT != "" {
		return r.Name + " TXT " + strconv.Quote(r.TXT)
	}
	return r.Name + " " + r.Type() + " " + r.Addr.String()
}

// typeOrder sorts A before AAAA before TXT.
func (r Record) typeOrder() int {
	switch {
	case r.TXT != "":
		return 2
	case r.Addr.Is4():
		return 0
	}
	return 1
}

// compareRecords orders records by name, then A, AAAA, TXT, then data.
func compareRecords(a, b Record) int {
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	if c := a.typeOrder() - b.typeOrder(); c != 0 {
		return c
	}
	if c := strings.Compare(a.TXT, b.TXT); c != 0 {
		return c
	}
	return a.Addr.Compare(b.Addr)
}

// AppName returns the fully qualified name of an app in a zone
// ("blog", "box.example" gives "blog.box.example."). The app name must be a
// single DNS label (internal/names.App, after lowercasing).
func AppName(app, zone string) (string, error) {
	z, err := canonicalZone(zone)
	if err != nil {
		return "", err
	}
	label := strings.ToLower(app)
	if err := names.App(label); err != nil {
		return "", fmt.Errorf("dns: %w", err)
	}
	if z == "." {
		return label + ".", nil
	}
	return label + "." + z, nil
}

// AppRecords builds the records of an app: one per usable address, named
// AppName(app, zone). Unspecified, loopback, link-local and multicast
// addresses are left out (they mean nothing to another host); IPv4-mapped
// IPv6 addresses become A records.
func AppRecords(app, zone string, addrs ...netip.Addr) ([]Record, error) {
	name, err := AppName(app, zone)
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		if !publishable(a) {
			continue
		}
		out = append(out, Record{Name: name, Addr: a})
	}
	slices.SortFunc(out, compareRecords)
	return slices.Compact(out), nil
}

func publishable(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsLoopback() &&
		!a.IsLinkLocalUnicast() && !a.IsMulticast() && !a.IsLinkLocalMulticast()
}

// canonicalName lowercases name, adds the final dot and checks that it is a
// well-formed domain name (labels of letters, digits, '-' and '_', at most
// 63 bytes each and 255 in all): a rule stricter than genvalue.Check, so
// every name that reaches zone data or a state file is also a safe value.
// field names the value in errors ("zone", "NS[0]", "record").
func canonicalName(field, name string) (string, error) {
	if err := genvalue.Check("dns: "+field, name); err != nil {
		return "", err
	}
	n := strings.ToLower(strings.TrimSpace(name))
	if n == "" {
		return "", errkind.BadInputf("dns: %s: empty name", field)
	}
	if n == "." {
		return n, nil
	}
	if !strings.HasSuffix(n, ".") {
		n += "."
	}
	if len(n) > 254 {
		return "", errkind.BadInputf("dns: %s %q: longer than 253 characters", field, name)
	}
	for _, l := range strings.Split(n[:len(n)-1], ".") {
		if len(l) == 0 || len(l) > 63 {
			return "", errkind.BadInputf("dns: %s %q: empty or long label", field, name)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", errkind.BadInputf("dns: %s %q: character %q not allowed", field, name, c)
			}
		}
	}
	return n, nil
}

func canonicalZone(zone string) (string, error) { return canonicalName("zone", zone) }

// inZone reports whether the canonical name is the zone apex or below it.
func inZone(name, zone string) bool {
	if zone == "." {
		return true
	}
	return name == zone || strings.HasSuffix(name, "."+zone)
}

// normalizeRecords validates records for a zone and returns them canonical
// (lowercase FQDN names, unmapped addresses), sorted and without duplicates.
func normalizeRecords(zone string, recs []Record) ([]Record, error) {
	out := make([]Record, 0, len(recs))
	for _, r := range recs {
		name, err := canonicalName("record name", r.Name)
		if err != nil {
			return nil, err
		}
		if !inZone(name, zone) {
			return nil, errkind.BadInputf("dns: record %s: outside zone %s", name, zone)
		}
		if r.TXT != "" {
			if r.Addr.IsValid() || !validTXT(r.TXT) {
				return nil, fmt.Errorf("dns: record %s: %w: TXT must be 1 to 255 printable ASCII characters (no quote or backslash), without an address", name, ErrBadInput)
			}
			out = append(out, Record{Name: name, TXT: r.TXT})
			continue
		}
		a := r.Addr.Unmap()
		if !a.IsValid() || a.IsUnspecified() || a.Zone() != "" {
			return nil, errkind.BadInputf("dns: record %s: address %q not publishable", name, r.Addr)
		}
		out = append(out, Record{Name: name, Addr: a})
	}
	slices.SortFunc(out, compareRecords)
	return slices.Compact(out), nil
}

// validTXT reports whether s can be one TXT string: printable ASCII, at most
// 255 bytes (what an ACME challenge is: 43 characters of base64url).
func validTXT(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e || s[i] == '"' || s[i] == '\\' {
			return false
		}
	}
	return true
}

// recordsEqual reports whether two normalized record lists are the same.
func recordsEqual(a, b []Record) bool {
	return slices.Equal(a, b)
}

// cloneRecords returns a copy that callers may keep.
func cloneRecords(r []Record) []Record {
	if r == nil {
		return nil
	}
	return slices.Clone(r)
}
