package daemon

import (
	"slices"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
)

// A pass that finds a unit systemd is still starting or stopping (activating, deactivating,
// reloading: a start job at boot, a restart after a crash) leaves its app "starting", and
// nothing reports the end of that: the daemon does not follow systemd's signals, and the drift
// pass comes only every DriftInterval (30 s). So the daemon looks again at such apps soon, in a
// pass of their own: settleFirst after the status that found them, then twice as late each time
// while they keep settling, at most settleMax.
const (
	settleFirst = 500 * time.Millisecond
	settleMax   = 8 * time.Second
)

// settling is what the daemon knows of the apps whose units were settling when their statuses
// were last built. The daemon keeps it under its mu.
type settling struct {
	apps  []string      // the apps to look at again
	at    time.Time     // when (zero: no app is settling)
	delay time.Duration // the wait before at
}

// update takes the apps found settling by the statuses just built: the first look is due
// settleFirst from now; while some app keeps settling the next look stays when it was due.
func (s *settling) update(apps []string, now time.Time) {
	if len(apps) == 0 {
		*s = settling{}
		return
	}
	s.apps = apps
	if s.at.IsZero() {
		s.delay = settleFirst
		s.at = now.Add(s.delay)
	}
}

// due returns the apps to look at now, and sets the next look, if they are still settling after
// it, twice as late as the last one (at most settleMax).
func (s *settling) due(now time.Time) []string {
	s.delay = min(2*s.delay, settleMax)
	s.at = now.Add(s.delay)
	return s.apps
}

// settlingUnits are the apps, among statuses, whose state is starting while one of their
// containers' units is on its way between states.
func settlingUnits(statuses map[string]api.AppStatus) []string {
	var out []string
	for name, st := range statuses {
		if st.State != api.StateStarting {
			continue
		}
		for _, c := range st.Containers {
			if unitSettling(c.Unit.ActiveState) {
				out = append(out, name)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

func unitSettling(activeState string) bool {
	switch activeState {
	case "activating", "deactivating", "reloading":
		return true
	}
	return false
}
