package reconcile

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/onion"
	"github.com/onionpod/onionpod/pods"
)

// fakes records every adapter call, in order, per app; failing[app] makes that app's image fetch
// fail. This is a unit test of Apply's own logic (order, isolation); the e2e tests run it against
// the real adapters.
type fakes struct {
	mu       sync.Mutex
	attached bool // Addresses answers as for an attached pod
	calls    map[string][]string
	global   []string
	unitLog  []string // WriteApp, LoadApp and ApplyApp calls, in order ("write APP", "load APP NETNS", "apply APP")
	// loadBeside makes Attach wait (up to 10 s) for the app's LoadApp to be called.
	loadBeside  map[string]chan struct{}
	failing     map[string]bool
	services    []onion.Service
	records     []dns.Record
	keys        map[string]*onion.Key
	clientLooks map[string]clientLook // see ClientsIn
}

func newFakes() *fakes {
	return &fakes{calls: map[string][]string{}, failing: map[string]bool{}, keys: map[string]*onion.Key{}}
}

func (f *fakes) log(app, call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[app] = append(f.calls[app], call)
}

func (f *fakes) EnsureIn(ctx context.Context, app string) (*onion.Key, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if settled, _ := ctx.Value(settledLook{}).(bool); settled {
		f.calls[app] = append(f.calls[app], "key in the settled look")
	}
	if k, ok := f.keys[app]; ok {
		return k, false, nil
	}
	k, err := onion.GenerateKey(rand.Reader)
	f.keys[app] = k
	f.calls[app] = append(f.calls[app], "key")
	return k, true, err
}

// ClientsIn notes, apart from the calls that change something, whether the look was settled
// and which calls for app had been made by then.
func (f *fakes) ClientsIn(ctx context.Context, app string) ([]onion.AuthorizedClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	settled, _ := ctx.Value(settledLook{}).(bool)
	if f.clientLooks == nil {
		f.clientLooks = map[string]clientLook{}
	}
	f.clientLooks[app] = clientLook{settled: settled, after: slices.Clone(f.calls[app])}
	return nil, nil
}

// clientLook is how ClientsIn was asked about an app.
type clientLook struct {
	settled bool
	after   []string // the app's calls made before
}

func (f *fakes) Apps() ([]string, error) { return nil, nil }

func (f *fakes) Attach(_ context.Context, a network.Attachment) (network.Result, error) {
	f.log(a.App, "attach")
	if loaded, ok := f.loadBeside[a.App]; ok {
		select {
		case <-loaded:
			f.log(a.App, "loaded during the attach")
		case <-time.After(10 * time.Second):
		}
	}
	return network.Result{Netns: "/run/netns/onionpod-" + a.App, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1},
		ULA: netip.MustParseAddr("fd00::6"), LAN: netip.MustParseAddr("2001:db8:1::6")}, nil
}
func (f *fakes) Detach(_ context.Context, app string) error { f.log(app, "detach"); return nil }
func (f *fakes) Attached(context.Context) ([]string, error) { return nil, nil }
func (f *fakes) PodNetns(app string) string                 { return "/run/netns/onionpod-" + app }
func (f *fakes) Addresses(_ context.Context, app string) (network.Result, error) {
	if !f.attached {
		return network.Result{}, network.ErrNotFound
	}
	return network.Result{Netns: "/run/netns/onionpod-" + app, ULA: netip.MustParseAddr("fd00::6")}, nil
}

func (f *fakes) Units(_ context.Context, app store.App, netns string) ([]pods.Unit, error) {
	return []pods.Unit{{Name: pods.PodUnitName(app.Name), Content: []byte(netns)}}, nil
}
func (f *fakes) Fetching(store.App) bool { return false }

func (f *fakes) Fetch(_ context.Context, app store.App) error {
	f.log(app.Name, "image")
	if f.failing[app.Name] {
		return errors.New("registry unreachable")
	}
	return nil
}

func (f *fakes) WriteApp(app string, units []pods.Unit) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unitLog = append(f.unitLog, "write "+app)
	return nil
}

func (f *fakes) LoadApp(_ context.Context, app string, units []pods.Unit) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unitLog = append(f.unitLog, "load "+app+" "+string(units[0].Content))
	if ch, ok := f.loadBeside[app]; ok {
		close(ch)
	}
	return nil
}

func (f *fakes) ApplyApp(_ context.Context, app string, units []pods.Unit) error {
	f.mu.Lock()
	f.unitLog = append(f.unitLog, "apply "+app)
	f.mu.Unlock()
	for range units {
		f.log(app, "unit")
	}
	return nil
}

// image is the container of an app of one image.
func image(app, ref string) []store.Container {
	return []store.Container{{Name: app, Image: ref}}
}
func (f *fakes) Stop(_ context.Context, app string) error   { f.log(app, "stop"); return nil }
func (f *fakes) Remove(_ context.Context, app string) error { f.log(app, "remove-unit"); return nil }

type fakeOnions struct{ *fakes }

func (o fakeOnions) Set(_ context.Context, s []onion.Service) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.services = s
	o.global = append(o.global, "onion-set")
	return nil
}
func (o fakeOnions) Status() map[string]onion.ServiceStatus { return nil }

type fakeDNS struct{ *fakes }

func (d fakeDNS) Set(_ context.Context, r []dns.Record) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.records = r
	d.global = append(d.global, "dns-set")
	return nil
}
func (d fakeDNS) Status() dns.Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return dns.Status{Published: d.records}
}

func (f *fakes) runner() *Runner {
	return &Runner{Keys: f, Network: f, Pods: f, Units: f, Onions: fakeOnions{f}, DNS: fakeDNS{f}, Zone: "box.example"}
}

func (f *fakes) serviceApps() []string {
	var apps []string
	for _, s := range f.services {
		apps = append(apps, s.App)
	}
	slices.Sort(apps)
	return apps
}

func (f *fakes) recordNames() []string {
	var names []string
	for _, r := range f.records {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	return names
}

func TestApplyOrderAndIsolation(t *testing.T) {
	f := newFakes()
	f.failing["bad"] = true
	desired := []store.App{
		{Name: "good", Containers: image("good", "r.example/good:1"), Ports: []store.Port{{Public: 80, Target: 8080}}, Onion: true},
		{Name: "bad", Containers: image("bad", "r.example/bad:1"), Ports: []store.Port{{Public: 80, Target: 80}}, Onion: true},
		{Name: "lan", Containers: image("lan", "r.example/lan:1")},
		{Name: "paused", Containers: image("paused", "r.example/p:1"), Ports: []store.Port{{Public: 80, Target: 80}}, Onion: true, Stopped: true},
		{Name: "down", Containers: image("down", "r.example/down:1")},
		{Name: "steady", Containers: image("steady", "r.example/steady:1")},
	}
	obs := Observed{Keys: map[string]bool{}, Images: map[string]bool{"down": true, "steady": true}, Networks: map[string]bool{},
		Units: map[string]UnitState{"paused": {Present: true, Current: true, Active: true}, "gone": {Present: true, Active: true},
			"down": {Present: true, Current: true}, "steady": {Present: true, Current: true, Active: true}},
		Onions: map[string]bool{}, DNS: map[string]bool{"down": true, "steady": true}, Addresses: map[string]network.Result{}}
	for _, a := range []string{"down", "steady"} {
		obs.Addresses[a] = network.Result{Netns: "/run/netns/onionpod-" + a, LAN: netip.MustParseAddr("2001:db8:1::7")}
	}
	obs.Networks["gone"], obs.Networks["down"], obs.Networks["steady"] = true, true, true
	d := Desired{Apps: desired}
	res := f.runner().Apply(context.Background(), MakePlan(d, obs), d, obs)

	want := map[string][]string{
		"good":   {"key", "image", "attach", "unit"},
		"bad":    {"key", "image"}, // stops at the failed step
		"lan":    {"image", "attach", "unit"},
		"paused": {"stop"},
		"gone":   {"remove-unit", "detach"}, // removal: unit, then network
		// A pod that does not run starts on a namespace Attach has looked at (a crash may have
		// left it half-made); a running one is left alone.
		"down":   {"attach", "unit"},
		"steady": nil,
	}
	for app, calls := range want {
		if !slices.Equal(f.calls[app], calls) {
			t.Errorf("%s: calls %v, want %v", app, f.calls[app], calls)
		}
	}
	if !slices.Equal(f.global, []string{"onion-set", "dns-set"}) {
		t.Errorf("global calls %v, want the onion set before the DNS set", f.global)
	}
	if got := f.serviceApps(); !slices.Equal(got, []string{"good"}) {
		t.Errorf("onion services for %v, want only good (bad failed, lan has none, paused is stopped)", got)
	}
	if got := f.recordNames(); !slices.Equal(got, []string{"down.box.example.", "good.box.example.", "lan.box.example.", "steady.box.example."}) {
		t.Errorf("DNS records %v", got)
	}
	if s := f.services[0]; len(s.Ports) != 1 || s.Ports[0].Virtual != 80 || s.Ports[0].Target != "[fd00::6]:8080" {
		t.Errorf("onion ports %+v, want 80 -> [ULA]:8080", s.Ports)
	}
	if res.Apps["bad"].Err == nil || res.Apps["good"].Err != nil || res.Apps["lan"].Err != nil {
		t.Errorf("errors: bad=%v good=%v lan=%v", res.Apps["bad"].Err, res.Apps["good"].Err, res.Apps["lan"].Err)
	}
	if res.Apps["good"].Address == "" || res.Apps["good"].Address != f.keys["good"].Address() {
		t.Errorf("good's address %q", res.Apps["good"].Address)
	}
}

// TestApplyWritesChangedUnitsFirst: the changed units of every app whose image and network are
// in place (an upgrade that changed every app's units) are written before any app's are
// started, so that systemd reloads once for all; a new app (no network yet) and a stopped one
// are not written ahead.
func TestApplyWritesChangedUnitsFirst(t *testing.T) {
	f := newFakes()
	var apps []store.App
	obs := Observed{Keys: map[string]bool{}, Images: map[string]bool{}, Networks: map[string]bool{},
		Units: map[string]UnitState{}, Onions: map[string]bool{}, DNS: map[string]bool{}, Addresses: map[string]network.Result{}}
	for _, a := range []string{"a1", "a2", "a3", "a4", "a5", "a6"} {
		apps = append(apps, store.App{Name: a, Containers: image(a, "r.example/"+a+":1")})
		obs.Keys[a], obs.Images[a], obs.Networks[a], obs.DNS[a] = true, true, true, true
		obs.Units[a] = UnitState{Present: true, Active: true} // not current: written by an older onionpod
		obs.Addresses[a] = network.Result{Netns: "/run/netns/onionpod-" + a}
	}
	apps = append(apps, store.App{Name: "fresh", Containers: image("fresh", "r.example/fresh:1")})
	d := Desired{Apps: apps}
	f.runner().Apply(context.Background(), MakePlan(d, obs), d, obs)

	var written, applied []string
	for i, call := range f.unitLog {
		verb, app, _ := strings.Cut(call, " ")
		if verb == "load" {
			continue
		}
		if verb == "write" {
			written = append(written, app)
			if len(applied) > 0 {
				t.Errorf("%s written ahead after an app's units were applied: %v", app, f.unitLog[:i+1])
			}
		} else {
			applied = append(applied, app)
		}
	}
	slices.Sort(written)
	slices.Sort(applied)
	if want := []string{"a1", "a2", "a3", "a4", "a5", "a6"}; !slices.Equal(written, want) {
		t.Errorf("written ahead: %v, want %v (not fresh: it has no network yet)", written, want)
	}
	if want := []string{"a1", "a2", "a3", "a4", "a5", "a6", "fresh"}; !slices.Equal(applied, want) {
		t.Errorf("applied: %v, want %v", applied, want)
	}
}

// TestApplyHoldsAndWaits: a held app (its record is damaged) keeps its onion service and DNS
// records as they are, gets no step and no removal, while its pod and network are there; an app
// waiting to retry gets no step and counts as failed.
func TestApplyHoldsAndWaits(t *testing.T) {
	f := newFakes()
	r := f.runner()
	apps := []store.App{
		{Name: "held", Containers: image("held", "r.example/held:1"), Ports: []store.Port{{Public: 80, Target: 80}}, Onion: true},
		{Name: "flaky", Containers: image("flaky", "r.example/flaky:1"), Ports: []store.Port{{Public: 80, Target: 80}}, Onion: true},
	}
	empty := func() Observed {
		return Observed{Keys: map[string]bool{}, Images: map[string]bool{}, Networks: map[string]bool{},
			Units: map[string]UnitState{}, Onions: map[string]bool{}, DNS: map[string]bool{}}
	}
	d := Desired{Apps: apps}
	obs := empty()
	r.Apply(context.Background(), MakePlan(d, obs), d, obs)
	if got := f.serviceApps(); !slices.Equal(got, []string{"flaky", "held"}) {
		t.Fatalf("first pass: services of %v", got)
	}
	f.calls = map[string][]string{}
	f.attached = true

	// Now held's record is damaged, and flaky waits to retry; everything of both is observed.
	obs = empty()
	for _, a := range []string{"held", "flaky"} {
		obs.Keys[a], obs.Images[a], obs.Networks[a], obs.Onions[a], obs.DNS[a] = true, true, true, true, true
		obs.Units[a] = UnitState{Present: true, Current: true, Active: true}
	}
	d = Desired{Apps: apps[1:], Held: map[string]Hold{"held": {Why: "record damaged", Last: &apps[0]}},
		Retry: map[string]Retry{"flaky": {Failures: 2, In: 10 * time.Second, Err: "registry unreachable"}}}
	plan := MakePlan(d, obs)
	res := r.Apply(context.Background(), plan, d, obs)
	if len(f.calls) != 0 {
		t.Errorf("calls for a held or waiting app: %v", f.calls)
	}
	if got := f.serviceApps(); !slices.Equal(got, []string{"held"}) {
		t.Errorf("services of %v, want held's kept and flaky's withdrawn (it failed)", got)
	}
	if got := f.recordNames(); !slices.Equal(got, []string{"held.box.example."}) {
		t.Errorf("DNS records %v, want held's kept", got)
	}
	if fl := res.Apps["flaky"]; !fl.Retrying || fl.Err == nil || fl.Err.Error() != "registry unreachable" {
		t.Errorf("flaky's result: %+v", fl)
	}
	for _, p := range plan.Apps {
		if p.Removal {
			t.Errorf("plan removes %s", p.App)
		}
	}
}

// TestNewAppLoadedBesideAttach: a new app's units are written and loaded by systemd while its
// network is attached (the fake attach waits for the load: a load after the attach would leave
// it waiting), with the namespace path the attach gives; an app whose network or unit is there
// gets no load ahead.
func TestNewAppLoadedBesideAttach(t *testing.T) {
	f := newFakes()
	f.loadBeside = map[string]chan struct{}{"fresh": make(chan struct{})}
	obs := Observed{Keys: map[string]bool{}, Images: map[string]bool{"fresh": true, "rewired": true, "restarted": true},
		Networks: map[string]bool{"restarted": true}, Units: map[string]UnitState{"rewired": {Present: true, Current: true}},
		Onions: map[string]bool{}, DNS: map[string]bool{}, Addresses: map[string]network.Result{}}
	var apps []store.App
	for _, a := range []string{"fresh", "rewired", "restarted"} {
		apps = append(apps, store.App{Name: a, Containers: image(a, "r.example/"+a+":1")})
	}
	d := Desired{Apps: apps}
	f.runner().Apply(context.Background(), MakePlan(d, obs), d, obs)

	if got, want := f.calls["fresh"], []string{"attach", "loaded during the attach", "unit"}; !slices.Equal(got, want) {
		t.Errorf("fresh: %v, want %v", got, want)
	}
	var loads []string
	for _, call := range f.unitLog {
		if strings.HasPrefix(call, "load ") {
			loads = append(loads, call)
		}
	}
	if want := []string{"load fresh /run/netns/onionpod-fresh"}; !slices.Equal(loads, want) {
		t.Errorf("loads: %v, want %v (rewired has its unit, restarted its network)", loads, want)
	}
}

// settledLook marks the contexts the test's Runner.Settle made.
type settledLook struct{}

// Apply loads the keys the observation found in place in one settled look (the daemon's reads
// the file watch's queue once for all of them), and makes or reloads the others afresh: a key
// missing at the observation may have been made since, and is looked at now. The onion
// services' clients are looked at in a second settled look, after the keys were made.
func TestApplyLoadsFoundKeysInTheSettledLook(t *testing.T) {
	f := newFakes()
	found, _ := onion.GenerateKey(rand.Reader)
	f.keys["kept"] = found
	desired := []store.App{
		{Name: "kept", Containers: image("kept", "r.example/kept:1"), Onion: true},
		{Name: "new", Containers: image("new", "r.example/new:1"), Onion: true},
	}
	obs := Observed{Keys: map[string]bool{"kept": true}, Images: map[string]bool{}, Networks: map[string]bool{},
		Units: map[string]UnitState{}, Onions: map[string]bool{}, DNS: map[string]bool{}, Addresses: map[string]network.Result{}}
	r := f.runner()
	settles := 0
	r.Settle = func(ctx context.Context) context.Context {
		settles++
		return context.WithValue(ctx, settledLook{}, true)
	}
	d := Desired{Apps: desired}
	res := r.Apply(context.Background(), MakePlan(d, obs), d, obs)
	if res.Apps["kept"].Address != found.Address() {
		t.Errorf("kept: address %q, want its key's %q", res.Apps["kept"].Address, found.Address())
	}
	if !slices.Contains(f.calls["kept"], "key in the settled look") {
		t.Errorf("the key found in place was not loaded in the settled look: %q", f.calls["kept"])
	}
	if slices.Contains(f.calls["new"], "key in the settled look") || !slices.Contains(f.calls["new"], "key") {
		t.Errorf("the key to make was not made afresh: %q", f.calls["new"])
	}
	for _, app := range []string{"kept", "new"} {
		if look := f.clientLooks[app]; !look.settled {
			t.Errorf("%s: its clients were not looked at in a settled look", app)
		}
	}
	if look := f.clientLooks["new"]; !slices.Contains(look.after, "key") {
		t.Errorf("new: its clients were looked at before its key was made (calls by then: %q)", look.after)
	}
	if settles != 2 {
		t.Errorf("Apply settled %d looks, want two for all its apps (keys, then clients)", settles)
	}
}
