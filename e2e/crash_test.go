package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
)

// TestDaemonKilledMidOperationConverges kills the daemon with SIGKILL (its whole cgroup, CNI
// plugins included) at several moments of an expose and of an rm. systemd restarts it; the box
// must converge: the app runs after the user retries, with the key it already had, and after rm
// nothing of the app is left (unit, netns, lease, DNS record, onion service).
func TestDaemonKilledMidOperationConverges(t *testing.T) {
	l := needLab(t)
	img := demoImage(t, "crash", "crash test\n")
	for i, delay := range []time.Duration{0, 20 * time.Millisecond, 60 * time.Millisecond, 150 * time.Millisecond} {
		app := fmt.Sprintf("crash%d", i)
		t.Run(app, func(t *testing.T) {
			t.Cleanup(func() {
				if t.Failed() {
					t.Log(boxJournal(t))
				}
			})
			killDuring(t, l, delay, "onionpod", "expose", app, "--image", img, "--port", "80", "--timeout", "30s")
			keyBefore := keyOf(t, app)
			e := parseExposed(t, onionpod(t, "expose", app, "--image", img, "--port", "80"))
			if keyBefore != "" && e.Onion != "http://"+keyBefore+"/" {
				t.Fatalf("the key changed across the crash: %s, had %s", e.Onion, keyBefore)
			}
			if got := fetch(t, lab.InClient, e.DNS, 30*time.Second); got != "crash test\n" {
				t.Fatalf("after the crash, by DNS: %q", got)
			}

			killDuring(t, l, delay, "onionpod", "rm", app)
			if _, err := run(t, t.Context(), lab.InBox, "onionpod", "status", app); err == nil {
				onionpod(t, "rm", app) // the kill came before the record was deleted: the user retries
			}
			waitFor(t, 30*time.Second, "free of "+app+"'s leftovers", func() bool {
				return len(leftovers(t, app, e.Onion)) == 0
			})
			if keyBefore != "" && keyOf(t, app) != keyBefore {
				t.Errorf("rm lost or changed the key of %s", app)
			}
		})
	}
}

// killDuring starts argv in the box, kills the daemon after delay, waits for the command to end
// (it may fail: its daemon died) and for the restarted daemon to answer.
func killDuring(t *testing.T, l *lab.Lab, delay time.Duration, argv ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := l.Command(ctx, lab.InBox, argv...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(delay)
	if out, err := l.Command(ctx, lab.InBox, "systemctl", "kill", "--signal=SIGKILL", "onionpod.service").CombinedOutput(); err != nil {
		t.Fatalf("kill the daemon: %v\n%s", err, out)
	}
	err := cmd.Wait()
	t.Logf("%s with the daemon killed after %v: %v", strings.Join(argv, " "), delay, err)
	if err := l.WaitDaemon(ctx); err != nil {
		t.Fatal(err)
	}
}

// keyOf is the app's .onion address from `onion ls`, or "".
func keyOf(t *testing.T, app string) string {
	t.Helper()
	for _, line := range strings.Split(onionpod(t, "onion", "ls"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == app {
			return f[1]
		}
	}
	return ""
}

// leftovers lists what is left of a removed app in the box.
func leftovers(t *testing.T, app, onionURL string) []string {
	t.Helper()
	var left []string
	ctx := t.Context()
	if out, _ := run(t, ctx, lab.InBox, "systemctl", "list-unit-files", "--no-legend", "onionpod-*-"+app+".service"); strings.TrimSpace(out) != "" {
		left = append(left, "units: "+out)
	}
	if out, _ := run(t, ctx, lab.InBox, "ls", boxNetnsDir+"/"); strings.Contains(out, "onionpod-"+app+"\n") {
		left = append(left, "netns")
	}
	if out, _ := run(t, ctx, lab.InBox, "ls", "/var/lib/onionpod/network/leases"); strings.Contains(out, app+".json") {
		left = append(left, "lease")
	}
	if out, _ := run(t, ctx, lab.InClient, "dig", "+short", "AAAA", app+".box.example", "@"+lab.BoxLANIP.String()); strings.TrimSpace(out) != "" {
		left = append(left, "dns: "+out)
	}
	if contains(detachedOnions(t), onionURL) {
		left = append(left, "onion service")
	}
	if len(left) > 0 {
		t.Logf("left of %s: %v", app, left)
	}
	return left
}
