package reconcile

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/pods"
)

// Observe asks every adapter what is there now. A failing adapter leaves its part empty and its
// error in the joined error: the plan then redoes idempotent steps, never removes on a guess
// (removals only come from what was positively observed).
func (r *Runner) Observe(ctx context.Context, desired []store.App) (Observed, error) {
	return r.observe(ctx, desired, nil, false)
}

// Scope names the apps a pass looks at afresh (nil: every app): those whose record changed.
type Scope map[string]bool

// ObservePass is Observe for a reconcile pass. It keeps each app's own observation (its network,
// image and unit files: the part that costs per app), and, with a scope, takes it from the last
// pass for the apps out of scope, when that pass observed the same record with the same
// network and units present and Apply did nothing to the app since. What is listed for all
// apps at once (unit files, networks, keys, onion services, DNS records) is always asked
// afresh; the units' states only for the apps in scope and those Apply worked on (podStates).
// A pass for one app's change then costs what that app does, not what 1000 do; the drift pass
// (scope nil) looks at everything again.
func (r *Runner) ObservePass(ctx context.Context, desired []store.App, scope Scope) (Observed, error) {
	return r.observe(ctx, desired, scope, true)
}

// seenApp is an app's own observation as ObservePass made it, with what it depended on.
type seenApp struct {
	app      store.App // the record observed
	attached bool      // its network was listed as attached
	present  uint64    // which of its containers' units were present (bit i: container i; at most store.MaxContainers)
	seen     appObserved
}

// presentUnits is the bit set of app's containers whose unit is present in units.
func presentUnits(app store.App, units map[string]UnitState) uint64 {
	var bits uint64
	for i, c := range app.Containers {
		if units[UnitKey(app.Name, c.Name)].Present {
			bits |= 1 << i
		}
	}
	return bits
}

// lastSeen returns the kept observation of app if it still holds for attached and present.
func (r *Runner) lastSeen(app store.App, attached bool, present uint64) (appObserved, bool) {
	r.seenMu.Lock()
	last, ok := r.seen[app.Name]
	r.seenMu.Unlock()
	if !ok || last.attached != attached || last.present != present || !reflect.DeepEqual(last.app, app) {
		return appObserved{}, false
	}
	return last.seen, true
}

// forgetSeen drops the kept observations of apps, and has their units' states asked afresh.
func (r *Runner) forgetSeen(apps []string) {
	r.seenMu.Lock()
	defer r.seenMu.Unlock()
	for _, app := range apps {
		delete(r.seen, app)
		if r.states != nil {
			r.relist[app] = true
		}
	}
}

// podStates lists the states of the container units. A drift pass (no scope), a look that is
// not a pass, and a pass with no kept listing ask systemd for all of them (at 1000 apps, 10-15
// ms of D-Bus). A scoped pass asks only for the units of the apps in its scope and of those
// Apply worked on since the last listing, and takes the others' from it: a unit that changed
// by itself meanwhile (it failed for good, or was stopped by hand) is seen by the next drift
// pass, as when no pass runs.
func (r *Runner) podStates(ctx context.Context, desired []store.App, scope Scope, keep bool) (map[pods.PodRef]pods.Status, error) {
	r.seenMu.Lock()
	last, relist := r.states, r.relist
	r.seenMu.Unlock()
	var states map[pods.PodRef]pods.Status
	var err error
	if !keep || scope == nil || last == nil {
		states, err = r.Systemd.PodStates(ctx)
	} else {
		var refs []pods.PodRef
		for _, app := range desired {
			if scope[app.Name] || relist[app.Name] {
				for _, c := range app.Containers {
					refs = append(refs, pods.PodRef{App: app.Name, Container: c.Name})
				}
			}
		}
		var fresh map[pods.PodRef]pods.Status
		if fresh, err = r.Systemd.PodStatesOf(ctx, refs); err == nil {
			states = make(map[pods.PodRef]pods.Status, len(last)+len(fresh))
			for ref, st := range last {
				if !scope[ref.App] && !relist[ref.App] {
					states[ref] = st
				}
			}
			maps.Copy(states, fresh)
		}
	}
	if keep {
		r.seenMu.Lock()
		r.states, r.relist = nil, nil // a failed listing: all of them next time
		if err == nil {
			r.states, r.relist = states, map[string]bool{}
		}
		r.seenMu.Unlock()
	}
	return states, err
}

func (r *Runner) observe(ctx context.Context, desired []store.App, scope Scope, keep bool) (Observed, error) {
	ctx = r.settle(ctx) // a look that writes nothing: the watches' queues read once
	n := len(desired)   // the maps are made to their likely size at once
	obs := Observed{
		Keys: make(map[string]bool, n), Images: make(map[string]bool, n), Networks: make(map[string]bool, n), NetStale: map[string]bool{},
		Units: make(map[string]UnitState, n), NetUnits: make(map[string]bool, n), Onions: make(map[string]bool, n), DNS: make(map[string]bool, n),
		Fetching: map[string]bool{}, Addresses: make(map[string]network.Result, n),
	}
	var errs []error
	keyed, err := r.Keys.Apps()
	if err != nil {
		errs = append(errs, err)
	}
	for _, app := range keyed {
		obs.Keys[app] = true // a key that does not load fails the app's ensure-key step
	}
	attached, err := r.Network.Attached(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	for _, app := range attached {
		obs.Networks[app] = true
	}
	// systemd lists the units' states while the files are looked at.
	type listed struct {
		states map[pods.PodRef]pods.Status
		err    error
	}
	statesCh := make(chan listed, 1)
	go func() {
		states, err := r.podStates(ctx, desired, scope, keep)
		statesCh <- listed{states, err}
	}()
	present, err := r.Systemd.PodUnits(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	for _, ref := range present {
		obs.Units[UnitKey(ref.App, ref.Container)] = UnitState{Present: true}
	}
	netUnits, err := r.Systemd.NetUnitApps(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	for _, app := range netUnits {
		obs.NetUnits[app] = true
	}
	// Each app's network, image and units, on a few workers (each asks the file system and the
	// kernel a dozen things per app: the box's cores answer side by side), then merged.
	seen := make([]appObserved, len(desired))
	presentOf := make([]uint64, len(desired))
	var looked atomic.Int64
	r.eachApp(len(desired), func(i int) {
		app := desired[i]
		attached := obs.Networks[app.Name]
		presentOf[i] = presentUnits(app, obs.Units)
		if scope != nil && !scope[app.Name] {
			if last, ok := r.lastSeen(app, attached, presentOf[i]); ok {
				seen[i] = last
				return
			}
		}
		seen[i] = r.observeApp(ctx, app, attached, obs.Units)
		looked.Add(1)
	})
	obs.Looked = int(looked.Load())
	if keep {
		r.keepSeen(desired, seen, presentOf, obs.Networks, len(errs) == 0)
	}
	l := <-statesCh
	if l.err != nil {
		errs = append(errs, l.err)
	} else {
		obs.UnitStates = l.states
	}
	for _, ref := range present {
		key := UnitKey(ref.App, ref.Container)
		st := obs.Units[key]
		st.Active = isActive(l.states[ref].ActiveState)
		obs.Units[key] = st
	}
	for i, app := range desired {
		a := seen[i]
		if a.attached {
			obs.Addresses[app.Name] = a.net
		}
		if a.netStale {
			obs.NetStale[app.Name] = true
		}
		if a.image {
			obs.Images[app.Name] = true
		}
		if a.fetching {
			obs.Fetching[app.Name] = true
		}
		for key := range a.current {
			st := obs.Units[key]
			st.Current = true
			obs.Units[key] = st
		}
	}
	for app, st := range r.Onions.Status() {
		if st.Added {
			obs.Onions[app] = true
		}
	}
	if r.DNS != nil {
		suffix := "." + strings.TrimSuffix(r.Zone, ".") + "."
		for _, rec := range r.DNS.Status().Published {
			if app, ok := strings.CutSuffix(rec.Name, suffix); ok {
				obs.DNS[app] = true
			}
		}
	}
	return obs, errors.Join(errs...)
}

// keepSeen keeps the apps' own observations for the next pass (none when an adapter failed:
// what it left empty must be asked again).
// The map is updated in place: an entry is large, and replacing the map each pass made 1000 of
// them anew.
func (r *Runner) keepSeen(desired []store.App, seen []appObserved, present []uint64, attached map[string]bool, ok bool) {
	r.seenMu.Lock()
	defer r.seenMu.Unlock()
	if !ok {
		clear(r.seen)
		return
	}
	if r.seen == nil {
		r.seen = make(map[string]seenApp, len(desired))
	}
	for i, app := range desired {
		r.seen[app.Name] = seenApp{app: app, attached: attached[app.Name], present: present[i], seen: seen[i]}
	}
	if len(r.seen) != len(desired) { // apps gone since: forgotten
		want := make(map[string]bool, len(desired))
		for _, app := range desired {
			want[app.Name] = true
		}
		for name := range r.seen {
			if !want[name] {
				delete(r.seen, name)
			}
		}
	}
}

// appObserved is what Observe found of one desired app.
type appObserved struct {
	attached, netStale, image, fetching bool
	net                                 network.Result
	current                             map[string]bool // UnitKeys of the units whose files are current
}

// observeApp asks the network, the images and the unit files about one app (attached: its
// network is; units: the observed units, only read).
func (r *Runner) observeApp(ctx context.Context, app store.App, attached bool, units map[string]UnitState) appObserved {
	var a appObserved
	netns := ""
	if attached {
		res, err := r.Network.Addresses(ctx, app.Name)
		if err == nil {
			netns, a.attached, a.net = res.Netns, true, res
		}
		if (err == nil && !res.Publishes(NetAttachment(app, r.front(app)).Ports)) || errors.Is(err, network.ErrDamagedLease) {
			a.netStale = true // Attach changes it in place
		}
	}
	rendered, err := r.Pods.Units(ctx, app, netns)
	if err == nil {
		a.image = true
	} else if r.Pods.Fetching(app) {
		a.fetching = true
	}
	// Without its netns the rendered units are not what would be written: not current.
	if err == nil && netns != "" {
		a.current = r.observeCurrent(ctx, app.Name, rendered, units)
	}
	return a
}

// observeCurrent returns the keys of the app's present container units whose files (and the
// network unit's) are those of units.
func (r *Runner) observeCurrent(ctx context.Context, app string, units []pods.Unit, states map[string]UnitState) map[string]bool {
	var net []pods.Unit
	if len(units) > 0 && units[0].Name == pods.NetUnitName(app) {
		net, units = units[:1], units[1:]
	}
	current := map[string]bool{}
	for _, u := range units {
		ref, ok := pods.ParsePodUnit(u.Name)
		key := UnitKey(ref.App, ref.Container)
		if _, present := states[key]; ok && present && r.Systemd.Current(ctx, append(slices.Clone(net), u)) {
			current[key] = true
		}
	}
	return current
}

// eachApp runs fn(0..n-1) on up to Parallel workers (default 4). Each worker takes the next
// index itself (a counter, not a channel: no hand-off between goroutines per app).
func (r *Runner) eachApp(n int, fn func(i int)) {
	workers := min(r.parallel(), n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				fn(i)
			}
		})
	}
	wg.Wait()
}

// isActive reports whether a unit in this ActiveState runs or is on its way to.
func isActive(state string) bool {
	return state == "active" || state == "activating" || state == "reloading"
}
