// Package lab builds onionpod's lab: everything a real deployment has, in namespaces it creates,
// touching nothing else on the machine. It is product code (`onionpod lab`, `onionpod demo`) built
// from the engines under internal/lab (box, lan, tornet), and links no testing code. A box (a real systemd as PID 1 of fresh namespaces, in a
// network namespace that outlives its reboots) runs onionpod.service and onionpod's managed tor;
// a simulated LAN (bridge, radvd advertising 2001:db8:1::/64, a client) is its uplink; a private
// Tor network on the box's loopback (3 authorities, relays, a client) stands in for the Tor
// network; the built-in DNS server answers the LAN client. `onionpod lab up|down|status|exec` and
// `onionpod demo` drive it; the end-to-end tests use it too.
package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/internal/genvalue"
	"github.com/onionpod/onionpod/internal/lab/box"
	"github.com/onionpod/onionpod/internal/lab/hostcheck"
	"github.com/onionpod/onionpod/internal/lab/lan"
	"github.com/onionpod/onionpod/internal/lab/tornet"
)

// DefaultDir is where `onionpod lab` keeps its state. It must not be under /etc or /var (the box
// overlays those).
const DefaultDir = "/srv/onionpod-lab"

// Zone is the lab's DNS zone.
const Zone = "box.example"

// Addresses of the lab: the box's static address on the LAN (where its DNS server answers).
var (
	LANPrefix = netip.MustParsePrefix("2001:db8:1::/64")
	BoxLANIP  = netip.MustParseAddr("2001:db8:1::53")
	// ClientIPv4 is the LAN client's address when the LAN has IPv4 (dnsmasq leases from .100).
	ClientIPv4 = netip.MustParseAddr("192.0.2.10")
	// BoxIPv4 is the box's own IPv4 address when the LAN has IPv4 (as a router's DHCP would give
	// it): the one address every app shares through the edge.
	BoxIPv4 = netip.MustParseAddr("192.0.2.2")
)

// RegistryAddr is where a registry on the lab's LAN listens (on its router, 2001:db8:1::1):
// the box's daemon reaches it over plain HTTP (images.insecure_registries). Tests start one
// there (internal/lab/registry, in LAN().RouterNetns()).
const RegistryAddr = "[2001:db8:1::1]:5000"

// Options describe a lab.
type Options struct {
	// Dir keeps the lab's state: the box's /etc and /var, the Tor network's keys, the config.
	Dir string
	// Name prefixes the namespaces and names the box (default: "oplab-" and a hash of Dir).
	Name string
	// Binary is the onionpod executable run inside the box (default: this one). It must be
	// statically linked (CGO_ENABLED=0): static-site pods run it in an empty root.
	Binary string
	// TorNetwork starts a private Tor network on the box's loopback, so onion services are
	// published and reachable; without it the box's tor runs with DisableNetwork 1 (services are
	// added, nothing is published): fast, for tests that need no .onion fetch.
	TorNetwork bool
	// IPv4 adds a DHCPv4 server to the LAN.
	IPv4 bool
	// Persist lets the lab outlive the process that brought it up (`onionpod lab up`).
	Persist bool
	// Log gets progress lines ("" = none).
	Log func(format string, args ...any)
}

// Lab is a running lab.
type Lab struct {
	opts  Options
	state State
	box   *box.System
	lan   *lan.LAN
	tor   *tornet.Network
}

// State is what lab.json records, so another process can exec in and tear down the lab.
type State struct {
	Dir        string    `json:"dir"`
	Name       string    `json:"name"`
	Binary     string    `json:"binary"`
	BoxNetns   string    `json:"box_netns"`
	Client     string    `json:"client_netns"`
	Socks      string    `json:"socks,omitempty"` // the Tor client's SOCKS address, in the box's netns
	TorNetwork bool      `json:"tor_network"`
	Config     string    `json:"config"` // the daemon's config, a host path also seen inside the box
	Started    time.Time `json:"started"`
}

func (o *Options) defaults() error {
	if o.Dir == "" {
		o.Dir = DefaultDir
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return err
	}
	o.Dir = dir
	if err := genvalue.Path("lab dir", dir); err != nil { // it reaches the box's unit file
		return fmt.Errorf("lab: %w", err)
	}
	for _, bad := range []string{"/etc", "/var", "/run", "/sys", "/dev", "/proc", "/usr"} {
		if dir == bad || strings.HasPrefix(dir, bad+"/") {
			return fmt.Errorf("lab: dir %s: must not be under %s (the box has its own)", dir, bad)
		}
	}
	if o.Name == "" {
		// Two labs in two directories must not share namespace or cgroup names.
		sum := sha256.Sum256([]byte(dir))
		o.Name = "oplab-" + hex.EncodeToString(sum[:3])
	}
	if o.Binary == "" {
		if o.Binary, err = os.Executable(); err != nil {
			return err
		}
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	return nil
}

func (o Options) path(parts ...string) string {
	return filepath.Join(append([]string{o.Dir}, parts...)...)
}

// Needs are the parts of the machine a lab with these options needs: a box, a LAN, tor (the box's
// managed tor, and the private Tor network), the CNI plugins the daemon attaches pods with, and ip.
func Needs(opts Options) []hostcheck.Part {
	parts := append(box.Needs(), lan.Needs(opts.IPv4)...)
	parts = append(parts, tornet.Needs()...)
	return append(parts, hostcheck.CNIPlugins, hostcheck.IPRoute)
}

// Up brings a lab up: box netns, LAN, Tor network, config, box with the daemon; it returns once
// the daemon answers. On failure everything started is torn down. When the machine lacks a part
// (Needs), the error wraps hostcheck.ErrUnavailable and says what is missing.
func Up(ctx context.Context, opts Options) (_ *Lab, err error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if err := hostcheck.Missing(Needs(opts)...); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	if _, err := os.Stat(filepath.Join(opts.Dir, "lab.json")); err == nil {
		return nil, fmt.Errorf("lab: a lab is already up in %s (onionpod lab down first)", opts.Dir)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	l := &Lab{opts: opts, state: State{Dir: opts.Dir, Name: opts.Name, Binary: opts.Binary,
		TorNetwork: opts.TorNetwork, Config: opts.path("config", "onionpod.toml"), Started: time.Now()}}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Down(context.Background()))
		}
	}()
	step := func(what string, fn func() error) error {
		start := time.Now()
		if err := fn(); err != nil {
			return fmt.Errorf("lab: %s: %w", what, err)
		}
		opts.Log("%-34s %6.2f s", what, time.Since(start).Seconds())
		return nil
	}
	if err := step("box network namespace", l.makeBoxNetns); err != nil {
		return nil, err
	}
	if err := step("LAN (bridge, radvd, client)", func() error { return l.startLAN(ctx) }); err != nil {
		return nil, err
	}
	if opts.TorNetwork {
		if err := step("private Tor network (3 authorities)", func() error { return l.startTor(ctx) }); err != nil {
			return nil, err
		}
	}
	if err := step("forget the last Tor network's consensus", l.forgetTorNetwork); err != nil {
		return nil, err
	}
	if err := step("config, onionpod.service, client's resolv.conf", func() error {
		if err := l.writeBoxFiles(); err != nil {
			return err
		}
		return l.writeClientResolvConf()
	}); err != nil {
		return nil, err
	}
	if err := l.saveState(); err != nil {
		return nil, err
	}
	if err := step("box (systemd as PID 1)", func() error { return l.bootBox(ctx) }); err != nil {
		return nil, err
	}
	if err := step("onionpod daemon answers", func() error { return l.WaitDaemon(ctx) }); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Lab) makeBoxNetns() error {
	name := l.opts.Name + "-box"
	l.state.BoxNetns = "/run/netns/" + name
	if _, err := os.Stat(l.state.BoxNetns); err == nil {
		return fmt.Errorf("namespace %s exists: another lab named %q runs (or crashed: onionpod lab down)", name, l.opts.Name)
	}
	for _, argv := range [][]string{
		{"ip", "netns", "add", name},
		{"ip", "-n", name, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out)
		}
	}
	return nil
}

func (l *Lab) startLAN(ctx context.Context) error {
	net, err := lan.Start(ctx, lan.Options{
		Prefix: LANPrefix, IPv4: l.opts.IPv4, BoxNetns: l.state.BoxNetns,
		Name: l.opts.Name, WorkDir: l.opts.path("lan"),
	})
	if err != nil {
		return err
	}
	l.lan = net
	l.state.Client = net.ClientNetns()
	// The box's own static address on the LAN: where its DNS server is found.
	out, err := exec.CommandContext(ctx, "ip", "-n", filepath.Base(l.state.BoxNetns), "addr", "add",
		netip.PrefixFrom(BoxLANIP, 64).String(), "dev", net.Uplink(), "nodad").CombinedOutput()
	if err != nil {
		return fmt.Errorf("box address: %w: %s", err, out)
	}
	if l.opts.IPv4 {
		// The client is a LAN host with a fixed IPv4 address (it runs no DHCP client).
		out, err := exec.CommandContext(ctx, "nsenter", "--net="+l.state.Client, "ip", "addr", "add",
			ClientIPv4.String()+"/24", "dev", "eth0").CombinedOutput()
		if err != nil {
			return fmt.Errorf("client IPv4: %w: %s", err, out)
		}
		out, err = exec.CommandContext(ctx, "ip", "-n", filepath.Base(l.state.BoxNetns), "addr", "add",
			BoxIPv4.String()+"/24", "dev", net.Uplink()).CombinedOutput()
		if err != nil {
			return fmt.Errorf("box IPv4: %w: %s", err, out)
		}
	}
	return nil
}

func (l *Lab) startTor(ctx context.Context) error {
	n, err := tornet.StartNetwork(ctx, tornet.NetworkOptions{
		Dir: l.opts.path("tor-network"), NetnsPath: l.state.BoxNetns, KeepAfterExit: l.opts.Persist,
	})
	if err != nil {
		return err
	}
	l.tor = n
	l.state.Socks = n.SocksAddr()
	return n.WaitFormed(ctx) // before the box's tor picks its guards
}

// torrcExtra joins the box's tor to the private network, or keeps it offline.
func (l *Lab) torrcExtra() []string {
	if l.tor != nil {
		return l.tor.JoinTorrc()
	}
	return []string{"DisableNetwork 1"}
}

// forgetTorNetwork removes what the box's tor cached of the Tor network of an earlier lab up
// (consensus, descriptors, guards): this lab's network is a new one, with new relays and ports.
// The onion keys are not there: they live in onionpod's key store.
func (l *Lab) forgetTorNetwork() error {
	data := l.opts.path("box", "var", "upper", "lib", "onionpod", "tor", "data")
	entries, err := os.ReadDir(data)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "cached-") || e.Name() == "state" {
			if err := os.RemoveAll(filepath.Join(data, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeBoxFiles writes what the box boots with: the daemon's config, the onionpod binary on the
// box's PATH, and onionpod.service enabled.
func (l *Lab) writeBoxFiles() error {
	if err := l.writeConfig(); err != nil {
		return err
	}
	bin := l.opts.path("bin", "onionpod")
	if err := replaceSymlink(l.opts.Binary, bin); err != nil {
		return err
	}
	return l.writeUnit(bin)
}

// writeConfig writes the daemon's config: the LAN uplink, the built-in DNS server for Zone, the
// managed tor joined to the lab's Tor network (or offline).
func (l *Lab) writeConfig() error {
	var extra []string
	for _, line := range l.torrcExtra() {
		if err := genvalue.Check("torrc line", line); err != nil {
			return err
		}
		extra = append(extra, fmt.Sprintf("%q", line))
	}
	config := fmt.Sprintf(`# The onionpod lab's daemon config (generated by onionpod lab up).
version = 1
state_dir = "/var/lib/onionpod"

[network]
uplink = "lan0"
ula_prefix = "fd6f:6e69:6f6e:1::/64"
ipv4 = %t

[dns]
mode = "builtin"
zone = %q
listen = ["[::]:53"]
ttl = 30

[tor]
mode = "managed"
control = "unix:/run/onionpod/tor/control.sock"
socks_port = 9050
torrc_extra = [
  %s,
]

[probes]
interval = "30s"

[images]
insecure_registries = [%q]
`, l.opts.IPv4, Zone, strings.Join(extra, ",\n  "), RegistryAddr)
	if err := os.MkdirAll(filepath.Dir(l.state.Config), 0o755); err != nil {
		return err
	}
	_, err := atomicfile.WriteFile(l.state.Config, []byte(config), 0o644)
	return err
}

// writeUnit writes onionpod.service (running bin) into the box's extra unit directory and
// enables it for multi-user.target.
func (l *Lab) writeUnit(bin string) error {
	units := l.opts.path("units")
	wants := filepath.Join(units, "multi-user.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return err
	}
	unit := fmt.Sprintf(`[Unit]
Description=onionpod daemon (lab)
After=network.target
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=main
Environment=ONIONPOD_CONFIG=%s
ExecStart=%s daemon --config %s
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=1s
RuntimeDirectory=onionpod
RuntimeDirectoryPreserve=yes

[Install]
WantedBy=multi-user.target
`, l.state.Config, bin, l.state.Config)
	if _, err := atomicfile.WriteFile(filepath.Join(units, "onionpod.service"), []byte(unit), 0o644); err != nil {
		return err
	}
	// Automatic updates, as configs/onionpod-update.{service,timer} set them up on a real box
	// (the timer is not enabled: `systemctl start onionpod-update.service` runs one).
	update := fmt.Sprintf(`[Unit]
Description=onionpod: update the apps that allow automatic updates (lab)
After=onionpod.service
Requires=onionpod.service

[Service]
Type=oneshot
ExecStart=%s --config %s update --all --auto
`, bin, l.state.Config)
	timer := `[Unit]
Description=onionpod: daily automatic updates (lab)

[Timer]
OnCalendar=daily
RandomizedDelaySec=900
Persistent=true

[Install]
WantedBy=timers.target
`
	if _, err := atomicfile.WriteFile(filepath.Join(units, "onionpod-update.service"), []byte(update), 0o644); err != nil {
		return err
	}
	if _, err := atomicfile.WriteFile(filepath.Join(units, "onionpod-update.timer"), []byte(timer), 0o644); err != nil {
		return err
	}
	return replaceSymlink("../onionpod.service", filepath.Join(wants, "onionpod.service"))
}

// replaceSymlink makes link point to target, creating link's directory.
func replaceSymlink(target, link string) error {
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.Symlink(target, link)
}

func (l *Lab) boxOptions() box.Options {
	return box.Options{
		StateDir: l.opts.path("box"), Name: l.opts.Name, Netns: l.state.BoxNetns,
		ExtraUnitDirs: []string{l.opts.path("units")}, KeepOnExit: l.opts.Persist,
	}
}

func (l *Lab) bootBox(ctx context.Context) error {
	b, err := box.Boot(ctx, l.boxOptions())
	if err != nil {
		return err
	}
	l.box = b
	return nil
}

// WaitDaemon waits until the daemon in the box answers `onionpod ls`.
func (l *Lab) WaitDaemon(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var out []byte
	var err error
	for {
		out, err = l.Command(ctx, "box", "onionpod", "ls").CombinedOutput()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			status, _ := l.Command(context.Background(), "box", "systemctl", "status", "--no-pager", "onionpod.service").CombinedOutput()
			return fmt.Errorf("the daemon does not answer: %s\n%s", out, status)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (l *Lab) saveState() error {
	b, err := json.MarshalIndent(l.state, "", "  ")
	if err != nil {
		return err
	}
	_, err = atomicfile.WriteFile(l.opts.path("lab.json"), append(b, '\n'), 0o600)
	return err
}

// State is what another process needs to use the lab.
func (l *Lab) State() State { return l.state }

// Box is the lab's box.
func (l *Lab) Box() *box.System { return l.box }

// LAN is the lab's simulated LAN.
func (l *Lab) LAN() *lan.LAN { return l.lan }

// TorNetwork is the lab's private Tor network (nil without one).
func (l *Lab) TorNetwork() *tornet.Network { return l.tor }

// Reboot reboots the box's systemd on the same state; the LAN and the Tor network stay up, as a
// real box's router and the Tor network do. It returns once the daemon answers again.
func (l *Lab) Reboot(ctx context.Context) error {
	if l.box == nil {
		b, err := box.Attach(l.boxOptions())
		if err != nil {
			return fmt.Errorf("lab: reboot: %w", err)
		}
		l.box = b
	}
	if err := l.box.Reboot(ctx); err != nil {
		return fmt.Errorf("lab: reboot: %w", err)
	}
	return l.WaitDaemon(ctx)
}

// Open takes over a lab brought up by another process (for lab exec, status and down).
func Open(dir string) (*Lab, error) {
	if dir == "" {
		dir = DefaultDir
	}
	b, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab: no lab is up in %s (onionpod lab up)", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("lab: %s: %w", filepath.Join(dir, "lab.json"), err)
	}
	opts := Options{Dir: st.Dir, Name: st.Name, Binary: st.Binary, TorNetwork: st.TorNetwork, Persist: true}
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	return &Lab{opts: opts, state: st}, nil
}

// Down tears the lab down: the box (clean power-off), the Tor network, the LAN, the box's
// namespace. The state (the box's /etc and /var, keys) is kept for the next Up. Idempotent.
func (l *Lab) Down(ctx context.Context) error {
	var errs []error
	if l.box == nil {
		if b, err := box.Attach(l.boxOptions()); err == nil {
			l.box = b
		}
	}
	if l.box != nil {
		errs = append(errs, l.box.Shutdown(ctx))
	}
	if l.tor != nil {
		errs = append(errs, l.tor.Close())
	} else if _, err := os.Stat(l.opts.path("tor-network")); err == nil {
		errs = append(errs, tornet.StopNetwork(l.opts.path("tor-network")))
	}
	if l.lan == nil {
		if net, err := lan.Reopen(l.opts.path("lan")); err == nil {
			l.lan = net
		}
	}
	if l.lan != nil {
		errs = append(errs, l.lan.Close())
	}
	if l.state.BoxNetns != "" {
		if _, err := os.Stat(l.state.BoxNetns); err == nil {
			if out, err := exec.Command("ip", "netns", "del", filepath.Base(l.state.BoxNetns)).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("ip netns del: %w: %s", err, out))
			}
		}
	}
	if err := os.Remove(l.opts.path("lab.json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
