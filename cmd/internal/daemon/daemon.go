// Package daemon is onionpod's daemon: it owns the desired-state store, serves the LocalAPI on a
// unix socket, and runs the reconcile loop that makes the box match the store (keys, images,
// network, units, onion services, DNS), on API changes, Tor reconnects, address changes, unit
// failures, boot, and a periodic drift check.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/reconcile"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/onion"
	"github.com/onionpod/onionpod/pods"
)

// Options are the daemon's inputs besides the config.
type Options struct {
	Log     *slog.Logger
	Version string
	// DriftInterval is how often a pass runs with no trigger (default 30 s).
	DriftInterval time.Duration
	// Ready is called once the API socket listens (the CLI sends sd_notify READY=1).
	Ready func()
	// Self is the onionpod binary (network units and static sites run it); ConfigPath is the
	// config file those commands read.
	Self       string
	ConfigPath string
}

// Daemon is one running onionpod daemon.
type Daemon struct {
	cfg     *configs.Config
	store   *store.Store
	log     *slog.Logger
	opts    Options
	started time.Time

	triggerCh chan struct{}
	parts     *parts
	obs       *observability // dashboard, probes, metrics

	passMu     sync.Mutex // one pass or status refresh at a time
	lastResult reconcile.Result
	dhcp       *bool // whether the DHCP daemon was last made to run (nil: not yet decided)

	mu       sync.Mutex
	statuses map[string]api.AppStatus
	lastPass time.Time
	changed  chan struct{} // closed and replaced whenever statuses change
}

// New prepares a daemon for cfg; Run starts it.
func New(cfg *configs.Config, opts Options) (*Daemon, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.DriftInterval == 0 {
		opts.DriftInterval = 30 * time.Second
	}
	st, err := store.Open(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	return &Daemon{
		cfg:       cfg,
		store:     st,
		log:       opts.Log,
		opts:      opts,
		started:   time.Now(),
		triggerCh: make(chan struct{}, 1),
		statuses:  map[string]api.AppStatus{},
		changed:   make(chan struct{}),
	}, nil
}

// Run serves the LocalAPI and reconciles until ctx ends.
func (d *Daemon) Run(ctx context.Context) error {
	p, err := buildParts(ctx, d.cfg, d.opts.Self, d.opts.ConfigPath)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	defer p.close()
	d.parts = p
	if d.obs, err = d.newObservability(p); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := d.startServices(ctx); err != nil {
		return err
	}
	d.obs.start(ctx)
	ln, err := listenSocket(d.cfg.API.Socket, d.cfg.API.Group)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	srv := &http.Server{Handler: d.handler(), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	d.log.Info("listening", "socket", d.cfg.API.Socket, "state_dir", d.cfg.StateDir)
	if d.opts.Ready != nil {
		d.opts.Ready()
	}
	d.trigger("boot")
	loopErr := d.loop(ctx)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(shutdownCtx)
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("daemon: api: %w", err)
	}
	return loopErr
}

// trigger asks for a reconcile pass soon; triggers coalesce.
func (d *Daemon) trigger(reason string) {
	select {
	case d.triggerCh <- struct{}{}:
		d.log.Debug("pass triggered", "reason", reason)
	default:
	}
}

func (d *Daemon) loop(ctx context.Context) error {
	tick := time.NewTicker(d.opts.DriftInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.triggerCh:
		case <-tick.C:
		}
		d.pass(ctx)
	}
}

func (d *Daemon) setStatuses(next map[string]api.AppStatus) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.statuses = next
	d.lastPass = time.Now()
	close(d.changed)
	d.changed = make(chan struct{})
}

func (d *Daemon) daemonStatus() api.DaemonStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := api.DaemonStatus{Version: d.opts.Version, Started: d.started, Apps: len(d.statuses), LastPass: d.lastPass}
	if d.parts != nil {
		conn := d.parts.tor.Conn()
		st.Tor = "connected"
		if !conn.Connected {
			st.Tor = "connecting: " + conn.LastError
		}
	}
	return st
}

// appStatuses lists every app in the store with its last observed status.
func (d *Daemon) appStatuses() ([]api.AppStatus, error) {
	apps, err := d.store.List()
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]api.AppStatus, 0, len(apps))
	for _, app := range apps {
		out = append(out, d.statusOfLocked(app))
	}
	return out, err
}

func (d *Daemon) appStatus(name string) (api.AppStatus, error) {
	app, err := d.store.Get(name)
	if err != nil {
		return api.AppStatus{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.statusOfLocked(app), nil
}

// appDetail is appStatus with the pod unit's details (main PID, restarts, since) asked of
// systemd now: what `onionpod status` shows.
func (d *Daemon) appDetail(ctx context.Context, name string) (api.AppStatus, error) {
	st, err := d.appStatus(name)
	if err != nil {
		return st, err
	}
	if us, err := d.parts.systemd.Status(ctx, name); err == nil {
		st.Unit = api.UnitStatus{Name: us.Unit, ActiveState: us.ActiveState, SubState: us.SubState,
			MainPID: us.MainPID, Restarts: us.Restarts, Since: us.Since}
	}
	return st, nil
}

func (d *Daemon) statusOfLocked(app store.App) api.AppStatus {
	st, ok := d.statuses[app.Name]
	if !ok {
		return api.AppStatus{App: app, State: api.StateStarting}
	}
	st.App = app
	return d.obs.withProbes(st)
}

func (d *Daemon) putApp(ctx context.Context, app store.App) (api.AppStatus, error) {
	err := d.store.Update(ctx, func() error {
		old, err := d.store.Get(app.Name)
		switch {
		case err == nil:
			app.Created = old.Created
		case errors.Is(err, store.ErrNotFound):
			app.Created = time.Now().UTC()
		default:
			return err
		}
		app.Updated = time.Now().UTC()
		return d.store.Put(app)
	})
	if err != nil {
		return api.AppStatus{}, err
	}
	d.trigger("app " + app.Name + " changed")
	return d.appStatus(app.Name)
}

func (d *Daemon) setStopped(ctx context.Context, name string, stopped bool) error {
	err := d.store.Update(ctx, func() error {
		app, err := d.store.Get(name)
		if err != nil {
			return err
		}
		app.Stopped = stopped
		app.Updated = time.Now().UTC()
		return d.store.Put(app)
	})
	if err == nil {
		d.trigger("app " + name + " started/stopped")
	}
	return err
}

// removeApp deletes an app's record, then runs a pass at once, which withdraws its DNS records and
// onion service and removes its units and network. The onion key is kept unless purgeKey; it is
// purged only after the pass, so a crash in between keeps the key (never loses it early). An app
// with no record but a leftover key can still be purged.
func (d *Daemon) removeApp(ctx context.Context, name string, purgeKey bool) error {
	if err := store.ValidateName(name); err != nil {
		return err
	}
	err := d.store.Update(ctx, func() error {
		if _, err := d.store.Get(name); err != nil {
			return err
		}
		return d.store.Delete(name)
	})
	if errors.Is(err, store.ErrNotFound) && purgeKey {
		if _, kerr := d.parts.keys.Load(name); kerr != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	d.pass(ctx)
	if res, ok := d.lastResult.Apps[name]; ok && res.Err != nil {
		return fmt.Errorf("daemon: rm %s: %w (the record is gone; the next pass retries)", name, res.Err)
	}
	if purgeKey {
		return d.store.Update(ctx, func() error { return d.parts.keys.Remove(name) })
	}
	return nil
}

// wait blocks until the app reaches the wanted state or the timeout passes.
func (d *Daemon) wait(ctx context.Context, name, what string, timeout time.Duration) (api.AppStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		d.mu.Lock()
		changed := d.changed
		d.mu.Unlock()
		st, err := d.appStatus(name)
		done := false
		switch {
		case err != nil:
			return st, err
		case st.State == api.StateFailed:
			return st, fmt.Errorf("app %q failed: %s", name, st.LastError)
		case what == api.WaitRunning:
			done = st.State == api.StateRunning
		case what == api.WaitPublished:
			done = st.State == api.StateRunning && (!st.App.WantsOnion() || st.Onion.Published)
		default:
			return st, fmt.Errorf("%w: wait for %q: expected running or published", store.ErrInvalid, what)
		}
		if done {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("app %q is not %s after %v (state %s%s): %w", name, what, timeout, st.State, lastErr(st), ctx.Err())
		case <-changed:
		}
	}
}

func lastErr(st api.AppStatus) string {
	if st.LastError == "" {
		return ""
	}
	return ", last error: " + st.LastError
}

func (d *Daemon) logs(ctx context.Context, name string, follow bool, w io.Writer) error {
	if _, err := d.store.Get(name); err != nil {
		return err
	}
	return d.parts.systemd.Logs(ctx, name, follow, w)
}

func (d *Daemon) dnsStatus() api.DNSStatus {
	out := api.DNSStatus{Mode: d.cfg.DNS.Mode, Zone: d.cfg.DNS.Zone, Records: []api.DNSRecord{}}
	pub := d.parts.publisher()
	if pub == nil {
		return out
	}
	st := pub.Status()
	out.Server = strings.Join(st.Servers, ", ")
	out.Serial, out.Pending, out.Error = st.Serial, st.Pending, st.LastError
	byName := map[string]*api.DNSRecord{}
	for _, r := range st.Published {
		rec, ok := byName[r.Name]
		if !ok {
			out.Records = append(out.Records, api.DNSRecord{Name: r.Name, Published: true})
			rec = &out.Records[len(out.Records)-1]
			byName[r.Name] = rec
		}
		rec.Addresses = append(rec.Addresses, r.Addr.String())
	}
	return out
}

// isBadInput reports whether err is the caller's fault (HTTP 400).
func isBadInput(err error) bool {
	for _, sentinel := range []error{store.ErrInvalid, configs.ErrInvalid, onion.ErrBadInput, pods.ErrBadInput, network.ErrBadInput, dns.ErrBadInput} {
		if errors.Is(err, sentinel) {
			return true
		}
	}
	return false
}
