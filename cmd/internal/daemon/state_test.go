package daemon

import (
	"errors"
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
	web := store.App{Name: "web", Image: "r/web:1", Ports: []store.Port{{Public: 80, Target: 80}}, Onion: true}
	running := api.AppStatus{
		Unit:    api.UnitStatus{ActiveState: "active", SubState: "running"},
		Network: api.NetStatus{LAN: "2001:db8:1::6"},
		Onion:   api.OnionStatus{Added: true},
		DNS:     api.DNSRecord{Published: true},
	}
	with := func(change func(*api.AppStatus)) api.AppStatus {
		st := running
		change(&st)
		return st
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
		{"stopped", store.App{Name: "web", Image: "x", Stopped: true}, api.AppStatus{}, nil, reconcile.Result{}, api.StateStopped, false},
		{"a step failed", web, running, &reconcile.AppResult{Err: errors.New("pull: denied")}, reconcile.Result{}, api.StateFailed, true},
		{"unit failed", web, with(func(s *api.AppStatus) { s.Unit.ActiveState = "failed" }), nil, reconcile.Result{}, api.StateFailed, true},
		{"unit restarting", web, with(func(s *api.AppStatus) { s.Unit.SubState = "auto-restart" }), nil, reconcile.Result{}, api.StateStarting, false},
		{"tor down", web, with(func(s *api.AppStatus) { s.Onion.Added = false }), nil, torDown, api.StateStarting, true},
		{"tor refused the service", web, with(func(s *api.AppStatus) { s.Onion.Err = "550 collision" }), nil, reconcile.Result{}, api.StateFailed, true},
		{"dns pending", web, with(func(s *api.AppStatus) { s.DNS.Published = false }), nil, reconcile.Result{DNSErr: dns.ErrPending}, api.StateStarting, true},
		{"dns rejected", web, with(func(s *api.AppStatus) { s.DNS.Published = false }), nil, reconcile.Result{DNSErr: dns.ErrRejected}, api.StateFailed, true},
		{"no LAN prefix yet: nothing to publish", web, with(func(s *api.AppStatus) { s.Network.LAN, s.DNS.Published = "", false }), nil, reconcile.Result{}, api.StateRunning, false},
		{"onion-only needs no DNS", store.App{Name: "web", Image: "x", Ports: web.Ports, OnionOnly: true},
			with(func(s *api.AppStatus) { s.DNS.Published = false }), nil, reconcile.Result{}, api.StateRunning, false},
	}
	for _, c := range cases {
		got, lastErr := stateOf(c.app, c.st, c.r, c.res, "")
		if got != c.want || (lastErr != "") != c.wantErr {
			t.Errorf("%s: state %q, last error %q; want %q (error: %v)", c.name, got, lastErr, c.want, c.wantErr)
		}
	}
}
