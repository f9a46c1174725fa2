package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/reconcile"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/dns"
)

// startServices starts what runs beside the loop: the managed tor, the Tor control connection,
// the DNS server or updater, and the address watch. Each reports back through a trigger.
func (d *Daemon) startServices(ctx context.Context) error {
	p := d.parts
	if d.cfg.Tor.Mode == "managed" {
		if err := p.ensureManagedTor(ctx, d.cfg); err != nil {
			return fmt.Errorf("daemon: managed tor: %w", err)
		}
	}
	go func() {
		if err := p.tor.Run(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("tor control connection stopped", "err", err)
		}
	}()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-p.tor.Changes():
				d.refresh(ctx)
			}
		}
	}()
	switch {
	case p.dnsSrv != nil:
		if err := p.dnsSrv.Start(ctx); err != nil {
			return fmt.Errorf("daemon: dns: %w", err)
		}
		p.closers = append(p.closers, p.dnsSrv.Close)
	case p.dnsUpd != nil:
		go p.dnsUpd.Run(ctx)
	}
	if err := d.startTLS(ctx); err != nil {
		return err
	}
	go func() {
		for change := range p.net.Watch(ctx) {
			d.log.Info("address changed", "app", change.App, "lan", change.LAN, "ipv4", change.IPv4)
			d.trigger("address of " + change.App + " changed")
		}
	}()
	return nil
}

// pass runs one reconcile pass: desired state from the store, observed state from the adapters,
// a plan, its application, and the apps' statuses.
func (d *Daemon) pass(ctx context.Context) {
	d.passMu.Lock()
	defer d.passMu.Unlock()
	start := time.Now()
	p := d.parts
	desired, listErr := d.store.List()
	if listErr != nil {
		d.log.Error("reading desired state", "err", listErr)
	}
	wantV4 := false
	for _, a := range desired {
		wantV4 = wantV4 || (a.IPv4 && !a.Stopped)
	}
	if wantV4 {
		d.runDHCPDaemon(ctx, true) // before the attaches that need it
	}
	p.tls.wantCerts(desired)
	tObserve := time.Now()
	obs, obsErr := p.runner.Observe(ctx, desired)
	observeTook := time.Since(tObserve)
	if obsErr != nil {
		d.log.Warn("observing", "err", obsErr)
	}
	plan := reconcile.MakePlan(desired, obs)
	if listErr != nil {
		plan = withoutRemovals(plan) // a record we could not read is not a removed app
	}
	if !plan.Empty() {
		d.log.Info("reconciling", "plan", plan.String())
	}
	tApply := time.Now()
	res := p.runner.Apply(ctx, plan, desired, obs)
	applyTook := time.Since(tApply)
	if !wantV4 && !d.anyIPv4Attached(ctx) {
		d.runDHCPDaemon(ctx, false) // after the detaches: they release their leases through it
	}
	d.lastResult = res
	d.syncFronts(ctx, desired, res)
	d.syncEdge(ctx, desired, res)
	tStatus := time.Now()
	d.publishStatuses(ctx, desired, res)
	if !plan.Empty() {
		d.log.Info("pass done", "took", time.Since(start).Round(time.Millisecond),
			"observe", observeTook.Round(time.Millisecond), "apply", applyTook.Round(time.Millisecond),
			"status", time.Since(tStatus).Round(time.Millisecond))
	}
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
		if res, err := d.parts.net.Addresses(app); err == nil && res.IPv4.IsValid() {
			return true
		}
	}
	return false
}

func withoutRemovals(p reconcile.Plan) reconcile.Plan {
	var out reconcile.Plan
	for _, a := range p.Apps {
		if !a.Removal {
			out.Apps = append(out.Apps, a)
		}
	}
	return out
}

// refresh recomputes the statuses from the last pass and the adapters' current reports (tor
// uploaded a descriptor, reconnected...), without changing anything.
func (d *Daemon) refresh(ctx context.Context) {
	d.passMu.Lock()
	defer d.passMu.Unlock()
	desired, err := d.store.List()
	if err != nil {
		return
	}
	d.publishStatuses(ctx, desired, d.lastResult)
}

// publishStatuses builds every app's status from a pass result and what the adapters say now.
func (d *Daemon) publishStatuses(ctx context.Context, desired []store.App, res reconcile.Result) {
	p := d.parts
	onions := p.tor.Status()
	units, unitsErr := p.systemd.States(ctx)
	var published map[string][]string // DNS name -> addresses
	if pub := p.publisher(); pub != nil {
		published = map[string][]string{}
		for _, r := range pub.Status().Published {
			published[r.Name] = append(published[r.Name], r.Addr.String())
		}
	}
	next := make(map[string]api.AppStatus, len(desired))
	for _, app := range desired {
		st := api.AppStatus{App: app, Updated: time.Now()}
		r := res.Apps[app.Name]
		if r != nil {
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
		if us, ok := units[app.Name]; ok {
			st.Unit = api.UnitStatus{Name: us.Unit, ActiveState: us.ActiveState, SubState: us.SubState}
		} else if unitsErr != nil {
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
		st.State, st.LastError = stateOf(app, st, r, res, st.LastError)
		next[app.Name] = st
	}
	d.setStatuses(next)
}

// stateOf decides what the user is told: stopped, failed (a step of the app failed), running
// (unit active, onion added if wanted, DNS published if it has a LAN address) or starting.
func stateOf(app store.App, st api.AppStatus, r *reconcile.AppResult, res reconcile.Result, lastErr string) (string, string) {
	if app.Stopped {
		return api.StateStopped, lastErr
	}
	if r != nil && r.Err != nil {
		return api.StateFailed, r.Err.Error()
	}
	if st.Unit.ActiveState == "failed" {
		return api.StateFailed, "the pod's unit failed: see onionpod logs " + app.Name
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
	running := st.Unit.ActiveState == "active" && st.Unit.SubState == "running"
	if app.WantsOnion() && !st.Onion.Added {
		running = false
	}
	if app.Clearnet() && st.Network.LAN != "" && !st.DNS.Published {
		running = false
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
