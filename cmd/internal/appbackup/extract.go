package appbackup

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/errkind"
)

// extractor writes one volume's entries into its staging directory, through os.Root: no entry
// name, and no symlink an earlier entry made, can lead outside it. Directories get their final
// modes and times once everything is in (finish).
type extractor struct {
	root   *os.Root
	prefix string // the volume's entries' names start with it
	rep    *VolumeReport
	buf    []byte
	files  map[string]bool // regular files written: what a hard link may name
	dirs   []dirMeta
}

type dirMeta struct {
	rel   string
	mode  fs.FileMode
	mtime time.Time
}

func newExtractor(staging, prefix string, rep *VolumeReport, buf []byte) (*extractor, error) {
	root, err := os.OpenRoot(staging)
	if err != nil {
		return nil, err
	}
	return &extractor{root: root, prefix: prefix, rep: rep, buf: buf, files: map[string]bool{}}, nil
}

func (x *extractor) close() { x.root.Close() }

// mode is an entry's permission bits and sticky bit; setuid and setgid are dropped.
func mode(h *tar.Header) fs.FileMode {
	m := fs.FileMode(h.Mode & 0o777)
	if h.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// relName checks an entry's name inside the volume: a clean relative path, no "..".
func (x *extractor) relName(name string) (string, error) {
	rel := strings.TrimSuffix(strings.TrimPrefix(name, x.prefix), "/")
	if rel == "" {
		return ".", nil
	}
	if !filepath.IsLocal(rel) || path.Clean(rel) != rel || strings.ContainsRune(rel, 0) {
		return "", errkind.BadInputf("entry %q: not a plain path inside its volume", name)
	}
	return rel, nil
}

// entry writes one entry (its content read from r).
func (x *extractor) entry(h *tar.Header, r io.Reader) error {
	rel, err := x.relName(h.Name)
	if err != nil {
		return err
	}
	if rel != "." {
		if dir := path.Dir(rel); dir != "." {
			if err := x.root.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
		}
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if rel != "." {
			if err := x.root.Mkdir(rel, 0o700); err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
		}
		if err := x.root.Lchown(rel, h.Uid, h.Gid); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		x.dirs = append(x.dirs, dirMeta{rel: rel, mode: mode(h), mtime: h.ModTime})
		x.rep.Dirs++
	case tar.TypeReg:
		if rel == "." {
			return errkind.BadInputf("entry %q: the volume itself is not a file", h.Name)
		}
		if err := x.file(rel, h, r); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		x.files[rel] = true
	case tar.TypeSymlink:
		if rel == "." || h.Linkname == "" || strings.ContainsRune(h.Linkname, 0) {
			return errkind.BadInputf("entry %q: bad symlink", h.Name)
		}
		// The target is only text here: nothing below resolves it outside the root.
		if err := x.root.Symlink(h.Linkname, rel); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		if err := x.root.Lchown(rel, h.Uid, h.Gid); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		x.rep.Symlinks++
	case tar.TypeLink:
		target, ok := strings.CutPrefix(h.Linkname, x.prefix)
		if !ok || !x.files[target] || rel == "." {
			return errkind.BadInputf("entry %q: a hard link must name a file of its volume stored before it", h.Name)
		}
		if err := x.root.Link(target, rel); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		x.rep.HardLinks++
	default:
		return errkind.BadInputf("entry %q: unexpected type %q", h.Name, h.Typeflag)
	}
	return nil
}

// file writes a regular file: new (O_EXCL, never through a symlink), its content or its data
// segments (holes left as holes), then owner, mode and time on the open file.
func (x *extractor) file(rel string, h *tar.Header, r io.Reader) error {
	segs, size, sparse, err := parseSparse(h.PAXRecords, h.Size)
	if err != nil {
		return err
	}
	if !sparse {
		segs, size = []segment{{0, h.Size}}, h.Size
	}
	f, err := x.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, s := range segs {
		if s.length == 0 {
			continue
		}
		n, err := io.CopyBuffer(io.NewOffsetWriter(f, s.offset), io.LimitReader(r, s.length), x.buf)
		if err != nil {
			return err
		}
		if n != s.length {
			return io.ErrUnexpectedEOF
		}
	}
	if sparse {
		if err := f.Truncate(size); err != nil {
			return err
		}
		x.rep.Sparse++
	}
	if err := f.Chown(h.Uid, h.Gid); err != nil {
		return err
	}
	if err := f.Chmod(mode(h)); err != nil {
		return err
	}
	tv := []unix.Timeval{unix.NsecToTimeval(h.ModTime.UnixNano()), unix.NsecToTimeval(h.ModTime.UnixNano())}
	if err := unix.Futimes(int(f.Fd()), tv); err != nil {
		return err
	}
	x.rep.Files++
	x.rep.Bytes += h.Size
	return f.Close()
}

// finish gives the directories their modes and times, deepest first (writing into a directory
// changes its time).
func (x *extractor) finish() error {
	var errs []error
	for _, d := range slices.Backward(x.dirs) {
		if err := x.root.Chmod(d.rel, d.mode); err != nil {
			errs = append(errs, err)
		}
		if err := x.root.Chtimes(d.rel, d.mtime, d.mtime); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
