// Package reconcile decides and carries out what makes the box match the desired state.
// Plan(desired, observed) is pure and golden-tested; Apply runs a plan against the adapters in the
// order key → image → network → unit → onion → DNS, and removal in reverse. Every step is
// idempotent, so a pass interrupted at any point (even by SIGKILL) is finished by the next one.
package reconcile

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/pods"
)

// StepKind is one kind of reconcile step. The constants are in the order they run for one app.
type StepKind int

// Creation steps, in order.
const (
	EnsureKey     StepKind = iota // create the app's onion key if it has none
	EnsureImage                   // pull or load the image and unpack its root once
	AttachNetwork                 // netns + CNI attach (LAN macvlan and/or ULA link)
	WriteUnit                     // write the pod's unit files (only when they differ) and enable them
	StartUnit                     // start (or restart after a change) the pod's unit
	// Onion services and DNS records are set for all apps at once (declarative adapters), after
	// every app's per-app steps; a step here says this app's part of that set changes.
	AddOnion
	PublishDNS
	// Removal steps, in order (the reverse of creation).
	WithdrawDNS
	RemoveOnion
	StopUnit
	RemoveUnit
	DetachNetwork
)

var stepNames = [...]string{
	EnsureKey: "ensure-key", EnsureImage: "ensure-image", AttachNetwork: "attach-network",
	WriteUnit: "write-unit", StartUnit: "start-unit", AddOnion: "add-onion", PublishDNS: "publish-dns",
	WithdrawDNS: "withdraw-dns", RemoveOnion: "remove-onion", StopUnit: "stop-unit",
	RemoveUnit: "remove-unit", DetachNetwork: "detach-network",
}

func (k StepKind) String() string {
	if int(k) < len(stepNames) {
		return stepNames[k]
	}
	return fmt.Sprintf("step(%d)", int(k))
}

// Observed is what the adapters report about the box right now; it is never stored.
// Each map is keyed by app name; a missing key means "not there".
type Observed struct {
	Keys     map[string]bool      // the app has an onion key
	Images   map[string]bool      // the app's image (or static root) is unpacked and ready
	Networks map[string]bool      // the app's netns is attached
	NetStale map[string]bool      // attached, but not as the app asks now (published ports, firewall, damaged lease)
	Units    map[string]UnitState // the containers' units, by UnitKey (the app's name for its own container)
	NetUnits map[string]bool      // the app has a network unit file
	Onions   map[string]bool      // the app's onion service is added in tor, as wanted
	DNS      map[string]bool      // the app's records are published, as wanted
	Fetching map[string]bool      // the app's image is being fetched in the background

	// Addresses of the attached apps, as observed (not used by the plan: Apply reuses them
	// rather than asking the network again).
	Addresses map[string]network.Result `json:"-"`
	// UnitStates are the containers' units as systemd listed them (not used by the plan: the
	// statuses of a pass that changed nothing reuse them rather than asking systemd again).
	UnitStates map[pods.PodRef]pods.Status `json:"-"`
	// Looked counts the apps whose own state was looked at afresh (ObservePass takes the
	// others' from the last pass).
	Looked int `json:"-"`
}

// UnitState is what systemd says of a container's unit.
type UnitState struct {
	Present bool // the unit file exists
	Current bool // the unit file (and the app's network unit) is what onionpod would write now
	Active  bool // active (running), or activating
}

// UnitKey is how Observed.Units names a container's unit: the app's name for the app's own
// container (onionpod-pod-APP.service), APP/CONTAINER for the others.
func UnitKey(app, container string) string {
	if container == "" || container == app {
		return app
	}
	return app + "/" + container
}

// appOfKey is the app of a UnitKey, and its container.
func appOfKey(key string) (app, container string) {
	app, container, found := strings.Cut(key, "/")
	if !found {
		container = app
	}
	return app, container
}

// AppUnits tells whether any unit of the app's containers is observed, and whether any is
// active.
func (o Observed) AppUnits(app string) (present, active bool) {
	for key, u := range o.Units {
		if a, _ := appOfKey(key); a == app {
			present = true
			active = active || u.Active
		}
	}
	return present, active
}

// unitsByApp lists the containers of the observed units, by app: what strays looks through
// (one look at every unit per plan, not one per app).
type unitsByApp map[string][]string

func (o Observed) unitsByApp() unitsByApp {
	out := unitsByApp{}
	for key := range o.Units {
		a, c := appOfKey(key)
		out[a] = append(out[a], c)
	}
	return out
}

// strays are the containers of the app's observed units that its record no longer has, sorted.
func (u unitsByApp) strays(app store.App) []string {
	var out []string
	for _, c := range u[app.Name] {
		if _, ok := app.Container(c); !ok {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}

// Desired is what a pass aims at: the apps' records, the apps whose record cannot be used, and
// the apps waiting to retry after a failure.
type Desired struct {
	Apps []store.App
	// Held: apps whose record is damaged or unreadable. Nothing is done to them and nothing of
	// theirs is removed: their pod, onion service and DNS records stay as they are.
	Held map[string]Hold
	// Retry: apps whose last attempt failed and whose next one is not due yet.
	Retry map[string]Retry
}

// Hold is why an app is held, and what its last good record said (nil: unknown): its onion
// service is kept as that record described it.
type Hold struct {
	Why  string
	Last *store.App
}

// Retry is a failing app's backoff: it is not tried again before In has passed.
type Retry struct {
	Failures int           // failed attempts in a row
	In       time.Duration // until the next attempt
	Err      string        // the last failure
}

// Step is one thing to do for one app, and why.
type Step struct {
	Kind   StepKind
	Reason string
}

// AppPlan is the steps of one app, in order.
type AppPlan struct {
	App     string
	Removal bool   // the app is gone from the desired state: its leftovers are removed
	Hold    string // the app is held (its record cannot be used), and why: no steps
	Retry   *Retry // the app waits to retry after a failure: no steps until then
	Steps   []Step
}

// Plan is everything one pass does: per app, creations first (in name order), removals after.
type Plan struct {
	Apps []AppPlan
}

// Empty reports whether the box already matches the desired state.
func (p Plan) Empty() bool {
	for _, a := range p.Apps {
		if len(a.Steps) > 0 {
			return false
		}
	}
	return true
}

// Changed is how many apps have steps.
func (p Plan) Changed() int {
	n := 0
	for _, a := range p.Apps {
		if len(a.Steps) > 0 {
			n++
		}
	}
	return n
}

// String renders the plan one app per line; the golden tests compare it.
func (p Plan) String() string {
	var b strings.Builder
	for _, a := range p.Apps {
		switch {
		case a.Hold != "":
			fmt.Fprintf(&b, "hold %s: %s (nothing is changed or removed)\n", a.App, a.Hold)
			continue
		case a.Retry != nil:
			fmt.Fprintf(&b, "wait %s: retry in %d s (failed %s): %s\n", a.App, int(a.Retry.In.Round(time.Second)/time.Second), times(a.Retry.Failures), a.Retry.Err)
			continue
		case len(a.Steps) == 0:
			continue
		}
		verb := "converge"
		if a.Removal {
			verb = "remove"
		}
		fmt.Fprintf(&b, "%s %s:\n", verb, a.App)
		for _, s := range a.Steps {
			fmt.Fprintf(&b, "  %-14s %s\n", s.Kind, s.Reason)
		}
	}
	if b.Len() == 0 {
		return "nothing to do\n"
	}
	return b.String()
}

func times(n int) string {
	if n == 1 {
		return "once"
	}
	return fmt.Sprintf("%d times", n)
}

// MakePlan decides the steps that make observed match desired. It is pure: same input, same plan.
// Held apps get no steps and are never removed; apps waiting to retry get no steps before their
// time.
func MakePlan(desired Desired, obs Observed) Plan {
	var plan Plan
	wanted := map[string]bool{}
	units := obs.unitsByApp()
	for name, h := range desired.Held {
		wanted[name] = true
		plan.Apps = append(plan.Apps, AppPlan{App: name, Hold: h.Why})
	}
	for _, app := range desired.Apps {
		wanted[app.Name] = true
		p := planApp(app, obs, units)
		if r, ok := desired.Retry[app.Name]; ok && r.In > 0 {
			p = AppPlan{App: app.Name, Retry: &r}
		}
		plan.Apps = append(plan.Apps, p)
	}
	sort.Slice(plan.Apps, func(i, j int) bool { return plan.Apps[i].App < plan.Apps[j].App })
	for _, name := range leftovers(wanted, obs) {
		plan.Apps = append(plan.Apps, planRemoval(name, obs))
	}
	return plan
}

func planApp(app store.App, obs Observed, units unitsByApp) AppPlan {
	p := AppPlan{App: app.Name}
	add := func(k StepKind, reason string) { p.Steps = append(p.Steps, Step{k, reason}) }
	name := app.Name
	// In an app of several containers, a unit step says which container it is about.
	of := func(c string) string {
		if len(app.Containers) > 1 {
			return c + ": "
		}
		return ""
	}
	if app.Stopped {
		if obs.DNS[name] {
			add(WithdrawDNS, "stopped: its address must not be published")
		}
		if obs.Onions[name] {
			add(RemoveOnion, "stopped: nothing would answer on the .onion")
		}
		for _, c := range app.Containers {
			if obs.Units[UnitKey(name, c.Name)].Active {
				add(StopUnit, of(c.Name)+"stopped by the user")
			}
		}
		for _, c := range units.strays(app) {
			if obs.Units[UnitKey(name, c)].Active {
				add(StopUnit, "container "+c+": stopped by the user (and no longer in the app)")
			}
		}
		return p
	}
	if app.WantsOnion() && !obs.Keys[name] {
		add(EnsureKey, "no onion key yet")
	}
	if obs.Fetching[name] {
		// Its other steps wait for the image; the pass does not (nor do the other apps).
		add(EnsureImage, "fetching in the background: "+sourceOf(app))
		return p
	}
	if !obs.Images[name] {
		add(EnsureImage, "image not unpacked: "+sourceOf(app))
	}
	if !obs.Networks[name] {
		add(AttachNetwork, netReason(app))
	} else if obs.NetStale[name] {
		add(AttachNetwork, "attached, but not as asked (published ports or firewall changed, or lease damaged): attach again in place")
	}
	var starts []Step
	for _, c := range app.Containers {
		switch unit := obs.Units[UnitKey(name, c.Name)]; {
		case !unit.Present:
			add(WriteUnit, of(c.Name)+"no unit yet")
			starts = append(starts, Step{StartUnit, of(c.Name) + "new unit"})
		case !unit.Current:
			add(WriteUnit, of(c.Name)+"the app or its image changed")
			starts = append(starts, Step{StartUnit, of(c.Name) + "restart with the new unit"})
		case !unit.Active:
			starts = append(starts, Step{StartUnit, of(c.Name) + "unit is not running"})
		}
	}
	for _, c := range units.strays(app) {
		add(WriteUnit, "container "+c+": no longer in the app: its unit is removed")
	}
	p.Steps = append(p.Steps, starts...)
	switch {
	case app.WantsOnion() && !obs.Onions[name]:
		add(AddOnion, "onion service not added in tor")
	case !app.WantsOnion() && obs.Onions[name]:
		add(RemoveOnion, "onion service no longer wanted")
	}
	switch {
	case app.Clearnet() && !obs.DNS[name]:
		add(PublishDNS, "address not published")
	case !app.Clearnet() && obs.DNS[name]:
		add(WithdrawDNS, "onion-only: nothing on the clearnet")
	}
	return p
}

func planRemoval(name string, obs Observed) AppPlan {
	p := AppPlan{App: name, Removal: true}
	add := func(k StepKind, reason string) { p.Steps = append(p.Steps, Step{k, reason}) }
	if obs.DNS[name] {
		add(WithdrawDNS, "app removed")
	}
	if obs.Onions[name] {
		add(RemoveOnion, "app removed (the key stays unless purged)")
	}
	present, active := obs.AppUnits(name)
	if active {
		add(StopUnit, "app removed")
	}
	if present || obs.NetUnits[name] {
		add(RemoveUnit, "app removed")
	}
	if obs.Networks[name] {
		add(DetachNetwork, "app removed")
	}
	return p
}

// leftovers are apps something is observed of, that are not desired (sorted).
func leftovers(wanted map[string]bool, obs Observed) []string {
	seen := map[string]bool{}
	note := func(name string) {
		if !wanted[name] {
			seen[name] = true
		}
	}
	for n := range obs.Networks {
		note(n)
	}
	for key := range obs.Units {
		app, _ := appOfKey(key)
		note(app)
	}
	for n := range obs.NetUnits {
		note(n)
	}
	for n, ok := range obs.Onions {
		if ok {
			note(n)
		}
	}
	for n, ok := range obs.DNS {
		if ok {
			note(n)
		}
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func sourceOf(app store.App) string {
	var out []string
	for _, c := range app.Containers {
		src := c.Image
		if c.Static != "" {
			src = "static " + c.Static
		}
		if len(app.Containers) > 1 {
			src = c.Name + " " + src
		}
		out = append(out, src)
	}
	return strings.Join(out, ", ")
}

func netReason(app store.App) string {
	switch {
	case app.OnionOnly:
		return "no netns yet (onion-only: ULA link to the host, no LAN)"
	case app.IPv4:
		return "no netns yet (LAN IPv6 + DHCPv4, ULA)"
	}
	return "no netns yet (LAN IPv6, ULA)"
}
