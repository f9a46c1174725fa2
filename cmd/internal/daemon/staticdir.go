package daemon

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/pods"
)

// checkStaticDir refuses a directory no static site may publish: system directories, home
// directories themselves, and those of refuse (onionpod's own state).
func checkStaticDir(dir string, refuse []string) error { return pods.CheckStaticDir(dir, refuse) }

// checkStaticSite decides whether who may publish dir as a static site: not a directory
// checkStaticDir refuses, and one who can read and traverse it (every directory on the way
// searchable, the site itself readable and searchable by its uid or one of its groups). The
// daemon runs as root: without this, a member of the API group could publish what only root
// may read.
func checkStaticSite(dir string, who peer, refuse []string) error {
	if err := checkStaticDir(dir, refuse); err != nil {
		return err
	}
	if !who.known {
		return errkind.BadInputf("static site %q: the daemon cannot tell who asks (no peer credentials)", dir)
	}
	if who.uid == 0 {
		return nil
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return errkind.BadInputf("static site %q: %w", dir, err)
	}
	groups := peerGroups(who)
	steps := []string{"/"}
	for p := real; p != "/"; p = filepath.Dir(p) {
		steps = append(steps, p)
	}
	slices.Sort(steps) // parents before children
	for _, p := range steps {
		want := uint32(1) // search
		if p == real {
			want = 5 // read and search
		}
		st, err := os.Stat(p)
		if err != nil {
			return errkind.BadInputf("static site %q: %w", dir, err)
		}
		if !allowed(st.Sys().(*syscall.Stat_t), who.uid, groups, want) {
			return errkind.BadInputf("static site %q: uid %d may not read it (%s is not %s for it): only what the caller can read may be published",
				dir, who.uid, p, map[uint32]string{1: "searchable", 5: "readable and searchable"}[want])
		}
	}
	return nil
}

// allowed applies the file's mode bits (owner, group or others, as the kernel does without
// ACLs) to uid with groups, for the bits in want (4 read, 2 write, 1 search).
func allowed(st *syscall.Stat_t, uid uint32, groups []uint32, want uint32) bool {
	mode := st.Mode
	var bits uint32
	switch {
	case st.Uid == uid:
		bits = mode >> 6
	case slices.Contains(groups, st.Gid):
		bits = mode >> 3
	default:
		bits = mode
	}
	return bits&want == want
}

// peerGroups are the caller's gid and supplementary groups (from /proc/PID/status; the caller
// waits for the answer, so its process is there).
func peerGroups(who peer) []uint32 {
	groups := []uint32{who.gid}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", who.pid))
	if err != nil {
		return groups
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		for _, g := range strings.Fields(rest) {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				groups = append(groups, uint32(n))
			}
		}
	}
	return groups
}
