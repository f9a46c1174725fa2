package reconcile

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/pods"
)

// Observe asks every adapter what is there now. A failing adapter leaves its part empty and its
// error in the joined error: the plan then redoes idempotent steps, never removes on a guess
// (removals only come from what was positively observed).
func (r *Runner) Observe(ctx context.Context, desired []store.App) (Observed, error) {
	obs := Observed{
		Keys: map[string]bool{}, Images: map[string]bool{}, Networks: map[string]bool{}, NetStale: map[string]bool{},
		Units: map[string]UnitState{}, Onions: map[string]bool{}, DNS: map[string]bool{},
		Fetching: map[string]bool{}, Addresses: map[string]network.Result{},
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
	present, err := r.Systemd.PodUnits(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	states, err := r.Systemd.PodStates(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	for _, ref := range present {
		obs.Units[UnitKey(ref.App, ref.Container)] = UnitState{Present: true, Active: isActive(states[ref].ActiveState)}
	}
	for _, app := range desired {
		netns := ""
		if obs.Networks[app.Name] {
			res, err := r.Network.Addresses(app.Name)
			if err == nil {
				netns = res.Netns
				obs.Addresses[app.Name] = res
			}
			if (err == nil && !res.Publishes(NetAttachment(app, r.front(app)).Ports)) || errors.Is(err, network.ErrDamagedLease) {
				obs.NetStale[app.Name] = true // Attach changes it in place
			}
		}
		units, err := r.Pods.Units(app, netns)
		if err == nil {
			obs.Images[app.Name] = true
		} else if r.Pods.Fetching(app) {
			obs.Fetching[app.Name] = true
		}
		// Without its netns the rendered units are not what would be written: not current.
		if err == nil && netns != "" {
			r.observeCurrent(app.Name, units, obs.Units)
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

// observeCurrent marks the app's container units whose files (and the network unit's) are
// those of units.
func (r *Runner) observeCurrent(app string, units []pods.Unit, states map[string]UnitState) {
	var net []pods.Unit
	if len(units) > 0 && units[0].Name == pods.NetUnitName(app) {
		net, units = units[:1], units[1:]
	}
	for _, u := range units {
		ref, ok := pods.ParsePodUnit(u.Name)
		key := UnitKey(ref.App, ref.Container)
		if st, present := states[key]; ok && present {
			st.Current = r.Systemd.Current(append(slices.Clone(net), u))
			states[key] = st
		}
	}
}

// isActive reports whether a unit in this ActiveState runs or is on its way to.
func isActive(state string) bool {
	return state == "active" || state == "activating" || state == "reloading"
}
