package dns

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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

// loadServerState reads the state file; a missing file is an empty state.
func loadServerState(dir string) (*serverState, error) {
	data, err := os.ReadFile(statePath(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dns: read state: %w", err)
	}
	var st serverState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("dns: state %s: %w", statePath(dir), err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("dns: state %s: version %d not supported", statePath(dir), st.Version)
	}
	return &st, nil
}

func saveServerState(dir string, st *serverState) error {
	st.Version = stateVersion
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(statePath(dir), append(data, '\n')); err != nil {
		return fmt.Errorf("dns: write state: %w", err)
	}
	return nil
}
