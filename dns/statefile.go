package dns

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/onionpod/onionpod/internal/atomicfile"
)

// The built-in server's zone.json and the RFC 2136 ledger are onionpod's
// own files. A crash cannot damage them (they are written atomically), but a
// disk, a restore or a hand edit can. A damaged file never stops the
// daemon: it is moved aside for the user (NAME.damaged-TIME), reported, and
// the backend carries on with what can still be known.

// writeState writes v as indented JSON to path (0600, its directory 0700),
// atomically; an unchanged file is left alone.
func writeState(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	_, err = atomicfile.WriteFile(path, append(data, '\n'), 0o600)
	return err
}

// readState reads path into v. A missing file gives found false. A file
// that is not valid state (check refuses it) gives a *damagedFile, which
// still holds the bytes for salvage; other errors (the disk) are returned
// as they are.
func readState(path string, v any, check func() error) (found bool, damaged *damagedFile, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil, nil
	}
	if err != nil {
		return false, nil, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return true, &damagedFile{path: path, data: data, cause: err}, nil
	}
	if err := check(); err != nil {
		return true, &damagedFile{path: path, data: data, cause: err}, nil
	}
	return true, nil, nil
}

// damagedFile is a state file that could not be used.
type damagedFile struct {
	path  string
	data  []byte
	cause error
	kept  string // where it was moved
}

// quarantine moves the file aside, keeping it for the user.
func (d *damagedFile) quarantine(now time.Time) error {
	kept, err := atomicfile.Quarantine(d.path, now.Unix())
	if err != nil {
		return fmt.Errorf("dns: %s is damaged (%v) and could not be moved aside: %w", d.path, d.cause, err)
	}
	d.kept = kept
	return nil
}

// err describes the damage for the log and Status, and wraps ErrDamaged.
func (d *damagedFile) err(what string) error {
	return fmt.Errorf("dns: %s %s: %w: %v; kept as %s", what, d.path, ErrDamaged, d.cause, d.kept)
}

var (
	serialField = regexp.MustCompile(`"serial"\s*:\s*([0-9]{1,10})\s*[,}\n]`)
	nameField   = regexp.MustCompile(`"name"\s*:\s*"([^"\\]+)"`) // canonicalName bounds the length
)

// salvageSerial finds the serial in what is left of a state file.
func salvageSerial(data []byte) (uint32, bool) {
	m := serialField.FindSubmatch(data)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseUint(string(m[1]), 10, 32)
	return uint32(n), err == nil
}

// salvageNames finds the owner names of records in what is left of a state
// file, canonical and inside zone.
func salvageNames(data []byte, zone string) []string {
	var out []string
	for _, m := range nameField.FindAllSubmatch(data, -1) {
		if n, err := canonicalName("name", string(m[1])); err == nil && inZone(n, zone) && n != zone {
			out = append(out, n)
		}
	}
	return out
}
