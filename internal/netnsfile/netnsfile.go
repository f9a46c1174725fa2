// Package netnsfile manages named network namespaces: a namespace kept alive by a bind mount of its
// nsfs file at a path (what `ip netns add` does under /run/netns), and code run inside one. It is
// shared by the network package and the lab's simulated LAN (internal/lab/lan). In a held
// directory (a symlink into a holder process's own mount namespace, see Hold) the bind mounts are
// made in the holder's namespace, out of PID 1's mount table.
package netnsfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// Create makes a new, empty network namespace and bind-mounts it at path. The parent directory is
// created if needed. An existing path is an error that wraps fs.ErrExist. If setup is not nil it
// runs inside the new namespace, on the thread that created it, before Create returns (sysctls,
// loopback): cheaper than entering the namespace again. If setup fails, the namespace is removed.
func Create(path string, setup func() error) (err error) {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("create netns %s: %w", path, fs.ErrExist)
	}
	errc := make(chan error, 1)
	go func() {
		// The thread enters the new namespace and is never unlocked: it dies with this goroutine,
		// so no other goroutine ever runs in the wrong namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := Pin(path, self); err != nil {
			errc <- err
			return
		}
		if setup != nil {
			if err := setup(); err != nil {
				errc <- errors.Join(err, Remove(path))
				return
			}
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("create netns %s: %w", path, err)
	}
	return nil
}

// Remove unmounts the namespace at path and deletes the file. The kernel frees the namespace (and
// the links inside it) once nothing else holds it. A path that is already gone is success.
func Remove(path string) error {
	if err := unbind(path); err != nil {
		return fmt.Errorf("remove netns %s: unmount: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", path, err)
	}
	return nil
}

// Exists reports whether path is a mounted network namespace (or a /proc ns/net file).
func Exists(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// Do runs fn on an OS thread switched into the namespace at path; the thread is switched back (or
// discarded if that fails) before Do returns. fn must not start goroutines that expect to run in
// the namespace.
func Do(path string, fn func() error) error {
	return ns.WithNetNSPath(path, func(ns.NetNS) error { return fn() })
}

// Sysctl writes value to /proc/sys/KEY where key uses slashes ("net/ipv6/conf/all/forwarding").
// Network sysctls apply to the namespace of the calling thread: call it inside Do.
func Sysctl(key, value string) error {
	if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}
