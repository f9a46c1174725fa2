package debimage

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/gzip"

	"github.com/onionpod/onionpod/internal/errkind"
)

func filesRecipe(ref string, data string) Recipe {
	return Recipe{
		Ref: ref,
		Files: []File{
			{Path: "/app", Mode: 0o755, Data: []byte(data)},
			{Path: "/etc/app.conf", Data: []byte("x=1\n")},
			{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
			{Path: "/bin/app", Mode: fs.ModeSymlink, Data: []byte("../app")},
			{Path: "/data", Mode: fs.ModeDir | 0o700, UID: 999, GID: 998},
		},
		Config: Config{
			Entrypoint: []string{"/app"}, Cmd: []string{"serve"}, Env: []string{"A=1", "B=two words"},
			WorkingDir: "/data", User: "999:998", ExposedPorts: []string{"8080", "53/udp"},
			Volumes: []string{"/data"}, StopSignal: "SIGINT", Labels: map[string]string{"l": "v"},
		},
	}
}

func TestValidate(t *testing.T) {
	good := filesRecipe("onionpod.test/app:1", "bin")
	if err := good.Validate(); err != nil {
		t.Fatalf("good recipe: %v", err)
	}
	if err := Postgres().Validate(); err != nil {
		t.Errorf("Postgres(): %v", err)
	}
	if err := Notes([]byte("bin"), NotesV1, false).Validate(); err != nil {
		t.Errorf("Notes(): %v", err)
	}
	for _, tc := range []struct {
		field  string
		change func(*Recipe)
	}{
		{"ref", func(r *Recipe) { r.Ref = "Not A Ref" }},
		{"neither", func(r *Recipe) { r.Files = nil }},
		{"debian suite", func(r *Recipe) { r.Debian = &Debian{Suite: "Bad Suite", Packages: []string{"dash"}} }},
		{"debian variant", func(r *Recipe) { r.Debian = &Debian{Suite: "bookworm", Variant: "huge", Packages: []string{"dash"}} }},
		{"debian packages", func(r *Recipe) { r.Debian = &Debian{Suite: "bookworm"} }},
		{"debian package", func(r *Recipe) { r.Debian = &Debian{Suite: "bookworm", Packages: []string{"dash,evil"}} }},
		{"debian sources", func(r *Recipe) {
			r.Debian = &Debian{Suite: "bookworm", Packages: []string{"dash"}, Sources: []string{"deb http://x y main\ndeb http://evil z main"}}
		}},
		{"debian exclude", func(r *Recipe) {
			r.Debian = &Debian{Suite: "bookworm", Packages: []string{"dash"}, Exclude: []string{"usr/share/doc"}}
		}},
		{"files[0] path", func(r *Recipe) { r.Files[0].Path = "/a/../b" }},
		{"twice", func(r *Recipe) { r.Files[1].Path = r.Files[0].Path }},
		{"mode", func(r *Recipe) { r.Files[0].Mode = fs.ModeDevice }},
		{"symlink needs", func(r *Recipe) { r.Files[3].Data = nil }},
		{"owner", func(r *Recipe) { r.Files[0].UID = -1 }},
		{"no entrypoint", func(r *Recipe) { r.Config.Entrypoint, r.Config.Cmd = nil, nil }},
		{"config env", func(r *Recipe) { r.Config.Env = []string{"NOEQUALS"} }},
		{"exposed port", func(r *Recipe) { r.Config.ExposedPorts = []string{"http"} }},
		{"stop signal", func(r *Recipe) { r.Config.StopSignal = "kill -9" }},
		{"config volume", func(r *Recipe) { r.Config.Volumes = []string{"data"} }},
	} {
		r := filesRecipe("onionpod.test/app:1", "bin")
		r.Files = slices.Clone(r.Files)
		tc.change(&r)
		err := r.Validate()
		if !errors.Is(err, errkind.BadInput) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: Validate() = %v, want a bad-input error naming %q", tc.field, err, tc.field)
		}
	}
}

func TestExcluded(t *testing.T) {
	pats := []string{"/usr/share/doc", "/usr/lib/*/libLLVM*", "/usr/bin/perl*"}
	for p, want := range map[string]bool{
		"/usr/share/doc":                            true,
		"/usr/share/doc/dash/copyright":             true,
		"/usr/share/docs":                           false,
		"/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1": true,
		"/usr/lib/x86_64-linux-gnu/libc.so.6":       false,
		"/usr/bin/perl5.36.0":                       true,
		"/usr/bin/psql":                             false,
	} {
		if got := excluded(p, pats); got != want {
			t.Errorf("excluded(%q) = %v, want %v", p, got, want)
		}
	}
}

// TestFilterLayer feeds filterLayer a tar shaped like mmdebstrap's: "./" names, the root entry,
// device nodes, excluded files and a hard link to one.
func TestFilterLayer(t *testing.T) {
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	add := func(h tar.Header, body string) {
		h.Size = int64(len(body))
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	add(tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(tar.Header{Name: "./dev/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(tar.Header{Name: "./dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}, "")
	add(tar.Header{Name: "./usr/bin/dash", Typeflag: tar.TypeReg, Mode: 0o755, Uname: "root",
		PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "x"}}, "dash")
	add(tar.Header{Name: "./usr/share/doc/dash/copyright", Typeflag: tar.TypeReg}, "GPL")
	add(tar.Header{Name: "./usr/share/doc/dash/link", Typeflag: tar.TypeLink, Linkname: "./usr/bin/dash"}, "")
	add(tar.Header{Name: "./bin/sh2", Typeflag: tar.TypeLink, Linkname: "./usr/share/doc/dash/copyright"}, "")
	add(tar.Header{Name: "./bin/dash", Typeflag: tar.TypeLink, Linkname: "./usr/bin/dash"}, "")
	add(tar.Header{Name: "./lib64/ld.so", Typeflag: tar.TypeSymlink, Linkname: "/lib/x86_64-linux-gnu/ld.so"}, "")
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	st, err := filterLayer(&in, &out, []string{"/usr/share/doc"})
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&out)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var got []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, h.Name+">"+h.Linkname)
		if len(h.PAXRecords) != 0 || h.Uname != "" {
			t.Errorf("%s keeps %v %q", h.Name, h.PAXRecords, h.Uname)
		}
	}
	want := []string{"dev/>", "usr/bin/dash>", "bin/dash>usr/bin/dash", "lib64/ld.so>/lib/x86_64-linux-gnu/ld.so"}
	if !slices.Equal(got, want) {
		t.Errorf("layer holds %q, want %q", got, want)
	}
	if st.Entries != 4 || st.Excluded != 4 || st.Bytes != 4 {
		t.Errorf("stats %+v", st)
	}
}

// TestBuildFilesImage builds a files-only image in both formats, reads each back with
// go-containerregistry (config and files as the recipe says), and builds it again: from the cache.
func TestBuildFilesImage(t *testing.T) {
	cache := t.TempDir()
	for _, format := range []Format{DockerArchive, OCIArchive} {
		b := &Builder{CacheDir: cache, Format: format}
		r := filesRecipe("onionpod.test/app:1", "binary "+string(format))
		res, err := b.Build(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		if res.Cached || res.Size == 0 || res.Format != format || filepath.Dir(res.Path) != filepath.Join(cache, "images") {
			t.Errorf("%s first build: %+v", format, res)
		}
		img := readArchive(t, res.Path, format)
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if !slices.Equal(c.Entrypoint, []string{"/app"}) || !slices.Equal(c.Cmd, []string{"serve"}) ||
			!slices.Equal(c.Env, r.Config.Env) || c.WorkingDir != "/data" || c.User != "999:998" ||
			c.StopSignal != "SIGINT" || c.Labels["l"] != "v" || len(c.ExposedPorts) != 2 ||
			c.ExposedPorts["8080/tcp"] != struct{}{} || c.ExposedPorts["53/udp"] != struct{}{} || len(c.Volumes) != 1 {
			t.Errorf("%s config: %+v", format, c)
		}
		if cf.OS != "linux" || cf.Architecture == "" {
			t.Errorf("%s platform %s/%s", format, cf.OS, cf.Architecture)
		}
		files := layerFiles(t, img)
		if files["app"] != "755 binary "+string(format) || files["bin/app"] != "symlink ../app" ||
			files["tmp/"] != "1777 dir" || files["data/"] != "700 dir 999:998" || files["etc/app.conf"] != "644 x=1\n" {
			t.Errorf("%s files: %q", format, files)
		}

		again, err := b.Build(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		if !again.Cached || again.Path != res.Path || again.Key != res.Key || again.Size != res.Size {
			t.Errorf("%s second build not from the cache: %+v then %+v", format, res, again)
		}
		t.Logf("%s: built in %v, then found in the cache in %v", format, res.Took, again.Took)

		// Any change of the recipe is a new image.
		r.Config.Env = append(slices.Clone(r.Config.Env), "C=3")
		changed, err := b.Build(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		if changed.Cached || changed.Key == res.Key {
			t.Errorf("%s: a changed config gave the cached image", format)
		}
	}
}

func readArchive(t *testing.T, path string, format Format) v1.Image {
	t.Helper()
	if format == DockerArchive {
		tag, _ := name.NewTag("onionpod.test/app:1")
		img, err := tarball.ImageFromPath(path, &tag)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	dir := t.TempDir()
	if out, err := exec.Command("tar", "-C", dir, "-xf", path).CombinedOutput(); err != nil {
		t.Fatalf("untar %s: %v: %s", path, err, out)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil || len(m.Manifests) != 1 || m.Manifests[0].Annotations[refAnnotation] != "onionpod.test/app:1" {
		t.Fatalf("index: %+v, %v", m, err)
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// layerFiles describes the files of an image's last layer: "MODE content", "symlink TARGET",
// "MODE dir [UID:GID]".
func layerFiles(t *testing.T, img v1.Image) map[string]string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) == 0 {
		t.Fatalf("layers: %v, %v", layers, err)
	}
	rc, err := layers[len(layers)-1].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		mode := fmt.Sprintf("%o", h.Mode)
		switch h.Typeflag {
		case tar.TypeDir:
			out[h.Name] = mode + " dir"
			if h.Uid != 0 {
				out[h.Name] += fmt.Sprintf(" %d:%d", h.Uid, h.Gid)
			}
		case tar.TypeSymlink:
			out[h.Name] = "symlink " + h.Linkname
		default:
			b, _ := io.ReadAll(tr)
			out[h.Name] = mode + " " + string(b)
		}
	}
}

// TestConcurrentBuildsBuildOnce: builders sharing a cache (as the test binaries of one CI run do)
// wait for each other and build an image once.
func TestConcurrentBuildsBuildOnce(t *testing.T) {
	cache := t.TempDir()
	r := filesRecipe("onionpod.test/app:1", strings.Repeat("big binary ", 1<<18))
	var wg sync.WaitGroup
	results := make([]Result, 4)
	errs := make([]error, 4)
	for i := range results {
		wg.Go(func() {
			results[i], errs[i] = (&Builder{CacheDir: cache}).Build(t.Context(), r)
		})
	}
	wg.Wait()
	built := 0
	for i, res := range results {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !res.Cached {
			built++
		}
		if res.Path != results[0].Path {
			t.Errorf("different archives: %s, %s", res.Path, results[0].Path)
		}
	}
	if built != 1 {
		t.Errorf("%d builders built the image, want 1", built)
	}
	left, _ := os.ReadDir(filepath.Join(cache, "tmp"))
	if len(left) != 0 {
		t.Errorf("work files left in tmp: %v", left)
	}
}

// TestMirrorUnreachable: a Debian recipe whose mirror cannot be reached is unavailable (a test
// skips) unless an older build of it is cached, which is then used and marked stale.
func TestMirrorUnreachable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("resolving Debian packages needs root (apt's state and mmdebstrap's root mode)")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("apt-get needed (apt)")
	}
	cache := t.TempDir()
	d := &Debian{
		Suite:    "bookworm",
		Sources:  []string{"deb [trusted=yes] http://127.0.0.1:9/debian bookworm main"}, // discard: nothing listens
		Packages: []string{"dash"},
	}
	r := filesRecipe("onionpod.test/app:1", "bin")
	r.Debian = d
	b := &Builder{CacheDir: cache, Refresh: -1}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if _, err := b.Build(ctx, r); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "Debian mirror") {
		t.Fatalf("Build with an unreachable mirror and nothing cached = %v, want ErrUnavailable naming the mirror", err)
	}

	// Plant an older build of the layer, as an earlier run would have left it.
	rkey := hashJSON(debianKeyInput{Engine: engineVersion, Sources: d.Sources, Suite: d.Suite, Variant: d.variant(), Packages: d.Packages, Exclude: d.Exclude})
	var layer bytes.Buffer
	if _, err := filesLayer([]File{{Path: "/bin/dash", Mode: 0o755, Data: []byte("dash")}}, &layer); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cache, "layers", "old.tar.gz"), layer.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(filepath.Join(cache, "layers", "old.json"), layerRecord{Packages: []string{"dash 0.5.12-2 amd64"}}); err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(filepath.Join(cache, "recipes", rkey+".json"), recipeRecord{Layer: "old", Resolved: time.Now().Add(-48 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	res, err := b.Build(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Stale || !slices.Equal(res.Packages, []string{"dash 0.5.12-2 amd64"}) {
		t.Errorf("with an older build cached: %+v, want it used and marked stale", res)
	}
	img := readArchive(t, res.Path, DockerArchive)
	if layers, err := img.Layers(); err != nil || len(layers) != 2 {
		t.Errorf("layers: %d, %v (want the Debian one and the files one)", len(layers), err)
	}
	// Within Refresh, the mirror is not asked at all: not stale.
	b.Refresh = time.Hour
	if err := writeJSON(filepath.Join(cache, "recipes", rkey+".json"), recipeRecord{Layer: "old", Resolved: time.Now()}); err != nil {
		t.Fatal(err)
	}
	res, err = b.Build(ctx, r)
	if err != nil || res.Stale || !res.Cached {
		t.Errorf("within Refresh: %+v, %v (want cached, not stale)", res, err)
	}
}
