package daemon

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"filippo.io/age"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/dashboard"
	"github.com/onionpod/onionpod/cmd/internal/metrics"
	"github.com/onionpod/onionpod/cmd/internal/probe"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/onion"
	"github.com/onionpod/onionpod/pods"
)

// observability is what lets the owner see the box: the dashboard (LAN side and its own onion
// service), the reachability probes and the Prometheus metrics, wired to the daemon.
type observability struct {
	d       *Daemon
	cfg     *configs.Config
	monitor *probe.Monitor
	metrics *metrics.Metrics
	dash    *dashboard.Server
	onion   *dashboard.Onion
	set     *dashboard.OnionSet
	api     *dashboard.API
	vantage *lazyVantage
	lanAddr []string
}

// newObservability builds the parts and puts the dashboard's onion service into the set the
// reconciler keeps (p.runner.Onions).
func (d *Daemon) newObservability(p *parts) (*observability, error) {
	cfg := d.cfg
	ula, _ := netip.ParsePrefix(cfg.Network.ULAPrefix)
	o := &observability{d: d, cfg: cfg}
	o.onion = &dashboard.Onion{Dir: cfg.DashboardDir(), Target: "unix:" + cfg.DashboardOnionSocket()}
	o.set = &dashboard.OnionSet{Next: p.tor, Dashboard: o.onion}
	if cfg.Dashboard.Enabled {
		p.runner.Onions = o.set
	}
	for _, l := range cfg.Dashboard.Listen {
		addrs, _ := configs.ListenAddrs(l, cfg.Dashboard.Port, ula)
		o.lanAddr = append(o.lanAddr, addrs...)
	}
	prober := &probe.Prober{OnionTimeout: cfg.Probes.OnionTimeout.D(), ClearnetTimeout: cfg.Probes.ClearnetTimeout.D(),
		UserAgent: "onionpod-probe/" + d.opts.Version}
	if cfg.TLS.Mode == "acme" {
		prober.Roots = probeRoots(cfg, d.log)
	}
	if cfg.Tor.SocksPort > 0 {
		prober.Socks = net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Tor.SocksPort))
	}
	if cfg.Probes.Clearnet {
		o.vantage = &lazyVantage{opts: probe.VantageOptions{Uplink: cfg.Network.Uplink,
			Netns: filepath.Join(cfg.Network.NetnsDir, "onionpod_probe")}, log: d.log}
		if cfg.Probes.VantageIPv4 != "" {
			o.vantage.opts.IPv4, _ = netip.ParsePrefix(cfg.Probes.VantageIPv4)
		}
		prober.LAN = o.vantage
		prober.Resolver = probe.ZoneResolver{Server: probeDNSServer(cfg)}
	}
	o.metrics = metrics.New(metrics.Options{Source: o.snapshot, DNS: queryCounter(p), Updates: updateCounter(p)})
	o.monitor = &probe.Monitor{Prober: prober, Targets: o.targets, Interval: cfg.Probes.Interval.D(),
		Keep: cfg.Probes.History, OnResult: o.metrics.ObserveProbe}
	box, _ := os.Hostname()
	dash, err := dashboard.New(dashboard.Config{Dir: cfg.DashboardDir(), Session: cfg.Dashboard.Session.D(),
		OnionLogin: cfg.Dashboard.OnionLogin, Box: box},
		dashboard.Deps{Apps: daemonApps{d}, Actions: daemonActions{d}, Backups: daemonBackups{d}, Logs: journalLogs{}, Probes: o.monitor, Updates: daemonActions{d}})
	if err != nil {
		return nil, err
	}
	o.dash = dash
	o.api = &dashboard.API{Server: dash, Onion: o.onion, Set: o.set, Listen: o.lanAddr,
		Lock: func(ctx context.Context, fn func() error) error {
			return d.store.Update(ctx, func(*store.Tx) error { return fn() })
		},
		Changed: func() { d.trigger("dashboard changed") }}
	return o, nil
}

// probeRoots are what the HTTPS probes trust: the system's roots and, for a private CA, its
// roots (tls.ca_root), as the owner's browser would once told to.
func probeRoots(cfg *configs.Config, log *slog.Logger) *x509.CertPool {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if cfg.TLS.CARoot != "" {
		data, err := os.ReadFile(cfg.TLS.CARoot)
		if err != nil || !pool.AppendCertsFromPEM(data) {
			log.Warn("probes: tls.ca_root is not a PEM file of certificates", "err", err)
		}
	}
	return pool
}

// probeDNSServer is where the probes look names up: the configured server, the built-in one
// on loopback, or the RFC 2136 primary.
func probeDNSServer(cfg *configs.Config) string {
	switch {
	case cfg.Probes.DNSServer != "":
		return cfg.Probes.DNSServer
	case cfg.DNS.Mode == "rfc2136":
		return cfg.DNS.RFC2136.Server
	case len(cfg.DNS.Listen) > 0:
		host, port, err := net.SplitHostPort(cfg.DNS.Listen[0])
		if err == nil {
			if a, err := netip.ParseAddr(host); err == nil && a.IsUnspecified() {
				host = "::1"
				if a.Is4() {
					host = "127.0.0.1"
				}
			}
			return net.JoinHostPort(host, port)
		}
	}
	return "[::1]:53"
}

// queryCounter is the built-in DNS server's answer counts; nil in the other modes (no series).
func queryCounter(p *parts) metrics.DNSQueryCounter {
	if p.dnsSrv == nil {
		return nil
	}
	return p.dnsSrv
}

// updateCounter is the RFC 2136 publisher's update counts; nil in the other modes.
func updateCounter(p *parts) metrics.DNSUpdateCounter {
	if p.dnsUpd == nil {
		return nil
	}
	return p.dnsUpd
}

// start serves the dashboard, the metrics and runs the probes until ctx ends, in goroutines of
// wg. Call it after the managed tor is prepared (the onion socket sits in its directory).
func (o *observability) start(ctx context.Context, wg *sync.WaitGroup) {
	cfg := o.cfg
	ula, _ := netip.ParsePrefix(cfg.Network.ULAPrefix)
	if cfg.Dashboard.Enabled {
		o.serve(ctx, wg, "dashboard", o.lanAddr, o.dash.Handler(dashboard.RealmLAN))
		if l, err := dashboard.ListenUnix(cfg.DashboardOnionSocket()); err != nil {
			o.d.log.Error("dashboard: onion side", "err", err)
		} else {
			wg.Go(func() { dashboard.Serve(ctx, o.dash.Handler(dashboard.RealmOnion), l) })
		}
	}
	if cfg.Metrics.Enabled {
		var addrs []string
		for _, l := range cfg.Metrics.Listen {
			a, _ := configs.ListenAddrs(l, cfg.Metrics.Port, ula)
			addrs = append(addrs, a...)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", o.metrics.Handler())
		o.serve(ctx, wg, "metrics", addrs, mux)
	}
	if cfg.Probes.Enabled {
		wg.Go(func() {
			o.monitor.Run(ctx)
			if o.vantage != nil {
				o.vantage.Close()
			}
		})
	}
}

func (o *observability) serve(ctx context.Context, wg *sync.WaitGroup, what string, addrs []string, h http.Handler) {
	ls, err := dashboard.ListenTCP(addrs)
	if err != nil {
		o.d.log.Error(what+": not served", "err", err)
		return
	}
	o.d.log.Info(what+" listening", "addrs", addrs)
	wg.Go(func() { dashboard.Serve(ctx, h, ls...) })
}

// observePass records a reconcile pass's duration.
func (o *observability) observePass(d time.Duration) {
	if o != nil {
		o.metrics.ObservePass(d)
	}
}

// withProbes adds an app's last probes and health to its status.
func (o *observability) withProbes(st api.AppStatus) api.AppStatus {
	if o == nil {
		return st
	}
	st.Probes = o.monitor.Latest(st.App.Name)
	st.Health = probe.Health(st.State == api.StateRunning, st.Probes)
	return st
}

// targets are the running apps and where to probe them.
func (o *observability) targets(ctx context.Context) ([]probe.Target, error) {
	apps, err := o.d.appStatuses()
	var out []probe.Target
	for _, a := range apps {
		if a.State != api.StateRunning {
			continue
		}
		t := probe.Target{App: a.App.Name, IPv6: a.Network.LAN != "", IPv4: a.Network.IPv4 != ""}
		if len(a.App.Ports) > 0 {
			t.Port = a.App.Ports[0].Public
			if a.Network.ULA != "" {
				t.OnionTarget = net.JoinHostPort(a.Network.ULA, strconv.Itoa(int(a.App.Ports[0].Target)))
			}
		}
		if a.App.WantsOnion() && a.Onion.Added {
			t.Onion = a.Onion.Address
		}
		if a.App.Clearnet() && a.DNS.Published {
			t.Name = a.DNS.Name
			t.HTTPS = a.TLS != nil && a.TLS.Front // plain HTTP is a redirect there
		}
		out = append(out, t)
	}
	return out, err
}

// snapshot is the metrics' view of the daemon.
func (o *observability) snapshot(ctx context.Context) (metrics.Snapshot, error) {
	apps, err := o.d.appStatuses()
	if err != nil {
		return metrics.Snapshot{}, err
	}
	conn := o.d.parts.tor.Conn()
	snap := metrics.Snapshot{Tor: metrics.Tor{Connected: conn.Connected, Bootstrap: conn.Bootstrap}}
	units, _ := o.d.parts.systemd.PodStates(ctx)
	for _, a := range apps {
		m := metrics.App{Name: a.App.Name, State: a.State, Healthy: a.Health == "healthy", Onion: a.App.WantsOnion(),
			Uploaded: a.Onion.Since, Probes: a.Probes}
		if !a.Onion.Published {
			m.Uploaded = time.Time{}
		}
		if a.TLS != nil {
			m.CertExpiry = a.TLS.NotAfter
		}
		for _, c := range a.App.Containers {
			m.Restarts += units[pods.PodRef{App: a.App.Name, Container: c.Name}].Restarts
		}
		snap.Apps = append(snap.Apps, m)
	}
	return snap, nil
}

// daemonApps is the daemon's view of the apps, for the dashboard.
type daemonApps struct{ d *Daemon }

// Apps and App carry the probes (statusOfLocked adds them).
func (a daemonApps) Apps(ctx context.Context) ([]api.AppStatus, error) { return a.d.appStatuses() }

func (a daemonApps) App(ctx context.Context, name string) (api.AppStatus, error) {
	st, err := a.d.appDetail(ctx, name)
	return st, notFound(name, err)
}

// daemonActions change apps as the CLI's commands do.
type daemonActions struct{ d *Daemon }

func notFound(name string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return errkind.NotFoundf("no app %q", name)
	}
	return err
}

func (a daemonActions) Start(ctx context.Context, app string) error {
	_, err := a.d.setStopped(ctx, app, false)
	return notFound(app, err)
}

func (a daemonActions) Stop(ctx context.Context, app string) error {
	_, err := a.d.setStopped(ctx, app, true)
	return notFound(app, err)
}

// Restart restarts the pod's unit (its network, onion service and records stay).
func (a daemonActions) Restart(ctx context.Context, app string) error {
	st, err := a.d.store.Get(app)
	if err != nil {
		return notFound(app, err)
	}
	if st.Stopped {
		return errkind.BadInputf("%s is stopped: start it", app)
	}
	return a.d.parts.systemd.RestartUnit(ctx, pods.PodUnitName(app))
}

// SetOnion exposes or unexposes the app, as `onionpod expose`/`unexpose` do.
func (a daemonActions) SetOnion(ctx context.Context, app string, on bool) error {
	rec, err := a.d.store.Get(app)
	if err != nil {
		return notFound(app, err)
	}
	if rec.OnionOnly && !on {
		return errkind.BadInputf("%s is onion-only: stop it or remove it", app)
	}
	if len(rec.Ports) == 0 && on {
		return errkind.BadInputf("%s publishes no port: expose it with onionpod expose --port", app)
	}
	rec.Onion = on
	_, err = a.d.putApp(ctx, rec, peer{}) // the record's generation: refused if it changed meanwhile
	return err
}

// Update updates the app's images as `onionpod update APP` does (waiting, as it does, until the
// app is healthy on the new images or rolled back) and says what happened. A browser that goes
// away meanwhile (a tab closed, a Tor circuit dropped) does not abort the update, as a CLI
// interrupted does: the trial goes on to its end.
func (a daemonActions) Update(ctx context.Context, app string) (string, error) {
	ctx, cancel := a.d.untilStopped(ctx)
	defer cancel()
	res, err := a.d.updateApp(ctx, app, api.UpdateRequest{})
	return updateOutcome(res), notFound(app, err)
}

// Rollback puts back the app's previous images, as `onionpod rollback APP` does.
func (a daemonActions) Rollback(ctx context.Context, app string) (string, error) {
	ctx, cancel := a.d.untilStopped(ctx)
	defer cancel()
	res, err := a.d.rollbackApp(ctx, app, api.RollbackRequest{})
	return updateOutcome(res), notFound(app, err)
}

// untilStopped is ctx's values, cancelled when the daemon stops, not when ctx ends.
func (d *Daemon) untilStopped(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		select {
		case <-d.runDone:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// updateOutcome is an update's result in a few words for the dashboard's notice.
func updateOutcome(res api.UpdateResult) string {
	if res.Reason != "" {
		return res.Result + ": " + res.Reason
	}
	return res.Result
}

// daemonBackups writes age backups of the apps' keys, as `onionpod onion backup` does.
type daemonBackups struct{ d *Daemon }

func (b daemonBackups) Backup(ctx context.Context, w io.Writer, apps []string, passphrase string) error {
	r, err := onion.PassphraseRecipient(passphrase)
	if err != nil {
		return err
	}
	_, err = onion.Backup(w, b.d.parts.keys, apps, []age.Recipient{r})
	if errors.Is(err, onion.ErrNotFound) {
		return errkind.NotFoundf("%s", err)
	}
	return err
}

// journalLogs reads an app's last journal lines.
type journalLogs struct{}

func (journalLogs) Tail(ctx context.Context, app string, n int) ([]string, error) {
	cmd := exec.CommandContext(ctx, "journalctl", "--no-pager", "--output=short-iso", "--lines="+strconv.Itoa(n),
		"--unit="+pods.PodUnitName(app), "--unit="+pods.NetUnitName(app))
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("journalctl: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var lines []string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if l := sc.Text(); !strings.HasPrefix(l, "-- ") {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// lazyVantage opens the LAN vantage point on first use, and again (at most once a minute)
// after a failure: the uplink may appear after the daemon starts.
type lazyVantage struct {
	opts probe.VantageOptions
	log  interface{ Warn(string, ...any) }

	mu    sync.Mutex
	v     *probe.Vantage
	tried time.Time
	err   error
}

func (l *lazyVantage) get() (*probe.Vantage, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.v != nil {
		return l.v, nil
	}
	if time.Since(l.tried) < time.Minute && l.err != nil {
		return nil, l.err
	}
	l.tried = time.Now()
	l.v, l.err = probe.OpenVantage(l.opts)
	if l.err != nil {
		l.log.Warn("probes: no LAN vantage point", "err", l.err)
	}
	return l.v, l.err
}

func (l *lazyVantage) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	v, err := l.get()
	if err != nil {
		return nil, probe.AtHop(probe.HopVantage, fmt.Errorf("no LAN vantage point: %w", err))
	}
	return v.DialContext(ctx, network, addr)
}

func (l *lazyVantage) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.v == nil {
		return nil
	}
	return l.v.Close()
}
