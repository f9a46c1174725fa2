package dnstest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab/hostcheck"
)

// New starts named for a test (StartNamed) and stops it at the end of the
// test. It skips the test when named is not installed.
func New(t testing.TB, opts NamedOptions) *Named {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := StartNamed(ctx, opts)
	if errors.Is(err, ErrMissing) {
		t.Skip("dnstest: " + err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = n.Close()
		if t.Failed() {
			t.Logf("named log:\n%s", n.Log())
		}
	})
	return n
}

// NeedDig skips the test when dig is not installed.
func NeedDig(t testing.TB) {
	t.Helper()
	if err := hostcheck.Missing(hostcheck.Dig); err != nil {
		t.Skip("dnstest: " + err.Error())
	}
}

// DigT runs dig (see Dig) and fails the test on error.
func DigT(t testing.TB, args ...string) string {
	t.Helper()
	NeedDig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := Dig(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
