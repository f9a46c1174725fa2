package onion

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/genvalue"
)

// torUsers are the system users that distributions' tor packages create (Debian and Ubuntu:
// debian-tor; Fedora, Arch, Alpine: tor; OpenBSD: _tor), tried in this order when
// ManagedTor.User is empty.
func torUsers() []string { return []string{"debian-tor", "tor", "_tor"} }

// ManagedTor is the tor onionpod runs itself (onionpod-tor.service): it faces the network and
// holds, while it runs, the secret key of every app's onion service, so it runs as an
// unprivileged user, sandboxed by systemd, and sees nothing of onionpod's state but its own
// data directory and its torrc.
//
// It runs as the tor package's static system user (debian-tor), not as a DynamicUser=:
// tor's data directory and control socket live where the config puts them (under state_dir,
// which may be anywhere, and tor.control), and the daemon creates both and hands them to tor's
// user before tor starts; DynamicUser= can own only StateDirectory=/RuntimeDirectory= under
// /var/lib and /run, with a user that exists only while the unit runs. The managed tor is the
// distribution's tor binary, and its package creates the user. The daemon (root) still reaches
// the control socket and reads the cookie.
type ManagedTor struct {
	Torrc TorrcOptions
	// TorrcPath is where Prepare writes the torrc (mode 0640, group of User).
	TorrcPath string
	// Binary is tor's binary ("" looks tor up, see TorCommandBinary).
	Binary string
	// User runs tor; "" is the first that exists of debian-tor, tor and _tor (the users the
	// distributions' tor packages create).
	User string
	// Hide are directories tor must not see at all, typically onionpod's state dir with every
	// app's key: in tor's view each is an empty read-only tmpfs, into which only the data
	// directory (read-write) and the torrc (read-only) under it are mounted.
	Hide []string
}

// TorService is how systemd runs the managed tor: the fields of its unit (see pods.HostService).
type TorService struct {
	ExecStart   []string
	User, Group string
	// ReadWritePaths are the writable paths outside the Hide dirs (everything else is read-only).
	ReadWritePaths []string
	// RuntimeDirectories are those of ReadWritePaths under /run (the control socket's, by
	// default): systemd makes them for tor's user before it starts tor, since /run is empty at
	// boot and systemd may start tor before the daemon has run Prepare.
	RuntimeDirectories []string
	// BindPaths are the writable paths under a Hide dir, mounted into its tmpfs.
	BindPaths []string
	// BindReadOnlyPaths are the read-only paths under a Hide dir (the torrc).
	BindReadOnlyPaths []string
	// TemporaryFileSystem are the Hide dirs (read-only tmpfs).
	TemporaryFileSystem []string
	// AddressFamilies tor may open sockets of: unix (control), IPv4 and IPv6.
	AddressFamilies []string
}

// account is tor's user and group.
type account struct {
	user, group string
	uid, gid    int
	groups      []int // every group the user is in
}

func (m ManagedTor) account() (account, error) {
	candidates := torUsers()
	if m.User != "" {
		candidates = []string{m.User}
	}
	for _, name := range candidates {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		a := account{user: u.Username}
		if a.uid, err = strconv.Atoi(u.Uid); err != nil {
			return account{}, fmt.Errorf("onion: managed tor: user %s: uid %q", name, u.Uid)
		}
		if a.gid, err = strconv.Atoi(u.Gid); err != nil {
			return account{}, fmt.Errorf("onion: managed tor: user %s: gid %q", name, u.Gid)
		}
		if a.uid == 0 {
			return account{}, fmt.Errorf("onion: managed tor: user %s is root", name)
		}
		a.group = u.Gid
		if g, err := user.LookupGroupId(u.Gid); err == nil {
			a.group = g.Name
		}
		a.groups = []int{a.gid}
		if ids, err := u.GroupIds(); err == nil {
			for _, id := range ids {
				if n, err := strconv.Atoi(id); err == nil {
					a.groups = append(a.groups, n)
				}
			}
		}
		return a, nil
	}
	return account{}, fmt.Errorf("onion: managed tor: no user %s to run tor as (install the distribution's tor package, which creates it)",
		strings.Join(candidates, " or "))
}

// check validates the paths (they go into the torrc and the unit file).
func (m ManagedTor) check() error {
	if err := genvalue.Path("onion: managed tor: torrc path", m.TorrcPath); err != nil {
		return err
	}
	for _, h := range m.Hide {
		if err := genvalue.Path("onion: managed tor: hidden directory", h); err != nil {
			return err
		}
	}
	return nil
}

// writable are the directories tor writes: its data directory and the control socket's.
func (m ManagedTor) writable() []string {
	return []string{m.Torrc.DataDir, filepath.Dir(m.Torrc.ControlSocket)}
}

// hidden reports whether p is under (or is) one of the Hide dirs.
func (m ManagedTor) hidden(p string) bool {
	return slices.ContainsFunc(m.Hide, func(h string) bool { return p == h || strings.HasPrefix(p, h+"/") })
}

// Service returns how systemd runs the managed tor.
func (m ManagedTor) Service() (TorService, error) {
	if err := m.check(); err != nil {
		return TorService{}, err
	}
	if _, err := ManagedTorrc(m.Torrc); err != nil {
		return TorService{}, err
	}
	a, err := m.account()
	if err != nil {
		return TorService{}, err
	}
	s := TorService{
		ExecStart: TorCommandBinary(m.Binary, m.TorrcPath),
		User:      a.user, Group: a.group,
		TemporaryFileSystem: slices.Clone(m.Hide),
		AddressFamilies:     []string{"AF_UNIX", "AF_INET", "AF_INET6"},
	}
	for _, w := range m.writable() {
		switch {
		case m.hidden(w):
			s.BindPaths = append(s.BindPaths, w)
		case strings.HasPrefix(w, "/run/"):
			s.ReadWritePaths = append(s.ReadWritePaths, w)
			s.RuntimeDirectories = append(s.RuntimeDirectories, w)
		default:
			s.ReadWritePaths = append(s.ReadWritePaths, w)
		}
	}
	if m.hidden(m.TorrcPath) {
		s.BindReadOnlyPaths = append(s.BindReadOnlyPaths, m.TorrcPath)
	}
	return s, nil
}

// Prepare writes the torrc (0640, owned by root and tor's group: tor reads it, nobody else)
// and makes the data directory and the control socket's directory (0700, owned by tor's user,
// as tor requires). What an earlier tor running as root left there is handed to tor's user.
// changed reports a new torrc: a running tor must restart to read it.
func (m ManagedTor) Prepare() (changed bool, err error) {
	if err := m.check(); err != nil {
		return false, err
	}
	torrc, err := ManagedTorrc(m.Torrc)
	if err != nil {
		return false, err
	}
	a, err := m.account()
	if err != nil {
		return false, err
	}
	for _, dir := range m.writable() {
		if err := prepareOwnedDir(dir, a); err != nil {
			return false, fmt.Errorf("onion: managed tor: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(m.TorrcPath), 0o700); err != nil {
		return false, fmt.Errorf("onion: managed tor: %w", err)
	}
	changed, err = atomicfile.WriteFile(m.TorrcPath, torrc, 0o640)
	if err != nil {
		return false, fmt.Errorf("onion: managed tor: %w", err)
	}
	if err := os.Lchown(m.TorrcPath, 0, a.gid); err != nil {
		return false, fmt.Errorf("onion: managed tor: %w", err)
	}
	for _, p := range append(m.writable(), m.TorrcPath) {
		if !m.hidden(p) {
			if err := searchable(filepath.Dir(p), a); err != nil {
				return false, fmt.Errorf("onion: managed tor: %w", err)
			}
		}
	}
	return changed, nil
}

// prepareOwnedDir makes dir (its parents 0755 when missing), refuses a symlink there, and
// makes it and everything in it owned by a, the directory 0700. All changes go through
// directory fds, never following a symlink: tor's user can write there.
func prepareOwnedDir(dir string, a account) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	fd, err := openDir(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Fchown(fd, a.uid, a.gid); err != nil {
		return fmt.Errorf("chown %s: %w", dir, err)
	}
	if err := unix.Fchmod(fd, 0o700); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return chownTree(fd, dir, a, 0)
}

// chownTree gives the regular files and directories under the open directory to a. Each is
// opened (O_NOFOLLOW) and changed through its own fd, after checking what that fd is: tor's
// user may swap names meanwhile, but cannot make root change anything else. A regular file
// with other links is left alone (it could be a hard link to a file elsewhere); so are
// symlinks, sockets and the like (tor recreates its socket), and entries that vanish.
func chownTree(dirfd int, where string, a account, depth int) error {
	if depth > 16 {
		return fmt.Errorf("%s: nested too deep", where)
	}
	names, err := readDirNames(dirfd, where)
	if err != nil {
		return err
	}
	for _, name := range names {
		path := filepath.Join(where, name)
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENXIO) {
			continue // gone, a symlink, a socket
		}
		if err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		err = chownEntry(fd, path, a, depth)
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	return nil
}

// chownEntry gives the open regular file or directory fd to a, and recurses into a directory.
func chownEntry(fd int, path string, a account, depth int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if st.Nlink != 1 {
			return nil
		}
	case unix.S_IFDIR:
		if err := chownTree(fd, path, a, depth+1); err != nil {
			return err
		}
	default:
		return nil
	}
	if int(st.Uid) == a.uid && int(st.Gid) == a.gid {
		return nil
	}
	if err := unix.Fchown(fd, a.uid, a.gid); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	return nil
}

// searchable checks that a can reach into dir: every directory from / to dir lets it search
// (x for its owner, group or others, as a applies).
func searchable(dir string, a account) error {
	for p := dir; ; p = filepath.Dir(p) {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		var bit uint32
		switch {
		case int(st.Uid) == a.uid:
			bit = 0o100
		case slices.Contains(a.groups, int(st.Gid)):
			bit = 0o010
		default:
			bit = 0o001
		}
		if st.Mode&bit == 0 {
			return fmt.Errorf("%s (mode %o) does not let %s reach %s", p, st.Mode&0o777, a.user, dir)
		}
		if p == "/" {
			return nil
		}
	}
}
