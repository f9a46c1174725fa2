package pods

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/errkind"
)

// archiveSlack is what an archive may hold beyond its layers' uncompressed bytes (tar headers,
// configs, manifests).
const archiveSlack = 64 << 20

// OpenLocal opens a local image archive the safe way for a process that may be more privileged
// than the file's owner: a symlink as the last component is not followed, a FIFO or device does
// not block the open, and anything but a regular file is refused (bad input).
func OpenLocal(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, errkind.BadInputf("pods: archive %s: a symlink (name the file itself)", path)
		}
		if errors.Is(err, unix.ENOENT) {
			return nil, errkind.BadInputf("pods: archive %s: %w", path, fs.ErrNotExist)
		}
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return nil, errkind.BadInputf("pods: archive %s: %w", path, fs.ErrPermission) // the caller may not read it
		}
		return nil, fmt.Errorf("pods: archive %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pods: archive %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, errkind.BadInputf("pods: archive %s: not a regular file (%s)", path, st.Mode().Type())
	}
	// Back to blocking reads (a regular file never blocks anyway).
	if err := unix.SetNonblock(fd, false); err != nil {
		f.Close()
		return nil, fmt.Errorf("pods: archive %s: %w", path, err)
	}
	return f, nil
}

// LoadArchive loads an image from a `docker save` tarball or an OCI image archive (a tar of an
// OCI layout) at path, opened with OpenLocal. The first image in the archive is used. It is for
// tests and tools: the daemon takes archives as streams (LoadArchiveStream), never from a path a
// user names.
func (s *ImageStore) LoadArchive(ctx context.Context, path string, progress io.Writer) (*Image, error) {
	f, err := OpenLocal(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, err := s.loadArchiveFile(ctx, f, "archive:"+filepath.Base(path), progress)
	if err != nil {
		return nil, fmt.Errorf("pods: load %s: %w", path, err)
	}
	return img, nil
}

// LoadArchiveStream loads an image from a stream of a `docker save` tarball or an OCI image
// archive: what the CLI sends over the API (see WriteLayoutArchive for a layout directory). The
// stream is spooled into an unnamed file in the store (at most the image budget plus 64 MiB),
// then loaded from there. When ctx ends the load stops at once: a stalled stream is abandoned (and
// closed when r is an io.Closer), holding no lock and leaving no file. The image's reference is
// the archive's own tag or annotation, or else its ID.
func (s *ImageStore) LoadArchiveStream(ctx context.Context, r io.Reader, progress io.Writer) (*Image, error) {
	return s.loadStream(ctx, r, "", progress)
}

func (s *ImageStore) loadStream(ctx context.Context, r io.Reader, fallbackRef string, progress io.Writer) (*Image, error) {
	if err := s.makeDirs(); err != nil {
		return nil, fmt.Errorf("pods: load: %w", err)
	}
	f, err := s.spool(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("pods: load: %w", err)
	}
	defer f.Close()
	img, err := s.loadArchiveFile(ctx, f, fallbackRef, progress)
	if err != nil {
		return nil, fmt.Errorf("pods: load: %w", err)
	}
	return img, nil
}

// spool copies r into an unnamed temp file in Dir/tmp (nothing to clean up, whatever happens),
// bounded by the image budget, and returns the file. It returns as soon as ctx ends.
func (s *ImageStore) spool(ctx context.Context, r io.Reader) (*os.File, error) {
	f, err := unnamedFile(filepath.Join(s.Dir, "tmp"))
	if err != nil {
		return nil, err
	}
	limit := s.maxBytes() + archiveSlack
	done := make(chan error, 1)
	go func() {
		n, err := io.Copy(f, io.LimitReader(r, limit+1))
		if err == nil && n > limit {
			err = errkind.BadInputf("archive larger than %d bytes", limit)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return nil, err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
		return f, nil
	case <-ctx.Done():
		// Abandon the copy: closing the reader (when we can) unblocks it, closing the file makes
		// its next write fail; the goroutine then ends by itself.
		if c, ok := r.(io.Closer); ok {
			c.Close()
		}
		f.Close()
		return nil, ctx.Err()
	}
}

// unnamedFile opens a file in dir that has no name (O_TMPFILE), or one removed at once where the
// file system cannot do that.
func unnamedFile(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), filepath.Join(dir, "(spool)")), nil
	}
	f, err := os.CreateTemp(dir, "spool-")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}

// loadArchiveFile loads the first image of an archive held open in f (read with ReadAt, so the
// file is never reopened by name), under the store's shared lock.
func (s *ImageStore) loadArchiveFile(ctx context.Context, f *os.File, fallbackRef string, progress io.Writer) (*Image, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > s.maxBytes()+archiveSlack {
		return nil, errkind.BadInputf("archive larger than %d bytes", s.maxBytes()+archiveSlack)
	}
	open := func() io.Reader { return ctxReader{ctx, io.NewSectionReader(f, 0, st.Size())} }
	unlock, err := s.lock(ctx, false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	kind, tags, err := archiveKind(open())
	if err != nil {
		return nil, err
	}
	if kind == "docker" {
		var tag *name.Tag
		ref := fallbackRef
		if len(tags) > 0 {
			if t, err := name.NewTag(tags[0]); err == nil {
				tag, ref = &t, t.Name()
			}
		}
		img, err := tarball.Image(func() (io.ReadCloser, error) { return io.NopCloser(open()), nil }, tag)
		if err != nil {
			return nil, errkind.BadInputf("docker archive: %w", err)
		}
		// Uncompressed: a docker save tarball usually holds plain tars; asking for the compressed
		// form would gzip them just to hash them.
		return s.importImage(ctx, ref, "", img, uncompressedBlobs, progress)
	}
	dir, err := s.tempDir("archive")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := extractLayout(open(), dir); err != nil {
		return nil, err
	}
	img, ref, err := imageFromLayout(dir)
	if err != nil {
		return nil, err
	}
	if ref == "" {
		ref = fallbackRef
	}
	return s.importImage(ctx, ref, "", img, compressedBlobs, progress)
}

// LoadLayout loads the first image of an OCI layout directory: it reads the layout as
// WriteLayoutArchive does (regular files only, never blocking) and loads that stream.
func (s *ImageStore) LoadLayout(ctx context.Context, dir string, progress io.Writer) (*Image, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(WriteLayoutArchive(ctx, pw, dir)) }()
	img, err := s.loadStream(ctx, pr, "layout:"+filepath.Base(dir), progress)
	pr.Close()
	if err != nil {
		return nil, fmt.Errorf("pods: load layout %s: %w", dir, err)
	}
	return img, nil
}

// WriteLayoutArchive writes the OCI layout directory dir to w as an OCI image archive (a tar of
// its oci-layout, index.json and blobs/ALG/HEX files): what the CLI sends LoadArchiveStream for
// a layout directory. Each file is opened as OpenLocal opens an archive (no symlink followed, no
// FIFO waited on, regular files only); anything else in dir is left out. It stops when ctx ends.
func WriteLayoutArchive(ctx context.Context, w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	files := []string{"oci-layout", "index.json"}
	algs, err := os.ReadDir(filepath.Join(dir, "blobs"))
	if err != nil {
		return errkind.BadInputf("pods: layout %s: %w", dir, err)
	}
	for _, a := range algs {
		if !a.IsDir() || !isHexName(a.Name()) {
			continue
		}
		blobs, err := os.ReadDir(filepath.Join(dir, "blobs", a.Name()))
		if err != nil {
			return fmt.Errorf("pods: layout %s: %w", dir, err)
		}
		for _, b := range blobs {
			if b.Type().IsRegular() && isHexName(b.Name()) {
				files = append(files, "blobs/"+a.Name()+"/"+b.Name())
			}
		}
	}
	for _, name := range files {
		if err := addToTar(ctx, tw, filepath.Join(dir, filepath.FromSlash(name)), name); err != nil {
			return fmt.Errorf("pods: layout %s: %w", dir, err)
		}
	}
	return tw.Close()
}

func addToTar(ctx context.Context, tw *tar.Writer, file, name string) error {
	f, err := OpenLocal(file)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: st.Size(), ModTime: st.ModTime()}); err != nil {
		return err
	}
	n, err := io.Copy(tw, io.LimitReader(ctxReader{ctx, f}, st.Size()))
	if err == nil && n != st.Size() {
		err = fmt.Errorf("%s changed while read", name)
	}
	return err
}

// archiveKind tells a `docker save` tarball ("docker", with its tags) from an OCI archive ("oci").
func archiveKind(r io.Reader) (string, []string, error) {
	tr := tar.NewReader(r)
	oci := false
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if isCanceled(err) {
			return "", nil, err
		}
		if err != nil {
			return "", nil, errkind.BadInputf("not a tar archive: %w", err)
		}
		switch strings.TrimPrefix(hdr.Name, "./") {
		case "manifest.json":
			var m []struct{ RepoTags []string }
			if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&m); err != nil || len(m) == 0 {
				return "", nil, errkind.BadInputf("bad manifest.json")
			}
			return "docker", m[0].RepoTags, nil
		case "oci-layout":
			oci = true
		}
	}
	if oci {
		return "oci", nil, nil
	}
	return "", nil, errkind.BadInputf("neither a docker save tarball nor an OCI archive")
}

// extractLayout extracts the files of an OCI layout (oci-layout, index.json, blobs/ALG/HEX) from
// an archive into dir. Anything else in the archive is ignored.
func extractLayout(r io.Reader, dir string) error { return extractLayoutBlobs(r, dir, -1) }

// extractLayoutBlobs is extractLayout leaving out the blobs larger than maxBlob (-1: none).
func extractLayoutBlobs(r io.Reader, dir string, maxBlob int64) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if isCanceled(err) {
			return err
		}
		if err != nil {
			return errkind.BadInputf("not a tar archive: %w", err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		parts := strings.Split(name, "/")
		ok := name == "oci-layout" || name == "index.json" ||
			len(parts) == 3 && parts[0] == "blobs" && isHexName(parts[1]) && isHexName(parts[2]) && (maxBlob < 0 || hdr.Size <= maxBlob)
		if !ok {
			continue
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
			return err
		}
		out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			if errors.Is(err, fs.ErrExist) {
				return errkind.BadInputf("%s twice in the archive", name)
			}
			return err
		}
		_, err = io.Copy(out, io.LimitReader(tr, hdr.Size))
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
}

// isHexName accepts the algorithm and hex parts of a blob path: lowercase letters and digits.
func isHexName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// imageFromLayout picks the first image of an OCI layout (for a nested index, the one for this
// platform) and the reference its index annotates, if any.
func imageFromLayout(dir string) (v1.Image, string, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, "", errkind.BadInputf("OCI layout: %w", err)
	}
	return firstImage(idx, 0)
}
func firstImage(idx v1.ImageIndex, depth int) (v1.Image, string, error) {
	if depth > 3 {
		return nil, "", errkind.BadInputf("OCI index: nested indexes too deep")
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, "", errkind.BadInputf("OCI index: %w", err)
	}
	for _, d := range m.Manifests {
		ref := d.Annotations["io.containerd.image.name"]
		if ref == "" {
			ref = d.Annotations["org.opencontainers.image.ref.name"]
			if ref != "" && !strings.ContainsAny(ref, ":/@") {
				ref = "" // a bare tag, not a reference
			}
		}
		switch {
		case d.MediaType.IsImage():
			if d.Platform != nil && (d.Platform.OS != "linux" || d.Platform.Architecture != runtime.GOARCH) {
				continue
			}
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, "", errkind.BadInputf("OCI image %s: %w", d.Digest, err)
			}
			return img, ref, nil
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, "", errkind.BadInputf("OCI index %s: %w", d.Digest, err)
			}
			img, childRef, err := firstImage(child, depth+1)
			if err == nil {
				if ref == "" {
					ref = childRef
				}
				return img, ref, nil
			}
		}
	}
	return nil, "", errkind.BadInputf("no linux/%s image in the index", runtime.GOARCH)
}

// maxDescriptorBlob bounds the blobs LocalImageID reads from an OCI archive: indexes, manifests
// and configs are small; layers are left in the archive.
const maxDescriptorBlob = 4 << 20

// LocalImageID is the ID ("sha256:...") of the image a local archive (docker or OCI, opened with
// OpenLocal) or OCI layout directory holds, as loading it would give, found from its manifests
// and config alone: no layer is read or unpacked, so a client can tell whether the daemon has
// the image before sending it. Errors are bad input.
func LocalImageID(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", errkind.BadInputf("pods: image %s: %w", path, err)
	}
	if st.IsDir() {
		return layoutImageID(path)
	}
	f, err := OpenLocal(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	id, err := archiveImageID(f)
	if err != nil {
		return "", fmt.Errorf("pods: image %s: %w", path, err)
	}
	return id, nil
}

// layoutImageID is the ID of the first image of an OCI layout directory.
func layoutImageID(dir string) (string, error) {
	img, _, err := imageFromLayout(dir)
	if err != nil {
		return "", fmt.Errorf("pods: image %s: %w", dir, err)
	}
	id, err := img.ConfigName()
	if err != nil {
		return "", errkind.BadInputf("pods: image %s: %w", dir, err)
	}
	return id.String(), nil
}

// archiveImageID is the ID of the first image of an archive, read from its manifests and config.
func archiveImageID(f *os.File) (string, error) {
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	open := func() io.Reader { return io.NewSectionReader(f, 0, st.Size()) } // seekable: tar skips layers
	kind, _, err := archiveKind(open())
	if err != nil {
		return "", err
	}
	if kind == "docker" {
		img, err := tarball.Image(func() (io.ReadCloser, error) { return io.NopCloser(open()), nil }, nil)
		if err != nil {
			return "", errkind.BadInputf("docker archive: %w", err)
		}
		id, err := img.ConfigName()
		if err != nil {
			return "", errkind.BadInputf("docker archive: %w", err)
		}
		return id.String(), nil
	}
	dir, err := os.MkdirTemp("", "onionpod-image-id-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	if err := extractLayoutBlobs(open(), dir, maxDescriptorBlob); err != nil {
		return "", err
	}
	return layoutImageID(dir)
}
