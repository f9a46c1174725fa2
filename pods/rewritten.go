package pods

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// RewrittenDir holds an empty file per unit whose file a Write replaced while systemd may still
// hold, or run, the older one, until an Apply has reloaded and restarted it. A daemon killed
// between a pass's write-ahead and its restarts leaves them to the next (which would otherwise
// find the files current and leave the pods on their old units). A reboot empties /run, and
// systemd then reads every unit file afresh.
const RewrittenDir = "/run/onionpod/units-rewritten"

// rewrittenSet is the set of rewritten units, in memory and as a file per unit in dir.
type rewrittenSet struct {
	dir string
	set nameSet
}

// load adds the units named in dir (left by an earlier process) to the set.
func (r *rewrittenSet) load() error {
	entries, err := os.ReadDir(r.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pods: rewritten units: %w", err)
	}
	for _, e := range entries {
		if checkUnitName(e.Name()) == nil {
			r.set.add(e.Name())
		}
	}
	return nil
}

// add records unit name as rewritten: on disk first, so that a file replaced after is never
// unrecorded.
func (r *rewrittenSet) add(name string) error {
	if r.dir != "" {
		if err := os.MkdirAll(filepath.Dir(r.dir), 0o755); err != nil { // /run/onionpod: others' sockets
			return fmt.Errorf("pods: rewritten units: %w", err)
		}
		if err := os.Mkdir(r.dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("pods: rewritten units: %w", err)
		}
		if err := os.WriteFile(filepath.Join(r.dir, name), nil, 0o600); err != nil {
			return fmt.Errorf("pods: rewritten units: %w", err)
		}
	}
	r.set.add(name)
	return nil
}

func (r *rewrittenSet) has(name string) bool { return r.set.has(name) }

// remove forgets names: systemd runs their current files (or they are gone).
func (r *rewrittenSet) remove(names ...string) {
	for _, name := range names {
		if r.dir != "" && r.set.has(name) {
			os.Remove(filepath.Join(r.dir, name))
		}
	}
	r.set.remove(names...)
}
