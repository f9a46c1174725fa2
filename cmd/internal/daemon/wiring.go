package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/reconcile"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/internal/dirwatch"
	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/onion"
	"github.com/onionpod/onionpod/pods"
)

// UnitDir is where onionpod writes its unit files.
const UnitDir = "/etc/systemd/system"

// parts are the adapters of one daemon, built from its config.
type parts struct {
	keys    *onion.KeyStore
	tor     *onion.Manager
	net     *network.Manager
	images  *pods.ImageStore
	systemd *pods.Systemd
	units   *unitAdapter
	pods    *podBuilder
	loader  archiveLoader // images the CLI sends
	dnsSrv  *dns.Server   // builtin mode
	dnsUpd  *dns.RFC2136  // rfc2136 mode
	runner  *reconcile.Runner
	sets    *dnsSets        // the zone's one publisher (addresses, challenges, the edge's A records)
	tls     *tlsParts       // HTTPS (nil when tls and edge are off)
	files   *dirwatch.Watch // events of the files the caches check (nil: none)
	netns   *netnsHolder    // the holder of the pods' network namespaces
	closers []func() error
}

// NetworkConfig is the network Manager's config for cfg (the daemon's, and net-up's at boot).
func NetworkConfig(cfg *configs.Config) (network.Config, error) {
	ula, err := netip.ParsePrefix(cfg.Network.ULAPrefix)
	if err != nil {
		return network.Config{}, fmt.Errorf("daemon: %w", err)
	}
	return network.Config{
		Uplink: cfg.Network.Uplink, ULAPrefix: ula, CNIPaths: cfg.Network.CNIPaths,
		StateDir: cfg.NetworkDir(), NetnsDir: cfg.Network.NetnsDir, DHCPSocket: cfg.Network.DHCPSocket,
	}, nil
}

// buildParts connects the adapters. On failure, whatever was opened is closed.
func buildParts(ctx context.Context, cfg *configs.Config, self string, configPath string) (_ *parts, err error) {
	p := &parts{keys: &onion.KeyStore{Dir: cfg.KeysDir()},
		images: &pods.ImageStore{Dir: cfg.ImagesDir(), InsecureRegistries: cfg.Images.InsecureRegistries}}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	netCfg, err := NetworkConfig(cfg)
	if err != nil {
		return nil, err
	}
	if p.net, err = network.New(netCfg); err != nil {
		return nil, err
	}
	p.closers = append(p.closers, p.net.Close)

	p.systemd, err = pods.Connect(ctx, UnitDir)
	if err != nil {
		return nil, err
	}
	p.closers = append(p.closers, p.systemd.Close)
	p.units = &unitAdapter{Systemd: p.systemd}
	p.pods = &podBuilder{images: p.images, self: self, configPath: configPath, netnsDir: cfg.Network.NetnsDir}
	p.loader = p.images
	// The files a pass checks for every app (records, keys, leases, unit files, image roots) are
	// looked at again only after an event in their directories. Without inotify (out of
	// instances), a stat of each tells, as in a short-lived process.
	if files, err := dirwatch.New(); err == nil {
		p.files = files
		p.closers = append(p.closers, files.Close)
		p.keys.FollowFiles(files)
		p.systemd.FollowFiles(files)
		p.net.FollowFiles(files)
		p.pods.files = files
	}

	control, err := torControl(cfg)
	if err != nil {
		return nil, err
	}
	p.tor = onion.NewManager(control)

	switch cfg.DNS.Mode {
	case "builtin":
		p.dnsSrv, err = builtinDNS(cfg)
	case "rfc2136":
		p.dnsUpd, err = rfc2136DNS(cfg)
	}
	if err != nil {
		return nil, err
	}
	if raw := p.rawPublisher(); raw != nil {
		p.sets = &dnsSets{pub: raw}
	}
	if p.tls, err = buildTLS(cfg, p.sets, self); err != nil {
		return nil, err
	}
	p.runner = &reconcile.Runner{
		Keys: p.keys, Network: p.net, Pods: p.pods, Units: p.units, Systemd: p.units, Onions: p.tor,
		DNS: p.publisher(), Zone: cfg.DNS.Zone, Fronts: p.tls.hasFront,
		// One read of the file watch's queue, and of the pods' address watch, per look.
		Settle: func(ctx context.Context) context.Context { return p.net.Settled(p.files.Settled(ctx)) },
	}
	return p, nil
}

// publisher is the zone's publisher as the reconciler and status see it (nil: none).
func (p *parts) publisher() reconcile.Publisher {
	if p.sets == nil {
		return nil
	}
	return p.sets
}

func (p *parts) dnsSets() *dnsSets { return p.sets }

func (p *parts) rawPublisher() reconcile.Publisher {
	switch {
	case p.dnsSrv != nil:
		return p.dnsSrv
	case p.dnsUpd != nil:
		return p.dnsUpd
	}
	return nil
}

func (p *parts) close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
}

// torControl is how the daemon reaches tor: the managed tor's socket with cookie auth, or the
// configured one.
func torControl(cfg *configs.Config) (onion.ControlConfig, error) {
	network, addr, err := onion.ParseControlEndpoint(cfg.Tor.Control)
	if err != nil {
		return onion.ControlConfig{}, err
	}
	c := onion.ControlConfig{Network: network, Address: addr, Auth: cfg.Tor.Auth, Exclusive: cfg.Tor.Mode == "managed"}
	if cfg.Tor.Auth == "password" {
		pw, err := os.ReadFile(cfg.Tor.PasswordFile)
		if err != nil {
			return c, fmt.Errorf("daemon: tor.password_file: %w", err)
		}
		c.Password = strings.TrimSpace(string(pw))
	}
	return c, nil
}

// managedTorrc is the torrc options of the managed tor.
func managedTorrc(cfg *configs.Config) (onion.TorrcOptions, error) {
	_, sock, err := configs.ParseControl(cfg.Tor.Control)
	if err != nil {
		return onion.TorrcOptions{}, err
	}
	return onion.TorrcOptions{
		DataDir: filepath.Join(cfg.TorDir(), "data"), ControlSocket: sock,
		SocksPort: uint16(cfg.Tor.SocksPort), Extra: cfg.Tor.TorrcExtra,
	}, nil
}

// CheckTorrc checks, in managed mode, that the managed tor's torrc renders from cfg: onion
// refuses torrc_extra lines that set what onionpod sets or that would weaken tor's sandbox. What
// config check and a reload run, so a line onion refuses never replaces a good config.
func CheckTorrc(cfg *configs.Config) error {
	if cfg.Tor.Mode != "managed" {
		return nil
	}
	opts, err := managedTorrc(cfg)
	if err != nil {
		return err
	}
	_, err = onion.ManagedTorrc(opts)
	return err
}

// ensureManagedTor writes the managed tor's torrc and unit and starts it (a no-op when unchanged
// and running). tor runs as its package's unprivileged user, sandboxed, seeing nothing of the
// state dir but its own data dir and torrc (onion.ManagedTor).
func (p *parts) ensureManagedTor(ctx context.Context, cfg *configs.Config) error {
	opts, err := managedTorrc(cfg)
	if err != nil {
		return err
	}
	tor := onion.ManagedTor{Torrc: opts, TorrcPath: filepath.Join(cfg.TorDir(), "torrc"), Binary: cfg.Tor.Binary,
		Hide: []string{cfg.StateDir}}
	changed, err := tor.Prepare()
	if err != nil {
		return err
	}
	svc, err := tor.Service()
	if err != nil {
		return err
	}
	unit, err := pods.HostService{
		Name: "tor", Description: "onionpod's tor (onion services of the apps)",
		ExecStart: svc.ExecStart, Restart: "always",
		User: svc.User, Group: svc.Group, Sandbox: true, AddressFamilies: svc.AddressFamilies,
		ReadWritePaths: svc.ReadWritePaths, RuntimeDirectories: svc.RuntimeDirectories,
		BindPaths: svc.BindPaths, BindReadOnlyPaths: svc.BindReadOnlyPaths,
		TemporaryFileSystem: svc.TemporaryFileSystem,
	}.Unit()
	if err != nil {
		return err
	}
	if err := p.systemd.Apply(ctx, unit); err != nil {
		return err
	}
	if changed {
		return p.systemd.RestartUnit(ctx, unit.Name)
	}
	return nil
}

// ensureDHCPDaemon runs the CNI dhcp daemon as onionpod-dhcp.service while an app wants IPv4.
func (p *parts) ensureDHCPDaemon(ctx context.Context, cfg *configs.Config, wanted bool) error {
	name := pods.HostService{Name: "dhcp"}.UnitName()
	if !wanted {
		if _, err := p.systemd.UnitStatus(ctx, name); errors.Is(err, pods.ErrNotFound) {
			return nil
		}
		return p.systemd.RemoveUnits(ctx, name)
	}
	pluginDir := ""
	for _, d := range cfg.Network.CNIPaths {
		if _, err := os.Stat(filepath.Join(d, "dhcp")); err == nil {
			pluginDir = d
			break
		}
	}
	if pluginDir == "" {
		return fmt.Errorf("daemon: IPv4: the CNI dhcp plugin is in none of %v", cfg.Network.CNIPaths)
	}
	unit, err := pods.HostService{
		Name: "dhcp", Description: "onionpod's CNI DHCP daemon (IPv4 leases of the pods)",
		ExecStart: network.DHCPDaemonCommand(pluginDir, cfg.Network.DHCPSocket), Restart: "always",
	}.Unit()
	if err != nil {
		return err
	}
	if err := p.systemd.Apply(ctx, unit); err != nil {
		return err
	}
	// The daemon creates its socket a moment after it starts.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(cfg.Network.DHCPSocket); err == nil {
			return nil
		}
	}
	return fmt.Errorf("daemon: the CNI DHCP daemon did not create %s", cfg.Network.DHCPSocket)
}

func builtinDNS(cfg *configs.Config) (*dns.Server, error) {
	keys, err := tsigKeys(cfg)
	if err != nil {
		return nil, err
	}
	sc := dns.ServerConfig{
		Zone: cfg.DNS.Zone, Listen: cfg.DNS.Listen, TTL: time.Duration(cfg.DNS.TTL) * time.Second,
		StateDir: cfg.DNSDir(), TSIGKeys: keys,
	}
	for _, n := range cfg.DNS.NS {
		sc.NS = append(sc.NS, dns.NameServer{Host: n})
	}
	for _, s := range cfg.DNS.Secondaries {
		sc.Secondaries = append(sc.Secondaries, dns.Secondary{Addr: s.Address, KeyName: s.Key})
	}
	return dns.NewServer(sc)
}

func rfc2136DNS(cfg *configs.Config) (*dns.RFC2136, error) {
	keys, err := tsigKeys(cfg)
	if err != nil {
		return nil, err
	}
	var key dns.TSIGKey
	for _, k := range keys {
		if strings.TrimSuffix(k.Name, ".") == strings.TrimSuffix(cfg.DNS.RFC2136.Key, ".") {
			key = k
		}
	}
	return dns.NewRFC2136(dns.RFC2136Config{
		Server: cfg.DNS.RFC2136.Server, Zone: cfg.DNS.Zone, TSIG: key,
		LedgerPath: filepath.Join(cfg.DNSDir(), "rfc2136-"+strings.TrimSuffix(cfg.DNS.Zone, ".")+".json"),
		TTL:        time.Duration(cfg.DNS.TTL) * time.Second,
	})
}

func tsigKeys(cfg *configs.Config) ([]dns.TSIGKey, error) {
	var keys []dns.TSIGKey
	for _, k := range cfg.DNS.TSIG {
		secret, err := k.SecretOf() // configs.Validate checked it is base64
		if err != nil {
			return nil, err
		}
		keys = append(keys, dns.TSIGKey{Name: k.Name, Algorithm: k.Algorithm, Secret: secret})
	}
	return keys, nil
}
