package daemon

import (
	"errors"
	"slices"
	"testing"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/reconcile"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/dns"
	"github.com/onionpod/onionpod/onion"
)

// TestStateOf pins what the user is told for each situation: running only when everything asked
// for is in place; transient trouble (tor down, DNS server down) is "starting" with the reason;
// a failed step, a failed unit, a refused service or a rejected DNS update is "failed".
func TestStateOf(t *testing.T) {
	web := store.App{Name: "web", Containers: []store.Container{{Name: "web", Image: "r/web:1"}}, Ports: []store.Port{{Public: 80, Target: 80}}, Onion: true}
	notes := store.App{Name: "notes", Containers: []store.Container{{Name: "db", Image: "pg"}, {Name: "web", Image: "r/web:1"}},
		Ports: []store.Port{{Public: 80, Target: 80, Container: "web"}}, Onion: true}
	up := api.UnitStatus{ActiveState: "active", SubState: "running"}
	running := api.AppStatus{
		Containers: []api.ContainerStatus{{Name: "web", Unit: up}},
		Network:    api.NetStatus{LAN: "2001:db8:1::6"},
		Onion:      api.OnionStatus{Added: true},
		DNS:        api.DNSRecord{Published: true},
	}
	with := func(change func(*api.AppStatus)) api.AppStatus {
		st := running
		st.Containers = slices.Clone(running.Containers)
		change(&st)
		return st
	}
	healthy := &api.HealthStatus{State: api.HealthHealthy}
	two := func(db *api.HealthStatus, dbUnit api.UnitStatus) api.AppStatus {
		return with(func(s *api.AppStatus) {
			s.Containers = []api.ContainerStatus{{Name: "db", Unit: dbUnit, Health: db}, {Name: "web", Unit: up, Health: healthy}}
		})
	}
	torDown := reconcile.Result{OnionErr: onion.ErrTorUnavailable}
	cases := []struct {
		name    string
		app     store.App
		st      api.AppStatus
		r       *reconcile.AppResult
		res     reconcile.Result
		want    string
		wantErr bool
	}{
		{"all in place", web, running, nil, reconcile.Result{}, api.StateRunning, false},
		{"stopped", store.App{Name: "web", Containers: []store.Container{{Name: "web", Image: "x"}}, Stopped: true}, api.AppStatus{}, nil, reconcile.Result{}, api.StateStopped, false},
		{"a step failed", web, running, &reconcile.AppResult{Err: errors.New("pull: denied")}, reconcile.Result{}, api.StateFailed, true},
		{"unit failed", web, with(func(s *api.AppStatus) { s.Containers[0].Unit.ActiveState = "failed" }), nil, reconcile.Result{}, api.StateFailed, true},
		{"unit restarting", web, with(func(s *api.AppStatus) { s.Containers[0].Unit.SubState = "auto-restart" }), nil, reconcile.Result{}, api.StateStarting, false},
		{"tor down", web, with(func(s *api.AppStatus) { s.Onion.Added = false }), nil, torDown, api.StateStarting, true},
		{"tor refused the service", web, with(func(s *api.AppStatus) { s.Onion.Err = "550 collision" }), nil, reconcile.Result{}, api.StateFailed, true},
		{"waiting for its LAN address", web, with(func(s *api.AppStatus) { s.Network.LAN, s.DNS.Published = "", false }), nil, reconcile.Result{}, api.StateStarting, true},
		{"dns pending", web, with(func(s *api.AppStatus) { s.DNS.Published = false }), nil, reconcile.Result{DNSErr: dns.ErrPending}, api.StateStarting, true},
		{"dns rejected", web, with(func(s *api.AppStatus) { s.DNS.Published = false }), nil, reconcile.Result{DNSErr: dns.ErrRejected}, api.StateFailed, true},
		{"no IPv6 prefix on the LAN: nothing to publish", web, with(func(s *api.AppStatus) { s.Network.LAN, s.DNS.Published = "", false }), nil, reconcile.Result{}, api.StateRunning, false},
		{"onion-only needs no DNS", store.App{Name: "web", Containers: []store.Container{{Name: "web", Image: "x"}}, Ports: web.Ports, OnionOnly: true},
			with(func(s *api.AppStatus) { s.DNS.Published = false }), nil, reconcile.Result{}, api.StateRunning, false},
		{"two containers, both healthy", notes, two(healthy, up), nil, reconcile.Result{}, api.StateRunning, false},
		{"a container starting", notes, two(&api.HealthStatus{State: api.HealthStarting}, up), nil, reconcile.Result{}, api.StateStarting, false},
		{"a container not healthy yet", notes, two(&api.HealthStatus{State: api.HealthStarting, LastError: "connection refused"}, up),
			nil, reconcile.Result{}, api.StateStarting, true},
		{"a container unhealthy", notes, two(&api.HealthStatus{State: api.HealthUnhealthy, LastError: "timeout"}, up),
			nil, reconcile.Result{}, api.StateStarting, true},
		{"a container not running", notes, two(nil, api.UnitStatus{ActiveState: "activating", SubState: "auto-restart"}),
			nil, reconcile.Result{}, api.StateStarting, false},
		{"a container's unit failed", notes, two(nil, api.UnitStatus{ActiveState: "failed"}), nil, reconcile.Result{}, api.StateFailed, true},
	}
	for _, c := range cases {
		got, lastErr := stateOf(c.app, c.st, c.r, c.res, "", c.name != "no IPv6 prefix on the LAN: nothing to publish")
		if got != c.want || (lastErr != "") != c.wantErr {
			t.Errorf("%s: state %q, last error %q; want %q (error: %v)", c.name, got, lastErr, c.want, c.wantErr)
		}
	}
}
