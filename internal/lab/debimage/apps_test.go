package debimage_test

import (
	"testing"

	"github.com/onionpod/onionpod/internal/lab/debimage/debimagetest"
)

// TestBuildApps builds the test apps' images (PostgreSQL from Debian, three notes releases) into
// the shared cache, or finds them there, and logs their sizes and build times.
func TestBuildApps(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Debian images (a minute the first time): not with -short")
	}
	apps := debimagetest.Apps(t)
	if apps.Postgres.Size == 0 || apps.NotesV1.Size == 0 {
		t.Fatalf("empty archives: %+v", apps)
	}
}
