package pods

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/onionpod/onionpod/internal/atomicfile"
)

// maxLayers bounds the layers of one image (Docker's own limit is 127 on overlayfs).
const maxLayers = 128

// layerSource says which form of a layer's blob an image source stores: compressed (registries
// and OCI layouts: the blob the manifest's digest names) or uncompressed (`docker save`
// tarballs usually hold plain tars; compressing them to hash them would be waste).
type layerSource struct{ compressed bool }

var (
	compressedBlobs   = layerSource{compressed: true}
	uncompressedBlobs = layerSource{compressed: false}
)

func (src layerSource) open(l v1.Layer) (io.ReadCloser, error) {
	if src.compressed {
		return l.Compressed()
	}
	return l.Uncompressed()
}

func (s *ImageStore) layerPath(diffID v1.Hash) string {
	return filepath.Join(s.Dir, "layers", diffID.Hex)
}

func (s *ImageStore) maxBytes() int64 {
	if s.MaxImageBytes > 0 {
		return s.MaxImageBytes
	}
	return defaultMaxImageBytes
}

// fetchLayers caches the layers not cached yet, each verified first (fetchLayer). At most
// maxLayers layers, and the uncompressed bytes of the fetched ones within the image's budget.
func (s *ImageStore) fetchLayers(ctx context.Context, ref string, layers []v1.Layer, diffIDs []v1.Hash, src layerSource, progress io.Writer) error {
	if len(layers) > maxLayers {
		return hostile("%d layers (at most %d)", len(layers), maxLayers)
	}
	if len(layers) != len(diffIDs) {
		return hostile("%d layers but %d diff ids", len(layers), len(diffIDs))
	}
	var missing []int
	var total int64
	for i, l := range layers {
		if diffIDs[i].Algorithm != "sha256" || !isHexName(diffIDs[i].Hex) || len(diffIDs[i].Hex) != 64 {
			return hostile("diff id %s", diffIDs[i])
		}
		if _, err := os.Stat(s.layerPath(diffIDs[i])); err == nil {
			continue
		}
		missing = append(missing, i)
		if n, err := l.Size(); err == nil {
			total += n
		}
	}
	if len(missing) == 0 {
		return nil
	}
	bar := newProgress(progress, total, "pulling "+ref)
	budget := s.maxBytes()
	for _, i := range missing {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.fetchLayer(ctx, layers[i], diffIDs[i], src, bar, &budget); err != nil {
			return err
		}
	}
	bar.finish()
	return nil
}

// fetchLayer copies one layer blob into the cache, named by its DiffID, only once verified: the
// uncompressed stream must hash to the DiffID (and, for a compressed blob, the blob itself to the
// manifest's digest). A layer that fails leaves nothing: an image claiming another's DiffID
// cannot put its own content in the cache under that name. Uncompressed bytes are charged to
// budget.
func (s *ImageStore) fetchLayer(ctx context.Context, l v1.Layer, diffID v1.Hash, src layerSource, bar *progress, budget *int64) error {
	fail := func(err error) error { return fmt.Errorf("layer %s: %w", diffID, err) }
	rc, err := src.open(l)
	if err != nil {
		return fail(err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Join(s.Dir, "tmp"), "layer-")
	if err != nil {
		return fail(err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	blobSum := sha256.New()
	blob := &io.LimitedReader{R: ctxReader{ctx, rc}, N: s.maxBytes() + 1}
	stored := io.TeeReader(blob, io.MultiWriter(tmp, blobSum, bar))
	diffSum, err := hashUncompressed(stored, budget)
	if err != nil {
		return fail(err)
	}
	// What follows the compressed stream is stored (and hashed) too: the digest covers it.
	if _, err := io.Copy(io.Discard, stored); err != nil {
		return fail(err)
	}
	if blob.N <= 0 {
		return fail(hostile("blob larger than %d bytes", s.maxBytes()))
	}
	if err := rc.Close(); err != nil { // remote layers verify their digest here too
		return fail(err)
	}
	if got := hex.EncodeToString(diffSum); got != diffID.Hex {
		return fail(hostile("content has diff id sha256:%s", got))
	}
	if src.compressed {
		want, err := l.Digest()
		if err != nil {
			return fail(err)
		}
		if got := hex.EncodeToString(blobSum.Sum(nil)); want.Algorithm != "sha256" || got != want.Hex {
			return fail(hostile("blob has digest sha256:%s, the manifest says %s", got, want))
		}
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	return os.Rename(tmp.Name(), s.layerPath(diffID))
}

// hashUncompressed decompresses a layer blob and returns the sha256 of the whole uncompressed
// stream, charging its bytes to budget.
func hashUncompressed(blob io.Reader, budget *int64) ([]byte, error) {
	zr, err := decompress(blob)
	if err != nil {
		return nil, hostile("decompress: %v", err)
	}
	defer zr.Close()
	h := sha256.New()
	if _, err := io.Copy(h, &budgetReader{r: zr, left: budget}); err != nil {
		if errors.Is(err, ErrHostileLayer) || isCanceled(err) {
			return nil, err
		}
		return nil, hostile("decompress: %v", err)
	}
	return h.Sum(nil), nil
}

// unpack applies the cached layers to a fresh root in Dir/tmp and renames it into place only when
// every layer was applied and matched its DiffID.
func (s *ImageStore) unpack(ctx context.Context, id string, diffIDs []v1.Hash, progress io.Writer) error {
	hexID, err := idHex(id)
	if err != nil {
		return err
	}
	tmp, err := s.tempDir("root")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	u, err := newUnpacker(root, s.maxBytes())
	if err != nil {
		return err
	}
	defer u.Close()
	var total int64
	for _, d := range diffIDs {
		if st, err := os.Stat(s.layerPath(d)); err == nil {
			total += st.Size()
		}
	}
	bar := newProgress(progress, total, "unpacking")
	budget := s.maxBytes() // every uncompressed byte of every layer, trailing data included
	for _, d := range diffIDs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.applyCachedLayer(ctx, u, d, bar, &budget); err != nil {
			var mismatch *digestMismatch
			if errors.As(err, &mismatch) {
				// The cache was damaged on disk: never keep a layer that does not verify.
				_ = os.Remove(s.layerPath(d))
			}
			return err
		}
	}
	if err := u.addMountPoints(); err != nil {
		return err
	}
	bar.finish()
	if err := atomicfile.SyncDir(root); err != nil {
		return err
	}
	final := filepath.Join(s.Dir, "roots", hexID)
	if err := os.Rename(root, final); err != nil {
		if st, serr := os.Stat(final); serr == nil && st.IsDir() {
			return nil // unpacked meanwhile by someone else
		}
		return err
	}
	return atomicfile.SyncDir(filepath.Join(s.Dir, "roots"))
}

// digestMismatch is a cached layer whose content no longer hashes to its DiffID.
type digestMismatch struct{ diffID, got string }

func (e *digestMismatch) Error() string {
	return fmt.Sprintf("layer %s: content has digest sha256:%s", e.diffID, e.got)
}

func (e *digestMismatch) Is(target error) bool { return target == ErrHostileLayer }

func (s *ImageStore) applyCachedLayer(ctx context.Context, u *unpacker, diffID v1.Hash, bar *progress, budget *int64) error {
	f, err := os.Open(s.layerPath(diffID))
	if err != nil {
		return fmt.Errorf("layer %s: %w", diffID, err)
	}
	defer f.Close()
	r, err := decompress(io.TeeReader(ctxReader{ctx, f}, bar))
	if err != nil {
		return fmt.Errorf("%w: layer %s: %w", ErrHostileLayer, diffID, err)
	}
	defer r.Close()
	h := sha256.New()
	tee := io.TeeReader(&budgetReader{r: r, left: budget}, h)
	if err := u.applyLayer(tee); err != nil {
		return fmt.Errorf("layer %s: %w", diffID, err)
	}
	// Hash what follows the tar's end marker too: the DiffID covers the whole stream.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		if errors.Is(err, ErrHostileLayer) || isCanceled(err) {
			return fmt.Errorf("layer %s: %w", diffID, err)
		}
		return fmt.Errorf("%w: layer %s: %w", ErrHostileLayer, diffID, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != diffID.Hex {
		return &digestMismatch{diffID: diffID.String(), got: got}
	}
	return nil
}

func isCanceled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// ctxReader fails its reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// budgetReader charges what it reads to an image's budget of uncompressed bytes and fails, as a
// hostile layer, once the budget is spent.
type budgetReader struct {
	r    io.Reader
	left *int64
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if *b.left < 0 {
		return 0, hostile("over the image's budget of uncompressed bytes")
	}
	n, err := b.r.Read(p)
	*b.left -= int64(n)
	if *b.left < 0 {
		return n, hostile("over the image's budget of uncompressed bytes")
	}
	return n, err
}
