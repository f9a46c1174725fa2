// Package hostcheck answers "can this run here?" the one way every harness and the lab ask it:
// Missing(parts...) returns nil when the machine has every part, or an error that names each
// missing one and the Debian package that brings it. The test wrappers (podstest, nettest,
// oniontest, dnstest) skip with that error's text; `onionpod lab up` fails with it.
//
// Checks only look (euid, PATH, files, /proc), except Links, which creates a veth, a bridge and a
// macvlan inside a throwaway network namespace of its own and lets the kernel free it.
package hostcheck

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ErrUnavailable is wrapped by every error Missing returns.
var ErrUnavailable = errors.New("unavailable here")

// Part is one thing a harness needs from the machine.
type Part int

// The parts. Each names what it checks and the Debian package that provides it.
const (
	// Root: effective user id 0 (namespaces, mounts, cgroups, tor's ownership checks).
	Root Part = iota + 1
	// Namespaces: the kernel's net, pid, mount, uts, ipc and cgroup namespaces.
	Namespaces
	// Cgroup2: a cgroup2 hierarchy mounted (pure v2 or hybrid host).
	Cgroup2
	// Overlay: the overlay file system (a box's /etc and /var).
	Overlay
	// Links: the kernel makes veth, bridge and macvlan links (probed in a throwaway namespace).
	Links
	// UtilLinux: nsenter, unshare, mount, umount.
	UtilLinux
	// IPRoute: ip.
	IPRoute
	// Systemd: systemd 252+, journald, dbus-daemon, systemctl, journalctl (booted in a box,
	// never as the host's PID 1).
	Systemd
	// Tor: tor and tor-gencert.
	Tor
	// Radvd: the router advertisement daemon of a simulated LAN.
	Radvd
	// Dnsmasq: the DHCPv4 server of a simulated LAN.
	Dnsmasq
	// CNIPlugins: macvlan, loopback, static, host-local and dhcp in /opt/cni/bin or /usr/lib/cni.
	CNIPlugins
	// Named: BIND9's named.
	Named
	// Dig: dig.
	Dig
	// Busybox: a static /bin/busybox (images built without a registry).
	Busybox
	// Curl: curl.
	Curl
	// Socat: socat.
	Socat
	// Apt: apt-get (resolving Debian packages for test images).
	Apt
	// Mmdebstrap: mmdebstrap (building test images from Debian packages).
	Mmdebstrap
	// Pebble: Let's Encrypt's ACME test server and its DNS test server (pebble,
	// pebble-challtestsrv).
	Pebble
	// Registry: docker-registry, the distribution registry (images pushed and re-pushed).
	Registry
	// Skopeo: skopeo (copying image archives into a registry).
	Skopeo
	// Age: age, the reference age CLI (benchmarks of backups against `tar | age`).
	Age
)

// Missing checks every part and returns nil, or one error wrapping ErrUnavailable that lists each
// missing part with how to get it ("needs root; radvd not installed (apt-get install radvd)").
func Missing(parts ...Part) error {
	var reasons []string
	seen := map[Part]bool{}
	root := os.Geteuid() == 0
	for _, p := range parts {
		if seen[p] {
			continue
		}
		seen[p] = true
		if p == Links && !root {
			continue // the probe needs root: "needs root" says it
		}
		if why := p.check(); why != "" {
			reasons = append(reasons, why)
		}
	}
	if len(reasons) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrUnavailable, strings.Join(reasons, "; "))
}

// String names the part.
func (p Part) String() string {
	switch p {
	case Root:
		return "root"
	case Namespaces:
		return "namespaces"
	case Cgroup2:
		return "cgroup2"
	case Overlay:
		return "overlay"
	case Links:
		return "links"
	case UtilLinux:
		return "util-linux"
	case IPRoute:
		return "iproute2"
	case Systemd:
		return "systemd"
	case Tor:
		return "tor"
	case Radvd:
		return "radvd"
	case Dnsmasq:
		return "dnsmasq"
	case CNIPlugins:
		return "cni-plugins"
	case Named:
		return "named"
	case Dig:
		return "dig"
	case Busybox:
		return "busybox"
	case Curl:
		return "curl"
	case Socat:
		return "socat"
	case Apt:
		return "apt"
	case Mmdebstrap:
		return "mmdebstrap"
	case Pebble:
		return "pebble"
	case Registry:
		return "docker-registry"
	case Skopeo:
		return "skopeo"
	case Age:
		return "age"
	}
	return fmt.Sprintf("part(%d)", int(p))
}

// check returns why the part is missing, or "".
func (p Part) check() string {
	switch p {
	case Root:
		if os.Geteuid() != 0 {
			return "needs root"
		}
		return ""
	case Namespaces:
		for _, ns := range []string{"net", "pid", "mnt", "uts", "ipc", "cgroup"} {
			if _, err := os.Stat("/proc/self/ns/" + ns); err != nil {
				return "kernel without " + ns + " namespaces"
			}
		}
		return ""
	case Cgroup2:
		if _, err := Cgroup2Mount(); err != nil {
			return err.Error()
		}
		return ""
	case Overlay:
		return fileSystem("overlay")
	case Links:
		return probeLinks()
	case UtilLinux:
		return inPath("util-linux", "nsenter", "unshare", "mount", "umount")
	case IPRoute:
		return inPath("iproute2", "ip")
	case Systemd:
		if why := files("systemd", "/lib/systemd/systemd", "/lib/systemd/systemd-journald"); why != "" {
			return why
		}
		if why := files("dbus", "/usr/bin/dbus-daemon"); why != "" {
			return why
		}
		return inPath("systemd", "systemctl", "journalctl")
	case Tor:
		return inPath("tor", "tor", "tor-gencert")
	case Radvd:
		return inPath("radvd", "radvd")
	case Dnsmasq:
		return inPath("dnsmasq-base", "dnsmasq")
	case CNIPlugins:
		return cni()
	case Named:
		if _, err := exec.LookPath("named"); err == nil {
			return ""
		}
		return files("bind9", "/usr/sbin/named")
	case Dig:
		return inPath("bind9-dnsutils", "dig")
	case Busybox:
		return files("busybox-static", "/bin/busybox")
	case Curl:
		return inPath("curl", "curl")
	case Socat:
		return inPath("socat", "socat")
	case Apt:
		return inPath("apt", "apt-get")
	case Mmdebstrap:
		return inPath("mmdebstrap", "mmdebstrap")
	case Pebble:
		return inPath("pebble", "pebble", "pebble-challtestsrv")
	case Registry:
		return inPath("docker-registry", "docker-registry")
	case Skopeo:
		return inPath("skopeo", "skopeo")
	case Age:
		return inPath("age", "age")
	}
	return "unknown part " + p.String()
}

// inPath reports the first tool missing from PATH.
func inPath(pkg string, tools ...string) string {
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not installed (apt-get install " + pkg + ")"
		}
	}
	return ""
}

// files reports the first path missing.
func files(pkg string, paths ...string) string {
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return p + " missing (apt-get install " + pkg + ")"
		}
	}
	return ""
}

// fileSystem reports whether the kernel knows the file system type (/proc/filesystems).
func fileSystem(fstype string) string {
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return "cannot read /proc/filesystems: " + err.Error()
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[len(f)-1] == fstype {
			return ""
		}
	}
	return "kernel without the " + fstype + " file system"
}

// cni reports the first plugin onionpod's conflists use that is in none of the directories of
// onionpod's default cni_paths.
func cni() string {
	dirs := []string{"/opt/cni/bin", "/usr/lib/cni"}
	for _, plugin := range []string{"macvlan", "loopback", "static", "host-local", "dhcp"} {
		found := false
		for _, dir := range dirs {
			if fi, err := os.Stat(filepath.Join(dir, plugin)); err == nil && fi.Mode().IsRegular() {
				found = true
				break
			}
		}
		if !found {
			return "CNI plugin " + plugin + " not in " + strings.Join(dirs, " or ") +
				" (bash .ci/install-deps builds them, or apt-get install containernetworking-plugins)"
		}
	}
	return ""
}
