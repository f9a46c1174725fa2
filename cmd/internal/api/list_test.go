package api

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/probe"
	"github.com/onionpod/onionpod/cmd/internal/store"
)

// TestListEntryKeepsWhatLsPrints sends a full status through the list view's wire form and
// gets back every field ls prints, and nothing of the zero times and flags the full status
// carries.
func TestListEntryKeepsWhatLsPrints(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	full := AppStatus{
		App: store.App{Name: "shop", Onion: true, Generation: 3, Created: now, Updated: now, Containers: []store.Container{
			{Name: "db", Image: "sha256:" + strings.Repeat("a", 64), Source: "/srv/db.tar", ImageID: "sha256:" + strings.Repeat("a", 64)},
			{Name: "web", Static: "/srv/web"},
		}},
		State:              StateStarting,
		ObservedGeneration: 3,
		Unit:               UnitStatus{Name: "onionpod-pod-shop-db.service", ActiveState: "active", SubState: "running", MainPID: 42, Since: now},
		Containers: []ContainerStatus{
			{Name: "db", Unit: UnitStatus{Name: "onionpod-pod-shop-db.service", ActiveState: "active", SubState: "running", MainPID: 42, Since: now},
				Health: &HealthStatus{Check: "command pg_isready", State: HealthStarting, Since: now, Failures: 1}},
			{Name: "web", Unit: UnitStatus{ActiveState: "activating", SubState: "start"}},
		},
		Network: NetStatus{LAN: "2001:db8:1::6", ULA: "fd00::6", MAC: "02:00:00:00:00:06"},
		Onion:   OnionStatus{Address: strings.Repeat("s", 56) + ".onion", Added: true, Since: now},
		DNS:     DNSRecord{Name: "shop.box.example.", Published: true},
		Probes: []probe.Result{
			{Path: probe.PathOnion, At: now, OK: true, Status: 200, Latency: time.Second},
			{Path: probe.PathIPv6, At: now, Hop: "connect", Err: "connection refused", Addr: "2001:db8:1::6"},
		},
		Steps:   []Step{{Name: "start-unit", Duration: time.Millisecond}},
		Updated: now,
	}
	wire, err := json.Marshal(full.ListEntry())
	if err != nil {
		t.Fatal(err)
	}
	var entry ListEntry
	if err := json.Unmarshal(wire, &entry); err != nil {
		t.Fatal(err)
	}
	want := AppStatus{
		App: store.App{Name: "shop", Containers: []store.Container{
			{Name: "db", Image: full.App.Containers[0].Image, Source: "/srv/db.tar"},
			{Name: "web", Static: "/srv/web"},
		}},
		State: StateStarting,
		Containers: []ContainerStatus{
			{Name: "db", Unit: UnitStatus{ActiveState: "active", SubState: "running"}, Health: &HealthStatus{State: HealthStarting}},
			{Name: "web", Unit: UnitStatus{ActiveState: "activating", SubState: "start"}},
		},
		Network: NetStatus{LAN: "2001:db8:1::6"},
		Onion:   OnionStatus{Address: full.Onion.Address},
		Probes:  []probe.Result{{Path: probe.PathOnion, OK: true}, {Path: probe.PathIPv6, Hop: "connect"}},
	}
	if got := entry.Status(); !reflect.DeepEqual(got, want) {
		t.Errorf("through the list view:\n got %+v\nwant %+v", got, want)
	}
	for _, left := range []string{"0001-01-01", "since", "generation", "pg_isready", "refused", "main_pid"} {
		if strings.Contains(string(wire), left) {
			t.Errorf("the list entry carries %q, which ls does not print: %s", left, wire)
		}
	}
}
