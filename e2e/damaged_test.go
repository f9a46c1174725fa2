package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
)

// TestDamagedRecordAcrossRestartAndReboot truncates an app's record in the box: after a daemon
// restart the app is reported damaged (ls, status) and held: its pod answers by DNS, its onion
// service stays in tor; the other apps are unaffected and removing one works; after a reboot of
// the box it is still held and served from its last good record; rm removes all of it.
func TestDamagedRecordAcrossRestartAndReboot(t *testing.T) {
	l := needLab(t)
	page := "held " + randomHex(4) + "\n"
	img := demoImage(t, "held", page)
	held := parseExposed(t, onionpod(t, "expose", "held", "--image", img, "--port", "80"))
	onionpod(t, "run", "bystander", "--image", img, "--port", "80")
	onionpod(t, "run", "doomed", "--image", img, "--port", "80")
	ctx := t.Context()
	if _, err := run(t, ctx, lab.InBox, "truncate", "-s", "40", "/var/lib/onionpod/apps/held.json"); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, ctx, lab.InBox, "systemctl", "restart", "onionpod.service"); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	damaged := regexp.MustCompile(`(?m)^held\s+damaged`)
	waitFor(t, 30*time.Second, "held reported damaged", func() bool { return damaged.MatchString(onionpod(t, "ls")) })
	if out := onionpod(t, "status", "held"); !strings.Contains(out, "onionpod rm held") || !strings.Contains(out, "held.json.damaged-") {
		t.Errorf("status of the damaged app does not say what to do:\n%s", out)
	}
	servedAsBefore := func(when string) {
		t.Helper()
		if got := fetch(t, lab.InClient, held.DNS, 30*time.Second); got != page {
			t.Errorf("%s: the held app by DNS: %q", when, got)
		}
		waitFor(t, 30*time.Second, "the held app's onion service in tor ("+when+")", func() bool {
			return contains(detachedOnions(t), held.Onion)
		})
		if st := status(t, "bystander"); st.State != running {
			t.Errorf("%s: bystander is %s (%s)", when, st.State, st.LastError)
		}
	}
	servedAsBefore("after a daemon restart")
	onionpod(t, "rm", "doomed")
	if left := leftovers(t, "doomed", ""); len(left) > 0 {
		t.Errorf("rm doomed said ok and left %v", left)
	}

	if err := l.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "bystander running after the reboot", func() bool { return status(t, "bystander").State == running })
	if !damaged.MatchString(onionpod(t, "ls")) {
		t.Error("after the reboot, held is no longer reported damaged")
	}
	servedAsBefore("after a reboot")

	onionpod(t, "rm", "held")
	if left := leftovers(t, "held", held.Onion); len(left) > 0 {
		t.Errorf("rm of the damaged app said ok and left %v", left)
	}
	if out, _ := run(t, ctx, lab.InBox, "ls", "-a", "/var/lib/onionpod/apps", "/var/lib/onionpod/apps/.last"); strings.Contains(out, "held") {
		t.Errorf("rm of the damaged app left its files:\n%s", out)
	}
	onionpod(t, "rm", "bystander")
}
