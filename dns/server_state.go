package dns

import (
	"fmt"
	"path/filepath"
	"time"
)

// serverState is what the built-in server keeps across restarts.
type serverState struct {
	Version int      `json:"version"`
	Zone    string   `json:"zone"`
	Serial  uint32   `json:"serial"`
	Apex    string   `json:"apex"` // fingerprint of the configured apex data
	Records []Record `json:"records"`
}

const stateVersion = 1

func statePath(dir string) string { return filepath.Join(dir, "zone.json") }

// initialState is where a server starts: the kept serial and records, or a
// fresh serial when nothing is kept. save tells whether the state file must
// be (re)written before serving. A damaged state file is moved aside and
// reported (damaged); the server then starts with no records and a serial
// past the one it served last (see lostSerial).
type initialState struct {
	serial  uint32
	records []Record
	save    bool
	damaged error
}

func (s *Server) initialState(now time.Time) (initialState, error) {
	fresh := initialState{serial: dateSerial(now), save: s.setup.stateDir != ""}
	if s.setup.stateDir == "" {
		return fresh, nil
	}
	zone := s.setup.zone.zone
	var st serverState
	var records []Record
	path := statePath(s.setup.stateDir)
	found, damaged, err := readState(path, &st, func() (err error) {
		if st.Version != stateVersion {
			return fmt.Errorf("version %d not supported", st.Version)
		}
		if st.Zone == zone {
			records, err = normalizeRecords(zone, st.Records)
		}
		return err
	})
	switch {
	case err != nil:
		return initialState{}, fmt.Errorf("dns: read state: %w", err)
	case damaged != nil:
		if err := damaged.quarantine(now); err != nil {
			return initialState{}, err
		}
		return initialState{serial: lostSerial(damaged.data, now), save: true,
			damaged: damaged.err("state")}, nil
	case !found:
		return fresh, nil
	}
	init := initialState{serial: st.Serial, records: records}
	if st.Zone != zone || st.Apex != s.apex {
		init.serial, init.save = nextSerial(st.Serial, now), true
	}
	return init, nil
}

// lostSerial is the serial of a server whose state file is damaged. When
// the file still shows its serial, the next one. Otherwise tomorrow's first
// date serial: ahead of everything served unless the zone changed more than
// a hundred times a day ahead of the date; the secondaries are asked for
// their serial at Start and the server moves past theirs (raiseSerial), so
// they take the next transfer in any case.
func lostSerial(damaged []byte, now time.Time) uint32 {
	if old, ok := salvageSerial(damaged); ok {
		return nextSerial(old, now)
	}
	return nextSerial(dateSerial(now)+99, now)
}

func (s *Server) saveState(snap *snapshot) error {
	if s.setup.stateDir == "" {
		return nil
	}
	st := &serverState{
		Version: stateVersion,
		Zone:    s.setup.zone.zone,
		Serial:  snap.serial,
		Apex:    s.apex,
		Records: snap.records,
	}
	if err := writeState(statePath(s.setup.stateDir), st); err != nil {
		return fmt.Errorf("dns: write state: %w", err)
	}
	return nil
}
