package dns

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ledger is onionpod's record of what it published with RFC 2136 and what
// it wants published. It is written before every update is sent and after
// every update succeeds, so a crash in between only repeats an idempotent
// update; deletes come from Published, never from a zone transfer.
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
}

const ledgerVersion = 1

func loadLedger(path string) (*ledger, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dns: read ledger: %w", err)
	}
	var l ledger
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("dns: ledger %s: %w", path, err)
	}
	if l.Version != ledgerVersion {
		return nil, fmt.Errorf("dns: ledger %s: version %d not supported", path, l.Version)
	}
	return &l, nil
}

func (l *ledger) save(path string) error {
	l.Version = ledgerVersion
	data, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, append(data, '\n')); err != nil {
		return fmt.Errorf("dns: write ledger: %w", err)
	}
	return nil
}

// pending reports whether the server does not hold the desired set yet.
func (l *ledger) pending(ttl uint32) bool {
	if !l.DesiredSet {
		return false
	}
	return !recordsEqual(l.Desired, l.Published) || (len(l.Published) > 0 && l.TTL != ttl)
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
