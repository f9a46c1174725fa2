package box

import (
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/atomicfile"
)

//go:embed units
var ownUnits embed.FS

// prepareState creates the overlay directories. On the first boot it hides the host's
// /etc/systemd/system (an opaque directory in the /etc upper dir: the host's enabled services must
// not start inside) and gives the box a machine id and a hostname of its own.
func prepareState(dir, name string) error {
	for _, d := range []string{"", "etc/upper", "etc/work", "var/upper", "var/work"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return fmt.Errorf("box: state dir: %w", err)
		}
	}
	// The upper dirs' roots become /etc and /var: give them the usual modes.
	for _, d := range []string{"etc/upper", "var/upper"} {
		if err := os.Chmod(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("box: state dir: %w", err)
		}
	}
	units := filepath.Join(dir, "etc/upper/systemd/system")
	if _, err := os.Stat(units); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(units, 0o755); err != nil {
			return fmt.Errorf("box: state dir: %w", err)
		}
		if err := unix.Setxattr(units, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
			return fmt.Errorf("box: hide the host's /etc/systemd/system: %w", err)
		}
	}
	machineID := filepath.Join(dir, "etc/upper/machine-id")
	if _, err := os.Stat(machineID); errors.Is(err, os.ErrNotExist) {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("box: machine id: %w", err)
		}
		if _, err := atomicfile.WriteFile(machineID, []byte(hex.EncodeToString(b[:])+"\n"), 0o444); err != nil {
			return fmt.Errorf("box: machine id: %w", err)
		}
	}
	if _, err := atomicfile.WriteFile(filepath.Join(dir, "etc/upper/hostname"), []byte(name+"\n"), 0o644); err != nil {
		return fmt.Errorf("box: hostname: %w", err)
	}
	return nil
}

// writeOwnUnits (re)writes the box's own unit files into dir.
func writeOwnUnits(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("box: units: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("box: units: %w", err)
	}
	entries, err := fs.ReadDir(ownUnits, "units")
	if err != nil {
		return fmt.Errorf("box: units: %w", err)
	}
	for _, e := range entries {
		b, err := ownUnits.ReadFile("units/" + e.Name())
		if err != nil {
			return fmt.Errorf("box: units: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			return fmt.Errorf("box: units: %w", err)
		}
	}
	return nil
}
