// Package lan builds a simulated IPv6 LAN in network namespaces: the uplink of `onionpod lab`'s box
// and of the tests (network/nettest wraps it for a *testing.T).
//
// A LAN is three namespaces: "lan" holds a bridge br0 with the router address (prefix::1/64), radvd
// advertising the prefix and, optionally, dnsmasq serving DHCPv4 on 192.0.2.0/24; "client" is a LAN
// host that configures itself by SLAAC; "box" (created, or an existing one given by path) gets the
// uplink veth lan0 whose other end sits on br0. Nothing outside these namespaces is touched, and
// Close stops only the processes this LAN started.
package lan

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"github.com/onionpod/onionpod/internal/lab/hostcheck"
	"github.com/onionpod/onionpod/internal/netnsfile"
)

// Options configure a LAN. The zero value is a LAN advertising 2001:db8:1::/64 without DHCPv4.
type Options struct {
	// Prefix is the /64 radvd advertises; default 2001:db8:1::/64.
	Prefix netip.Prefix
	// IPv4 runs dnsmasq as a DHCPv4 server on 192.0.2.0/24 (router 192.0.2.1).
	IPv4 bool
	// BoxNetns is the path of an existing namespace to use as the box (e.g. /proc/PID/ns/net of the
	// lab's systemd); it is left in place by Close. "" creates a box namespace.
	BoxNetns string
	// Name prefixes the namespace names; "" picks a random unique one.
	Name string
	// NetnsDir is where the namespaces are bind-mounted; "" uses a directory inside WorkDir.
	NetnsDir string
	// WorkDir holds configs, pid, lease and log files; "" creates a temporary directory that Close removes.
	WorkDir string
	// Uplink names the box end of the uplink veth; default "lan0".
	Uplink string
}

// Names of the links inside the lan and client namespaces.
const (
	bridgeName   = "br0"
	lanBoxPort   = "vbox"
	lanCliPort   = "vcli"
	clientIfName = "eth0"
)

// DefaultPrefix is the prefix advertised when Options.Prefix is unset.
var DefaultPrefix = netip.MustParsePrefix("2001:db8:1::/64")

// IPv4 addressing of the LAN when Options.IPv4 is set.
var (
	RouterIPv4   = netip.MustParseAddr("192.0.2.1")
	ipv4Prefix   = netip.MustParsePrefix("192.0.2.0/24")
	dhcpRangeLow = "192.0.2.100"
	dhcpRangeTop = "192.0.2.250"
)

// LAN is a running simulated LAN. Its methods are safe for concurrent use.
type LAN struct {
	name     string
	workDir  string
	ownWork  bool
	netnsDir string
	ownDir   bool
	lanNS    string
	client   string
	box      string
	ownBox   bool
	uplink   string
	ipv4     bool
	madeLink bool // the uplink veth exists (Close removes it from a box it does not own)

	mu      sync.Mutex
	prefix  netip.Prefix
	retired []netip.Prefix
	radvd   *daemon
	dnsmasq *daemon
	closed  bool
}

// Needs are the parts of the machine a LAN needs (dnsmasq only with ipv4).
func Needs(ipv4 bool) []hostcheck.Part {
	parts := []hostcheck.Part{hostcheck.Root, hostcheck.Namespaces, hostcheck.Links, hostcheck.UtilLinux, hostcheck.Radvd}
	if ipv4 {
		parts = append(parts, hostcheck.Dnsmasq)
	}
	return parts
}

// Start builds the LAN and starts its router daemons. On error nothing is left behind. When the
// machine lacks a part (Needs) the error wraps hostcheck.ErrUnavailable.
func Start(ctx context.Context, opts Options) (_ *LAN, err error) {
	if err := hostcheck.Missing(Needs(opts.IPv4)...); err != nil {
		return nil, fmt.Errorf("lan: %w", err)
	}
	l, err := newLAN(opts)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
		}
	}()
	if err := l.buildNamespaces(); err != nil {
		return nil, err
	}
	if err := l.buildLinks(); err != nil {
		return nil, err
	}
	if err := l.startRadvd(); err != nil {
		return nil, err
	}
	if l.ipv4 {
		if err := l.startDnsmasq(); err != nil {
			return nil, err
		}
	}
	l.mu.Lock()
	err = l.saveState()
	l.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("lan: state: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("lan: start: %w", err)
	}
	return l, nil
}

func newLAN(opts Options) (*LAN, error) {
	if !opts.Prefix.IsValid() {
		opts.Prefix = DefaultPrefix
	}
	if !opts.Prefix.Addr().Is6() || opts.Prefix.Bits() != 64 {
		return nil, fmt.Errorf("lan: prefix %s: want an IPv6 /64", opts.Prefix)
	}
	if opts.Name == "" {
		opts.Name = "nt" + randomHex(4)
	}
	if opts.Uplink == "" {
		opts.Uplink = "lan0"
	}
	l := &LAN{
		name:     opts.Name,
		workDir:  opts.WorkDir,
		netnsDir: opts.NetnsDir,
		box:      opts.BoxNetns,
		uplink:   opts.Uplink,
		ipv4:     opts.IPv4,
		prefix:   opts.Prefix.Masked(),
	}
	if l.workDir == "" {
		dir, err := os.MkdirTemp("", "onionpod-lan-"+opts.Name+"-")
		if err != nil {
			return nil, fmt.Errorf("lan: %w", err)
		}
		l.workDir, l.ownWork = dir, true
	} else if err := os.MkdirAll(l.workDir, 0o700); err != nil {
		return nil, fmt.Errorf("lan: %w", err)
	}
	if l.netnsDir == "" {
		l.netnsDir, l.ownDir = filepath.Join(l.workDir, "netns"), true
	}
	l.lanNS = filepath.Join(l.netnsDir, opts.Name+"-lan")
	l.client = filepath.Join(l.netnsDir, opts.Name+"-client")
	if l.box == "" {
		l.box, l.ownBox = filepath.Join(l.netnsDir, opts.Name+"-box"), true
	}
	return l, nil
}

// BoxNetns is the path of the box namespace (the host in production terms).
func (l *LAN) BoxNetns() string { return l.box }

// ClientNetns is the path of the LAN client's namespace.
func (l *LAN) ClientNetns() string { return l.client }

// RouterNetns is the path of the namespace holding the bridge, radvd and dnsmasq.
func (l *LAN) RouterNetns() string { return l.lanNS }

// Uplink is the name of the box's link to the LAN ("lan0").
func (l *LAN) Uplink() string { return l.uplink }

// Prefix is the prefix currently advertised.
func (l *LAN) Prefix() netip.Prefix {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.prefix
}

// RouterAddr is the router's address in the current prefix (prefix::1).
func (l *LAN) RouterAddr() netip.Addr { return hostAddr(l.Prefix(), 1) }

// DHCPLeaseFile is dnsmasq's lease file ("" without IPv4).
func (l *LAN) DHCPLeaseFile() string {
	if !l.ipv4 {
		return ""
	}
	return filepath.Join(l.workDir, "dnsmasq.leases")
}

// ClientExec runs argv inside the client namespace and returns its combined output.
func (l *LAN) ClientExec(ctx context.Context, argv ...string) ([]byte, error) {
	return Exec(ctx, l.client, argv...)
}

// Exec runs argv inside the network namespace at netnsPath (with nsenter, so the command sees the
// same mounts, including other namespaces' bind mounts) and returns its combined output.
func Exec(ctx context.Context, netnsPath string, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("lan: exec: empty command")
	}
	args := append([]string{"--net=" + netnsPath, "--"}, argv...)
	out, err := exec.CommandContext(ctx, "nsenter", args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("lan: exec %q in %s: %w: %s", argv, netnsPath, err, out)
	}
	return out, nil
}

// Close stops the LAN's daemons (by PID) and removes the namespaces and files it created.
// Calling it again is harmless.
func (l *LAN) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	daemons := []*daemon{l.radvd, l.dnsmasq}
	l.mu.Unlock()

	var errs []error
	for _, d := range daemons {
		if d != nil {
			d.stop()
		}
	}
	// The box may outlive the LAN: take the uplink away explicitly (only if we made it).
	if !l.ownBox && l.madeLink {
		errs = append(errs, deleteLinkIn(l.box, l.uplink))
	}
	for _, p := range []string{l.lanNS, l.client} {
		errs = append(errs, netnsfile.Remove(p))
	}
	if l.ownBox {
		errs = append(errs, netnsfile.Remove(l.box))
	}
	if l.ownDir {
		if err := os.Remove(l.netnsDir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if l.ownWork {
		errs = append(errs, os.RemoveAll(l.workDir))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lan: close: %w", err)
	}
	return nil
}

func (l *LAN) buildNamespaces() error {
	paths := []string{l.lanNS, l.client}
	if l.ownBox {
		paths = append(paths, l.box)
	}
	for _, p := range paths {
		if err := netnsfile.Create(p, nil); err != nil {
			return fmt.Errorf("lan: %w", err)
		}
	}
	if !netnsfile.Exists(l.box) {
		return fmt.Errorf("lan: box %s is not a network namespace", l.box)
	}
	return nil
}

func (l *LAN) log(name string) string {
	b, _ := os.ReadFile(filepath.Join(l.workDir, name+".log"))
	return string(b)
}

func hostAddr(p netip.Prefix, n byte) netip.Addr {
	b := p.Masked().Addr().As16()
	b[15] = n
	return netip.AddrFrom16(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
