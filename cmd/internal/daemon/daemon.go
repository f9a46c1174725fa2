// Package daemon is onionpod's daemon: it owns the desired-state store, serves the LocalAPI on a
// unix socket, and runs the reconcile loop that makes the box match the store (keys, images,
// network, units, onion services, DNS), on API changes, Tor reconnects, address changes, unit
// failures, boot, and a periodic drift check.
package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/health"
	"github.com/onionpod/onionpod/cmd/internal/reconcile"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
	"github.com/onionpod/onionpod/pods"
)

// Options are the daemon's inputs besides the config.
type Options struct {
	Log     *slog.Logger
	Version string
	// DriftInterval is how often a pass runs with no trigger (default 30 s).
	DriftInterval time.Duration
	// TidyAfter is how long after the last pass systemd is reloaded, if units were removed
	// since its last reload (default 20 s; see pods.Systemd.Tidy).
	TidyAfter time.Duration
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
	tidyCh    chan struct{} // a pass ended with a reload of systemd owed (tidyUnits)
	parts     *parts
	obs       *observability // dashboard, probes, metrics

	// The LocalAPI's bounds and its running handlers.
	maxWait   time.Duration
	waits     *perUID
	followers *perUID
	uploads   *perUID
	handlers  gate
	sent      sentImages // images sent lately, which a prune spares

	passMu     sync.Mutex // one pass or status refresh at a time
	pending    pendingApps
	lastResult reconcile.Result
	lastWanted reconcile.Desired // what the last pass applied
	// lastUnits are the containers' unit states the last statuses were built from (nil: none).
	lastUnits  map[pods.PodRef]pods.Status
	retries    retries
	dhcp       *bool            // whether the DHCP daemon was last made to run (nil: not yet decided)
	unitStarts map[string]int64 // per app, the passes that started its units (noteStarts)

	health        *health.Monitor // the containers' health checks
	healthChanged chan struct{}   // a container's health changed: refresh the statuses

	updateLocks updateLocks             // one update or rollback of an app at a time
	runDone     <-chan struct{}         // closed when Run's context ends (set by Run before it serves)
	abort       context.CancelCauseFunc // ends Run with an error (set by Run before it serves)
	quiesced    quiesced                // apps held stopped for a backup or a restore

	mu          sync.Mutex
	statuses    map[string]api.AppStatus
	lastPass    time.Time
	nextRetry   time.Time     // when the earliest backoff ends (zero: none)
	settling    settling      // the apps whose units systemd is still starting or stopping
	passTimes   api.PassTimes // the last pass
	changeTimes api.PassTimes // the last pass that changed anything
	changed     chan struct{} // closed and replaced whenever statuses change
}

// New prepares a daemon for cfg; Run starts it. The daemon is the only part of onionpod that
// reads secret files (TSIG keys): New checks them.
func New(cfg *configs.Config, opts Options) (*Daemon, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.DriftInterval == 0 {
		opts.DriftInterval = 30 * time.Second
	}
	if opts.TidyAfter == 0 {
		opts.TidyAfter = 20 * time.Second
	}
	if unreadable, err := cfg.CheckSecrets(); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	} else if len(unreadable) > 0 {
		return nil, fmt.Errorf("daemon: %s", strings.Join(unreadable, "; "))
	}
	st, err := store.Open(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	d := &Daemon{
		cfg:       cfg,
		store:     st,
		log:       opts.Log,
		opts:      opts,
		started:   time.Now(),
		triggerCh: make(chan struct{}, 1),
		tidyCh:    make(chan struct{}, 1),
		maxWait:   maxWaitTimeout,
		waits:     newPerUID("waits", maxWaitsPerUID),
		followers: newPerUID("log followers", maxFollowersPerUID),
		uploads:   newPerUID("image uploads", maxUploadsPerUID),
		retries:   retries{},
		statuses:  map[string]api.AppStatus{},
		changed:   make(chan struct{}),

		unitStarts:    map[string]int64{},
		healthChanged: make(chan struct{}, 1),
	}
	d.health = d.newHealthMonitor()
	return d, nil
}

// Run serves the LocalAPI and reconciles until ctx ends. Every goroutine it starts, and every
// API request, has ended before the parts (connections, servers) are closed.
func (d *Daemon) Run(ctx context.Context) error {
	p, err := buildParts(ctx, d.cfg, d.opts.Self, d.opts.ConfigPath)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	defer p.close()
	d.parts = p
	if err := p.ensureNetnsHolder(ctx, d.cfg, d.opts.Self, d.log); err != nil {
		return err
	}
	if err := p.ensureNetBoot(ctx, d.opts.Self, d.opts.ConfigPath); err != nil {
		return err
	}
	d.store.FollowFiles(p.files)
	defer d.store.FollowFiles(nil) // before p.close closes it
	d.logDamagedState()
	var wg sync.WaitGroup
	defer wg.Wait() // runs before p.close (deferred first), after cancel (deferred last)
	if d.obs, err = d.newObservability(p); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	d.runDone = ctx.Done()
	d.abort = cancel
	p.pods.fetches = newFetcher(ctx, func(ctx context.Context, ref string) error {
		_, err := p.images.Pull(ctx, ref, io.Discard)
		return err
	}, wg.Go, func(app string) { d.trigger("image of " + app + " fetched") })
	if err := d.startServices(ctx, &wg); err != nil {
		return err
	}
	d.runHealth(ctx, &wg)
	d.obs.start(ctx, &wg)
	d.resumeTrials(ctx, wg.Go)
	ln, err := listenSocket(d.cfg.API.Socket, d.cfg.API.Group)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	srv := &http.Server{
		Handler: d.handler(), ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10,
		ConnContext: withPeer,
		// Requests end with the daemon: waits and log followers are cancelled.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	serveErr := make(chan error, 1)
	wg.Go(func() { serveErr <- srv.Serve(ln) })
	d.log.Info("listening", "socket", d.cfg.API.Socket, "state_dir", d.cfg.StateDir)
	if d.opts.Ready != nil {
		d.opts.Ready()
	}
	p.waitBootNetworks(ctx, d.log)
	d.trigger("boot")
	loopErr := d.loop(ctx)
	if cause := context.Cause(ctx); loopErr == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		loopErr = cause // the daemon stopped itself (abort)
	}
	cancel(nil)
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancelShutdown()
	srv.Shutdown(shutdownCtx)
	d.handlers.closeAndWait()
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("daemon: api: %w", err)
	}
	return loopErr
}

// trigger asks for a reconcile pass of every app soon; triggers coalesce.
func (d *Daemon) trigger(reason string) {
	d.pending.add("")
	d.wake(reason)
}

// triggerApp asks for a pass soon after app's record changed: a pass that looks afresh at app
// (and at every other app whose record changed meanwhile), and takes the others' own
// observations from the last pass (reconcile.Runner.ObservePass).
func (d *Daemon) triggerApp(app, reason string) {
	d.pending.add(app)
	d.wake(reason)
}

func (d *Daemon) wake(reason string) {
	select {
	case d.triggerCh <- struct{}{}:
		d.log.Debug("pass triggered", "reason", reason)
	default:
	}
}

// pendingApps is what the passes asked for since the last one began: every app, or some.
type pendingApps struct {
	mu   sync.Mutex
	all  bool
	apps reconcile.Scope
}

// add asks for app ("": every app).
func (p *pendingApps) add(app string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if app == "" {
		p.all = true
		return
	}
	if p.apps == nil {
		p.apps = reconcile.Scope{}
	}
	p.apps[app] = true
}

// take returns what a pass beginning now must look at (nil scope: every app) and empties the
// set; with all, every app whatever was asked. run is false when nothing was asked (a pass
// that began since covered it).
func (p *pendingApps) take(all bool) (scope reconcile.Scope, run bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	scope, run = p.apps, all || p.all || len(p.apps) > 0
	if all || p.all {
		scope = nil
	}
	p.all, p.apps = false, nil
	return scope, run
}

// loop runs a pass on every trigger, on the drift tick, when an app's backoff ends, and of the
// apps whose units were settling when it is time to look at them again (settling); and tidies
// systemd once the box is quiet (TidyAfter).
func (d *Daemon) loop(ctx context.Context) error {
	tick := time.NewTicker(d.opts.DriftInterval)
	defer tick.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	tidy := time.NewTimer(time.Hour)
	tidy.Stop()
	defer tidy.Stop()
	settle := time.NewTimer(time.Hour)
	defer settle.Stop()
	for {
		retryAt, settleAt := d.nextLooks()
		retryC, settleC := armAt(retry, retryAt), armAt(settle, settleAt)
		all := true
		select {
		case <-ctx.Done():
			return nil
		case <-d.triggerCh:
			all = false // what the triggers asked for
		case <-tick.C:
		case <-retryC:
		case <-settleC:
			for _, app := range d.settleDue() {
				d.pending.add(app)
			}
			all = false
		case <-d.tidyCh:
			tidy.Reset(d.opts.TidyAfter) // TidyAfter after the last pass: never in a busy spell
			continue
		case <-tidy.C:
			if err := d.tidyUnits(ctx); err != nil {
				d.log.Warn("reloading systemd to forget removed units", "err", err)
				tidy.Reset(d.opts.TidyAfter)
			}
			continue
		}
		d.runPass(ctx, all)
	}
}

// tidyUnits reloads systemd, between passes, if units were removed since its last reload.
func (d *Daemon) tidyUnits(ctx context.Context) error {
	d.passMu.Lock()
	defer d.passMu.Unlock()
	start := time.Now()
	if reloaded, err := d.parts.systemd.Tidy(ctx); !reloaded {
		return err
	}
	d.log.Info("systemd reloaded to forget removed units", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// nextLooks are when the earliest backoff ends and when the daemon looks again at the apps
// whose units were settling (zero: none).
func (d *Daemon) nextLooks() (retry, settle time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.nextRetry, d.settling.at
}

// armAt sets t to fire at at and returns its channel; nil (a case that never fires) for a zero
// at.
func armAt(t *time.Timer, at time.Time) <-chan time.Time {
	t.Stop()
	if at.IsZero() {
		return nil
	}
	t.Reset(time.Until(at))
	return t.C
}

// settleDue returns the settling apps to look at now, and sets the next look.
func (d *Daemon) settleDue() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.settling.due(time.Now())
}

func (d *Daemon) setStatuses(next map[string]api.AppStatus, nextRetry time.Time) {
	settling := settlingUnits(next)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.statuses = next
	d.lastPass = time.Now()
	d.nextRetry = nextRetry
	d.settling.update(settling, d.lastPass)
	close(d.changed)
	d.changed = make(chan struct{})
}

func (d *Daemon) daemonStatus() api.DaemonStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := api.DaemonStatus{Version: d.opts.Version, Started: d.started, Apps: len(d.statuses), LastPass: d.lastPass,
		Pass: d.passTimes, LastChange: d.changeTimes}
	if d.parts != nil {
		conn := d.parts.tor.Conn()
		st.Tor = "connected"
		if !conn.Connected {
			st.Tor = "connecting: " + conn.LastError
		}
	}
	return st
}

// appStatuses lists every app in the store with its last observed status, held apps included.
func (d *Daemon) appStatuses() ([]api.AppStatus, error) {
	apps, held, err := d.store.List()
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]api.AppStatus, 0, len(apps)+len(held))
	for _, app := range apps {
		out = append(out, d.statusOfLocked(app))
	}
	for _, h := range held {
		out = append(out, d.heldStatusLocked(h))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].App.Name < out[j].App.Name })
	return out, nil
}

func (d *Daemon) appStatus(name string) (api.AppStatus, error) {
	app, err := d.store.Get(name)
	var h *store.Held
	if errors.As(err, &h) {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.heldStatusLocked(h), nil
	}
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
	// The status shares its slices with the last pass's: this request writes its own copy.
	st.Containers = slices.Clone(st.Containers)
	for i, c := range st.Containers {
		if us, err := d.parts.systemd.ContainerStatus(ctx, name, c.Name); err == nil {
			st.Containers[i].Unit = api.UnitStatus{Name: us.Unit, ActiveState: us.ActiveState, SubState: us.SubState,
				MainPID: us.MainPID, Restarts: us.Restarts, Since: us.Since}
		}
	}
	if len(st.Containers) > 0 {
		st.Unit = st.Containers[0].Unit
	} else if us, err := d.parts.systemd.Status(ctx, name); err == nil { // a held app
		st.Unit = api.UnitStatus{Name: us.Unit, ActiveState: us.ActiveState, SubState: us.SubState,
			MainPID: us.MainPID, Restarts: us.Restarts, Since: us.Since}
	}
	return st, nil
}

// statusOfLocked is the app's status from the last pass, with its current record.
func (d *Daemon) statusOfLocked(app store.App) api.AppStatus {
	st, ok := d.statuses[app.Name]
	if !ok || st.State == api.StateDamaged || st.State == api.StateUnreadable {
		return api.AppStatus{App: app, State: api.StateStarting}
	}
	st.App = app
	return d.obs.withProbes(st)
}

// heldStatusLocked is a held app's status: what the last pass observed of it, and what to do.
func (d *Daemon) heldStatusLocked(h *store.Held) api.AppStatus {
	st := d.statuses[h.Name]
	st.App = store.App{Name: h.Name}
	st.State, st.LastError = heldState(h)
	st.Damaged = h.Copies
	st.Steps, st.RetryAt, st.ObservedGeneration = nil, time.Time{}, 0
	return st
}

// heldState is what a held app's status says: damaged or unreadable, why, and what to do.
func heldState(h *store.Held) (state, msg string) {
	state = api.StateUnreadable
	if h.Damaged {
		state = api.StateDamaged
	}
	return state, fmt.Sprintf("%s; its pod, onion service and DNS records are held as they are: "+
		"`onionpod run %s --image REF|--static DIR ...` gives it a new record, `onionpod rm %s` removes all of it",
		heldWhy(h), h.Name, h.Name)
}

// heldWhy says in a few words why an app is held.
func heldWhy(h *store.Held) string {
	if h.Damaged && len(h.Copies) > 0 {
		return "its record is damaged (kept as " + h.Copies[len(h.Copies)-1] + ")"
	}
	return fmt.Sprint(h.Err)
}

// putApp stores a new or changed record for who. app.Generation is the generation the change is
// based on (0: a new app): when the record has changed meanwhile, the change is refused
// (Conflict) and nothing is written. The record gets the next generation. A new static
// directory must be one who may read (checkStaticSite). A container whose image reference is
// unchanged keeps the image it runs (ImageID); one whose reference changed remembers the image
// it ran (PreviousImageID).
func (d *Daemon) putApp(ctx context.Context, app store.App, who peer) (api.AppStatus, error) {
	now := time.Now().UTC()
	err := d.store.Update(ctx, func(tx *store.Tx) error {
		next, err := d.prepareChange(tx, app, who, now, false)
		if err != nil {
			return err
		}
		return tx.Put(next)
	})
	if err != nil {
		return api.AppStatus{}, err
	}
	for _, c := range app.Containers {
		d.sent.claim(c.Image) // an image sent for it: the record keeps it now
	}
	d.triggerApp(app.Name, "app "+app.Name+" changed")
	return d.appStatus(app.Name)
}

// planChange checks a change as putApp does and says what it would do, changing nothing: the
// steps the next pass would plan for the app with this record.
func (d *Daemon) planChange(ctx context.Context, app store.App, who peer) (api.PlannedChange, error) {
	var next store.App
	err := d.store.Update(ctx, func(tx *store.Tx) (err error) {
		if next, err = d.prepareChange(tx, app, who, time.Now().UTC(), true); err != nil {
			return err
		}
		return next.Validate()
	})
	if err != nil {
		return api.PlannedChange{}, err
	}
	d.passMu.Lock()
	defer d.passMu.Unlock()
	obs, _ := d.parts.runner.Observe(ctx, []store.App{next})
	plan := reconcile.MakePlan(reconcile.Desired{Apps: []store.App{next}}, obs)
	for _, p := range plan.Apps {
		if p.App == app.Name {
			return api.PlannedChange{Plan: reconcile.Plan{Apps: []reconcile.AppPlan{p}}.String()}, nil
		}
	}
	return api.PlannedChange{Plan: reconcile.Plan{}.String()}, nil
}

// prepareChange checks a change of app against its record in tx (the generation it is based
// on, new static directories) and returns the record to store: the next generation, image IDs
// carried over. A damaged record is quarantined unless dryRun.
func (d *Daemon) prepareChange(tx *store.Tx, app store.App, who peer, now time.Time, dryRun bool) (store.App, error) {
	old, err := tx.Get(app.Name)
	var h *store.Held
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNotFound):
		old = store.App{Created: now}
	case errors.As(err, &h) && h.Damaged:
		// A new record replaces a damaged one; the damaged record is kept aside.
		if h.Record && !dryRun {
			if _, err := tx.Quarantine(app.Name, now); err != nil {
				return app, err
			}
		}
		old = store.App{Created: now}
	default:
		return app, err
	}
	if app.Generation != old.Generation {
		return app, errkind.Conflictf("daemon: app %q changed since it was read (generation %d, now %d): read it again", app.Name, app.Generation, old.Generation)
	}
	for _, c := range app.Containers {
		prev, _ := old.Container(c.Name)
		if c.Static != "" && c.Static != prev.Static {
			if err := checkStaticSite(c.Static, who, []string{d.cfg.StateDir}); err != nil {
				return app, err
			}
		}
	}
	app.Containers = carryImages(old, app.Containers)
	app.Generation = old.Generation + 1
	app.Created, app.Updated = old.Created, now
	return app, nil
}

// carryImages returns containers with what the old record knew of their images: a container
// whose reference is unchanged keeps the image it runs (and its source, when the change names
// none); one whose reference changed keeps the image it ran as its previous one. An image sent
// to the daemon is its own resolved ID. IDs the change sets are kept. An update's trial goes on
// through a change that keeps the container's image; a trial the change names is dropped (only
// an update starts one).
func carryImages(old store.App, containers []store.Container) []store.Container {
	out := slices.Clone(containers)
	for i := range out {
		c := &out[i]
		c.Trial = nil // only an update starts one
		prev, existed := old.Container(c.Name)
		switch {
		case !existed || c.Static != "":
		case c.Image == prev.Image:
			if c.ImageID == "" {
				c.ImageID, c.PreviousImageID, c.PreviousImage = prev.ImageID, prev.PreviousImageID, prev.PreviousImage
				c.Digest, c.PreviousDigest, c.RejectedImageID = prev.Digest, prev.PreviousDigest, prev.RejectedImageID
				c.RejectedReason, c.Trial = prev.RejectedReason, prev.Trial
			}
			if c.Source == "" {
				c.Source = prev.Source
			}
		case c.PreviousImageID == "" && prev.ImageID != "":
			c.PreviousImageID, c.PreviousDigest, c.PreviousImage = prev.ImageID, prev.Digest, prev.Image
		}
		if c.ImageID == "" && UploadedImage(c.Image) {
			c.ImageID = c.Image
		}
	}
	return out
}

func (d *Daemon) setStopped(ctx context.Context, name string, stopped bool) (api.AppStatus, error) {
	err := d.store.Update(ctx, func(tx *store.Tx) error {
		app, err := tx.Get(name)
		if err != nil {
			return err
		}
		app.Stopped = stopped
		app.Generation++
		app.Updated = time.Now().UTC()
		return tx.Put(app)
	})
	if err != nil {
		return api.AppStatus{}, err
	}
	d.triggerApp(name, "app "+name+" started/stopped")
	return d.appStatus(name)
}

// removeApp deletes an app's record (or the damaged copies of a damaged one), then runs a pass
// at once, which withdraws its DNS records and onion service and removes its units and network.
// It fails, saying what, when anything of the app is still observed after that pass. The onion
// key is kept unless purgeKey; it is purged only after the pass, so a crash in between keeps the
// key (never loses it early). An app with no record but leftovers (a key, a unit...) can still be
// removed. Once nothing of the app remains, its certificate is dropped and the images no app
// uses any more are pruned.
func (d *Daemon) removeApp(ctx context.Context, name string, purgeKey bool) error {
	if err := names.App(name); err != nil {
		return err
	}
	var existed bool
	err := d.store.Update(ctx, func(tx *store.Tx) (err error) {
		existed, err = tx.Delete(name)
		return err
	})
	if err != nil {
		return err
	}
	_, keyErr := d.parts.keys.Load(name)
	hasKey := keyErr == nil
	before := d.remains(ctx, name)
	if !existed && !(purgeKey && hasKey) && len(before) == 0 {
		return errkind.NotFoundf("daemon: app %q: no such app", name)
	}
	d.pending.add(name)
	res := d.runPass(ctx, false) // its own result: another pass may run as soon as this one ends
	var failed error
	if r, ok := res.Apps[name]; ok && r.Err != nil {
		failed = r.Err
	}
	left := d.remains(ctx, name)
	if onionErr := res.OnionErr; slices.Contains(before, "onion service") && onionErr != nil && !slices.Contains(left, "onion service") {
		left = append(left, "onion service") // tor has not confirmed its removal
		failed = cmp.Or(failed, onionErr)
	}
	if len(left) > 0 {
		msg := fmt.Sprintf("daemon: rm %s: its %s remain after the removal (the next passes retry)", name, strings.Join(left, ", "))
		if failed != nil {
			return fmt.Errorf("%s: %w", msg, failed)
		}
		return errors.New(msg)
	}
	if purgeKey && hasKey {
		if err := d.store.Update(ctx, func(*store.Tx) error { return d.parts.keys.Remove(name) }); err != nil {
			return err
		}
	}
	d.forgetTLS(name)
	d.pruneAfter(ctx, name, "rm")
	return nil
}

// remains lists what is observed of an app now (what a removal must leave nothing of).
func (d *Daemon) remains(ctx context.Context, name string) []string {
	d.passMu.Lock()
	defer d.passMu.Unlock()
	obs, err := d.parts.runner.Observe(ctx, nil)
	var left []string
	if present, _ := obs.AppUnits(name); present || obs.NetUnits[name] {
		left = append(left, "unit")
	}
	if obs.Networks[name] {
		left = append(left, "network")
	}
	if obs.Onions[name] {
		left = append(left, "onion service")
	}
	if obs.DNS[name] {
		left = append(left, "DNS record")
	}
	if err != nil && len(left) == 0 {
		left = append(left, "unknown parts ("+err.Error()+")")
	}
	return left
}

// wait blocks until the app, at generation gen or later (0: any), reaches the wanted state or
// fails, or the timeout passes. The state of an earlier generation is never reported: until a
// pass has applied gen, the app is on its way.
func (d *Daemon) wait(ctx context.Context, name, what string, gen int64, timeout time.Duration) (api.AppStatus, error) {
	if what != api.WaitRunning && what != api.WaitPublished {
		return api.AppStatus{}, errkind.BadInputf("daemon: wait for %q: expected running or published", what)
	}
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
		case st.State == api.StateDamaged || st.State == api.StateUnreadable:
			return st, fmt.Errorf("daemon: app %q is %s: %s", name, st.State, st.LastError)
		case st.ObservedGeneration < gen || st.ObservedGeneration == 0:
			// Not applied yet: its state is still that of an earlier generation.
		case st.State == api.StateFailed:
			return st, fmt.Errorf("daemon: app %q failed: %s", name, st.LastError)
		case what == api.WaitRunning:
			done = st.State == api.StateRunning
		case what == api.WaitPublished:
			done = st.State == api.StateRunning && (!st.App.WantsOnion() || st.Onion.Published)
		}
		if done {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("daemon: app %q is not %s after %v (state %s%s): %w", name, what, timeout, st.State, lastErr(st), ctx.Err())
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

// logs writes an app's journal (one container's when container is not ""); a container the
// app's record does not have is bad input.
func (d *Daemon) logs(ctx context.Context, name, container string, follow bool, w io.Writer) error {
	app, err := d.store.Get(name)
	if err != nil && !errors.As(err, new(*store.Held)) {
		return err
	}
	if err == nil && container != "" {
		if _, ok := app.Container(container); !ok {
			return errkind.BadInputf("daemon: app %q has no container %q (it has %s)", name, container, strings.Join(app.ContainerNames(), ", "))
		}
	}
	if container != "" && !names.IsApp(container) {
		return errkind.BadInputf("daemon: %q is not a container name", container)
	}
	return d.parts.systemd.Logs(ctx, name, container, follow, w)
}

func (d *Daemon) dnsStatus() api.DNSStatus {
	out := api.DNSStatus{Mode: d.cfg.DNS.Mode, Zone: d.cfg.DNS.Zone, Records: []api.DNSRecord{}}
	pub := d.parts.publisher()
	if pub == nil {
		return out
	}
	st := pub.Status()
	out.Server = strings.Join(st.Servers, ", ")
	out.Serial, out.Pending, out.Error, out.Damaged = st.Serial, st.Pending, st.LastError, st.Damaged
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

// logDamagedState tells the log of the state files found damaged at start (the DNS zone or
// ledger, network leases): each was kept aside and the part carries on without it.
func (d *Daemon) logDamagedState() {
	if pub := d.parts.publisher(); pub != nil {
		if damaged := pub.Status().Damaged; damaged != "" {
			d.log.Warn("dns: damaged state kept aside", "what", damaged)
		}
	}
	leases, err := d.parts.net.DamagedLeases()
	if err != nil {
		d.log.Warn("network: damaged leases", "err", err)
	}
	for _, l := range leases {
		d.log.Warn("network: damaged lease", "app", l.App, "file", l.File, "set_aside", l.Quarantined)
	}
}
