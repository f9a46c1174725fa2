// Package registrytest is the tests' thin wrapper over registry: a docker-registry on loopback
// for one test, stopped in its cleanup; the test is skipped (with the reason) when
// docker-registry or skopeo is not installed.
package registrytest

import (
	"errors"
	"testing"

	"github.com/onionpod/onionpod/internal/lab/hostcheck"
	"github.com/onionpod/onionpod/internal/lab/registry"
)

// New starts a registry on 127.0.0.1 with its storage in a temporary directory of the test.
func New(t testing.TB) *registry.Registry {
	t.Helper()
	if err := hostcheck.Missing(hostcheck.Registry, hostcheck.Skopeo); err != nil {
		t.Skip(err)
	}
	r, err := registry.Start(t.Context(), registry.Options{Dir: t.TempDir()})
	if errors.Is(err, hostcheck.ErrUnavailable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}
