package pods

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Limits bound what one image may unpack to.
const (
	defaultMaxImageBytes = 16 << 30 // uncompressed bytes of all layers of one image
	maxEntries           = 1 << 20  // tar entries of one image
	maxPathLen           = 4096
	maxSymlinkHops       = 40
)

// unpacker applies the layers of one image, in order, to an empty root directory.
//
// Safety rules (a layer breaking one is refused with ErrHostileLayer and the caller discards the
// whole root):
//   - entry names must be relative and must not climb out with "..";
//   - every parent directory is resolved inside the root, component by component, with *at
//     system calls and O_NOFOLLOW; a symlink met on the way is followed only when its target is
//     relative and stays inside the root (an absolute symlink, or one leading out, is refused);
//     the final component is never followed: it is replaced;
//   - a hard link's target must be an existing non-directory inside the root, found the same way;
//   - sizes are bounded by the image's byte budget; device nodes are skipped; setuid and setgid
//     bits are dropped; extended attributes (file capabilities!) are ignored.
type unpacker struct {
	root     int   // O_PATH fd of the root directory
	budget   int64 // uncompressed bytes left
	entries  int
	chown    bool            // false when not root (fuzzing, unprivileged tests)
	created  map[string]bool // paths written by the current layer (for opaque whiteouts)
	skipped  int             // device nodes skipped
	stripped int             // setuid/setgid bits dropped
}

func newUnpacker(rootDir string, budget int64) (*unpacker, error) {
	fd, err := unix.Open(rootDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root %s: %w", rootDir, err)
	}
	if budget <= 0 {
		budget = defaultMaxImageBytes
	}
	return &unpacker{root: fd, budget: budget, chown: os.Geteuid() == 0}, nil
}

func (u *unpacker) Close() error { return unix.Close(u.root) }

func hostile(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrHostileLayer, fmt.Sprintf(format, args...))
}

// applyLayer applies one uncompressed tar stream.
func (u *unpacker) applyLayer(r io.Reader) error {
	u.created = map[string]bool{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if errors.Is(err, ErrHostileLayer) || isCanceled(err) {
			return err
		}
		if err != nil {
			return fmt.Errorf("%w: read tar: %w", ErrHostileLayer, err)
		}
		u.entries++
		if u.entries > maxEntries {
			return hostile("more than %d entries", maxEntries)
		}
		if err := u.applyEntry(hdr, tr); err != nil {
			return err
		}
	}
}

// cleanName validates a tar entry name and returns it cleaned and relative ("" for the root).
func cleanName(name string) (string, error) {
	if len(name) > maxPathLen || strings.ContainsRune(name, 0) {
		return "", hostile("entry name too long or with NUL")
	}
	if path.IsAbs(name) {
		return "", hostile("absolute entry name %q", name)
	}
	clean := path.Clean(name)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", hostile("entry name %q leaves the root", name)
	}
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// applyEntry applies one tar entry: it checks the name and size, handles a whiteout, or resolves
// the entry's parent directory safely and creates the entry there by its type.
func (u *unpacker) applyEntry(hdr *tar.Header, tr io.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if hdr.Size < 0 || hdr.Size > u.budget {
		return hostile("entry %q: size %d over the image's budget", name, hdr.Size)
	}
	if name == "" { // the root itself: keep ours
		return nil
	}
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if strings.HasPrefix(base, ".wh.") {
		return u.applyWhiteout(dir, base, name)
	}
	dfd, logical, err := u.resolveDir(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	e := u.newTarget(dfd, logical, base, hdr)
	u.created[e.full] = true
	switch hdr.Typeflag {
	case tar.TypeDir:
		return u.makeDir(e)
	case tar.TypeReg, tar.TypeGNUSparse: // the reader turns the old TypeRegA into TypeReg
		return u.writeFile(e, hdr, tr)
	case tar.TypeSymlink:
		return u.makeSymlink(e, hdr)
	case tar.TypeLink:
		return u.makeHardLink(e, hdr)
	case tar.TypeFifo:
		return u.makeFifo(e)
	case tar.TypeChar, tar.TypeBlock:
		u.skipped++ // neutralised: pods get their /dev from PrivateDevices=yes
		delete(u.created, e.full)
		return nil
	default: // global headers and vendor extensions carry no file
		delete(u.created, e.full)
		return nil
	}
}

// target is where an entry goes: the name base in the directory dfd (logically full, relative to
// the root), with the owner and mode it gets.
type target struct {
	dfd      int
	base     string
	full     string
	uid, gid int
	mode     uint32
}

// newTarget works out an entry's owner and mode: setuid and setgid bits are dropped (and
// counted); absurd ids become root's.
func (u *unpacker) newTarget(dfd int, logical, base string, hdr *tar.Header) target {
	e := target{dfd: dfd, base: base, full: path.Join(logical, base), uid: hdr.Uid, gid: hdr.Gid,
		mode: uint32(hdr.Mode) & 0o1777}
	if hdr.Mode&(0o4000|0o2000) != 0 {
		u.stripped++
	}
	if e.uid < 0 || e.uid > 1<<31-1 || e.gid < 0 || e.gid > 1<<31-1 {
		e.uid, e.gid = 0, 0
	}
	return e
}

// applyWhiteout applies a whiteout entry (OCI layer spec): ".wh..wh..opq" empties the directory
// of what lower layers put there; ".wh.NAME" deletes NAME. A whiteout in a missing directory
// has nothing to delete.
func (u *unpacker) applyWhiteout(dir, base, name string) error {
	dfd, logical, err := u.resolveDir(dir, false)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if base == ".wh..wh..opq" {
		return u.clearOpaque(dfd, logical)
	}
	victim := strings.TrimPrefix(base, ".wh.")
	if victim == "" || victim == "." || victim == ".." {
		return hostile("whiteout %q", name)
	}
	return removeAt(dfd, victim)
}

// makeDir makes (or keeps) a directory, replacing anything else of that name, and sets its owner
// and mode.
func (u *unpacker) makeDir(e target) error {
	var st unix.Stat_t
	err := unix.Fstatat(e.dfd, e.base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := removeAt(e.dfd, e.base); err != nil {
			return err
		}
		err = unix.ENOENT
	}
	if errors.Is(err, unix.ENOENT) {
		if err := unix.Mkdirat(e.dfd, e.base, 0o700); err != nil {
			return fmt.Errorf("mkdir %s: %w", e.full, err)
		}
	} else if err != nil {
		return fmt.Errorf("stat %s: %w", e.full, err)
	}
	fd, err := unix.Openat(e.dfd, e.base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", e.full, err)
	}
	defer unix.Close(fd)
	return u.setOwnerMode(fd, e)
}

// writeFile replaces whatever has the name with a new regular file holding the entry's content
// (holes where it is zeros), charged to the image's budget.
func (u *unpacker) writeFile(e target, hdr *tar.Header, content io.Reader) error {
	if err := removeAt(e.dfd, e.base); err != nil {
		return err
	}
	fd, err := unix.Openat(e.dfd, e.base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", e.full, err)
	}
	f := os.NewFile(uintptr(fd), e.full)
	defer f.Close()
	n, readErr, writeErr := copySparse(f, content)
	u.budget -= n
	if readErr != nil {
		return hostile("entry %q: %v", e.full, readErr)
	}
	if writeErr != nil {
		return fmt.Errorf("write %s: %w", e.full, writeErr)
	}
	if n != hdr.Size {
		return hostile("entry %q: truncated (%d of %d bytes)", e.full, n, hdr.Size)
	}
	if err := u.setOwnerMode(fd, e); err != nil {
		return err
	}
	return setTimes(e.dfd, e.base, hdr)
}

// makeSymlink replaces whatever has the name with a symlink. Its target is stored as it is:
// the unpacker never follows it on the way out of the root (see resolveDir).
func (u *unpacker) makeSymlink(e target, hdr *tar.Header) error {
	if len(hdr.Linkname) > maxPathLen || strings.ContainsRune(hdr.Linkname, 0) || hdr.Linkname == "" {
		return hostile("symlink %q: bad target", e.full)
	}
	if err := removeAt(e.dfd, e.base); err != nil {
		return err
	}
	if err := unix.Symlinkat(hdr.Linkname, e.dfd, e.base); err != nil {
		return fmt.Errorf("symlink %s: %w", e.full, err)
	}
	if err := u.chownLink(e); err != nil {
		return err
	}
	return setTimes(e.dfd, e.base, hdr)
}

// makeHardLink links the name to an existing non-directory inside the root, found the safe way.
func (u *unpacker) makeHardLink(e target, hdr *tar.Header) error {
	linked, err := cleanName(hdr.Linkname)
	if err != nil || linked == "" {
		return hostile("hard link %q to %q leaves the root", e.full, hdr.Linkname)
	}
	tdir, tbase := path.Split(linked)
	tfd, _, err := u.resolveDir(strings.TrimSuffix(tdir, "/"), false)
	if err != nil {
		if errors.Is(err, ErrHostileLayer) {
			return err
		}
		return hostile("hard link %q: target %q: %v", e.full, linked, err)
	}
	defer unix.Close(tfd)
	var st unix.Stat_t
	if err := unix.Fstatat(tfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return hostile("hard link %q: target %q: %v", e.full, linked, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return hostile("hard link %q to a directory", e.full)
	}
	if e.full == linked {
		return nil
	}
	if err := removeAt(e.dfd, e.base); err != nil {
		return err
	}
	if err := unix.Linkat(tfd, tbase, e.dfd, e.base, 0); err != nil {
		return fmt.Errorf("link %s: %w", e.full, err)
	}
	return nil
}

// makeFifo replaces whatever has the name with a named pipe.
func (u *unpacker) makeFifo(e target) error {
	if err := removeAt(e.dfd, e.base); err != nil {
		return err
	}
	if err := unix.Mknodat(e.dfd, e.base, unix.S_IFIFO|(e.mode&0o777), 0); err != nil {
		return fmt.Errorf("mkfifo %s: %w", e.full, err)
	}
	return u.chownLink(e)
}

// chownLink sets the owner of the name itself (a symlink is not followed).
func (u *unpacker) chownLink(e target) error {
	if !u.chown {
		return nil
	}
	if err := unix.Fchownat(e.dfd, e.base, e.uid, e.gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %s: %w", e.full, err)
	}
	return nil
}

// resolveDir walks the relative path dir inside the root, one component at a time, and returns an
// O_PATH fd for it and its logical path (with symlinks resolved). Missing directories are created
// when create is true. Symlinks on the way are followed only when relative and staying inside.
func (u *unpacker) resolveDir(dir string, create bool) (int, string, error) {
	comps := splitPath(dir)
	cur, err := unix.Dup(u.root)
	if err != nil {
		return -1, "", err
	}
	var logical []string
	hops := 0
	for len(comps) > 0 {
		comp := comps[0]
		comps = comps[1:]
		var st unix.Stat_t
		err := unix.Fstatat(cur, comp, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) && create {
			if err := unix.Mkdirat(cur, comp, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(cur)
				return -1, "", fmt.Errorf("mkdir %s: %w", path.Join(append(logical, comp)...), err)
			}
			err = unix.Fstatat(cur, comp, &st, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			unix.Close(cur)
			return -1, "", err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			next, err := unix.Openat(cur, comp, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			unix.Close(cur)
			if err != nil {
				return -1, "", err
			}
			cur = next
			logical = append(logical, comp)
		case unix.S_IFLNK:
			hops++
			if hops > maxSymlinkHops {
				unix.Close(cur)
				return -1, "", hostile("too many symlinks in %q", dir)
			}
			target, err := readlinkat(cur, comp)
			if err != nil {
				unix.Close(cur)
				return -1, "", err
			}
			if path.IsAbs(target) {
				unix.Close(cur)
				return -1, "", hostile("path %q goes through absolute symlink %s -> %s", dir, path.Join(append(logical, comp)...), target)
			}
			joined := path.Clean(path.Join(path.Join(logical...), target))
			if joined == ".." || strings.HasPrefix(joined, "../") {
				unix.Close(cur)
				return -1, "", hostile("path %q goes through symlink %s -> %s out of the root", dir, path.Join(append(logical, comp)...), target)
			}
			// Start again from the root with the link's target followed by what is left.
			unix.Close(cur)
			if cur, err = unix.Dup(u.root); err != nil {
				return -1, "", err
			}
			comps = append(splitPath(joined), comps...)
			logical = logical[:0]
		default:
			unix.Close(cur)
			return -1, "", hostile("path %q: %s is not a directory", dir, path.Join(append(logical, comp)...))
		}
	}
	return cur, path.Join(logical...), nil
}

func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

func readlinkat(dirfd int, name string) (string, error) {
	buf := make([]byte, maxPathLen+1)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", err
	}
	if n > maxPathLen {
		return "", hostile("symlink target too long")
	}
	return string(buf[:n]), nil
}

// clearOpaque removes what lower layers put in a directory, keeping what this layer created.
func (u *unpacker) clearOpaque(dfd int, logical string) error {
	fd, err := unix.Openat(dfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(fd), logical)
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		p := path.Join(logical, n)
		if !u.created[p] {
			if err := removeAt(dfd, n); err != nil {
				return err
			}
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			sub, err := unix.Openat(dfd, n, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			err = u.clearOpaque(sub, p)
			unix.Close(sub)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// removeAt removes name (a file, a symlink, or a directory tree) from the directory dfd without
// following symlinks. A missing name is fine.
func removeAt(dfd int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.Unlinkat(dfd, name, 0)
	}
	sub, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(sub), name)
	names, err := d.Readdirnames(-1)
	if err != nil {
		d.Close()
		return err
	}
	for _, n := range names {
		if err := removeAt(sub, n); err != nil {
			d.Close()
			return err
		}
	}
	d.Close()
	return unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR)
}

func (u *unpacker) setOwnerMode(fd int, e target) error {
	if u.chown {
		if err := unix.Fchown(fd, e.uid, e.gid); err != nil {
			return fmt.Errorf("chown %s: %w", e.full, err)
		}
	}
	if err := unix.Fchmod(fd, e.mode); err != nil {
		return fmt.Errorf("chmod %s: %w", e.full, err)
	}
	return nil
}

func setTimes(dfd int, name string, hdr *tar.Header) error {
	mt := unix.NsecToTimespec(hdr.ModTime.UnixNano())
	ts := []unix.Timespec{mt, mt}
	if err := unix.UtimesNanoAt(dfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", name, err)
	}
	return nil
}

// addMountPoints creates the directories systemd mounts over (MountAPIVFS, PrivateTmp,
// ProtectSystem, ProtectHome, StateDirectory) where the image does not have them, so systemd need
// not create them in the shared root at start. (It still creates a volume's mount point there.)
func (u *unpacker) addMountPoints() error {
	for _, p := range []string{"dev", "proc", "sys", "run", "tmp", "etc", "usr", "root", "var/tmp", "var/lib"} {
		dir, base := path.Split(p)
		dfd, _, err := u.resolveDir(strings.TrimSuffix(dir, "/"), true)
		if err != nil {
			continue // e.g. var is a symlink: systemd copes
		}
		err = unix.Mkdirat(dfd, base, 0o755)
		unix.Close(dfd)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("mkdir %s: %w", p, err)
		}
	}
	return nil
}

// copySparse copies r to f, seeking over blocks of zeros instead of writing them, so a layer of
// compressed zeros or a sparse entry leaves holes, not gigabytes on disk. It tells read errors
// (a broken archive) from write errors (the disk).
func copySparse(f *os.File, r io.Reader) (n int64, readErr, writeErr error) {
	buf := make([]byte, 64<<10)
	zeros := make([]byte, len(buf))
	hole := false
	for {
		m, err := r.Read(buf)
		if m > 0 {
			chunk := buf[:m]
			if bytes.Equal(chunk, zeros[:m]) {
				if _, serr := f.Seek(int64(m), io.SeekCurrent); serr != nil {
					return n, nil, serr
				}
				hole = true
			} else {
				if _, werr := f.Write(chunk); werr != nil {
					return n, nil, werr
				}
				hole = false
			}
			n += int64(m)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, err, nil
		}
	}
	if hole {
		if err := f.Truncate(n); err != nil {
			return n, nil, err
		}
	}
	return n, nil, nil
}
