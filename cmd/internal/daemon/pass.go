package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/reconcile"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/onion"
	"github.com/onionpod/onionpod/pods"
)

// startServices starts what runs beside the loop: the managed tor, the Tor control connection,
// the DNS server or updater, and the address watch. Each reports back through a trigger. The
// goroutines are in wg: they end with ctx, and Run waits for them before closing the parts.
func (d *Daemon) startServices(ctx context.Context, wg *sync.WaitGroup) error {
	p := d.parts
	if d.cfg.Tor.Mode == "managed" {
		if err := p.ensureManagedTor(ctx, d.cfg); err != nil {
			return fmt.Errorf("daemon: managed tor: %w", err)
		}
	}
	wg.Go(func() {
		if err := p.tor.Run(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("tor control connection stopped", "err", err)
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-p.tor.Changes():
				d.refresh(ctx, false)
			}
		}
	})
	switch {
	case p.dnsSrv != nil:
		if err := p.dnsSrv.Start(ctx); err != nil {
			return fmt.Errorf("daemon: dns: %w", err)
		}
		p.closers = append(p.closers, p.dnsSrv.Close)
	case p.dnsUpd != nil:
		wg.Go(func() { p.dnsUpd.Run(ctx) })
	}
	if err := d.startTLS(ctx); err != nil {
		return err
	}
	wg.Go(func() {
		for change := range p.net.Watch(ctx) {
			d.log.Info("address changed", "app", change.App, "lan", change.LAN, "ipv4", change.IPv4)
			// The change is the app's own (each app's is reported, the latest kept): a pass
			// that looks afresh at it, the others' observations kept from the last pass.
			d.triggerApp(change.App, "address of "+change.App+" changed")
		}
	})
	return nil
}

// pass runs one reconcile pass: desired state from the store, observed state from the adapters,
// a plan, its application, and the apps' statuses; it returns the pass's result (the zero Result
// when no pass ran). When the store cannot be listed at all, no pass runs (nothing is known of
// any app: nothing may be withdrawn).
func (d *Daemon) pass(ctx context.Context) reconcile.Result { return d.runPass(ctx, true) }

// runPass runs a pass of what was asked for since the last one began (pendingApps), of every
// app with all. It returns the zero Result when nothing was asked.
func (d *Daemon) runPass(ctx context.Context, all bool) reconcile.Result {
	d.passMu.Lock()
	defer d.passMu.Unlock()
	scope, run := d.pending.take(all)
	if !run {
		return reconcile.Result{}
	}
	start := time.Now()
	p := d.parts
	if err := p.netns.stillHeld(); err != nil {
		// Attaching would make second namespaces for pods that run in theirs.
		d.log.Error("no pass", "err", err)
		d.abort(err)
		return reconcile.Result{}
	}
	desired, err := d.desired(ctx, start)
	if err != nil {
		d.log.Error("reading desired state: no pass", "err", err)
		return reconcile.Result{}
	}
	wantV4 := false
	for _, a := range desired.Apps {
		wantV4 = wantV4 || (a.IPv4 && !a.Stopped)
	}
	if wantV4 {
		d.runDHCPDaemon(ctx, true) // before the attaches that need it
	}
	p.tls.wantCerts(desired.Apps)
	tObserve := time.Now()
	obs, obsErr := p.runner.ObservePass(ctx, desired.Apps, scope)
	observeTook := time.Since(tObserve)
	if obsErr != nil {
		d.log.Warn("observing", "err", obsErr)
	}
	plan := reconcile.MakePlan(desired, obs)
	if !plan.Empty() {
		d.log.Info("reconciling", "plan", plan.String())
	}
	tApply := time.Now()
	res := p.runner.Apply(ctx, plan, desired, obs)
	applyTook := time.Since(tApply)
	if !wantV4 && !d.anyIPv4Attached(ctx) {
		d.runDHCPDaemon(ctx, false) // after the detaches: they release their leases through it
	}
	d.noteStarts(res)
	d.retries.record(desired.Apps, res, time.Now())
	for name, r := range res.Apps {
		switch b := d.retries[name]; {
		case r.Err == nil || r.Retrying:
		case b != nil:
			d.log.Warn("app failed", "app", name, "err", r.Err, "failures", b.failures, "retry_in", retryDelay(b.failures))
		default:
			d.log.Warn("app failed", "app", name, "err", r.Err) // a removal: the next pass retries
		}
	}
	d.lastResult, d.lastWanted = res, desired
	d.syncFronts(ctx, desired.Apps, res)
	d.syncEdge(ctx, desired.Apps, res)
	d.obs.observePass(time.Since(start))
	tStatus := time.Now()
	d.publishStatuses(ctx, desired, res, d.unitsAfter(ctx, plan, desired.Apps, obs.UnitStates))
	took := api.PassTimes{Ended: time.Now(), Desired: tObserve.Sub(start), Observe: observeTook, Apply: applyTook,
		Status: time.Since(tStatus), Apps: len(desired.Apps), Changed: plan.Changed(), Looked: obs.Looked}
	took.Took = took.Ended.Sub(start)
	d.notePass(took)
	if p.systemd.ReloadOwed() { // this pass removed units, or an earlier one did: tidy once quiet
		select {
		case d.tidyCh <- struct{}{}:
		default:
		}
	}
	if !plan.Empty() {
		d.log.Info("pass done", "took", took.Took.Round(time.Millisecond), "desired", took.Desired.Round(time.Millisecond),
			"observe", observeTook.Round(time.Millisecond), "apply", applyTook.Round(time.Millisecond),
			"status", took.Status.Round(time.Millisecond), "apps", took.Apps, "changed", took.Changed, "looked_at", took.Looked)
	}
	return res
}

// unitsAfter are the containers' units after the plan was applied: as observe listed them
// (listed), those of the apps the plan changed asked of systemd again. Nil (list them all) when
// observe could not list them or systemd does not answer now. The other apps' units are as an
// idle pass shows them: as listed at the start of the pass.
func (d *Daemon) unitsAfter(ctx context.Context, plan reconcile.Plan, apps []store.App, listed map[pods.PodRef]pods.Status) map[pods.PodRef]pods.Status {
	if listed == nil || plan.Empty() {
		return listed // nothing was started or stopped since they were listed
	}
	changed := map[string]bool{}
	for _, p := range plan.Apps {
		if len(p.Steps) > 0 {
			changed[p.App] = true
		}
	}
	var refs []pods.PodRef
	for _, app := range apps {
		if changed[app.Name] {
			for _, c := range app.Containers {
				refs = append(refs, pods.PodRef{App: app.Name, Container: c.Name})
			}
		}
	}
	now, err := d.parts.systemd.PodStatesOf(ctx, refs)
	if err != nil {
		return nil
	}
	out := make(map[pods.PodRef]pods.Status, len(listed)+len(now))
	for ref, st := range listed {
		if !changed[ref.App] {
			out[ref] = st
		}
	}
	maps.Copy(out, now)
	return out
}

// notePass keeps the last pass's times, and the last changing pass's, for the daemon's status.
func (d *Daemon) notePass(t api.PassTimes) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.passTimes = t
	if t.Changed > 0 {
		d.changeTimes = t
	}
}

// desired reads the store: the apps, the held ones (a damaged record is quarantined: kept aside
// for the user, and reported), and the failing apps whose retry is not due yet.
func (d *Daemon) desired(ctx context.Context, now time.Time) (reconcile.Desired, error) {
	apps, held, err := d.store.List()
	if err != nil {
		return reconcile.Desired{}, err
	}
	out := reconcile.Desired{Apps: apps, Held: map[string]reconcile.Hold{}, Retry: d.retries.due(apps, now)}
	for _, h := range held {
		if h.Damaged && h.Record {
			d.quarantine(ctx, h, now)
		}
		out.Held[h.Name] = reconcile.Hold{Why: heldWhy(h), Last: h.Last}
	}
	for i := range apps {
		d.pinImages(ctx, &apps[i])
	}
	d.holdStopped(out.Apps)
	d.parts.pods.forget(apps)
	copied, err := d.store.Copied()
	if err != nil {
		d.log.Warn("listing the copies of the app records", "err", err)
	}
	for _, a := range apps {
		if err == nil && !copied[a.Name] { // a record of an older onionpod: give it its copy
			if err := d.store.Update(ctx, func(tx *store.Tx) error { return tx.Copy(a.Name) }); err != nil {
				d.log.Warn("copying an app record", "app", a.Name, "err", err)
			}
		}
	}
	return out, nil
}

// pinImages records, in the app's record, the image its containers with a registry reference
// run, once that image is in the store (ImageID): from then on a tag pushed again is not taken
// by itself (an update takes it). It is no change of the app (the same generation): the image is
// the one the reference named when the app asked for it.
func (d *Daemon) pinImages(ctx context.Context, app *store.App) {
	ids := map[string]*pods.Image{}
	for _, c := range app.Containers {
		if c.ImageID == "" && c.Static == "" && RegistryImage(c.Image) {
			if img, err := d.parts.images.Image(c.Image); err == nil {
				ids[c.Name] = img
			}
		}
	}
	if len(ids) == 0 {
		return
	}
	err := d.store.Update(ctx, func(tx *store.Tx) error {
		cur, err := tx.Get(app.Name)
		if err != nil || cur.Generation != app.Generation {
			return err // changed meanwhile: the next pass pins
		}
		for i := range cur.Containers {
			c := &cur.Containers[i]
			if img, ok := ids[c.Name]; ok && c.ImageID == "" {
				c.ImageID, c.Digest = img.Digest, img.RepoDigest
			}
		}
		if err := tx.Put(cur); err != nil {
			return err
		}
		*app = cur
		return nil
	})
	if err != nil {
		d.log.Warn("recording the images an app runs", "app", app.Name, "err", err)
	}
}

// quarantine moves a damaged record aside (keeping it) and says so in the log; the app is held.
func (d *Daemon) quarantine(ctx context.Context, h *store.Held, now time.Time) {
	var copy string
	err := d.store.Update(ctx, func(tx *store.Tx) (err error) {
		copy, err = tx.Quarantine(h.Name, now)
		return err
	})
	if err != nil {
		d.log.Error("app record damaged; moving it aside failed", "app", h.Name, "damage", h.Err, "err", err)
		return
	}
	h.Record, h.Copies = false, append(h.Copies, copy)
	d.log.Error("app record damaged: kept aside; the app is held as it is (its pod, onion service and DNS records stay) until `onionpod run` gives it a new record or `onionpod rm` removes it",
		"app", h.Name, "damage", h.Err, "kept_as", copy)
}

// runDHCPDaemon starts or stops the CNI DHCP daemon, when that changes.
func (d *Daemon) runDHCPDaemon(ctx context.Context, on bool) {
	if d.dhcp != nil && *d.dhcp == on {
		return
	}
	if err := d.parts.ensureDHCPDaemon(ctx, d.cfg, on); err != nil {
		d.log.Error("dhcp daemon", "err", err)
		return
	}
	d.dhcp = &on
}

// anyIPv4Attached reports whether an attached pod still holds a DHCP lease.
func (d *Daemon) anyIPv4Attached(ctx context.Context) bool {
	if d.dhcp != nil && !*d.dhcp {
		return false // already off: nothing could have a lease through it
	}
	apps, err := d.parts.net.Attached(ctx)
	if err != nil {
		return true // unsure: keep it
	}
	for _, app := range apps {
		if res, err := d.parts.net.Addresses(ctx, app); err == nil && res.IPv4.IsValid() {
			return true
		}
	}
	return false
}

// refresh recomputes the statuses from the last pass and the adapters' current reports (tor
// uploaded a descriptor, reconnected...), without changing anything. The statuses stay those of
// the records the last pass applied (their generations). With listUnits the containers' units
// are listed afresh (a health check's verdict changed); without, they are as the last statuses
// had them (tor's report changes no unit, and listing 1000 units' states costs 10-15 ms).
func (d *Daemon) refresh(ctx context.Context, listUnits bool) {
	d.passMu.Lock()
	defer d.passMu.Unlock()
	var units map[pods.PodRef]pods.Status
	if !listUnits {
		units = d.lastUnits
	}
	d.publishStatuses(ctx, d.lastWanted, d.lastResult, units)
}

// publishStatuses builds every app's status from a pass result and what the adapters say now
// (the containers' units as listed in units, or, when nil, as systemd lists them now), and gives
// the health monitor the checks of the running containers.
func (d *Daemon) publishStatuses(ctx context.Context, desired reconcile.Desired, res reconcile.Result, units map[pods.PodRef]pods.Status) {
	p := d.parts
	onions := p.tor.Status()
	var unitsErr error
	if units == nil {
		units, unitsErr = p.systemd.PodStates(ctx)
	}
	d.lastUnits = units // nil when the listing failed: the next refresh lists them
	d.setHealthTargets(desired.Apps, res, units)
	var published map[string][]string // DNS name -> addresses
	if pub := p.publisher(); pub != nil {
		recs := pub.Status().Published
		published = make(map[string][]string, len(recs))
		for _, r := range recs {
			published[r.Name] = append(published[r.Name], r.Addr.String())
		}
	}
	damagedLeases := map[string][]string{} // app -> its damaged lease files, kept for the user
	if leases, err := p.net.DamagedLeases(); err == nil {
		for _, l := range leases {
			damagedLeases[l.App] = append(damagedLeases[l.App], l.File)
		}
	}
	lanIPv6, err := p.net.UplinkHasIPv6()
	if err != nil {
		lanIPv6 = true // unsure: wait for the address rather than print one that does not answer
	}
	next := make(map[string]api.AppStatus, len(desired.Apps)+len(desired.Held))
	for _, app := range desired.Apps {
		st := api.AppStatus{App: app, ObservedGeneration: app.Generation, Updated: time.Now()}
		r := res.Apps[app.Name]
		if r != nil && len(r.Steps) > 0 {
			st.Steps = make([]api.Step, 0, len(r.Steps))
			for _, s := range r.Steps {
				step := api.Step{Name: s.Kind.String(), Duration: s.Duration}
				if s.Err != nil {
					step.Err = s.Err.Error()
				}
				st.Steps = append(st.Steps, step)
			}
		}
		// The pass's own view of the addresses (a change triggers a new pass).
		if r != nil && r.Net.Netns != "" {
			net := r.Net
			st.Network = api.NetStatus{ULA: addrString(net.ULA), LAN: addrString(net.LAN), IPv4: addrString(net.IPv4), MAC: net.MAC.String()}
		}
		st.Containers = d.containerStatuses(app, units)
		if len(st.Containers) > 0 {
			st.Unit = st.Containers[0].Unit
		}
		if unitsErr != nil {
			st.LastError = unitsErr.Error()
		}
		if app.WantsOnion() {
			if r != nil && r.Address != "" {
				st.Onion.Address, st.Onion.Clients = r.Address, r.Clients
			} else if k, err := p.keys.Load(app.Name); err == nil {
				st.Onion.Address = k.Address()
			}
			if o, ok := onions[app.Name]; ok {
				st.Onion.Added, st.Onion.Published, st.Onion.Since = o.Added, o.Uploaded, o.UploadedAt
				st.Onion.Err = o.Err
			}
		}
		if app.Clearnet() {
			st.DNS = dnsRecordOf(app.Name, d.cfg.DNS.Zone, published)
		}
		st.TLS = p.tls.tlsStatus(app)
		st.State, st.LastError = stateOf(app, st, r, res, st.LastError, lanIPv6)
		st.Damaged = damagedLeases[app.Name]
		if b := d.retries[app.Name]; b != nil && st.State == api.StateFailed {
			st.RetryAt = b.next
		}
		next[app.Name] = st
	}
	for name := range desired.Held {
		next[name] = d.heldObserved(ctx, name, units, onions, published)
	}
	nextRetry, _ := d.retries.nextAt(time.Now())
	d.setStatuses(next, nextRetry)
}

// heldObserved is what is observed of a held app (its record cannot be read): its unit, its
// onion service and its DNS record, as they are.
func (d *Daemon) heldObserved(ctx context.Context, name string, units map[pods.PodRef]pods.Status, onions map[string]onion.ServiceStatus, published map[string][]string) api.AppStatus {
	st := api.AppStatus{App: store.App{Name: name}, State: api.StateDamaged, Updated: time.Now()}
	for ref, us := range units {
		if ref.App == name && (st.Unit.Name == "" || ref.Container == name) {
			st.Unit = api.UnitStatus{Name: us.Unit, ActiveState: us.ActiveState, SubState: us.SubState}
		}
	}
	if res, err := d.parts.net.Addresses(ctx, name); err == nil {
		st.Network = api.NetStatus{ULA: addrString(res.ULA), LAN: addrString(res.LAN), IPv4: addrString(res.IPv4), MAC: res.MAC.String()}
	}
	if o, ok := onions[name]; ok {
		st.Onion.Added, st.Onion.Published, st.Onion.Since, st.Onion.Err = o.Added, o.Uploaded, o.UploadedAt, o.Err
	}
	if k, err := d.parts.keys.Load(name); err == nil {
		st.Onion.Address = k.Address()
	}
	st.DNS = dnsRecordOf(name, d.cfg.DNS.Zone, published)
	return st
}

// stateOf decides what the user is told: stopped, failed (a step of the app failed, or a
// container's unit), running (every container's unit active and, with a health check, healthy;
// onion added if wanted, DNS published if it has a LAN address) or starting.
// lanIPv6 says that the LAN advertises an IPv6 prefix (the box's uplink has an address of it): a
// clearnet app is not running before its pod has its LAN address and its name is published, so
// the addresses run and expose print answer.
func stateOf(app store.App, st api.AppStatus, r *reconcile.AppResult, res reconcile.Result, lastErr string, lanIPv6 bool) (string, string) {
	if app.Stopped {
		return api.StateStopped, lastErr
	}
	if r != nil && r.Err != nil {
		return api.StateFailed, r.Err.Error()
	}
	if r != nil && r.Fetching {
		var refs []string
		for _, c := range app.Containers {
			if c.Image != "" {
				refs = append(refs, c.Image)
			}
		}
		return api.StateStarting, "fetching the image " + strings.Join(refs, ", ") + " in the background"
	}
	for _, c := range st.Containers {
		if c.Unit.ActiveState == "failed" {
			if len(st.Containers) == 1 {
				return api.StateFailed, "the pod's unit failed: see onionpod logs " + app.Name
			}
			return api.StateFailed, fmt.Sprintf("the unit of container %s failed: see onionpod logs %s %s", c.Name, app.Name, c.Name)
		}
	}
	healthy, why := containersHealthy(st.Containers)
	if why != "" {
		lastErr = why
	}
	if app.WantsOnion() && st.Onion.Err != "" {
		return api.StateFailed, "onion: " + st.Onion.Err
	}
	if app.Clearnet() && errors.Is(res.DNSErr, dns.ErrRejected) {
		return api.StateFailed, "dns: " + res.DNSErr.Error()
	}
	if app.WantsOnion() && res.OnionErr != nil && !st.Onion.Added {
		lastErr = "onion: " + res.OnionErr.Error()
	}
	if app.Clearnet() && res.DNSErr != nil && !st.DNS.Published {
		lastErr = "dns: " + res.DNSErr.Error()
	}
	running := healthy && len(st.Containers) > 0
	for _, c := range st.Containers {
		running = running && c.Unit.ActiveState == "active" && c.Unit.SubState == "running"
	}
	if app.WantsOnion() && !st.Onion.Added {
		running = false
	}
	if app.Clearnet() && st.Network.LAN != "" && !st.DNS.Published {
		running = false
	}
	if app.Clearnet() && st.Network.LAN == "" && lanIPv6 && running {
		running = false
		lastErr = cmp.Or(lastErr, "waiting for the pod's IPv6 address on the LAN (router advertisement, duplicate address detection)")
	}
	if running {
		return api.StateRunning, lastErr
	}
	return api.StateStarting, lastErr
}

func dnsRecordOf(app, zone string, published map[string][]string) api.DNSRecord {
	name, err := dns.AppName(app, zone)
	if err != nil {
		return api.DNSRecord{}
	}
	addrs := published[name]
	return api.DNSRecord{Name: name, Addresses: addrs, Published: len(addrs) > 0}
}

func addrString(a interface {
	IsValid() bool
	String() string
}) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
