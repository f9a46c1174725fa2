package daemon

import (
	"slices"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
)

func TestSettlingLooksAgainSoonThenLessOften(t *testing.T) {
	now := time.Unix(1000, 0)
	var s settling
	s.update(nil, now)
	if !s.at.IsZero() {
		t.Fatalf("nothing settling, yet a look at %v", s.at)
	}
	s.update([]string{"a"}, now)
	if s.at != now.Add(settleFirst) {
		t.Fatalf("first look at %v, want %v", s.at.Sub(now), settleFirst)
	}
	// A refresh finding it still settling does not put the look off.
	s.update([]string{"a", "b"}, now.Add(100*time.Millisecond))
	if s.at != now.Add(settleFirst) {
		t.Fatalf("look put off to %v by a later status", s.at.Sub(now))
	}
	var waits []time.Duration
	wantDue := []string{"a", "b"}
	for range 7 {
		now = s.at
		if apps := s.due(now); !slices.Equal(apps, wantDue) {
			t.Fatalf("due: %v, want %v", apps, wantDue)
		}
		s.update([]string{"b"}, now) // the look's own pass: b still settling
		wantDue = []string{"b"}
		waits = append(waits, s.at.Sub(now))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, settleMax, settleMax, settleMax, settleMax}
	if !slices.Equal(waits, want) {
		t.Fatalf("waits between looks %v, want %v", waits, want)
	}
	s.update(nil, now)
	s.update([]string{"c"}, now)
	if s.at != now.Add(settleFirst) {
		t.Fatalf("after a settled spell the first look is at %v, want %v", s.at.Sub(now), settleFirst)
	}
}

func TestSettlingUnits(t *testing.T) {
	unit := func(state string) []api.ContainerStatus {
		return []api.ContainerStatus{{Name: "web", Unit: api.UnitStatus{ActiveState: state}}}
	}
	statuses := map[string]api.AppStatus{
		"booting":    {State: api.StateStarting, Containers: unit("activating")},
		"stopping":   {State: api.StateStarting, Containers: unit("deactivating")},
		"no-address": {State: api.StateStarting, Containers: unit("active")},
		"running":    {State: api.StateRunning, Containers: unit("active")},
		"held":       {State: api.StateStopped, Containers: unit("deactivating")},
	}
	if got := settlingUnits(statuses); !slices.Equal(got, []string{"booting", "stopping"}) {
		t.Fatalf("settling: %v, want booting and stopping", got)
	}
}
