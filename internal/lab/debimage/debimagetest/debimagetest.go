// Package debimagetest is the tests' thin wrapper over debimage: it builds (or finds in the shared
// cache) an image for a test, skips the test with the reason when the image cannot be built on
// this machine (not root, mmdebstrap missing, the Debian mirror unreachable, and nothing cached),
// and fails it on any other error.
package debimagetest

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onionpod/onionpod/internal/lab/debimage"
)

// Builder is the builder tests use: the shared cache (debimage.CacheDir()), docker archives.
func Builder(t testing.TB) *debimage.Builder {
	return &debimage.Builder{Log: logWriter{t}}
}

// Build returns the archive of r, building it when the cache does not have it.
func Build(t testing.TB, b *debimage.Builder, r debimage.Recipe) debimage.Result {
	t.Helper()
	res, err := b.Build(t.Context(), r)
	check(t, err)
	t.Logf("image %s: %s (%d bytes, %s)", res.Ref, res.Path, res.Size, describe(res))
	return res
}

// Apps returns the test apps' archives (PostgreSQL, notes v1, v2, broken).
func Apps(t testing.TB) debimage.Apps {
	t.Helper()
	b := Builder(t)
	apps, err := b.Apps(t.Context(), ModuleDir(t))
	check(t, err)
	for _, r := range []debimage.Result{apps.Postgres, apps.NotesV1, apps.NotesV2, apps.NotesBroken} {
		t.Logf("image %s: %s (%d bytes, %s)", r.Ref, r.Path, r.Size, describe(r))
	}
	return apps
}

// ModuleDir is the root of the module the test runs in.
func ModuleDir(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == "/dev/null" {
		t.Fatalf("go env GOMOD: %q, %v", out, err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func check(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, debimage.ErrUnavailable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func describe(r debimage.Result) string {
	s := "built in " + r.BuiltIn.Round(1e6).String()
	if r.Cached {
		s = "cached, " + s + " when built, found in " + r.Took.Round(1e5).String()
	}
	if r.Stale {
		s += ", stale: the mirror could not be asked"
	}
	return s
}

// logWriter passes the builder's lines to t.Log.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
