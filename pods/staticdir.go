package pods

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/onionpod/onionpod/internal/errkind"
)

// Directories a static site may never be, nor contain: publishing one of them (or a parent,
// which holds it) would put the system's files on the LAN and the .onion.
var systemDirs = []string{
	"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media",
	"/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/local",
	"/var", "/var/backups", "/var/cache", "/var/lib", "/var/local", "/var/log", "/var/mail",
	"/var/opt", "/var/spool", "/var/tmp", "/var/lib/onionpod", "/var/lib/private",
}

// Directories a static site may not be inside either: system files, kernel interfaces, other
// services' state and logs, root's home.
var systemTrees = []string{
	"/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root",
	"/run", "/sbin", "/sys", "/usr", "/var/backups", "/var/cache", "/var/lib", "/var/log",
	"/var/mail", "/var/spool",
}

// CheckStaticDir checks a directory someone wants published as a static site. It resolves
// symlinks first, then refuses (bad input) a directory that is, holds or is inside a system
// directory (/, /etc, /usr, /proc, /var/lib, a home directory itself such as /home/alice...), or
// that is, holds or is inside one of refuse (pass onionpod's state directory). It must be an
// existing directory.
func CheckStaticDir(dir string, refuse []string) error {
	if !filepath.IsAbs(dir) {
		return errkind.BadInputf("static site %q: not an absolute path", dir)
	}
	real, err := filepath.EvalSymlinks(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return errkind.BadInputf("static site %q: %w", dir, fs.ErrNotExist)
	}
	if err != nil {
		return errkind.BadInputf("static site %q: %w", dir, err)
	}
	if st, err := os.Stat(real); err != nil || !st.IsDir() {
		return errkind.BadInputf("static site %q: not a directory", dir)
	}
	bad := func(why string) error {
		if real != filepath.Clean(dir) {
			return errkind.BadInputf("static site %q (%s): %s", dir, real, why)
		}
		return errkind.BadInputf("static site %q: %s", dir, why)
	}
	for _, sys := range systemDirs {
		for _, s := range resolvedForms(sys) {
			if real == s || within(s, real) {
				return bad("it is or holds the system directory " + sys)
			}
		}
	}
	for _, tree := range systemTrees {
		for _, t := range resolvedForms(tree) {
			if within(real, t) {
				return bad("it is inside the system directory " + tree)
			}
		}
	}
	for _, home := range []string{"/home", "/root"} {
		for _, h := range resolvedForms(home) {
			if filepath.Dir(real) == h {
				return bad("it is a home directory itself (publish a directory inside it)")
			}
		}
	}
	for _, r := range refuse {
		if !filepath.IsAbs(r) {
			continue
		}
		for _, x := range resolvedForms(r) {
			if real == x || within(x, real) || within(real, x) {
				return bad("it is, holds or is inside onionpod's own state (" + r + "), which onionpod keeps private")
			}
		}
	}
	return nil
}

// resolvedForms is p as written (cleaned) and with its symlinks resolved, when that differs (on
// a merged-/usr system /lib is /usr/lib).
func resolvedForms(p string) []string {
	p = filepath.Clean(p)
	if r, err := filepath.EvalSymlinks(p); err == nil && r != p {
		return []string{p, r}
	}
	return []string{p}
}

// within reports whether p is strictly inside dir.
func within(p, dir string) bool {
	if dir == "/" {
		return p != "/"
	}
	return strings.HasPrefix(p, dir+"/")
}
