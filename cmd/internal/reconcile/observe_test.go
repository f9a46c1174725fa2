package reconcile

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/pods"
)

// observedFakes answer Observe's questions (a unit test of which apps ObservePass looks at
// again; TestInsideDaemon and the e2e tests run it against the real adapters). Every look at an
// app's own state renders its units: that is what is counted.
type observedFakes struct {
	*fakes
	attached    []string
	netUnitsErr error
	present     []pods.PodRef
	// states are the units' states systemd would list (nil: every present unit active);
	// listings records each listing asked: "all", or the apps whose units were asked.
	states    map[pods.PodRef]string
	statesErr error
	listings  []string
}

func (o *observedFakes) Attached(context.Context) ([]string, error) { return o.attached, nil }
func (o *observedFakes) Addresses(_ context.Context, app string) (network.Result, error) {
	return network.Result{Netns: "/run/netns/onionpod-" + app, ULA: netip.MustParseAddr("fd00::6")}, nil
}
func (o *observedFakes) Units(ctx context.Context, app store.App, netns string) ([]pods.Unit, error) {
	o.log(app.Name, "look")
	if settled, _ := ctx.Value(settledLook{}).(bool); settled {
		o.log(app.Name, "look in the settled look")
	}
	return o.fakes.Units(ctx, app, netns)
}
func (o *observedFakes) PodUnits(context.Context) ([]pods.PodRef, error) { return o.present, nil }
func (o *observedFakes) NetUnitApps(context.Context) ([]string, error)   { return nil, o.netUnitsErr }
func (o *observedFakes) PodStates(ctx context.Context) (map[pods.PodRef]pods.Status, error) {
	o.listings = append(o.listings, "all")
	return o.list(o.present)
}
func (o *observedFakes) PodStatesOf(ctx context.Context, refs []pods.PodRef) (map[pods.PodRef]pods.Status, error) {
	var apps []string
	for _, ref := range refs {
		if !slices.Contains(apps, ref.App) {
			apps = append(apps, ref.App)
		}
	}
	slices.Sort(apps)
	o.listings = append(o.listings, strings.Join(apps, ","))
	var present []pods.PodRef
	for _, ref := range refs {
		if slices.Contains(o.present, ref) {
			present = append(present, ref)
		}
	}
	return o.list(present)
}
func (o *observedFakes) list(refs []pods.PodRef) (map[pods.PodRef]pods.Status, error) {
	if o.statesErr != nil {
		return nil, o.statesErr
	}
	states := map[pods.PodRef]pods.Status{}
	for _, ref := range refs {
		st := pods.Status{ActiveState: "active", SubState: "running"}
		if s, ok := o.states[ref]; ok {
			st.ActiveState = s
		}
		states[ref] = st
	}
	return states, nil
}
func (o *observedFakes) Current(context.Context, []pods.Unit) bool { return true }

// looks returns the apps looked at since the last call, and forgets them.
func (o *observedFakes) looks() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var apps []string
	for app, calls := range o.calls {
		if slices.Contains(calls, "look") {
			apps = append(apps, app)
		}
	}
	clear(o.calls)
	slices.Sort(apps)
	return apps
}

// TestObservePassLooksAgainOnlyWhereNeeded: a pass for some apps' change looks afresh at those,
// and at every other app whose record, network or units changed, that Apply worked on, or that
// an adapter failure left unknown; the others' own observation is the last pass's.
func TestObservePassLooksAgainOnlyWhereNeeded(t *testing.T) {
	ctx := context.Background()
	o := &observedFakes{fakes: newFakes(), attached: []string{"a", "b", "c"}}
	for _, app := range []string{"a", "b", "c"} {
		o.present = append(o.present, pods.PodRef{App: app, Container: app})
	}
	r := &Runner{Keys: o, Network: o, Pods: o, Units: o, Systemd: o, Onions: fakeOnions{o.fakes}, DNS: fakeDNS{o.fakes}, Zone: "box.example"}
	apps := []store.App{
		{Name: "a", Containers: image("a", "r.example/a:1"), Ports: []store.Port{{Public: 80, Target: 80}}},
		{Name: "b", Containers: image("b", "r.example/b:1"), Ports: []store.Port{{Public: 80, Target: 80}}},
		{Name: "c", Containers: image("c", "r.example/c:1"), Ports: []store.Port{{Public: 80, Target: 80}}},
	}
	pass := func(scope Scope, want ...string) Observed {
		t.Helper()
		obs, _ := r.ObservePass(ctx, apps, scope)
		if got := o.looks(); !slices.Equal(got, want) || obs.Looked != len(want) {
			t.Errorf("scope %v: looked at %v (counted %d), want %v", scope, got, obs.Looked, want)
		}
		for _, app := range apps {
			if _, ok := obs.Addresses[app.Name]; !ok || !obs.Images[app.Name] || !obs.Units[app.Name].Current {
				t.Errorf("scope %v: %s observed as %v, image %v, units %+v", scope, app.Name, obs.Addresses[app.Name], obs.Images[app.Name], obs.Units[app.Name])
			}
		}
		return obs
	}

	pass(nil, "a", "b", "c")
	pass(Scope{"a": true}, "a")
	pass(Scope{}, nil...)
	// Observe (not a pass) keeps nothing and changes nothing kept.
	if _, err := r.Observe(ctx, apps[:1]); err != nil {
		t.Fatal(err)
	}
	o.looks()
	pass(Scope{"b": true}, "b")

	// b's record changed without b in the scope: looked at again.
	apps[1].Ports = []store.Port{{Public: 8080, Target: 80}}
	pass(Scope{"a": true}, "a", "b")

	// Apply worked on c: looked at again at the next pass.
	obs := pass(Scope{}, nil...)
	d := Desired{Apps: apps}
	r.Apply(ctx, Plan{Apps: []AppPlan{{App: "a"}, {App: "b"}, {App: "c", Steps: []Step{{Kind: StartUnit}}}}}, d, obs)
	o.looks()
	pass(Scope{}, "c")

	// c's unit went: looked at again (its units are no longer current without their files).
	o.present = o.present[:2]
	obs, _ = r.ObservePass(ctx, apps, Scope{})
	if got := o.looks(); !slices.Equal(got, []string{"c"}) || obs.Units["c"].Current {
		t.Errorf("c's unit gone: looked at %v, c's units %+v", got, obs.Units["c"])
	}
	o.present = append(o.present, pods.PodRef{App: "c", Container: "c"})
	pass(Scope{}, "c")

	// An adapter failed (one that no app's own observation depends on): nothing is kept, the
	// next pass looks at every app.
	o.netUnitsErr = errors.New("systemd: busy")
	if _, err := r.ObservePass(ctx, apps, Scope{}); err == nil {
		t.Fatal("the failing adapter's error is not returned")
	}
	o.looks()
	o.netUnitsErr = nil
	pass(Scope{}, "a", "b", "c")
	pass(Scope{}, nil...)
}

// Observe looks at every app in one settled look (Runner.Settle: the daemon's reads the file
// and address watches' queues once for the whole observation).
func TestObserveLooksInOneSettledLook(t *testing.T) {
	o := &observedFakes{fakes: newFakes(), attached: []string{"a", "b"}}
	settles := 0
	r := &Runner{Keys: o, Network: o, Pods: o, Units: o, Systemd: o, Onions: fakeOnions{o.fakes}, DNS: fakeDNS{o.fakes}, Zone: "box.example",
		Settle: func(ctx context.Context) context.Context {
			settles++
			return context.WithValue(ctx, settledLook{}, true)
		}}
	apps := []store.App{{Name: "a", Containers: image("a", "r.example/a:1")}, {Name: "b", Containers: image("b", "r.example/b:1")}}
	if _, err := r.ObservePass(context.Background(), apps, nil); err != nil {
		t.Fatal(err)
	}
	for _, app := range apps {
		if !slices.Contains(o.calls[app.Name], "look in the settled look") {
			t.Errorf("%s was not looked at in the settled look: %q", app.Name, o.calls[app.Name])
		}
	}
	if settles != 1 {
		t.Errorf("the observation settled %d looks, want one", settles)
	}
}

// TestObservePassListsUnitStatesOnlyWhereNeeded: a drift pass lists every unit's state; a pass
// for some apps' change asks systemd only about those apps' units and about those Apply worked
// on since, and takes the others' states from the last listing; a failed listing is not kept.
func TestObservePassListsUnitStatesOnlyWhereNeeded(t *testing.T) {
	ctx := context.Background()
	o := &observedFakes{fakes: newFakes(), attached: []string{"a", "b", "c"}, states: map[pods.PodRef]string{}}
	var apps []store.App
	for _, app := range []string{"a", "b", "c"} {
		o.present = append(o.present, pods.PodRef{App: app, Container: app})
		apps = append(apps, store.App{Name: app, Containers: image(app, "r.example/"+app+":1"), Ports: []store.Port{{Public: 80, Target: 80}}})
	}
	r := &Runner{Keys: o, Network: o, Pods: o, Units: o, Systemd: o, Onions: fakeOnions{o.fakes}, DNS: fakeDNS{o.fakes}, Zone: "box.example"}
	ref := func(app string) pods.PodRef { return pods.PodRef{App: app, Container: app} }
	pass := func(scope Scope, wantListing string, wantActive map[string]bool) Observed {
		t.Helper()
		o.listings = nil
		obs, err := r.ObservePass(ctx, apps, scope)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(o.listings, []string{wantListing}) {
			t.Errorf("scope %v: listings %q, want %q", scope, o.listings, wantListing)
		}
		for app, active := range wantActive {
			if obs.Units[app].Active != active || len(obs.UnitStates) != 3 {
				t.Errorf("scope %v: %s's units %+v, want active %v (states of %d units)", scope, app, obs.Units[app], active, len(obs.UnitStates))
			}
		}
		return obs
	}

	pass(nil, "all", map[string]bool{"a": true, "b": true, "c": true})
	pass(Scope{"a": true}, "a", map[string]bool{"a": true, "b": true, "c": true})

	// b's unit failed by itself: a pass for a's change asks nothing of b; the drift pass sees it.
	o.states[ref("b")] = "failed"
	pass(Scope{"a": true}, "a", map[string]bool{"b": true})
	pass(nil, "all", map[string]bool{"b": false})
	o.states[ref("b")] = "active"

	// b changed in a's pass (Apply started its unit): the next pass asks about it too.
	obs := pass(Scope{"a": true}, "a", map[string]bool{"b": false})
	r.Apply(ctx, Plan{Apps: []AppPlan{{App: "a"}, {App: "b", Steps: []Step{{Kind: StartUnit}}}, {App: "c"}}}, Desired{Apps: apps}, obs)
	pass(Scope{"c": true}, "b,c", map[string]bool{"b": true, "c": true})
	pass(Scope{}, "", map[string]bool{"a": true, "b": true, "c": true})

	// A listing failed: nothing is kept, the next pass lists every unit.
	o.statesErr = errors.New("systemd: busy")
	if _, err := r.ObservePass(ctx, apps, Scope{"a": true}); err == nil {
		t.Fatal("the failed listing's error is not returned")
	}
	o.statesErr = nil
	pass(Scope{"a": true}, "all", map[string]bool{"a": true, "b": true, "c": true})
}
