package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/onionpod/onionpod/internal/atomicfile"
)

// Places where Command runs.
const (
	InBox    = "box"    // inside the box: its systemd, the daemon's CLI (onionpod on PATH)
	InClient = "client" // on the LAN client; names under the zone resolve through the box's DNS
	InTor    = "tor"    // beside the lab's Tor client: ALL_PROXY points at its SOCKS port
)

// Command returns a command that runs argv in the named place of the lab.
func (l *Lab) Command(ctx context.Context, where string, argv ...string) *exec.Cmd {
	switch where {
	case InBox:
		pid := l.boxPID()
		path := l.opts.path("bin") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
		args := []string{"-t", strconv.Itoa(pid), "-m", "-p", "-n", "-u", "-i", "--",
			"env", "PATH=" + path, "ONIONPOD_CONFIG=" + l.state.Config}
		return exec.CommandContext(ctx, "nsenter", append(args, argv...)...)
	case InClient:
		resolv := l.opts.path(clientResolvConf)
		script := `mount --bind "$0" /etc/resolv.conf && exec "$@"`
		args := []string{"--net=" + l.state.Client, "--", "unshare", "--mount", "--propagation", "private",
			"sh", "-c", script, resolv}
		return exec.CommandContext(ctx, "nsenter", append(args, argv...)...)
	case InTor:
		args := []string{"--net=" + l.state.BoxNetns, "--", "env",
			"ALL_PROXY=socks5h://" + l.state.Socks, "all_proxy=socks5h://" + l.state.Socks}
		return exec.CommandContext(ctx, "nsenter", append(args, argv...)...)
	}
	return exec.CommandContext(ctx, "false") // unreachable: callers check with ValidPlace
}

// clientResolvConf is the LAN client's resolv.conf (written by Up): the box's DNS server.
const clientResolvConf = "client-resolv.conf"

func (l *Lab) writeClientResolvConf() error {
	conf := fmt.Sprintf("nameserver %s\nsearch %s\n", BoxLANIP, Zone)
	_, err := atomicfile.WriteFile(l.opts.path(clientResolvConf), []byte(conf), 0o644)
	return err
}

// ValidPlace reports whether where names a place of the lab.
func ValidPlace(where string) bool {
	return where == InBox || where == InClient || where == InTor
}

func (l *Lab) boxPID() int {
	if l.box != nil {
		return l.box.PID
	}
	b, _ := os.ReadFile(filepath.Join(l.opts.path("box"), "pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}
