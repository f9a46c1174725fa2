package debimage

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/lab/hostcheck"
)

// DefaultCacheDir is where built images are kept unless CacheDirEnv says otherwise. It is outside
// every test's temporary directory, so the test binaries of one CI run (and later runs on the
// same machine) build each image once.
const DefaultCacheDir = "/var/cache/onionpod-test-images"

// CacheDirEnv names the environment variable that overrides DefaultCacheDir.
const CacheDirEnv = "ONIONPOD_IMAGE_CACHE"

// DefaultRefresh is how long a Debian layer counts as current before the mirror is asked again.
const DefaultRefresh = 24 * time.Hour

// engineVersion is part of every cache key: bump it when the layers this package writes change.
const engineVersion = "debimage/1"

// ErrUnavailable is wrapped by Build's error when an image cannot be built on this machine (not
// root, mmdebstrap missing, the Debian mirror unreachable) and none is cached: a test skips on it.
var ErrUnavailable = hostcheck.ErrUnavailable

// Format is an archive format.
type Format string

// The archive formats pods.ImageStore.LoadArchive reads.
const (
	DockerArchive Format = "docker-archive" // `docker save`: manifest.json, config, gzipped layers
	OCIArchive    Format = "oci-archive"    // a tar of an OCI image layout, the ref annotated
)

// Builder builds images and keeps them in a cache directory:
//
//	apt/SOURCES/         a private apt state per set of sources (lists kept: updates are small)
//	debs/                .deb files downloaded so far (a changed recipe downloads only what is new)
//	recipes/KEY.json     which Debian layer a Debian recipe resolved to, and when it was asked
//	layers/KEY.tar.gz    Debian layers, keyed by recipe and resolved package versions
//	images/KEY.tar       archives, keyed by Debian layer, files, config, ref and format
//	locks/, tmp/         flock files (concurrent builders wait for each other), work in progress
//
// A Builder is safe for concurrent use, also by several processes sharing the cache directory.
type Builder struct {
	// CacheDir is the cache ("" = CacheDir()).
	CacheDir string
	// Format of the archives ("" = DockerArchive).
	Format Format
	// Refresh is how long a Debian layer counts as current without asking the mirror (0 =
	// DefaultRefresh; negative = ask every time). After it, Build asks the mirror for the
	// package versions (an apt-get update of the kept lists, then a simulated install: seconds)
	// and rebuilds only when they changed. When the mirror cannot be reached, the older layer is
	// used and Result.Stale says so.
	Refresh time.Duration
	// Log receives progress lines (nil = none).
	Log io.Writer
	// Verbose also sends mmdebstrap's output to Log (its last lines are in a failure's error
	// either way).
	Verbose bool
}

// Result is a built (or cached) image archive.
type Result struct {
	Path     string        // the archive
	Ref      string        // the reference it carries
	Format   Format        // its format
	Key      string        // its cache key (hex)
	Cached   bool          // nothing was built: the archive (and its layers) came from the cache
	Stale    bool          // the mirror could not be asked; an older Debian layer was used
	Took     time.Duration // this call
	BuiltIn  time.Duration // how long building the archive took when it was built (Debian layer included)
	Size     int64         // the archive's size in bytes
	Packages []string      // the Debian layer's packages as apt resolved them, "name version arch", sorted (for variants other than extract and custom, a superset)
}

// CacheDir is the cache directory builders use by default: $ONIONPOD_IMAGE_CACHE, or
// DefaultCacheDir.
func CacheDir() string {
	if d := os.Getenv(CacheDirEnv); d != "" {
		return d
	}
	return DefaultCacheDir
}

func (b *Builder) cacheDir() string {
	if b.CacheDir != "" {
		return b.CacheDir
	}
	return CacheDir()
}

func (b *Builder) format() Format {
	if b.Format == "" {
		return DockerArchive
	}
	return b.Format
}

func (b *Builder) refresh() time.Duration {
	if b.Refresh == 0 {
		return DefaultRefresh
	}
	return b.Refresh
}

func (b *Builder) logf(format string, args ...any) {
	if b.Log != nil {
		fmt.Fprintf(b.Log, "debimage: "+format+"\n", args...)
	}
}

type recipeRecord struct {
	Layer    string    `json:"layer"`    // key of the Debian layer
	Resolved time.Time `json:"resolved"` // when the mirror was last asked
}

type layerRecord struct {
	Packages []string   `json:"packages"`
	Stats    layerStats `json:"stats"`
	TookMs   int64      `json:"took_ms"`
	Built    time.Time  `json:"built"`
}

type imageRecord struct {
	Ref      string    `json:"ref"`
	Format   Format    `json:"format"`
	Packages []string  `json:"packages,omitempty"`
	TookMs   int64     `json:"took_ms"` // archive plus the Debian layer when it was built for it
	Built    time.Time `json:"built"`
}

// imageKeyInput is what an archive's key covers.
type imageKeyInput struct {
	Engine string
	Ref    string
	Format Format
	Layer  string     // the Debian layer's key, "" for none
	Files  []fileHash // the files layer
	Config Config
}

type fileHash struct {
	Path     string
	Mode     fs.FileMode
	UID, GID int
	SHA256   string
}

// debianKeyInput is what a Debian recipe's key covers (its layer's key adds the versions).
type debianKeyInput struct {
	Engine   string
	Sources  []string
	Suite    string
	Variant  string
	Packages []string
	Exclude  []string
}

// Build returns the archive of r, from the cache or built now. Errors: errkind.BadInput for a bad
// recipe; ErrUnavailable when it must be built and cannot be here.
func (b *Builder) Build(ctx context.Context, r Recipe) (Result, error) {
	start := time.Now()
	if err := r.Validate(); err != nil {
		return Result{}, err
	}
	dir := b.cacheDir()
	fail := func(err error) (Result, error) { return Result{}, fmt.Errorf("debimage: %s: %w", r.Ref, err) }
	if err := prepareCache(dir); err != nil {
		return fail(err)
	}
	res := Result{Ref: r.Ref, Format: b.format(), Cached: true}
	var layerFiles []string
	var layerKey string
	var layerTook time.Duration
	if r.Debian != nil {
		l, err := b.debianLayer(ctx, dir, *r.Debian)
		if err != nil {
			return fail(err)
		}
		layerKey, layerFiles = l.key, []string{l.path}
		res.Packages, res.Stale = l.rec.Packages, l.stale
		if l.built {
			res.Cached, layerTook = false, time.Duration(l.rec.TookMs)*time.Millisecond
		}
	}
	in := imageKeyInput{Engine: engineVersion, Ref: r.Ref, Format: res.Format, Layer: layerKey, Config: r.Config}
	for _, f := range r.Files {
		in.Files = append(in.Files, fileHash{Path: f.Path, Mode: f.Mode, UID: f.UID, GID: f.GID, SHA256: hashBytes(f.Data)})
	}
	res.Key = hashJSON(in)
	res.Path = filepath.Join(dir, "images", res.Key+".tar")
	unlock, err := lock(ctx, dir, "image-"+res.Key)
	if err != nil {
		return fail(err)
	}
	defer unlock()
	metaPath := filepath.Join(dir, "images", res.Key+".json")
	var rec imageRecord
	if st, err := os.Stat(res.Path); err == nil && readJSON(metaPath, &rec) == nil {
		res.Size, res.BuiltIn = st.Size(), time.Duration(rec.TookMs)*time.Millisecond
		res.Took = time.Since(start)
		return res, nil
	}

	buildStart := time.Now()
	res.Cached = false
	if len(r.Files) > 0 {
		fpath := filepath.Join(dir, "tmp", "files-"+res.Key+".tar.gz")
		defer os.Remove(fpath)
		err := writeFileAtomic(fpath, filepath.Join(dir, "tmp"), func(w io.Writer) error {
			_, err := filesLayer(r.Files, w)
			return err
		})
		if err != nil {
			return fail(fmt.Errorf("files layer: %w", err))
		}
		layerFiles = append(layerFiles, fpath)
	}
	if err := writeArchive(res.Path, filepath.Join(dir, "tmp"), res.Format, r.Ref, layerFiles, r.Config); err != nil {
		return fail(err)
	}
	st, err := os.Stat(res.Path)
	if err != nil {
		return fail(err)
	}
	res.Size = st.Size()
	res.BuiltIn = time.Since(buildStart) + layerTook
	rec = imageRecord{Ref: r.Ref, Format: res.Format, Packages: res.Packages, TookMs: res.BuiltIn.Milliseconds(), Built: time.Now().UTC()}
	if err := writeJSON(metaPath, rec); err != nil {
		return fail(err)
	}
	res.Took = time.Since(start)
	b.logf("%s: archive %s (%d bytes) built in %v", r.Ref, res.Path, res.Size, res.Took.Round(time.Millisecond))
	return res, nil
}

// debianLayerResult is a Debian layer in the cache.
type debianLayerResult struct {
	key   string
	path  string
	rec   layerRecord
	built bool // built by this call
	stale bool // the mirror could not be asked
}

// debianLayer returns the cached layer of d, asking the mirror for versions when the recipe's
// record is older than Refresh, and building it with mmdebstrap when those versions have no
// layer yet.
func (b *Builder) debianLayer(ctx context.Context, dir string, d Debian) (debianLayerResult, error) {
	keyring := ""
	if _, err := os.Stat(debianKeyring); err == nil {
		keyring = debianKeyring
	}
	sources := d.sources(keyring)
	rkey := hashJSON(debianKeyInput{Engine: engineVersion, Sources: sources, Suite: d.Suite, Variant: d.variant(), Packages: d.Packages, Exclude: d.Exclude})
	unlock, err := lock(ctx, dir, "debian-"+rkey)
	if err != nil {
		return debianLayerResult{}, err
	}
	defer unlock()
	layerPath := func(key string) string { return filepath.Join(dir, "layers", key+".tar.gz") }
	cached := func(key string) (debianLayerResult, bool) {
		var rec layerRecord
		if _, err := os.Stat(layerPath(key)); err != nil || readJSON(filepath.Join(dir, "layers", key+".json"), &rec) != nil {
			return debianLayerResult{}, false
		}
		return debianLayerResult{key: key, path: layerPath(key), rec: rec}, true
	}
	recPath := filepath.Join(dir, "recipes", rkey+".json")
	var rrec recipeRecord
	haveRec := readJSON(recPath, &rrec) == nil
	if haveRec && time.Since(rrec.Resolved) < b.refresh() {
		if l, ok := cached(rrec.Layer); ok {
			return l, nil
		}
	}

	// Ask the mirror what the packages are today.
	state := newAptState(dir, sources)
	pkgs, err := b.resolve(ctx, dir, state, d)
	if err != nil {
		if haveRec {
			if l, ok := cached(rrec.Layer); ok {
				b.logf("using the layer resolved %s: %v", rrec.Resolved.Format(time.RFC3339), err)
				l.stale = true
				return l, nil
			}
		}
		return debianLayerResult{}, err
	}
	key := hashJSON(struct {
		Recipe   string
		Packages []string
	}{rkey, pkgs})
	l, ok := cached(key)
	if !ok {
		if l, err = b.buildDebianLayer(ctx, dir, d, state, key, pkgs); err != nil {
			return debianLayerResult{}, err
		}
	}
	if err := writeJSON(recPath, recipeRecord{Layer: key, Resolved: time.Now().UTC()}); err != nil {
		return debianLayerResult{}, err
	}
	return l, nil
}

// resolve updates the apt state's lists and resolves d's packages. A failure to reach the
// mirror wraps ErrUnavailable.
func (b *Builder) resolve(ctx context.Context, dir string, state *aptState, d Debian) ([]string, error) {
	if err := hostcheck.Missing(hostcheck.Root, hostcheck.Apt); err != nil {
		return nil, err
	}
	unlock, err := lock(ctx, dir, "apt-"+filepath.Base(state.dir))
	if err != nil {
		return nil, err
	}
	defer unlock()
	start := time.Now()
	if err := state.update(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: the Debian mirror: %w", ErrUnavailable, err)
	}
	pkgs, err := state.resolve(ctx, installRequest(d))
	if err != nil {
		return nil, errkind.BadInputf("debian packages: %w", err)
	}
	b.logf("resolved %d packages of %s in %v", len(pkgs), d.Suite, time.Since(start).Round(time.Millisecond))
	return pkgs, nil
}

func (b *Builder) buildDebianLayer(ctx context.Context, dir string, d Debian, state *aptState, key string, pkgs []string) (debianLayerResult, error) {
	if err := hostcheck.Missing(hostcheck.Root, hostcheck.Mmdebstrap); err != nil {
		return debianLayerResult{}, err
	}
	b.logf("building a Debian layer: %s %s variant, %d packages", d.Suite, d.variant(), len(pkgs))
	start := time.Now()
	tmp, err := os.MkdirTemp(filepath.Join(dir, "tmp"), "mmdebstrap-")
	if err != nil {
		return debianLayerResult{}, err
	}
	defer func() {
		if err := removeTemp(tmp); err != nil {
			b.logf("mmdebstrap's work dir: %v", err)
		}
	}()
	path := filepath.Join(dir, "layers", key+".tar.gz")
	var stats layerStats
	err = writeFileAtomic(path, filepath.Join(dir, "tmp"), func(w io.Writer) error {
		var err error
		var out io.Writer
		if b.Verbose {
			out = b.Log
		}
		stats, err = runMmdebstrap(ctx, d, state, filepath.Join(dir, "debs"), tmp, w, out)
		return err
	})
	if err != nil {
		return debianLayerResult{}, fmt.Errorf("debian layer: %w", err)
	}
	rec := layerRecord{Packages: pkgs, Stats: stats, TookMs: time.Since(start).Milliseconds(), Built: time.Now().UTC()}
	if err := writeJSON(filepath.Join(dir, "layers", key+".json"), rec); err != nil {
		return debianLayerResult{}, err
	}
	b.logf("Debian layer built in %v: %d entries, %d bytes of files, %d excluded", time.Since(start).Round(time.Millisecond), stats.Entries, stats.Bytes, stats.Excluded)
	return debianLayerResult{key: key, path: path, rec: rec, built: true}, nil
}

// prepareCache makes the cache's directories.
func prepareCache(dir string) error {
	for _, d := range []string{"apt", "debs", "recipes", "layers", "images", "locks", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func readJSON(path string, v any) error { return atomicfile.ReadJSON(path, v) }

func writeJSON(path string, v any) error {
	_, err := atomicfile.WriteJSON(path, v, 0o644)
	return err
}
