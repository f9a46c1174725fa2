package reconcile

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/front"
	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/onion"
	"github.com/onionpod/onionpod/pods"
)

// ErrImageMissing is what Pods.Units returns when the app's image is not cached.
var ErrImageMissing = errors.New("image not cached")

// ErrFetching is what Pods.Fetch returns while the app's image is fetched in the background:
// the app waits (its other steps come once the image is there), and the pass goes on.
var ErrFetching = errors.New("image being fetched")

// Runner carries out plans against the adapters.
type Runner struct {
	Keys    KeyStore
	Network Network
	Pods    Pods
	Units   Units
	Systemd UnitObserver
	Onions  Onions
	DNS     Publisher // nil: no DNS publishing
	Zone    string
	// Fronts reports whether an app is served by its HTTPS front (nil: none is): the pod's
	// firewall then sends the LAN's :443 and :80 to the front (NetAttachment).
	Fronts func(store.App) bool
	// Parallel bounds how many apps converge (and are observed) at once (default 4).
	Parallel int
	// Settle returns a context for a look at many apps that writes none of what it looks at
	// (nil: ctx itself): the daemon's reads the file and address watches' queues once, and the
	// adapters then answer from what was read by then (dirwatch.Settled, network's Settled).
	// Observe looks in one; Apply loads the keys it found in place (no EnsureKey step) in one.
	Settle func(ctx context.Context) context.Context

	seenMu sync.Mutex
	seen   map[string]seenApp // each app's own observation by the last ObservePass
	// states are the container units' states as the last ObservePass had them (nil: none
	// kept), relist the apps whose units Apply worked on since (see podStates).
	states map[pods.PodRef]pods.Status
	relist map[string]bool
}

// settle is Settle(ctx), or ctx without one.
func (r *Runner) settle(ctx context.Context) context.Context {
	if r.Settle == nil {
		return ctx
	}
	return r.Settle(ctx)
}

func (r *Runner) parallel() int {
	if r.Parallel <= 0 {
		return 4
	}
	return r.Parallel
}

// StepResult is one step as it ran.
type StepResult struct {
	Kind     StepKind
	Duration time.Duration
	Err      error
}

// AppResult is how one app's steps went.
type AppResult struct {
	App     string
	Steps   []StepResult
	Err     error          // the first failed step's error
	Net     network.Result // where the pod is (when attached)
	Address string         // the .onion address (when it has a key)
	Clients int            // v3 client-auth keys of its onion service
	// Retrying: the app waits to retry after a failure (Err is that failure); nothing ran.
	Retrying bool
	// Fetching: the app's image is being fetched in the background; its later steps wait.
	Fetching bool
	key      *onion.Key
}

// Result is a whole pass.
type Result struct {
	Apps     map[string]*AppResult
	OnionErr error // the declarative Set of onion services failed as a whole
	DNSErr   error // the declarative Set of DNS records failed as a whole
}

// Apply runs plan for the desired apps: per-app creation steps (several apps at once, each app's
// steps in order, one app's failure never blocking another), then the onion services and DNS
// records of every app (declarative sets, which also withdraw those of stopped and removed apps,
// and keep those of held apps as they are), then the removals of leftover units and networks.
func (r *Runner) Apply(ctx context.Context, plan Plan, d Desired, obs Observed) Result {
	res := Result{Apps: map[string]*AppResult{}}
	desired := d.Apps
	apps := map[string]store.App{}
	for _, a := range desired {
		apps[a.Name] = a
	}
	var creations, removals []AppPlan
	for _, p := range plan.Apps {
		res.Apps[p.App] = &AppResult{App: p.App}
		switch {
		case p.Hold != "":
		case p.Retry != nil:
			res.Apps[p.App].Retrying, res.Apps[p.App].Err = true, errors.New(p.Retry.Err)
			res.Apps[p.App].Net = obs.Addresses[p.App]
		case p.Removal:
			removals = append(removals, p)
		default:
			creations = append(creations, p)
		}
	}

	// 0. The changed units of apps whose image and network are in place, written before any
	// is started: a changed unit systemd holds needs a daemon-reload (2 s with 1000 apps), and
	// one covers every file written before it (an upgrade that changes every app's units).
	r.eachApp(len(creations), func(i int) {
		r.writeAhead(ctx, apps[creations[i].App], creations[i], obs)
	})

	// 1. key, image, network, unit: per app, in order.
	keys := r.settle(ctx) // the keys observe found in place, looked at once for all
	r.eachApp(len(creations), func(i int) {
		p := creations[i]
		r.converge(ctx, keys, apps[p.App], p, obs, res.Apps[p.App])
	})

	// 2. onion services and DNS records of every app whose pod is in place, their clients looked
	// at once for all (after step 1's writes).
	services, serviceErrs := r.onionServices(r.settle(ctx), desired, res.Apps)
	for app, err := range serviceErrs {
		res.Apps[app].record(AddOnion, 0, err)
	}
	services = append(services, r.heldServices(ctx, d.Held, obs)...)
	start := time.Now()
	res.OnionErr = r.Onions.Set(ctx, services)
	onionTime := time.Since(start)
	// The sets' errors are the pass's, not an app's: tor down is transient (the Manager applies
	// the set when it is back) and per-service failures are in the Manager's status.
	for _, s := range services {
		res.Apps[s.App].note(AddOnion, onionTime, res.OnionErr)
	}
	if r.DNS != nil {
		records := append(r.records(desired, res.Apps), r.heldRecords(d.Held)...)
		start = time.Now()
		res.DNSErr = r.DNS.Set(ctx, records)
		dnsTime := time.Since(start)
		for _, app := range appsOf(records, r.Zone) {
			if a, ok := res.Apps[app]; ok {
				a.note(PublishDNS, dnsTime, res.DNSErr)
			}
		}
	}

	// 3. leftovers of removed apps: units, then networks.
	for _, p := range removals {
		r.remove(ctx, p, res.Apps[p.App])
	}

	// What was done to an app (or failed, or waits) is not what the last pass observed of it.
	var touched []string
	for _, p := range plan.Apps {
		if a := res.Apps[p.App]; len(p.Steps) > 0 || p.Removal || p.Retry != nil || a.failed() || a.Fetching {
			touched = append(touched, p.App)
		}
	}
	r.forgetSeen(touched)
	return res
}

// heldServices are the onion services of held apps, as their last good record described them
// (its key, ports and clients, to its pod's address): kept as they are. A held app with no
// good record, no key or no network gets none: nothing is created for a held app.
func (r *Runner) heldServices(ctx context.Context, held map[string]Hold, obs Observed) []onion.Service {
	var apps []store.App
	results := map[string]*AppResult{}
	for name, h := range held {
		if h.Last == nil || !obs.Keys[name] || !obs.Networks[name] {
			continue
		}
		net, err := r.Network.Addresses(ctx, name)
		if err != nil {
			continue
		}
		key, created, err := r.Keys.EnsureIn(ctx, name)
		if err != nil || created {
			continue
		}
		apps = append(apps, *h.Last)
		results[name] = &AppResult{App: name, Net: net, key: key}
	}
	services, _ := r.onionServices(ctx, apps, results)
	return services
}

// heldRecords are the published DNS records of held apps: kept as they are.
func (r *Runner) heldRecords(held map[string]Hold) []dns.Record {
	if len(held) == 0 {
		return nil
	}
	var out []dns.Record
	for _, rec := range r.DNS.Status().Published {
		if app, ok := appOf(rec, r.Zone); ok && held[app].Why != "" {
			out = append(out, rec)
		}
	}
	return out
}

func (a *AppResult) record(kind StepKind, d time.Duration, err error) {
	a.Steps = append(a.Steps, StepResult{Kind: kind, Duration: d, Err: err})
	if err != nil && a.Err == nil {
		a.Err = err
	}
}

// note records a step whose error is not the app's own failure.
func (a *AppResult) note(kind StepKind, d time.Duration, err error) {
	a.Steps = append(a.Steps, StepResult{Kind: kind, Duration: d, Err: err})
}

// failed reports whether a step of this app failed before onion/DNS.
func (a *AppResult) failed() bool { return a.Err != nil }

// converge runs an app's per-app creation steps in order; the first failure stops the app's steps.
// keys is the settled look its key is loaded in when the plan has no EnsureKey step (the key was
// found in place).
func (r *Runner) converge(ctx, keys context.Context, app store.App, p AppPlan, obs Observed, out *AppResult) {
	out.Net = obs.Addresses[app.Name]
	if app.Stopped {
		r.stopApp(ctx, app, p, out)
		return
	}
	// The key is needed for the address even when it exists; Ensure never replaces a key.
	if app.WantsOnion() {
		start := time.Now()
		keyCtx := keys
		if planned(p, EnsureKey) {
			keyCtx = ctx // made now, or found since the observation: looked at afresh
		}
		key, _, err := r.Keys.EnsureIn(keyCtx, app.Name)
		if err != nil {
			out.record(EnsureKey, time.Since(start), err)
			return
		}
		out.Address, out.key = key.Address(), key
		if planned(p, EnsureKey) {
			out.record(EnsureKey, time.Since(start), nil)
		}
	}
	if planned(p, EnsureImage) {
		start := time.Now()
		err := r.Pods.Fetch(ctx, app)
		if errors.Is(err, ErrFetching) {
			out.Fetching = true
			out.note(EnsureImage, time.Since(start), nil)
			return
		}
		if err != nil {
			out.record(EnsureImage, time.Since(start), err)
			return
		}
		out.record(EnsureImage, time.Since(start), nil)
	}
	start := time.Now()
	var net network.Result
	var err error
	if planned(p, AttachNetwork) {
		loaded := r.loadAhead(ctx, app, p, obs)
		net, err = r.Network.Attach(ctx, NetAttachment(app, r.front(app)))
		loaded()
		if err != nil {
			out.record(AttachNetwork, time.Since(start), err)
			return
		}
		out.record(AttachNetwork, time.Since(start), nil)
	} else if planned(p, StartUnit) {
		// A pod starts only on a namespace Attach has looked at: a daemon killed mid-attach
		// leaves a lease and a named namespace without its links, which the pod's network unit
		// (it skips a named namespace) would not mend. Attach keeps a finished attach as it is
		// and makes a half-made one again.
		if net, err = r.Network.Attach(ctx, NetAttachment(app, r.front(app))); err != nil {
			out.record(AttachNetwork, time.Since(start), err)
			return
		}
	} else if observed, ok := obs.Addresses[app.Name]; ok {
		net = observed
	} else if net, err = r.Network.Addresses(ctx, app.Name); err != nil {
		out.record(AttachNetwork, time.Since(start), err)
		return
	}
	out.Net = net
	if planned(p, WriteUnit) || planned(p, StartUnit) {
		start := time.Now()
		units, err := r.Pods.Units(ctx, app, net.Netns)
		if err == nil {
			err = r.Units.ApplyApp(ctx, app.Name, units)
		}
		if err != nil {
			out.record(StartUnit, time.Since(start), err)
			return
		}
		out.record(StartUnit, time.Since(start), nil)
	}
}

// writeAhead writes the changed units of an app whose image and network are in place (its
// converge then starts them); an error is left for the converge to meet and report.
func (r *Runner) writeAhead(ctx context.Context, app store.App, p AppPlan, obs Observed) {
	net, ok := obs.Addresses[app.Name]
	if app.Stopped || !planned(p, WriteUnit) || planned(p, EnsureImage) || planned(p, AttachNetwork) || !ok || net.Netns == "" {
		return
	}
	if units, err := r.Pods.Units(ctx, app, net.Netns); err == nil {
		_ = r.Units.WriteApp(app.Name, units)
	}
}

// loadAhead has a new app's units written and loaded by systemd while its network is attached
// from nothing (the path its namespace will have is known): systemd reads its unit directories
// for a unit it has not loaded (20-40 ms beside 1000 apps' unit files) beside the attach, and the
// start then finds them loaded. wait waits for it; an error is left for ApplyApp to meet and
// report. Nothing is done for an app whose network or units exist (the attach may keep an
// earlier path; writeAhead and ApplyApp see to changed units).
func (r *Runner) loadAhead(ctx context.Context, app store.App, p AppPlan, obs Observed) (wait func()) {
	if !planned(p, StartUnit) || obs.Networks[app.Name] || anyUnit(app, obs) {
		return func() {}
	}
	units, err := r.Pods.Units(ctx, app, r.Network.PodNetns(app.Name))
	if err != nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Units.LoadApp(ctx, app.Name, units)
	}()
	return func() { <-done }
}

// anyUnit reports whether a container of app has a unit file.
func anyUnit(app store.App, obs Observed) bool {
	for _, c := range app.Containers {
		if obs.Units[UnitKey(app.Name, c.Name)].Present {
			return true
		}
	}
	return false
}

// stopApp stops a stopped app's pod; its onion service and records go with the declarative sets.
func (r *Runner) stopApp(ctx context.Context, app store.App, p AppPlan, out *AppResult) {
	if !planned(p, StopUnit) {
		return
	}
	start := time.Now()
	err := r.Units.Stop(ctx, app.Name)
	out.record(StopUnit, time.Since(start), err)
}

func (r *Runner) remove(ctx context.Context, p AppPlan, out *AppResult) {
	for _, s := range p.Steps {
		start := time.Now()
		var err error
		switch s.Kind {
		case RemoveUnit:
			err = r.Units.Remove(ctx, p.App)
		case DetachNetwork:
			err = r.Network.Detach(ctx, p.App)
		default:
			continue // DNS and onion went with the sets; stopping is part of removing the unit
		}
		out.record(s.Kind, time.Since(start), err)
		if err != nil {
			return
		}
	}
}

// NetAttachment is what app asks of the network: the daemon's attach and the boot-time net-up
// ask the same. With front (the app has an HTTPS front), the LAN's :443 and :80 go to the
// front's ports instead of the app's (the .onion, from the host, still reaches the app).
func NetAttachment(app store.App, withFront bool) network.Attachment {
	a := network.Attachment{App: app.Name, OnionOnly: app.OnionOnly, IPv4: app.IPv4}
	for _, p := range app.Ports {
		if withFront && (p.Public == 80 || p.Public == 443) {
			continue
		}
		a.Ports = append(a.Ports, network.PortMap{Public: p.Public, Target: p.Target})
	}
	if withFront {
		a.Ports = append(a.Ports, network.PortMap{Public: 80, Target: front.HTTPPort},
			network.PortMap{Public: 443, Target: front.TLSPort})
	}
	return a
}

func (r *Runner) front(app store.App) bool { return r.Fronts != nil && r.Fronts(app) }

func planned(p AppPlan, kind StepKind) bool {
	for _, s := range p.Steps {
		if s.Kind == kind {
			return true
		}
	}
	return false
}

// onionServices are the services of running apps that want one and whose pod is in place.
func (r *Runner) onionServices(ctx context.Context, desired []store.App, results map[string]*AppResult) ([]onion.Service, map[string]error) {
	var services []onion.Service
	errs := map[string]error{}
	for _, app := range desired {
		res := results[app.Name]
		if app.Stopped || !app.WantsOnion() || res == nil || res.failed() || !res.Net.ULA.IsValid() || res.key == nil {
			continue
		}
		key := res.key
		clients, err := r.Keys.ClientsIn(ctx, app.Name)
		if err != nil {
			errs[app.Name] = err
			continue
		}
		res.Clients = len(clients)
		svc := onion.Service{App: app.Name, Key: key, Clients: clients}
		for _, p := range app.Ports {
			svc.Ports = append(svc.Ports, onion.Port{
				Virtual: p.Public,
				Target:  netip.AddrPortFrom(res.Net.ULA, p.Target).String(),
			})
		}
		services = append(services, svc)
	}
	return services, errs
}

// records are the AAAA (and A) records of running clearnet apps with a known LAN address.
func (r *Runner) records(desired []store.App, results map[string]*AppResult) []dns.Record {
	var out []dns.Record
	for _, app := range desired {
		res := results[app.Name]
		if app.Stopped || !app.Clearnet() || res == nil || res.failed() {
			continue
		}
		net := res.Net
		var addrs []netip.Addr
		for _, a := range []netip.Addr{net.LAN, net.IPv4} {
			if a.IsValid() {
				addrs = append(addrs, a)
			}
		}
		if len(addrs) == 0 {
			continue
		}
		recs, err := dns.AppRecords(app.Name, r.Zone, addrs...)
		if err != nil {
			res.record(PublishDNS, 0, err)
			continue
		}
		out = append(out, recs...)
	}
	return out
}

// appsOf maps records back to app names (the first label under the zone).
func appsOf(records []dns.Record, zone string) []string {
	seen := map[string]bool{}
	var apps []string
	for _, rec := range records {
		name, ok := appOf(rec, zone)
		if ok && !seen[name] {
			seen[name] = true
			apps = append(apps, name)
		}
	}
	return apps
}

// appOf is the app a record is of: its first label under the zone.
func appOf(rec dns.Record, zone string) (string, bool) {
	return strings.CutSuffix(rec.Name, "."+strings.TrimSuffix(zone, ".")+".")
}

// String is the step list of an app as it ran, for logs and status.
func (a *AppResult) String() string {
	var parts []string
	for _, s := range a.Steps {
		p := fmt.Sprintf("%s %v", s.Kind, s.Duration.Round(time.Microsecond))
		if s.Err != nil {
			p += " (failed)"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}
