package podstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

// New boots a box for a test: it skips t (with the reason) when a box cannot boot here, fills in
// opts.StateDir (t.TempDir()) and opts.Name (from the test's name, made unique) when empty, and
// shuts the box down in t.Cleanup. It fails t when the boot itself fails.
func New(t testing.TB, opts Options) *System {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
	if opts.StateDir == "" {
		opts.StateDir = t.TempDir()
	}
	if opts.Name == "" {
		opts.Name = UniqueName(t.Name())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Boot(ctx, opts)
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return s
}

// UniqueName turns a prefix (e.g. a test name) into a valid, unique box name.
func UniqueName(prefix string) string {
	var b strings.Builder
	for _, r := range prefix {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	name := b.String()
	if len(name) > 40 {
		name = name[:40]
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	return name + "-" + hex.EncodeToString(r[:])
}

// RebootT reboots the box for a test (Reboot with a 60 s limit), failing t on error.
func (s *System) RebootT(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
}
