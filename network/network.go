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
//
// Every pod's namespace holds a small nftables ruleset of its own (firewall.go), which the pod
// (without CAP_NET_ADMIN) cannot change: its published ports answer on its LAN addresses exactly
// as on its .onion (PUBLIC is redirected to TARGET), only those ports are open from the LAN, and
// the pod opens no connection to the host (tor connects in; replies flow).
//
// A damaged lease file (damaged.go) is an error of its app alone: other apps attach, detach and
// boot as usual, and the app's next Attach or Detach sets the file aside (DamagedLeases lists
// it) and starts afresh, keeping the pod's addresses when its namespace still shows them.
package network

import (
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/genvalue"
	"github.com/onionpod/onionpod/internal/names"
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
	// NetnsDir holds the pods' named namespaces (a directory, or a namespace holder's link:
	// netnsfile.Hold); default /run/onionpod/netns.
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
	DefaultNetnsDir   = "/run/onionpod/netns"
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
	// Ports are the app's published ports, as on its .onion: a connection to Public on the pod's
	// LAN addresses (IPv6 and IPv4, TCP and UDP) reaches Target in the pod. When Ports are given,
	// they are the only ports open from the LAN (replies to the pod's own connections still come
	// in); with none, nothing is declared and every port the app listens on is open, as before.
	// The host (tor, on the ULA) reaches every port whatever Ports say. A change of Ports is
	// applied in place by the next Attach: the namespace, and the pod in it, stay.
	Ports []PortMap
}

// PortMap publishes one port of a pod: Public is what clients connect to, Target what the app
// listens on. Both are from 1 to 65535; Public is unique within an Attachment.
type PortMap struct {
	Public uint16 `json:"public"`
	Target uint16 `json:"target"`
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
	// Ports are the port maps the pod's firewall holds now, read from its namespace (sorted by
	// public port).
	Ports []PortMap
	// Firewall reports that the pod's firewall is in place as Attach writes it for Ports. False
	// means missing or stale (say, flushed by hand): Check reports drift, and Attach puts it back.
	Firewall bool
}

// Publishes reports whether the pod's firewall is in place and publishes exactly ports (in any
// order): when it does not, Attach with these ports changes the pod's firewall in place. This is
// how a caller notices that an attached pod's published ports changed.
func (r Result) Publishes(ports []PortMap) bool {
	return r.Firewall && slices.Equal(r.Ports, sortedPorts(ports))
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
	// ErrDamagedLease: the app's lease file cannot be read as a lease (truncated, garbled). Only
	// that app is affected: its Addresses and Check fail with it until its next Attach (or
	// Detach), which moves the file aside (see DamagedLeases) and starts afresh.
	ErrDamagedLease = errors.New("lease file damaged")
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

// validApp checks an app name with the shared rule (one DNS label); the error matches ErrBadInput.
func validApp(app string) error { return names.App(app) }

// checkAttachment refuses an attachment that cannot be carried out, before anything is touched.
func checkAttachment(a Attachment) error {
	if err := validApp(a.App); err != nil {
		return err
	}
	if a.OnionOnly && a.IPv4 {
		return errkind.BadInputf("app %q: an onion-only pod has no LAN link for IPv4", a.App)
	}
	seen := map[uint16]bool{}
	for i, p := range a.Ports {
		if p.Public == 0 || p.Target == 0 {
			return errkind.BadInputf("app %q: ports[%d]: ports are from 1 to 65535", a.App, i)
		}
		if seen[p.Public] {
			return errkind.BadInputf("app %q: ports[%d]: public port %d given twice", a.App, i, p.Public)
		}
		seen[p.Public] = true
	}
	return nil
}

// sortedPorts is a sorted copy of ports (by public port), nil when there are none.
func sortedPorts(ports []PortMap) []PortMap {
	if len(ports) == 0 {
		return nil
	}
	s := slices.Clone(ports)
	slices.SortFunc(s, func(a, b PortMap) int { return int(a.Public) - int(b.Public) })
	return s
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
		return errkind.BadInputf("ULA prefix %s must be an fdXX:XXXX:XXXX:XXXX::/64", p)
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		return errkind.BadInputf("state dir %q must be an absolute path", c.StateDir)
	}
	// These end up in generated files: the leases, the conflists, the pods' unit files.
	if err := genvalue.Path("netns dir", c.NetnsDir); err != nil {
		return err
	}
	if err := genvalue.Path("DHCP socket", c.DHCPSocket); err != nil {
		return err
	}
	if c.Uplink != autoUplink {
		if err := checkIfName("uplink", c.Uplink); err != nil {
			return err
		}
	}
	return nil
}

// checkIfName accepts a Linux interface name that may be written into a lease and a conflist:
// 1 to 15 bytes, no '/', ':' or whitespace (the kernel's rule), nothing genvalue refuses.
func checkIfName(field, name string) error {
	if err := genvalue.Check(field, name); err != nil {
		return err
	}
	if name == "" || len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/: ") {
		return errkind.BadInputf("%s: %q is not an interface name", field, name)
	}
	return nil
}

// localULA is the locally assigned half of the unique local range (RFC 4193).
var localULA = netip.MustParsePrefix("fd00::/8")
