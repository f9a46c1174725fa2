// Package network gives each pod a named network namespace wired to the LAN and to the host.
//
// A LAN pod gets a macvlan (mode bridge) on the uplink through CNI, with a MAC derived from the app
// name so that its SLAAC address is the same on every attach and can be computed before the pod
// starts (PredictMAC, SLAACAddress). Every pod also gets a ULA from the configured fdXX::/64 (leased
// in the state dir) that the host reaches: LAN pods through one host-side macvlan "shim" on the
// uplink holding prefix::1, onion-only pods through a veth pair to the host and nothing else (no
// LAN link, no default route). IPv4, when asked for, comes from the CNI dhcp plugin and its daemon.
//
// A Manager works on the "box" namespace (the host; by default the namespace of the calling
// process) and is safe for concurrent use, also by several processes on one state dir (the daemon
// and the `net-up`/`net-down` of the apps' network units): the lease files are the shared truth,
// changed under cross-process locks (lock.go), read afresh by every call, and followed by Watch.
// Attach, Check and Detach are idempotent; a failed Attach leaves nothing behind; Detach does not
// wait for the kernel to tear links down.
package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"

	"github.com/onionpod/onionpod/internal/errkind"
)

// Config configures a Manager.
type Config struct {
	// Uplink is the box's LAN interface pods attach to, or "auto" (or "") for the interface of the
	// box's default route, looked up at each attach.
	Uplink string
	// ULAPrefix is the fdXX::/64 pods and the host talk over; the host takes ::1.
	ULAPrefix netip.Prefix
	// CNIPaths are searched for CNI plugins; default /opt/cni/bin, /usr/lib/cni.
	CNIPaths []string
	// StateDir holds the leases and the CNI cache (created 0700).
	StateDir string
	// NetnsDir holds the pods' named namespaces; default /run/netns.
	NetnsDir string
	// DHCPSocket is the CNI dhcp daemon's socket, used only when a pod asks for IPv4;
	// default /run/onionpod/dhcp.sock.
	DHCPSocket string
	// BoxNetns is the namespace the Manager works in (path of a netns file); "" is the namespace
	// of the calling process, which is what the daemon wants. Tests and the lab pass a box here.
	BoxNetns string
}

// Defaults for Config fields left empty.
const (
	DefaultNetnsDir   = "/run/netns"
	DefaultDHCPSocket = "/run/onionpod/dhcp.sock"
	autoUplink        = "auto"
)

// DefaultCNIPaths are searched for plugins when Config.CNIPaths is empty.
var DefaultCNIPaths = []string{"/opt/cni/bin", "/usr/lib/cni"}

// Attachment is what a pod asks of the network.
type Attachment struct {
	// App is the app's name, a DNS label.
	App string
	// OnionOnly gives the pod no LAN interface at all: only the ULA link to the host.
	OnionOnly bool
	// IPv4 asks the LAN's DHCP server for an IPv4 address (LAN pods only).
	IPv4 bool
}

// Result is where a pod is.
type Result struct {
	// Netns is the path of the pod's network namespace (for NetworkNamespacePath=).
	Netns string
	// MAC is the pod's MAC address, PredictMAC(App).
	MAC net.HardwareAddr
	// ULA is the pod's address on the host link: what the onion service targets.
	ULA netip.Addr
	// LAN is the pod's SLAAC address: the address seen on the pod if it has one, otherwise the one
	// it will get from the prefix the box sees advertised. Invalid when no prefix is known yet,
	// and for onion-only pods.
	LAN netip.Addr
	// IPv4 is the DHCP address when asked for.
	IPv4 netip.Addr
}

// Errors callers branch on; returned errors wrap them.
var (
	// ErrBadInput: an invalid app name or configuration.
	ErrBadInput = errkind.BadInput
	// ErrNotFound: the app is not attached.
	ErrNotFound = errors.New("not attached")
	// ErrPluginMissing: a CNI plugin binary is not in any CNI path.
	ErrPluginMissing = errors.New("CNI plugin missing")
	// ErrUplink: the uplink does not exist or cannot carry macvlan.
	ErrUplink = errors.New("uplink cannot carry macvlan")
	// ErrDHCPDaemon: IPv4 was asked for but the CNI DHCP daemon does not answer.
	ErrDHCPDaemon = errors.New("CNI DHCP daemon not reachable")
	// ErrMACCollision: two apps' names give the same MAC.
	ErrMACCollision = errors.New("MAC collision")
	// ErrDrift: Check found the attachment no longer as Attach left it.
	ErrDrift = errors.New("attachment drifted")
)

// Names the Manager gives to what it creates.
const (
	netnsPrefix    = "onionpod-"
	containerIDPre = "onionpod-"
	networkName    = "onionpod"
	podIfName      = "eth0"
	shimName       = "onionpod0"
	hostVethPrefix = "opv"
)

var appName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// validApp checks that app is a DNS label (lowercase letters, digits, hyphens, 1-63 characters).
func validApp(app string) error {
	if !appName.MatchString(app) {
		return fmt.Errorf("app name %q must be a DNS label (a-z, 0-9, '-', 1-63 characters): %w", app, ErrBadInput)
	}
	return nil
}

func (c *Config) setDefaults() error {
	if c.Uplink == "" {
		c.Uplink = autoUplink
	}
	if len(c.CNIPaths) == 0 {
		c.CNIPaths = DefaultCNIPaths
	}
	if c.NetnsDir == "" {
		c.NetnsDir = DefaultNetnsDir
	}
	if c.DHCPSocket == "" {
		c.DHCPSocket = DefaultDHCPSocket
	}
	p := c.ULAPrefix
	if !p.IsValid() || !p.Addr().Is6() || p.Bits() != 64 || !localULA.Contains(p.Addr()) || p.Masked() != p {
		return fmt.Errorf("ULA prefix %s must be an fdXX:XXXX:XXXX:XXXX::/64: %w", p, ErrBadInput)
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("state dir %q must be an absolute path: %w", c.StateDir, ErrBadInput)
	}
	if !filepath.IsAbs(c.NetnsDir) {
		return fmt.Errorf("netns dir %q must be an absolute path: %w", c.NetnsDir, ErrBadInput)
	}
	return nil
}

// localULA is the locally assigned half of the unique local range (RFC 4193).
var localULA = netip.MustParsePrefix("fd00::/8")
