package oniontest

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// SkipReason says why real-tor tests cannot run here ("" when they can): not root, or tor
// or tor-gencert missing.
func SkipReason() string {
	if os.Geteuid() != 0 {
		return "oniontest: needs root (tor's control socket and key directories are checked for ownership)"
	}
	for _, bin := range []string{"tor", "tor-gencert"} {
		if _, err := exec.LookPath(bin); err != nil {
			return "oniontest: " + bin + " is not installed (apt-get install tor)"
		}
	}
	return ""
}

// TempDir makes a short-named temporary directory (unix socket paths are limited to 107
// bytes, and t.TempDir names can be long) removed at the end of the test.
func TempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "oniontest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// NewOffline starts an offline tor for the test, or skips the test with the reason. It is
// stopped when the test ends.
func NewOffline(t testing.TB) *Tor {
	t.Helper()
	if r := SkipReason(); r != "" {
		t.Skip(r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tor, err := StartOffline(ctx, TempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tor.Close() })
	return tor
}
