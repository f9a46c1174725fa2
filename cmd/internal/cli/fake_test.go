package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
	"github.com/onionpod/onionpod/pods"
)

// fakeDaemon stands in for the daemon's LocalAPI in the commands' package tests: it keeps app
// records as the daemon does (generations, conflicts) and reports every stored app running at
// the addresses observed says. It implements every client interface the commands declare.
type fakeDaemon struct {
	mu       sync.Mutex
	apps     map[string]api.AppStatus
	observed func(app store.App) api.AppStatus // the status of a running app (addresses...)
	calls    []string                          // what was asked, in order ("put blog", ...)
	// conflicts is how many Puts are refused with a conflict first (another change came in).
	conflicts int
	// racer, when set, is the change the other writer makes before each refused Put.
	racer func(app *store.App)

	uploaded []byte // the last image archive sent
	// busy is how many uploads are refused first (429: the user's uploads are all in use).
	busy   int
	images []api.Image
	pruned api.PruneReport
	dns    api.DNSStatus
	logs   string
	synced int
	// update answers an update (nil: up to date); rollback a rollback.
	update   func(name string, req api.UpdateRequest) api.UpdateResult
	rollback func(name string, req api.RollbackRequest) (api.UpdateResult, error)

	dashboard api.DashboardStatus // the dashboard's LAN side, onion service and devices
	loginKey  string
	logins    int // login keys made
}

func newFakeDaemon(apps ...api.AppStatus) *fakeDaemon {
	f := &fakeDaemon{apps: map[string]api.AppStatus{}, observed: observedAt}
	for _, a := range apps {
		f.apps[a.App.Name] = a
	}
	return f
}

// onionOf is the fake .onion address of an app (56 characters, as tor's).
func onionOf(app string) string {
	return strings.Repeat(string(app[0]), 56) + ".onion"
}

// observedAt is what the fake daemon reports of a running app: its addresses on the LAN
// 2001:db8:1::/64 in the zone box.example.
func observedAt(app store.App) api.AppStatus {
	st := api.AppStatus{App: app, State: api.StateRunning, ObservedGeneration: app.Generation,
		Network: api.NetStatus{ULA: "fd00:1::6", MAC: "02:00:00:00:00:06"}}
	if app.Stopped {
		st.State = api.StateStopped
		return st
	}
	if app.Clearnet() {
		st.Network.LAN = "2001:db8:1::6"
		st.DNS = api.DNSRecord{Name: app.Name + ".box.example.", Addresses: []string{"2001:db8:1::6"}, Published: true}
	}
	if app.WantsOnion() {
		st.Onion = api.OnionStatus{Address: onionOf(app.Name), Added: true, Published: true}
	}
	st.Unit = api.UnitStatus{Name: "onionpod-pod-" + app.Name + ".service", ActiveState: "active", SubState: "running"}
	for _, c := range app.Containers {
		st.Containers = append(st.Containers, api.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: c.ImageID, Unit: st.Unit})
	}
	return st
}

func (f *fakeDaemon) called(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

// AppList is Apps as ls gets them: each app's ListEntry, through JSON, as the daemon serves
// them and the client reads them (so the golden table shows what the list view loses).
func (f *fakeDaemon) AppList(ctx context.Context) ([]api.AppStatus, error) {
	apps, err := f.Apps(ctx)
	if err != nil {
		return nil, err
	}
	for i := range apps {
		wire, err := json.Marshal(apps[i].ListEntry())
		if err != nil {
			return nil, err
		}
		var e api.ListEntry
		if err := json.Unmarshal(wire, &e); err != nil {
			return nil, err
		}
		apps[i] = e.Status()
	}
	return apps, nil
}

func (f *fakeDaemon) Apps(ctx context.Context) ([]api.AppStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("apps")
	out := []api.AppStatus{}
	for _, a := range f.apps {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].App.Name < out[j].App.Name })
	return out, nil
}

func (f *fakeDaemon) App(ctx context.Context, name string) (api.AppStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("app %s", name)
	st, ok := f.apps[name]
	if !ok {
		return api.AppStatus{}, errkind.NotFoundf("daemon: app %q: no such app", name)
	}
	return st, nil
}

func (f *fakeDaemon) Put(ctx context.Context, app store.App) (api.AppStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("put %s", app.Name)
	old := f.apps[app.Name]
	if f.conflicts > 0 {
		f.conflicts--
		if f.racer != nil {
			other := old.App
			f.racer(&other)
			other.Generation++
			f.apps[app.Name] = api.AppStatus{App: other, State: api.StateStarting, ObservedGeneration: old.ObservedGeneration}
		}
		return api.AppStatus{}, errkind.Conflictf("daemon: app %q changed since it was read", app.Name)
	}
	if app.Generation != old.App.Generation {
		return api.AppStatus{}, errkind.Conflictf("daemon: app %q changed since it was read", app.Name)
	}
	if err := app.Validate(); err != nil {
		return api.AppStatus{}, err
	}
	app.Generation++
	// As the daemon: what the last pass observed, with the new record.
	st := old
	st.App = app
	if st.State == "" {
		st.State = api.StateStarting
	}
	f.apps[app.Name] = st
	return st, nil
}

func (f *fakeDaemon) Wait(ctx context.Context, name, what string, generation int64, timeout time.Duration) (api.AppStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("wait %s %s %d", name, what, generation)
	st, ok := f.apps[name]
	if !ok {
		return api.AppStatus{}, errkind.NotFoundf("daemon: app %q: no such app", name)
	}
	st = f.observed(st.App)
	f.apps[name] = st
	return st, nil
}

func (f *fakeDaemon) LoadImage(ctx context.Context, archive io.Reader) (api.ImageInfo, error) {
	data, err := io.ReadAll(archive)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("load image")
	if err != nil {
		return api.ImageInfo{}, err
	}
	if f.busy > 0 {
		f.busy--
		return api.ImageInfo{}, fmt.Errorf("api: this user has 2 image uploads open already: %w", api.ErrBusy)
	}
	f.uploaded = data
	return api.ImageInfo{ID: "sha256:" + strings.Repeat("ab", 32), Ref: "archive:local"}, nil
}

func (f *fakeDaemon) Start(ctx context.Context, name string) (api.AppStatus, error) {
	return f.setStopped(name, false)
}

func (f *fakeDaemon) Stop(ctx context.Context, name string) (api.AppStatus, error) {
	return f.setStopped(name, true)
}

func (f *fakeDaemon) setStopped(name string, stopped bool) (api.AppStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("stopped %s %v", name, stopped)
	st, ok := f.apps[name]
	if !ok {
		return api.AppStatus{}, errkind.NotFoundf("daemon: app %q: no such app", name)
	}
	st.App.Stopped = stopped
	st.App.Generation++
	f.apps[name] = st
	return st, nil
}

func (f *fakeDaemon) Remove(ctx context.Context, name string, purgeKey bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("remove %s purge=%v", name, purgeKey)
	if _, ok := f.apps[name]; !ok {
		return errkind.NotFoundf("daemon: app %q: no such app", name)
	}
	delete(f.apps, name)
	return nil
}

func (f *fakeDaemon) Logs(ctx context.Context, name, container string, follow bool, w io.Writer) error {
	f.called("logs %s follow=%v", name, follow)
	_, err := io.WriteString(w, f.logs)
	return err
}

func (f *fakeDaemon) DNS(ctx context.Context) (api.DNSStatus, error) { return f.dns, nil }

func (f *fakeDaemon) Images(ctx context.Context) ([]api.Image, error) { return f.images, nil }

func (f *fakeDaemon) PruneImages(ctx context.Context) (api.PruneReport, error) {
	f.called("prune images")
	return f.pruned, nil
}

// RenewTLS answers as the daemon: the app's status after the renewal (as stored here), or bad
// input for an app that gets no certificate.
func (f *fakeDaemon) RenewTLS(ctx context.Context, name string) (api.AppStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("renew tls %s", name)
	st, ok := f.apps[name]
	if !ok {
		return api.AppStatus{}, errkind.NotFoundf("daemon: app %q: no such app", name)
	}
	if st.TLS == nil || st.TLS.Note != "" {
		return api.AppStatus{}, errkind.BadInputf("app %q gets no certificate (onion-only, stopped, or no web port)", name)
	}
	return st, nil
}

func (f *fakeDaemon) Sync(ctx context.Context) error {
	f.synced++
	return nil
}

func (f *fakeDaemon) Update(ctx context.Context, name string, req api.UpdateRequest) (api.UpdateResult, error) {
	f.mu.Lock()
	f.called("update %s container=%q image=%q auto=%v check=%v", name, req.Container, req.Image, req.Auto, req.Check)
	st, ok := f.apps[name]
	f.mu.Unlock()
	if !ok {
		return api.UpdateResult{}, errkind.NotFoundf("daemon: app %q: no such app", name)
	}
	if f.update == nil {
		return api.UpdateResult{App: name, Result: api.UpdateUpToDate, Status: st}, nil
	}
	res := f.update(name, req)
	res.Status = st
	return res, nil
}

func (f *fakeDaemon) Rollback(ctx context.Context, name string, req api.RollbackRequest) (api.UpdateResult, error) {
	f.mu.Lock()
	f.called("rollback %s container=%q", name, req.Container)
	f.mu.Unlock()
	return f.rollback(name, req)
}

func (f *fakeDaemon) DashboardStatus(ctx context.Context) (api.DashboardStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("dashboard status")
	return f.dashboard, nil
}

// DashboardEnable turns the onion on (the address of the app "dashboard") and adds client as
// the first device unless there is one, as the daemon does.
func (f *fakeDaemon) DashboardEnable(ctx context.Context, client string) (api.DashboardStatus, api.DashboardClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("dashboard enable %s", client)
	o := &f.dashboard.Onion
	o.Enabled, o.Address = true, onionOf("dashboard")
	if len(o.Clients) > 0 {
		return f.dashboard, api.DashboardClient{}, nil
	}
	o.Clients = []string{client}
	return f.dashboard, credentialOf(client), nil
}

func (f *fakeDaemon) DashboardDisable(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("dashboard disable")
	f.dashboard.Onion.Enabled, f.dashboard.Onion.Added, f.dashboard.Onion.Published = false, false, false
	return nil
}

func (f *fakeDaemon) DashboardLogin(ctx context.Context, rotate bool) (api.DashboardLogin, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("dashboard login rotate=%v", rotate)
	if f.loginKey == "" || rotate {
		f.logins++
		f.loginKey = fmt.Sprintf("login-key-%d", f.logins)
	}
	return api.DashboardLogin{Key: f.loginKey, Listen: f.dashboard.Listen}, nil
}

func (f *fakeDaemon) DashboardAddClient(ctx context.Context, name string) (api.DashboardClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("dashboard add %s", name)
	if !names.IsLabel(name) {
		return api.DashboardClient{}, errkind.BadInputf("dashboard: device name %q: want letters, digits and -", name)
	}
	if slices.Contains(f.dashboard.Onion.Clients, name) {
		return api.DashboardClient{}, errkind.Conflictf("dashboard: device %q exists", name)
	}
	f.dashboard.Onion.Clients = append(f.dashboard.Onion.Clients, name)
	return credentialOf(name), nil
}

func (f *fakeDaemon) DashboardRemoveClient(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called("dashboard rm %s", name)
	i := slices.Index(f.dashboard.Onion.Clients, name)
	if i < 0 {
		return errkind.NotFoundf("dashboard: no device %q", name)
	}
	f.dashboard.Onion.Clients = slices.Delete(f.dashboard.Onion.Clients, i, i+1)
	return nil
}

// credentialOf is the fake key of a new device of the dashboard (the forms tor's are in).
func credentialOf(name string) api.DashboardClient {
	key := strings.ToUpper(strings.Repeat(string(name[0]), 52))
	addr := onionOf("dashboard")
	return api.DashboardClient{Name: name, Address: addr, PrivateKey: key,
		AuthPrivate: strings.TrimSuffix(addr, ".onion") + ":descriptor:x25519:" + key}
}

// client returns the fake as the lazy client a command's options hold.
func client[C any](f *fakeDaemon) func() (C, error) {
	return func() (C, error) { return any(f).(C), nil }
}

// fakeCache is the box's image store for a prefetch: it "pulls" by writing a progress line.
type fakeCache struct{ pulled []string }

func (c *fakeCache) Image(ref string) (*pods.Image, error) {
	return nil, fmt.Errorf("pods: image %q: %w", ref, pods.ErrNotFound)
}

func (c *fakeCache) Pull(ctx context.Context, ref string, progress io.Writer) (*pods.Image, error) {
	c.pulled = append(c.pulled, ref)
	fmt.Fprintf(progress, "[progress bar] %s\n", ref)
	return &pods.Image{Ref: ref}, nil
}
