package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/onionpod/onionpod/cmd/internal/store"
)

// Observe asks every adapter what is there now. A failing adapter leaves its part empty and its
// error in the joined error: the plan then redoes idempotent steps, never removes on a guess
// (removals only come from what was positively observed).
func (r *Runner) Observe(ctx context.Context, desired []store.App) (Observed, error) {
	obs := Observed{
		Keys: map[string]bool{}, Images: map[string]bool{}, Networks: map[string]bool{},
		Units: map[string]UnitState{}, Onions: map[string]bool{}, DNS: map[string]bool{},
	}
	var errs []error
	keys, err := r.Keys.List()
	if err != nil {
		errs = append(errs, fmt.Errorf("keys: %w", err))
	}
	for _, k := range keys {
		if k.Err == nil && k.Address != "" {
			obs.Keys[k.App] = true
		}
	}
	attached, err := r.Network.Attached(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	for _, app := range attached {
		obs.Networks[app] = true
	}
	wanted := map[string]bool{}
	for _, app := range desired {
		wanted[app.Name] = true
		netns := ""
		if obs.Networks[app.Name] {
			if res, err := r.Network.Addresses(app.Name); err == nil {
				netns = res.Netns
			}
		}
		units, err := r.Pods.Units(app, netns)
		switch {
		case err == nil:
			obs.Images[app.Name] = true
		case errors.Is(err, ErrImageMissing):
		default:
			// A unit that cannot be rendered: the creation steps will report why.
		}
		st, err := r.Units.State(ctx, app.Name, unitsOrNil(units, netns))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Present {
			obs.Units[app.Name] = st
		}
	}
	unitApps, err := r.Units.Apps(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	for _, app := range unitApps {
		if !wanted[app] {
			st, err := r.Units.State(ctx, app, nil)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			obs.Units[app] = st
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

// unitsOrNil: without a netns the rendered units are not what would be written, so they cannot
// tell whether the files are current.
func unitsOrNil[T any](units []T, netns string) []T {
	if netns == "" {
		return nil
	}
	return units
}
