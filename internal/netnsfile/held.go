package netnsfile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A held directory keeps its namespaces' bind mounts out of the caller's mount table. Every
// mount of PID 1's table is copied into the mount namespace systemd makes for each unit it starts
// with one (every pod's): with one bind mount per pod under /run/netns, each pod start cost
// +0.05-0.09 ms per pod on the box (BenchmarkUnitStartOverMounts in pods: 11-17 ms with no other
// pod, 66-104 ms with 1000). A holder is a process in a mount namespace of its own, with a tmpfs
// of its own at a directory INNER; the held directory is a symlink to /proc/HOLDER/root/INNER.
// Everything that names a namespace by its path (systemd's NetworkNamespacePath=, CNI, Do,
// Exists, a directory listing, inotify) follows the symlink into the holder's tmpfs; only the
// mounts themselves are made and undone inside the holder's mount namespace (by nsenter: a Go
// process cannot enter another mount namespace), so PID 1's table stays as it is whatever the
// number of pods. See Hold.

// holder is the process a held directory points into, and the directory in its mount namespace.
type holder struct {
	pid   int
	inner string
}

// heldDir reports whether dir is a held directory: a symlink to /proc/PID/root/INNER.
func heldDir(dir string) (holder, bool) {
	target, err := os.Readlink(dir)
	if err != nil {
		return holder{}, false
	}
	rest, ok := strings.CutPrefix(target, "/proc/")
	if !ok {
		return holder{}, false
	}
	pidStr, inner, ok := strings.Cut(rest, "/root/")
	pid, err := strconv.Atoi(pidStr)
	if !ok || err != nil || pid <= 0 {
		return holder{}, false
	}
	return holder{pid: pid, inner: "/" + inner}, true
}

// HolderPID is the PID of the holder dir points into, or 0 when dir is not a held directory.
func HolderPID(dir string) int {
	h, _ := heldDir(dir)
	return h.pid
}

// MountTable is the mount table that changes when a namespace is named or unnamed in dir: the
// holder's for a held directory, else the caller's.
func MountTable(dir string) string {
	if h, ok := heldDir(dir); ok {
		return fmt.Sprintf("/proc/%d/mountinfo", h.pid)
	}
	return "/proc/self/mountinfo"
}

// run runs argv in the holder's mount namespace.
func (h holder) run(argv ...string) error {
	args := append([]string{"--target", strconv.Itoa(h.pid), "--mount", "--"}, argv...)
	out, err := exec.Command("nsenter", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("in the namespace holder (pid %d): %s: %w: %s", h.pid, strings.Join(argv, " "), err,
			strings.TrimSpace(string(out)))
	}
	return nil
}

// heldPath finds the holder of path's directory (ok: it is a held directory), that directory
// and path's name in it.
func heldPath(path string) (h holder, dir, name string, ok bool) {
	dir, name = filepath.Split(path)
	dir = filepath.Clean(dir)
	h, ok = heldDir(dir)
	return h, dir, name, ok
}

// bind bind-mounts source (a namespace file such as /proc/PID/ns/net) onto path: in the holder's
// mount namespace for a held directory, else in the caller's.
func bind(source, path string) error {
	if h, dir, name, ok := heldPath(path); ok {
		if err := h.ask(dir, "bind", name, source); !errors.Is(err, errNoSocket) {
			return err
		}
		return h.run("mount", "--no-canonicalize", "--bind", source, filepath.Join(h.inner, name))
	}
	return unix.Mount(source, path, "none", unix.MS_BIND, "")
}

// unbind undoes bind.
func unbind(path string) error {
	if h, dir, name, ok := heldPath(path); ok {
		if !Exists(path) {
			return nil
		}
		if err := h.ask(dir, "unbind", name, ""); !errors.Is(err, errNoSocket) {
			return err
		}
		return h.run("umount", "--lazy", filepath.Join(h.inner, name))
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// Pin names the namespace source (a namespace file: /proc/PID/ns/net, or another name of it) at
// path, so that it outlives the processes in it; path must not exist. Create is Pin of a new
// namespace; Pin alone names one again, e.g. a running pod's after its holder was replaced.
func Pin(path, source string) (err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("pin netns %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("pin netns %s: %w", path, err)
	}
	f.Close()
	if err := bind(source, path); err != nil {
		os.Remove(path)
		return fmt.Errorf("pin netns %s: bind mount: %w", path, err)
	}
	return nil
}

// Hold makes the calling process the holder of link: it checks that it runs in a mount namespace
// of its own (not PID 1's) with a tmpfs of its own at inner, points link at it (replacing an
// earlier holder's link, never a directory), calls ready (if not nil: systemd's READY=1, so that
// units ordered after the holder find the link), and waits for ctx, making and undoing the
// namespaces' mounts it is asked for on its socket (LINK.sock). On return it removes link and
// the socket if link still points at it. systemd gives a holder its namespace and tmpfs with
// TemporaryFileSystem=INNER (which implies PrivateMounts=yes).
func Hold(ctx context.Context, inner, link string, ready func()) error {
	if err := notInMountNamespaceOf("/proc/1"); err != nil {
		return fmt.Errorf("netns holder: %w", err)
	}
	if err := ownTmpfs(inner); err != nil {
		return fmt.Errorf("netns holder: %w", err)
	}
	if fi, err := os.Lstat(link); err == nil && fi.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("netns holder: %s exists and is not a symlink: refusing to replace it", link)
	}
	target := fmt.Sprintf("/proc/%d/root%s", os.Getpid(), inner)
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return fmt.Errorf("netns holder: %w", err)
	}
	serving, stop := context.WithCancel(ctx)
	defer stop()
	if err := serve(serving, socketOf(link), inner); err != nil {
		return fmt.Errorf("netns holder: %w", err)
	}
	tmp := link + ".new"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("netns holder: %w", err)
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("netns holder: %w", err)
	}
	if ready != nil {
		ready()
	}
	<-ctx.Done()
	stop()
	if now, err := os.Readlink(link); err == nil && now == target {
		os.Remove(link)
		os.Remove(socketOf(link))
	}
	return nil
}

// notInMountNamespaceOf refuses to hold in the mount namespace of the process proc (PID 1's):
// the mounts would land in the table they are kept out of. A process this one may not inspect
// (PID 1 of a sandbox of another user namespace) is not that of the units it starts.
func notInMountNamespaceOf(proc string) error {
	var mine, other unix.Stat_t
	if err := unix.Stat("/proc/self/ns/mnt", &mine); err != nil {
		return err
	}
	if err := unix.Stat(proc+"/ns/mnt", &other); errors.Is(err, unix.EACCES) {
		return nil
	} else if err != nil {
		return err
	}
	if mine.Ino == other.Ino && mine.Dev == other.Dev {
		return fmt.Errorf("runs in the mount namespace of %s (start it with TemporaryFileSystem= for its directory)", proc)
	}
	return nil
}

// ownTmpfs checks that dir is a tmpfs mounted at dir itself: files made in a directory of a
// shared file system would be seen (empty) by every other mount namespace.
func ownTmpfs(dir string) error {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return err
	}
	var st, parent unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	if err := unix.Stat(filepath.Dir(dir), &parent); err != nil {
		return err
	}
	if fs.Type != unix.TMPFS_MAGIC || st.Dev == parent.Dev {
		return fmt.Errorf("%s is not a tmpfs of its own", dir)
	}
	return nil
}
