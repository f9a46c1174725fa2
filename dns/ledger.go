package dns

import (
	"fmt"
	"slices"
	"time"
)

// ledger is onionpod's record of what it published with RFC 2136 and what
// it wants published. It is written before every update is sent and after
// every update succeeds, so a crash in between only repeats an idempotent
// update; deletes come from Published, never from a zone transfer.
//
// Each save writes the ledger, then a copy of it (LEDGER.copy). When the
// ledger is damaged the copy is at most one save behind, and the names it
// holds (published, desired or to replace) cover every record onionpod may
// have left on the server: they are all replaced at the next update.
type ledger struct {
	Version   int      `json:"version"`
	Zone      string   `json:"zone"`
	Server    string   `json:"server"`
	TTL       uint32   `json:"ttl"`       // TTL of the published records
	Published []Record `json:"published"` // acknowledged by the server
	// Desired is the set of the last Set; DesiredSet tells an empty set
	// (remove everything) from no Set at all.
	Desired    []Record `json:"desired"`
	DesiredSet bool     `json:"desired_set"`
	// Unknown: what is published is not known (the ledger was lost). The
	// next update deletes the address records of every name in Replace
	// and in Desired before adding the desired ones.
	Unknown bool     `json:"unknown,omitempty"`
	Replace []string `json:"replace,omitempty"`
}

const ledgerVersion = 1

func copyPath(path string) string { return path + ".copy" }

// readLedger reads the ledger at path; a missing file gives nil.
func readLedger(path, zone string) (*ledger, *damagedFile, error) {
	var l ledger
	found, damaged, err := readState(path, &l, func() (err error) {
		if l.Version != ledgerVersion {
			return fmt.Errorf("version %d not supported", l.Version)
		}
		if l.Zone != zone {
			return nil // refused by the caller, not damaged
		}
		if l.Published, err = normalizeRecords(zone, l.Published); err != nil {
			return err
		}
		if l.Desired, err = normalizeRecords(zone, l.Desired); err != nil {
			return err
		}
		for i, n := range l.Replace {
			if l.Replace[i], err = canonicalName("ledger name", n); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("dns: read ledger: %w", err)
	}
	if !found || damaged != nil {
		return nil, damaged, nil
	}
	return &l, nil, nil
}

// loadLedger reads the ledger at path, or recovers from its copy when it
// is damaged or missing. A damaged file is moved aside and described by
// the returned error (nil when nothing was damaged).
func loadLedger(path, zone string, now time.Time) (l *ledger, damage error, err error) {
	l, damaged, err := readLedger(path, zone)
	if err != nil || (l != nil && damaged == nil) {
		return l, nil, err
	}
	if damaged != nil {
		if err := damaged.quarantine(now); err != nil {
			return nil, nil, err
		}
	}
	backup, copyDamaged, err := readLedger(copyPath(path), zone)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case backup != nil && backup.Zone != zone:
		// The copy belongs to another zone: refused like the ledger would be.
		return backup, nil, nil
	case backup != nil && damaged == nil:
		// The ledger was removed, its copy is there: it tells what may
		// be on the server.
		return backup.lost(nil), nil, nil
	case backup != nil:
		return backup.lost(nil), fmt.Errorf("%w; recovered from %s: every name it holds gets its address records replaced at the next update", damaged.err("ledger"), copyPath(path)), nil
	case damaged == nil && copyDamaged == nil:
		return nil, nil, nil // neither exists: a first start
	}
	// No usable copy: what the damaged files still show, and the names of
	// the next Set, is all that can be replaced.
	var names []string
	var what []error
	for _, d := range []*damagedFile{damaged, copyDamaged} {
		if d == nil {
			continue
		}
		if d != damaged {
			if err := d.quarantine(now); err != nil {
				return nil, nil, err
			}
		}
		names = append(names, salvageNames(d.data, zone)...)
		what = append(what, d.err("ledger"))
	}
	l = (&ledger{Version: ledgerVersion, Zone: zone}).lost(names)
	return l, fmt.Errorf("%w; no usable copy: the next update replaces the address records of the names still readable there (%d) and of the names it publishes; records onionpod published before under other names stay until removed by hand", joinErrors(what), len(l.Replace)), nil
}

func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return fmt.Errorf("%w; %w", errs[0], errs[1])
}

// lost turns a ledger into one whose published records are not known:
// every name it mentions (and extra) is replaced at the next update, and a
// desired set it held is applied again.
func (l *ledger) lost(extra []string) *ledger {
	names := slices.Clone(extra)
	names = append(names, l.Replace...)
	for _, r := range append(slices.Clone(l.Published), l.Desired...) {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	l.Replace = slices.Compact(names)
	l.Unknown, l.Published = true, nil
	return l
}

// save writes the ledger, then its copy.
func (l *ledger) save(path string) error {
	l.Version = ledgerVersion
	for _, p := range []string{path, copyPath(path)} {
		if err := writeState(p, l); err != nil {
			return fmt.Errorf("dns: write ledger: %w", err)
		}
	}
	return nil
}

// pending reports whether the server does not hold the desired set yet.
func (l *ledger) pending(ttl uint32) bool {
	if !l.DesiredSet {
		return false
	}
	return l.Unknown || !recordsEqual(l.Desired, l.Published) || (len(l.Published) > 0 && l.TTL != ttl)
}

// replaceNames are the names whose address records the next update
// deletes whole: when the ledger was lost, those it could still name and
// every desired one.
func (l *ledger) replaceNames() []string {
	if !l.Unknown {
		return nil
	}
	names := slices.Clone(l.Replace)
	for _, r := range l.Desired {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// minus returns the records of a that are not in b (both normalized).
func minus(a, b []Record) []Record {
	in := make(map[Record]bool, len(b))
	for _, r := range b {
		in[r] = true
	}
	var out []Record
	for _, r := range a {
		if !in[r] {
			out = append(out, r)
		}
	}
	return out
}
