package onion

import (
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// torAccount skips the test unless it runs as root on a machine with the tor package's user.
func torAccount(t *testing.T) (uid, gid int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	u, err := user.Lookup("debian-tor")
	if err != nil {
		t.Skip("the tor package's user debian-tor is missing (apt-get install tor)")
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

func owner(t *testing.T, path string) (uid, gid int, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid), fi.Mode()
}

// managedLayout is the daemon's layout: STATE (0700 root) with tor/torrc and tor/data, the
// control socket in RUN/tor.
func managedLayout(t *testing.T) ManagedTor {
	t.Helper()
	base, err := os.MkdirTemp("", "onion-managed-") // t.TempDir's parent is 0700: tor could not reach it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	state := filepath.Join(base, "state")
	os.Mkdir(state, 0o700)
	return ManagedTor{
		Torrc: TorrcOptions{
			DataDir: filepath.Join(state, "tor", "data"), ControlSocket: filepath.Join(base, "run", "tor", "control.sock"),
			Extra: []string{"DisableNetwork 1"},
		},
		TorrcPath: filepath.Join(state, "tor", "torrc"),
		User:      "debian-tor",
		Hide:      []string{state},
	}
}

// TestManagedTorPrepare: the data and socket directories belong to tor's user (0700), what a
// tor running as root left in them too (symlinks changed, never followed), and the torrc is
// readable by tor's group only.
func TestManagedTorPrepare(t *testing.T) {
	uid, gid := torAccount(t)
	m := managedLayout(t)
	// What an earlier tor, running as root, left behind.
	data := m.Torrc.DataDir
	os.MkdirAll(filepath.Join(data, "keys"), 0o700)
	os.WriteFile(filepath.Join(data, "state"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(data, "keys", "secret_onion_key"), []byte("x"), 0o600)
	outsideDir := t.TempDir()
	outside := filepath.Join(outsideDir, "outside")
	os.WriteFile(outside, []byte("root's"), 0o600)
	os.Symlink(outside, filepath.Join(data, "link"))
	// A hard link to a file elsewhere (what tor's user could plant where hard links to others'
	// files are allowed): root must not give that file away.
	hardTarget := filepath.Join(filepath.Dir(m.Hide[0]), "hard-target")
	os.WriteFile(hardTarget, []byte("root's"), 0o600)
	if err := os.Link(hardTarget, filepath.Join(data, "hard")); err != nil {
		t.Fatal(err)
	}

	changed, err := m.Prepare()
	if err != nil || !changed {
		t.Fatalf("Prepare: changed=%v err=%v", changed, err)
	}
	for _, p := range []string{data, filepath.Dir(m.Torrc.ControlSocket)} {
		if u, g, mode := owner(t, p); u != uid || g != gid || mode.Perm() != 0o700 {
			t.Errorf("%s: %d:%d %v, want debian-tor 0700", p, u, g, mode)
		}
	}
	for _, p := range []string{"state", "keys", "keys/secret_onion_key"} {
		if u, g, _ := owner(t, filepath.Join(data, p)); u != uid || g != gid {
			t.Errorf("%s left by a root tor: %d:%d, want debian-tor", p, u, g)
		}
	}
	for _, p := range []string{outside, hardTarget} {
		if u, g, _ := owner(t, p); u != 0 || g != 0 {
			t.Errorf("%s, linked from the data dir, was given away: %d:%d", p, u, g)
		}
	}
	if u, g, mode := owner(t, m.TorrcPath); u != 0 || g != gid || mode.Perm() != 0o640 {
		t.Errorf("torrc: %d:%d %v, want root:debian-tor 0640", u, g, mode)
	}
	if _, _, mode := owner(t, m.Hide[0]); mode.Perm() != 0o700 {
		t.Errorf("the state dir is now %v", mode)
	}
	if changed, err := m.Prepare(); err != nil || changed {
		t.Errorf("second Prepare: changed=%v err=%v", changed, err)
	}
}

// TestManagedTorPrepareRefusesSymlinkedDir: a symlink in place of the data directory is
// refused, and what it points to keeps its owner.
func TestManagedTorPrepareRefusesSymlinkedDir(t *testing.T) {
	torAccount(t)
	m := managedLayout(t)
	target := t.TempDir()
	os.MkdirAll(filepath.Dir(m.Torrc.DataDir), 0o700)
	os.Symlink(target, m.Torrc.DataDir)
	if _, err := m.Prepare(); !errors.Is(err, ErrBadInput) {
		t.Fatalf("Prepare over a symlinked data dir: %v, want ErrBadInput", err)
	}
	if u, _, _ := owner(t, target); u != 0 {
		t.Errorf("the symlink's target was chowned to %d", u)
	}
}

// TestManagedTorPrepareChecksReach: a control socket under a directory tor's user cannot
// search (and that is not hidden) is an error naming it, not a tor that fails to start.
func TestManagedTorPrepareChecksReach(t *testing.T) {
	torAccount(t)
	m := managedLayout(t)
	closed := filepath.Join(filepath.Dir(filepath.Dir(filepath.Dir(m.Torrc.ControlSocket))), "closed")
	os.Mkdir(closed, 0o700)
	m.Torrc.ControlSocket = filepath.Join(closed, "tor", "control.sock")
	if _, err := m.Prepare(); err == nil || !strings.Contains(err.Error(), closed+" (mode 700)") {
		t.Fatalf("Prepare with a socket tor cannot reach: %v, want an error naming %s", err, closed)
	}
}

func TestManagedTorService(t *testing.T) {
	if _, err := user.Lookup("debian-tor"); err != nil {
		t.Skip("the tor package's user debian-tor is missing (apt-get install tor)")
	}
	m := managedLayout(t)
	s, err := m.Service()
	if err != nil {
		t.Fatal(err)
	}
	state := m.Hide[0]
	if s.User != "debian-tor" || s.Group == "" {
		t.Errorf("user %q group %q", s.User, s.Group)
	}
	if !slices.Equal(s.TemporaryFileSystem, []string{state}) ||
		!slices.Equal(s.BindPaths, []string{m.Torrc.DataDir}) ||
		!slices.Equal(s.BindReadOnlyPaths, []string{m.TorrcPath}) ||
		!slices.Equal(s.ReadWritePaths, []string{filepath.Dir(m.Torrc.ControlSocket)}) || len(s.RuntimeDirectories) != 0 {
		t.Errorf("paths: %+v", s)
	}
	// A socket under /run (the default): /run is empty at boot, where systemd may start tor
	// before the daemon made the socket's directory; systemd makes it.
	atRun := m
	atRun.Torrc.ControlSocket = "/run/onionpod/tor/control.sock"
	if rs, err := atRun.Service(); err != nil || !slices.Equal(rs.RuntimeDirectories, []string{"/run/onionpod/tor"}) ||
		!slices.Equal(rs.ReadWritePaths, []string{"/run/onionpod/tor"}) {
		t.Errorf("socket under /run: %+v, %v; want its directory a runtime directory", rs, err)
	}
	if len(s.ExecStart) == 0 || !filepath.IsAbs(s.ExecStart[0]) || !slices.Contains(s.ExecStart, m.TorrcPath) {
		t.Errorf("ExecStart %q", s.ExecStart)
	}
	if !slices.Equal(s.AddressFamilies, []string{"AF_UNIX", "AF_INET", "AF_INET6"}) {
		t.Errorf("address families %v", s.AddressFamilies)
	}
	m.User = "no-such-user-here"
	if _, err := m.Service(); err == nil {
		t.Error("a missing user was accepted")
	}
	m = managedLayout(t)
	m.Hide = []string{"/a b"}
	if _, err := m.Service(); !errors.Is(err, ErrBadInput) {
		t.Errorf("a hidden path with a space: %v", err)
	}
}
