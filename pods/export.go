package pods

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/errkind"
)

// configPath is where the store keeps an image's config as it came (its ID is its digest).
func (s *ImageStore) configPath(hexID string) string {
	return filepath.Join(s.Dir, "images", hexID+".config")
}

// saveConfig keeps an image's raw config (WriteArchive writes it back), unless kept already.
func (s *ImageStore) saveConfig(hexID string, img v1.Image) error {
	if _, err := os.Stat(s.configPath(hexID)); err == nil {
		return nil
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != hexID {
		return fmt.Errorf("config of image sha256:%s: its digest differs", hexID)
	}
	_, err = atomicfile.WriteFile(s.configPath(hexID), raw, 0o600)
	return err
}

// CanWriteArchive says whether WriteArchive can write the image id: the store has it and keeps
// its config (an image loaded by an older onionpod has none until it is loaded again).
func (s *ImageStore) CanWriteArchive(id string) bool {
	hexID, err := idHex(id)
	if err != nil {
		return false
	}
	_, err = os.Stat(s.configPath(hexID))
	return err == nil
}

// WriteArchive writes the image id (its ID, "sha256:...") to w as an OCI image archive, which
// LoadArchiveStream loads as the same image ID on another box: its config as it came, its layers
// as the store keeps them (compressed or not), no reference. An image the store keeps no config
// of (loaded by an older onionpod; load it again) is errkind.NotFound. It holds the store's
// shared lock (a prune waits) and stops when ctx ends.
func (s *ImageStore) WriteArchive(ctx context.Context, w io.Writer, id string) error {
	fail := func(err error) error { return fmt.Errorf("pods: write image %s: %w", id, err) }
	hexID, err := idHex(id)
	if err != nil {
		return err
	}
	unlock, err := s.lock(ctx, false)
	if err != nil {
		return fail(err)
	}
	defer unlock()
	var rec imageRecord
	if err := readJSON(filepath.Join(s.Dir, "images", hexID+".json"), &rec); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return errkind.NotFoundf("pods: image %s is not in the store", id)
		}
		return fail(err)
	}
	raw, err := os.ReadFile(s.configPath(hexID))
	if errors.Is(err, fs.ErrNotExist) {
		return errkind.NotFoundf("pods: image %s: the store keeps no config of it (loaded by an older onionpod): load it again", id)
	}
	if err != nil {
		return fail(err)
	}
	aw := &layoutWriter{tw: tar.NewWriter(w), ctx: ctx}
	aw.file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	manifest := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: aw.blob(types.OCIConfigJSON, raw)}
	for _, d := range rec.DiffIDs {
		h, err := v1.NewHash(d)
		if err != nil {
			return fail(err)
		}
		manifest.Layers = append(manifest.Layers, aw.layer(s.layerPath(h)))
	}
	mb, err := json.Marshal(manifest)
	if err != nil {
		return fail(err)
	}
	index := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex,
		Manifests: []v1.Descriptor{aw.blob(types.OCIManifestSchema1, mb)}}
	ib, err := json.Marshal(index)
	if err != nil {
		return fail(err)
	}
	aw.file("index.json", ib)
	if aw.err == nil {
		aw.err = aw.tw.Close()
	}
	if aw.err != nil {
		return fail(aw.err)
	}
	return nil
}

// layoutWriter writes the files of an OCI layout as a tar; the first error stops it.
type layoutWriter struct {
	tw  *tar.Writer
	ctx context.Context
	err error
}

func (aw *layoutWriter) header(name string, size int64) bool {
	if aw.err == nil {
		aw.err = aw.ctx.Err()
	}
	if aw.err == nil {
		aw.err = aw.tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: time.Unix(0, 0)})
	}
	return aw.err == nil
}

func (aw *layoutWriter) file(name string, b []byte) {
	if aw.header(name, int64(len(b))) {
		_, aw.err = aw.tw.Write(b)
	}
}

// blob writes b as a blob and returns its descriptor.
func (aw *layoutWriter) blob(mt types.MediaType, b []byte) v1.Descriptor {
	sum := sha256.Sum256(b)
	d := v1.Descriptor{MediaType: mt, Size: int64(len(b)), Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}
	aw.file("blobs/sha256/"+d.Digest.Hex, b)
	return d
}

// layer writes the cached layer at path as a blob (read twice: hashed, then copied) and returns
// its descriptor, its media type from its first bytes.
func (aw *layoutWriter) layer(path string) v1.Descriptor {
	var d v1.Descriptor
	if aw.err != nil {
		return d
	}
	f, err := os.Open(path)
	if err != nil {
		aw.err = err
		return d
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		aw.err = err
		return d
	}
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{aw.ctx, io.NewSectionReader(f, 0, st.Size())}); err != nil {
		aw.err = err
		return d
	}
	magic := make([]byte, 4)
	n, _ := f.ReadAt(magic, 0)
	d = v1.Descriptor{MediaType: layerMediaType(magic[:n]), Size: st.Size(), Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}}
	if aw.header("blobs/sha256/"+d.Digest.Hex, st.Size()) {
		var n int64
		n, aw.err = io.Copy(aw.tw, ctxReader{aw.ctx, io.NewSectionReader(f, 0, st.Size())})
		if aw.err == nil && n != st.Size() {
			aw.err = fmt.Errorf("layer %s changed while it was read", filepath.Base(path))
		}
	}
	return d
}

// layerMediaType names a layer blob's type by its magic bytes: gzip, zstd, or a plain tar.
func layerMediaType(magic []byte) types.MediaType {
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		return types.OCILayer
	case len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		return types.OCILayerZStd
	}
	return types.OCIUncompressedLayer
}
