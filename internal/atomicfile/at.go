package atomicfile

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// The *At functions work relative to a directory file descriptor, for directories that someone
// else can write to (an export directory the user chose, a directory another user owns): once
// the directory is open, no path string is resolved again, and no symlink is ever followed. name
// is one path component (no '/'); the caller fsyncs the directory (unix.Fsync(dirfd)) after its
// last change.

// checkName refuses names that are not one component of a path.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("atomicfile: %q is not a file name", name)
	}
	return nil
}

// WriteFileAt replaces dirfd/name with data and mode perm, atomically: a temporary file created
// with O_EXCL|O_NOFOLLOW in the same directory, fsync, renameat over name. A symlink at name is
// replaced, never followed. An existing regular file that already holds exactly data with mode
// perm is left alone (changed is false).
func WriteFileAt(dirfd int, name string, data []byte, perm fs.FileMode) (changed bool, err error) {
	if err := checkName(name); err != nil {
		return false, err
	}
	if sameAt(dirfd, name, data, perm) {
		return false, nil
	}
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return false, fmt.Errorf("atomicfile: %w", err)
	}
	tmp := "." + name + ".tmp-" + hex.EncodeToString(r[:])
	if err := WriteNewAt(dirfd, tmp, data, perm); err != nil {
		return false, err
	}
	if err := unix.Renameat(dirfd, tmp, dirfd, name); err != nil {
		unix.Unlinkat(dirfd, tmp, 0)
		return false, fmt.Errorf("atomicfile: rename %s: %w", name, err)
	}
	return true, nil
}

// WriteNewAt creates dirfd/name (which must not exist; a symlink there is an error, never
// followed) with data and mode perm, and fsyncs it.
func WriteNewAt(dirfd int, name string, data []byte, perm fs.FileMode) (err error) {
	if err := checkName(name); err != nil {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err != nil {
		return fmt.Errorf("atomicfile: create %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("atomicfile: %w", cerr)
		}
		if err != nil {
			unix.Unlinkat(dirfd, name, 0)
		}
	}()
	if err = f.Chmod(perm); err != nil { // the umask may have narrowed it
		return fmt.Errorf("atomicfile: %w", err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	return nil
}

// sameAt reports whether dirfd/name is a regular file (not a symlink) holding exactly data with
// mode perm.
func sameAt(dirfd int, name string, data []byte, perm fs.FileMode) bool {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != perm || st.Size() != int64(len(data)) {
		return false
	}
	old, err := io.ReadAll(io.LimitReader(f, int64(len(data))+1))
	return err == nil && bytes.Equal(old, data)
}
