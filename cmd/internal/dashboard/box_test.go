package dashboard

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/probe"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/onion"
)

// testBox stands in for the daemon in the HTTP-level tests: apps in memory, the actions
// recorded, and backups made by onion.Backup from a real key store.
type testBox struct {
	mu      sync.Mutex
	apps    map[string]*api.AppStatus
	actions []string
	keys    *onion.KeyStore
	probes  map[string]map[probe.Path][]probe.Result
}

func newTestBox(t testing.TB, n int) *testBox {
	t.Helper()
	b := &testBox{apps: map[string]*api.AppStatus{}, keys: &onion.KeyStore{Dir: t.TempDir()},
		probes: map[string]map[probe.Path][]probe.Result{}}
	now := time.Now()
	for i := range n {
		name := fmt.Sprintf("app%02d", i)
		if i == 0 {
			name = "blog"
		}
		k, _, err := b.keys.Ensure(name)
		if err != nil {
			t.Fatal(err)
		}
		st := &api.AppStatus{
			App:   store.App{Name: name, Containers: []store.Container{{Name: name, Image: "registry.example/" + name + ":1"}}, Onion: true, Ports: []store.Port{{Public: 80, Target: 8080}}},
			State: api.StateRunning,
			Unit:  api.UnitStatus{ActiveState: "active", SubState: "running", Restarts: i % 3},
			Network: api.NetStatus{LAN: fmt.Sprintf("2001:db8:1:0:4cf1:aff:fe2b:%x", i+1), ULA: fmt.Sprintf("fd6f:6e69:6f6e:1::%x", i+2),
				IPv4: fmt.Sprintf("192.0.2.%d", 100+i%100)},
			Onion: api.OnionStatus{Address: k.Address(), Added: true, Published: true, Since: now},
			DNS:   api.DNSRecord{Name: name + ".box.example.", Published: true},
		}
		if i == 0 { // a pod of two containers with a health check, and an HTTPS certificate
			st.App.Containers = append(st.App.Containers, store.Container{Name: "db", Image: "registry.example/postgres:15"})
			st.Containers = []api.ContainerStatus{
				{Name: name, Image: "registry.example/blog:1", Unit: api.UnitStatus{ActiveState: "active"},
					Health: &api.HealthStatus{Check: "http GET [fd00::6]:8080/healthz every 10s", State: api.HealthHealthy}},
				{Name: "db", Image: "registry.example/postgres:15", Unit: api.UnitStatus{ActiveState: "active", Restarts: 1}}}
			st.TLS = &api.TLSStatus{Issuer: "Pebble", NotAfter: now.Add(5 * 24 * time.Hour), RenewAt: now.Add(-time.Hour),
				LastError: "certs: blog.box.example: the CA refused the order"}
		}
		b.apps[name] = st
		var onionHist, v6Hist []probe.Result
		for j := range 12 {
			at := now.Add(time.Duration(j-12) * 5 * time.Minute)
			ok := (i+j)%7 != 0
			r := probe.Result{Path: probe.PathOnion, At: at, OK: ok, Status: 200, Latency: time.Duration(600+j*37) * time.Millisecond}
			if !ok {
				r.Status, r.Hop, r.Err = 0, probe.HopIntroduction, "tor: introduction: introduction failed (SOCKS5 reply 0xF2)"
			}
			onionHist = append(onionHist, r)
			v6Hist = append(v6Hist, probe.Result{Path: probe.PathIPv6, At: at, OK: true, Status: 200, Latency: time.Duration(2+j%3) * time.Millisecond})
		}
		b.probes[name] = map[probe.Path][]probe.Result{probe.PathOnion: onionHist, probe.PathIPv6: v6Hist}
	}
	return b
}

func (b *testBox) Apps(context.Context) ([]api.AppStatus, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []api.AppStatus
	for _, a := range b.apps {
		out = append(out, *a)
	}
	return out, nil
}

func (b *testBox) App(_ context.Context, name string) (api.AppStatus, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	a, ok := b.apps[name]
	if !ok {
		return api.AppStatus{}, errkind.NotFoundf("no such app %q", name)
	}
	return *a, nil
}

func (b *testBox) do(app, action string, change func(*api.AppStatus)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	a, ok := b.apps[app]
	if !ok {
		return errkind.NotFoundf("no such app %q", app)
	}
	b.actions = append(b.actions, action+" "+app)
	change(a)
	return nil
}

func (b *testBox) Start(_ context.Context, app string) error {
	return b.do(app, "start", func(a *api.AppStatus) { a.App.Stopped, a.State = false, api.StateRunning })
}

func (b *testBox) Stop(_ context.Context, app string) error {
	return b.do(app, "stop", func(a *api.AppStatus) { a.App.Stopped, a.State = true, api.StateStopped })
}

func (b *testBox) Restart(_ context.Context, app string) error {
	return b.do(app, "restart", func(*api.AppStatus) {})
}

func (b *testBox) SetOnion(_ context.Context, app string, on bool) error {
	return b.do(app, fmt.Sprint("onion=", on), func(a *api.AppStatus) { a.App.Onion = on })
}

// Update and Rollback record the action; the daemon's own update is tested in package daemon.
func (b *testBox) Update(_ context.Context, app string) (string, error) {
	return "updated", b.do(app, "update", func(*api.AppStatus) {})
}

func (b *testBox) Rollback(_ context.Context, app string) (string, error) {
	return "rolled back", b.do(app, "rollback", func(*api.AppStatus) {})
}

func (b *testBox) Backup(_ context.Context, w io.Writer, apps []string, passphrase string) error {
	r, err := age.NewScryptRecipient(passphrase)
	if err != nil {
		return err
	}
	r.SetWorkFactor(10) // fast, for tests
	_, err = onion.Backup(w, b.keys, apps, []age.Recipient{r})
	return err
}

func (b *testBox) Tail(_ context.Context, app string, n int) ([]string, error) {
	return []string{"Nov 30 12:00:01 box " + app + "[42]: listening on :8080", "Nov 30 12:00:02 box " + app + "[42]: GET / 200"}, nil
}

func (b *testBox) History(app string) map[probe.Path][]probe.Result {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.probes[app]
}

func (b *testBox) recorded() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.actions...)
}

func (b *testBox) deps() Deps {
	return Deps{Apps: b, Actions: b, Backups: b, Logs: b, Probes: b, Updates: b}
}
