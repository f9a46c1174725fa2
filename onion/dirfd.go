package onion

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/errkind"
)

// Key directories are read and written relative to a directory file descriptor: once a
// directory is open, no path string is resolved again and no symlink inside it is followed. An
// export directory belongs to the user, who (or a program running as them) may plant symlinks
// there; a HiddenServiceDir given to import may be anyone's.

// openDir opens dir as a directory. With noFollow, a symlink at dir's last component is refused
// (ELOOP); the components before it are the caller's choice.
func openDir(dir string, noFollow bool) (int, error) {
	flags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC
	if noFollow {
		flags |= unix.O_NOFOLLOW
	}
	for {
		fd, err := unix.Open(dir, flags, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return fd, notLink(dir, err)
	}
}

// openDirAt opens dirfd/name as a directory, never following a symlink.
func openDirAt(dirfd int, where, name string) (int, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	return fd, notLink(filepath.Join(where, name), err)
}

// notLink turns the errors of an O_NOFOLLOW open of a symlink (ELOOP) or of a non-directory
// (ENOTDIR) into bad input naming the path; other errors get the path too.
func notLink(path string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ELOOP):
		return errkind.BadInputf("%s is a symlink: refused", path)
	case errors.Is(err, unix.ENOTDIR):
		return errkind.BadInputf("%s is not a directory", path)
	}
	return &os.PathError{Op: "open", Path: path, Err: err}
}

// readFileAt reads dirfd/name, a regular file of at most max bytes (one more is read, so that a
// longer file is reported by the parser's length check), never following a symlink. where
// names the directory in errors.
func readFileAt(dirfd int, where, name string, max int) ([]byte, error) {
	path := filepath.Join(where, name)
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, notLink(path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errkind.BadInputf("%s is not a regular file", path)
	}
	return io.ReadAll(io.LimitReader(f, int64(max)+1))
}

// lstatAt is fstatat without following a symlink. ok is false when name does not exist.
func lstatAt(dirfd int, name string) (st unix.Stat_t, ok bool, err error) {
	err = unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return st, false, nil
	}
	return st, err == nil, err
}

// readDirNames lists the entries of an open directory (without closing it).
func readDirNames(dirfd int, where string) ([]string, error) {
	dup, err := unix.Dup(dirfd)
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(dup)
	if _, err := unix.Seek(dup, 0, io.SeekStart); err != nil { // the offset is shared with dirfd
		unix.Close(dup)
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	d := os.NewFile(uintptr(dup), where)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return names, nil
}

// fsync makes the creations, renames and removals in an open directory durable.
func fsync(dirfd int, where string) error {
	if err := unix.Fsync(dirfd); err != nil {
		return fmt.Errorf("sync %s: %w", where, err)
	}
	return nil
}
