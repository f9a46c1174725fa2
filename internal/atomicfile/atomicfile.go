// Package atomicfile writes files so that a reader, or a crash at any moment, sees either the old
// content or the new one, never a mix: a temporary file in the same directory, fsync, rename over
// the old name, fsync of the directory. Every file onionpod must not lose (app records, onion
// keys, leases, zones, image indexes, unit files) is written through it.
package atomicfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// WriteFile replaces path with data and mode perm, atomically and durably. An existing regular
// file that already holds exactly data with mode perm is left alone (changed is false). A symlink
// at path is replaced, never followed.
func WriteFile(path string, data []byte, perm fs.FileMode) (changed bool, err error) {
	changed, err = WriteFileNoDirSync(path, data, perm)
	if err != nil || !changed {
		return changed, err
	}
	return true, SyncDir(filepath.Dir(path))
}

// WriteFileNoDirSync is WriteFile without the directory's fsync, for a caller that writes several
// files into one directory and then calls SyncDir once. Until then, a crash may lose the rename
// (the old file stays), never half of a file.
func WriteFileNoDirSync(path string, data []byte, perm fs.FileMode) (changed bool, err error) {
	if same(path, data, perm) {
		return false, nil
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("atomicfile: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(perm); err != nil {
		return false, fmt.Errorf("atomicfile: %w", err)
	}
	if _, err = tmp.Write(data); err != nil {
		return false, fmt.Errorf("atomicfile: %w", err)
	}
	if err = tmp.Sync(); err != nil {
		return false, fmt.Errorf("atomicfile: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return false, fmt.Errorf("atomicfile: %w", err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return false, fmt.Errorf("atomicfile: %w", err)
	}
	return true, nil
}

// same reports whether path is a regular file holding exactly data with mode perm.
func same(path string, data []byte, perm fs.FileMode) bool {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != perm || st.Size() != int64(len(data)) {
		return false
	}
	old, err := io.ReadAll(io.LimitReader(f, int64(len(data))+1))
	return err == nil && bytes.Equal(old, data)
}

// WriteNew creates path (which must not exist, and is never a symlink followed) with data and mode
// perm, and fsyncs it: for files in a directory that is itself renamed into place afterwards.
func WriteNew(path string, data []byte, perm fs.FileMode) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("atomicfile: %w", cerr)
		}
		if err != nil {
			os.Remove(path)
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

// SyncDir fsyncs a directory, making the renames and creations in it durable.
func SyncDir(dir string) error {
	if dir == "" {
		dir = "."
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: sync %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("atomicfile: sync %s: %w", dir, err)
	}
	return nil
}

// Quarantine moves a damaged file aside, keeping it for the user as NAME.damaged-UNIXTIME (or
// with a counter when that exists), and returns the new path. The original name is then free for
// a good file; nothing is deleted.
func Quarantine(path string, unixTime int64) (string, error) {
	for i := 0; i < 100; i++ {
		dst := fmt.Sprintf("%s.damaged-%d", path, unixTime)
		if i > 0 {
			dst = fmt.Sprintf("%s.damaged-%d-%d", path, unixTime, i)
		}
		err := unix.Renameat2(unix.AT_FDCWD, path, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			if _, lerr := os.Lstat(dst); lerr == nil {
				continue
			}
			err = os.Rename(path, dst)
		}
		if err != nil {
			return "", fmt.Errorf("atomicfile: quarantine %s: %w", path, err)
		}
		return dst, SyncDir(filepath.Dir(path))
	}
	return "", fmt.Errorf("atomicfile: quarantine %s: too many damaged copies already", path)
}

// WriteJSON writes v as indented JSON (with a final newline) to path through WriteFile.
func WriteJSON(path string, v any, perm fs.FileMode) (changed bool, err error) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return false, fmt.Errorf("atomicfile: %s: %w", path, err)
	}
	return WriteFile(path, append(data, '\n'), perm)
}

// ReadJSON reads the JSON file at path into v; a file that does not parse is an error naming
// the path (a missing file keeps its fs.ErrNotExist).
func ReadJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
