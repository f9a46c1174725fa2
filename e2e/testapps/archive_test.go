package testapps_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/onionpod/onionpod/internal/lab/debimage"
	"github.com/onionpod/onionpod/pods"
	"github.com/onionpod/onionpod/pods/podstest"
)

// TestArchivesLoadIntoImageStore: a notes image written by debimage as a docker archive and as an
// OCI archive loads into pods.ImageStore, under its ref, with its config, as the same image.
func TestArchivesLoadIntoImageStore(t *testing.T) {
	if podstest.Inside() {
		t.Skip("runs on the host")
	}
	cache := t.TempDir()
	store := &pods.ImageStore{Dir: filepath.Join(t.TempDir(), "store")}
	recipe := debimage.Notes([]byte("#!/not/a/real/binary\n"), debimage.NotesV2, false)
	var ids []string
	for _, format := range []debimage.Format{debimage.DockerArchive, debimage.OCIArchive} {
		res, err := (&debimage.Builder{CacheDir: cache, Format: format}).Build(t.Context(), recipe)
		if err != nil {
			t.Fatal(err)
		}
		img, err := store.LoadArchive(t.Context(), res.Path, nil)
		if err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		if img.Ref != "onionpod.test/notes:2" {
			t.Errorf("%s: ref %q", format, img.Ref)
		}
		c := img.Config
		if !slices.Equal(c.Entrypoint, []string{"/notes"}) || !slices.Contains(c.Env, "NOTES_VERSION=2") ||
			!slices.Equal(c.ExposedPorts, []uint16{debimage.NotesPort}) || c.User != "65534:65534" {
			t.Errorf("%s: config %+v", format, c)
		}
		argv, err := img.Command(nil)
		if err != nil || !slices.Equal(argv, []string{"/notes"}) {
			t.Errorf("%s: command %q, %v", format, argv, err)
		}
		if b, err := os.ReadFile(filepath.Join(img.Root, "notes")); err != nil || string(b) != "#!/not/a/real/binary\n" {
			t.Errorf("%s: /notes in the root: %q, %v", format, b, err)
		}
		if st, err := os.Stat(filepath.Join(img.Root, "tmp")); err != nil || st.Mode()&os.ModeSticky == 0 {
			t.Errorf("%s: /tmp in the root: %v, %v", format, st, err)
		}
		ids = append(ids, img.Digest)
	}
	if ids[0] != ids[1] {
		t.Errorf("the two formats give two images: %v", ids)
	}
}
