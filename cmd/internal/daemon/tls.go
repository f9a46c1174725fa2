package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/onionpod/onionpod/certs"
	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/reconcile"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/front"
	"github.com/onionpod/onionpod/internal/atomicfile"
	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/pods"
)

// HTTPS for the clearnet, wired here from its parts:
//
//   - certs.Manager obtains and renews a certificate per clearnet app (tls.mode = "acme"), its
//     DNS-01 challenges published through dnsSets, the same publisher as the apps' addresses;
//   - each app with a certificate gets a front unit (front.RunFront as onionpod-front-APP.service,
//     in the pod's namespace, sandboxed, the bundle as its credential) and the pod's firewall
//     redirects the LAN's :443 and :80 to it (reconcile.NetAttachment with front);
//   - the edge unit (edge.mode = "on") routes the box's IPv4 to the apps, and dnsSets publishes
//     that address as their A record;
//   - the feed hands fronts their renewed certificates and the edge its routes.

// dnsSets is the one publisher of the zone: the apps' address records (the reconciler's
// declarative set), the ACME challenges' TXT records, and the box's IPv4 address for the apps
// the edge routes. Each part is replaced on its own; the zone gets their union. Status shows the
// reconciler the address records only.
type dnsSets struct {
	pub reconcile.Publisher

	mu         sync.Mutex
	addrs      []dns.Record
	challenges []dns.Record
	edgeNames  []string   // FQDNs the edge routes
	hostV4     netip.Addr // the box's IPv4 (invalid: none)
}

func (s *dnsSets) Set(ctx context.Context, records []dns.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addrs = slices.Clone(records)
	return s.applyLocked(ctx)
}

// SetChallenges is certs.ChallengePublisher.
func (s *dnsSets) SetChallenges(ctx context.Context, chs []certs.Challenge) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.challenges = nil
	for _, c := range chs {
		s.challenges = append(s.challenges, dns.Record{Name: c.Name, TXT: c.Value})
	}
	return s.applyLocked(ctx)
}

// setEdge sets the names the edge routes and the box's IPv4 (they get it as their A record,
// unless they have an IPv4 of their own).
func (s *dnsSets) setEdge(ctx context.Context, names []string, v4 netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	slices.Sort(names)
	if slices.Equal(names, s.edgeNames) && v4 == s.hostV4 {
		return nil
	}
	s.edgeNames, s.hostV4 = names, v4
	return s.applyLocked(ctx)
}

func (s *dnsSets) hostIPv4() netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hostV4
}

func (s *dnsSets) applyLocked(ctx context.Context) error {
	all := append(slices.Clone(s.addrs), s.challenges...)
	if s.hostV4.IsValid() {
		hasA := map[string]bool{}
		for _, r := range s.addrs {
			if r.IsAddress() && r.Addr.Is4() {
				hasA[strings.TrimSuffix(r.Name, ".")] = true
			}
		}
		for _, n := range s.edgeNames {
			if !hasA[strings.TrimSuffix(n, ".")] {
				all = append(all, dns.Record{Name: n, Addr: s.hostV4})
			}
		}
	}
	return s.pub.Set(ctx, all)
}

// Status is the publisher's, with the address records only (a challenge is no app's record).
func (s *dnsSets) Status() dns.Status {
	st := s.pub.Status()
	st.Published = addressesOnly(st.Published)
	st.Desired = addressesOnly(st.Desired)
	return st
}

// addressesOnly keeps the address records of recs, in place: recs is a Status's own copy.
func addressesOnly(recs []dns.Record) []dns.Record {
	out := recs[:0]
	for _, r := range recs {
		if r.IsAddress() {
			out = append(out, r)
		}
	}
	return out
}

// tlsParts are the HTTPS parts of a daemon (nil when tls and edge are off).
type tlsParts struct {
	cfg   *configs.Config
	certs *certs.Manager // nil unless tls.mode = "acme"
	feed  *front.Feed
	self  string

	mu    sync.Mutex
	front map[string]bool // apps whose front unit was last applied
}

func buildTLS(cfg *configs.Config, sets *dnsSets, self string) (*tlsParts, error) {
	if cfg.TLS.Mode != "acme" && cfg.Edge.Mode != "on" {
		return nil, nil
	}
	t := &tlsParts{cfg: cfg, self: self, front: map[string]bool{}}
	if cfg.TLS.Mode == "acme" {
		if sets == nil {
			return nil, fmt.Errorf("daemon: tls: %w: acme needs DNS publishing (dns.mode)", configs.ErrInvalid)
		}
		m, err := certs.New(certs.Config{
			Dir: cfg.TLSDir(), DirectoryURL: cfg.TLS.Directory, Email: cfg.TLS.Email, CARoot: cfg.TLS.CARoot,
			Publisher: sets, CheckServers: checkServers(cfg),
		})
		if err != nil {
			return nil, err
		}
		t.certs = m
	}
	return t, nil
}

// checkServers are the DNS servers that must serve a challenge before the CA looks: the built-in
// server where it listens (a wildcard address asked on loopback), or the RFC 2136 primary.
func checkServers(cfg *configs.Config) []string {
	if cfg.DNS.Mode == "rfc2136" {
		s := cfg.DNS.RFC2136.Server
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(s, "53")
		}
		return []string{s}
	}
	var out []string
	for _, l := range cfg.DNS.Listen {
		host, port, err := net.SplitHostPort(l)
		if err != nil {
			continue
		}
		switch host {
		case "", "::":
			host = "::1"
		case "0.0.0.0":
			host = "127.0.0.1"
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	return out
}

// webPort is the port the front serves: public port 80's, else the app's first port, with the
// container that listens on it (Container set, also for an app of one container). An app that
// publishes 443 itself (its own TLS) or whose ports take the front's gets no front.
func webPort(app store.App) (store.Port, bool) {
	if !app.Clearnet() || len(app.Ports) == 0 {
		return store.Port{}, false
	}
	web := app.Ports[0]
	for _, p := range app.Ports {
		if p.Public == 443 || p.Target == front.TLSPort || p.Target == front.HTTPPort {
			return store.Port{}, false
		}
		if p.Public == 80 {
			web = p
		}
	}
	web.Container = app.PortContainer(web)
	return web, true
}

// appName is the app's clearnet name without the final dot.
func appName(cfg *configs.Config, app string) string {
	n, err := dns.AppName(app, cfg.DNS.Zone)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(n, ".")
}

// wantCerts tells the certificate manager which apps need one: clearnet apps with a web port.
func (t *tlsParts) wantCerts(desired []store.App) {
	if t == nil || t.certs == nil {
		return
	}
	want := map[string]string{}
	for _, app := range desired {
		if _, ok := webPort(app); ok && !app.Stopped {
			want[app.Name] = appName(t.cfg, app.Name)
		}
	}
	t.certs.Want(want)
}

// hasFront reports whether app is served by a front now: it has a web port and a certificate.
func (t *tlsParts) hasFront(app store.App) bool {
	if t == nil || t.certs == nil || app.Stopped {
		return false
	}
	if _, ok := webPort(app); !ok {
		return false
	}
	_, ok := t.certs.Get(app.Name)
	return ok
}

// FrontAtBoot is hasFront as the boot-time net-up decides it, before the daemon runs: from the
// config and the bundle on disk.
func FrontAtBoot(cfg *configs.Config, app store.App) bool {
	if cfg.TLS.Mode != "acme" || app.Stopped {
		return false
	}
	if _, ok := webPort(app); !ok {
		return false
	}
	_, err := os.Stat(certs.BundlePath(cfg.TLSDir(), app.Name))
	return err == nil
}

// frontUnit renders app's front unit.
func (t *tlsParts) frontUnit(app store.App, onion string) (pods.Unit, error) {
	web, _ := webPort(app)
	argv := []string{t.self, "internal", "front", app.Name, "--host", appName(t.cfg, app.Name),
		"--target", strconv.Itoa(int(web.Target)), "--feed", front.FeedSocket}
	if onion != "" && t.cfg.TLS.OnionLocation && !app.NoOnionLocation {
		argv = append(argv, "--onion", onion)
	}
	if ula, err := netip.ParsePrefix(t.cfg.Network.ULAPrefix); err == nil {
		argv = append(argv, "--edge-addr", front.EdgeAddrOf(ula).String())
	}
	return pods.HostService{
		Name: "front-" + app.Name, Description: "onionpod HTTPS front of " + app.Name,
		ExecStart: argv, Restart: "always", DynamicUser: true, Sandbox: true,
		NetworkNamespacePath: network.NetnsPath(t.cfg.Network.NetnsDir, app.Name),
		Credentials:          []pods.Credential{{Name: front.BundleCredential, Path: certs.BundlePath(t.cfg.TLSDir(), app.Name)}},
		TemporaryFileSystem:  []string{t.cfg.StateDir},
		Requires:             []string{pods.NetUnitName(app.Name)},                      // skipped where the daemon made the network
		PartOf:               []string{pods.ContainerUnitName(app.Name, web.Container)}, // the container it serves
	}.Unit()
}

// syncFronts makes the front units match the apps (after a pass: their networks are in place) and
// feeds each front its current certificate.
func (d *Daemon) syncFronts(ctx context.Context, desired []store.App, res reconcile.Result) {
	t := d.parts.tls
	if t == nil {
		return
	}
	wanted := map[string]bool{}
	for _, app := range desired {
		r := res.Apps[app.Name]
		if !t.hasFront(app) || r == nil || r.Err != nil || r.Net.Netns == "" {
			continue
		}
		wanted[app.Name] = true
		c, _ := t.certs.Get(app.Name)
		t.feed.Publish(front.FrontUnit(app.Name), c.Bundle)
		unit, err := t.frontUnit(app, r.Address)
		if err == nil {
			err = d.parts.systemd.Apply(ctx, unit)
		}
		if err != nil {
			d.log.Error("front unit", "app", app.Name, "err", err)
		}
	}
	units, err := d.parts.systemd.Units(ctx)
	if err != nil {
		return
	}
	for _, u := range units {
		app, ok := strings.CutPrefix(strings.TrimSuffix(u, ".service"), pods.UnitPrefix+"front-")
		if !ok || wanted[app] {
			continue
		}
		if err := d.parts.systemd.RemoveUnits(ctx, u); err != nil {
			d.log.Error("front unit", "app", app, "err", err)
		}
		t.feed.Publish(u, nil)
	}
	t.mu.Lock()
	t.front = wanted
	t.mu.Unlock()
}

// syncEdge gives the edge the routes of every running clearnet app (to its front, or to the app
// itself without one) and the zone the box's IPv4 for them; it runs the edge unit while edge.mode
// is on.
func (d *Daemon) syncEdge(ctx context.Context, desired []store.App, res reconcile.Result) {
	t := d.parts.tls
	if t == nil || d.cfg.Edge.Mode != "on" {
		return
	}
	routes := front.Routes{}
	var names []string
	for _, app := range desired {
		r := res.Apps[app.Name]
		if app.Stopped || !app.Clearnet() || r == nil || r.Err != nil || !r.Net.ULA.IsValid() {
			continue
		}
		name := appName(d.cfg, app.Name)
		var rt front.Route
		if t.hasFront(app) {
			rt = front.Route{TLS: netip.AddrPortFrom(r.Net.ULA, front.TLSPort),
				HTTP: netip.AddrPortFrom(r.Net.ULA, front.HTTPPort), Proxy: true}
		} else {
			for _, p := range app.Ports {
				switch p.Public {
				case 443:
					rt.TLS = netip.AddrPortFrom(r.Net.ULA, p.Target)
				case 80:
					rt.HTTP = netip.AddrPortFrom(r.Net.ULA, p.Target)
				}
			}
		}
		if rt.TLS.IsValid() || rt.HTTP.IsValid() {
			routes[name] = rt
			names = append(names, name+".")
		}
	}
	data, err := front.MarshalRoutes(routes)
	if err != nil {
		return
	}
	path := filepath.Join(d.cfg.TLSDir(), "routes.json")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
		_, err = atomicfile.WriteFile(path, data, 0o600)
		if err != nil {
			d.log.Error("edge routes", "err", err)
		}
	}
	t.feed.Publish(front.EdgeUnit, data)
	if err := d.parts.dnsSets().setEdge(ctx, names, d.parts.dnsSets().hostIPv4()); err != nil {
		d.log.Warn("edge: A records", "err", err)
	}
	unit, err := pods.HostService{
		Name: "edge", Description: "onionpod edge (the box's IPv4 routed to the apps)",
		ExecStart: []string{t.self, "internal", "edge", "--https", d.cfg.Edge.HTTPS, "--http", d.cfg.Edge.HTTP,
			"--feed", front.FeedSocket},
		Restart: "always", DynamicUser: true, Sandbox: true, Capabilities: []string{"CAP_NET_BIND_SERVICE"},
		Credentials:         []pods.Credential{{Name: front.RoutesCredential, Path: path}},
		TemporaryFileSystem: []string{d.cfg.StateDir},
	}.Unit()
	if err == nil {
		err = d.parts.systemd.Apply(ctx, unit)
	}
	if err != nil {
		d.log.Error("edge unit", "err", err)
	}
}

// followHostIPv4 keeps the edge's A records on the box's current IPv4 address.
func (d *Daemon) followHostIPv4(ctx context.Context) {
	sets := d.parts.dnsSets()
	if d.parts.tls == nil || d.cfg.Edge.Mode != "on" || sets == nil {
		return
	}
	for a := range d.parts.net.WatchHostIPv4(ctx) {
		d.log.Info("the box's IPv4 address", "addr", a)
		sets.mu.Lock()
		names := slices.Clone(sets.edgeNames)
		sets.mu.Unlock()
		if err := sets.setEdge(ctx, names, a); err != nil {
			d.log.Warn("edge: A records", "err", err)
		}
	}
}

// startTLS starts the feed, the certificate manager and the IPv4 watch.
func (d *Daemon) startTLS(ctx context.Context) error {
	t := d.parts.tls
	if t == nil {
		return nil
	}
	var err error
	if t.self, err = unitBinary(d.opts.Self); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	feed, err := front.NewFeed(front.FeedSocket, d.log)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	t.feed = feed
	d.parts.closers = append(d.parts.closers, feed.Close)
	if t.certs != nil {
		go t.certs.Run(ctx)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.certs.Changes():
					d.trigger("certificate changed")
				}
			}
		}()
	}
	go d.followHostIPv4(ctx)
	return nil
}

// unitBinary is the onionpod binary the front and edge units run. They run as dynamic users with
// a private /tmp: a binary they cannot reach (under /tmp, or behind a directory closed to
// others, as a test build is) is copied to /run/onionpod/bin first; an installed one
// (/usr/bin/onionpod) is used as it is.
func unitBinary(self string) (string, error) {
	if reachable(self) {
		return self, nil
	}
	data, err := os.ReadFile(self)
	if err != nil {
		return "", fmt.Errorf("the binary for the front units: %w", err)
	}
	dst := "/run/onionpod/bin/onionpod"
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	if _, err := atomicfile.WriteFile(dst, data, 0o755); err != nil {
		return "", fmt.Errorf("the binary for the front units: %w", err)
	}
	return dst, nil
}

// reachable reports whether any user may execute path (each directory searchable by others, the
// file executable by others) outside the temporary directories a sandbox hides.
func reachable(path string) bool {
	if !filepath.IsAbs(path) || strings.HasPrefix(path, "/tmp/") || strings.HasPrefix(path, "/var/tmp/") {
		return false
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm()&0o001 == 0 {
		return false
	}
	for dir := filepath.Dir(path); dir != "/"; dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		if err != nil || st.Mode().Perm()&0o001 == 0 {
			return false
		}
	}
	return true
}

// tlsStatus is an app's HTTPS as status shows it.
func (t *tlsParts) tlsStatus(app store.App) *api.TLSStatus {
	if t == nil || t.certs == nil || !app.Clearnet() {
		return nil
	}
	web, ok := webPort(app)
	if !ok {
		return &api.TLSStatus{Note: "no front: the app publishes no web port, or 443 itself"}
	}
	out := &api.TLSStatus{Serves: fmt.Sprintf("%s:%d", web.Container, web.Target)}
	for _, s := range t.certs.Status() {
		if s.App == app.Name {
			out.Issuer, out.NotAfter, out.RenewAt, out.LastRenewal = s.Issuer, s.NotAfter, s.RenewAt, s.LastRenewal
			out.LastError, out.Failures = s.LastError, s.Failures
		}
	}
	t.mu.Lock()
	out.Front = t.front[app.Name]
	t.mu.Unlock()
	return out
}

// forgetTLS drops a removed app's certificate from the disk (a stopped app's is kept: it may
// start again).
func (d *Daemon) forgetTLS(name string) {
	t := d.parts.tls
	if t == nil || t.certs == nil {
		return
	}
	if err := t.certs.Forget(name); err != nil {
		d.log.Warn("the certificate of a removed app", "app", name, "err", err)
	}
}

// renewTLS obtains a new certificate for app now.
func (d *Daemon) renewTLS(ctx context.Context, name string) (api.AppStatus, error) {
	t := d.parts.tls
	if t == nil || t.certs == nil {
		return api.AppStatus{}, fmt.Errorf("%w: tls.mode is not \"acme\"", store.ErrInvalid)
	}
	if _, err := d.store.Get(name); err != nil {
		return api.AppStatus{}, err
	}
	err := t.certs.Renew(ctx, name)
	if errors.Is(err, certs.ErrUnknownApp) {
		return api.AppStatus{}, fmt.Errorf("%w: app %q gets no certificate (onion-only, stopped, or no web port)", store.ErrInvalid, name)
	}
	if err != nil {
		return api.AppStatus{}, err
	}
	d.pass(ctx) // the front and its firewall, at once
	return d.appStatus(name)
}
