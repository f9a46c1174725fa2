package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
)

// The target of issue 7: after a reboot of the box, every one of 100 pods, addresses and onion
// services is back within rebootTarget of the box's boot. BenchmarkHundredAppsReboot measures it
// against the floor (the box's systemd done starting every unit, the pods' included); TestHundredApps only fails past rebootBound,
// ten times the target, which a loaded machine never reaches unless something is wrong.
const (
	rebootTarget = 10 * time.Second
	rebootBound  = 10 * rebootTarget
)

// TestHundredApps runs 100 apps with onion services on the lab's box: every one answers on the
// LAN by its DNS name; after a reboot of the box, every pod, address and onion service is back,
// unchanged, and answers again. Skipped with -short.
func TestHundredApps(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 100 apps take a minute")
	}
	l := needLab(t)
	names := runHundredApps(t)
	before := appsByName(t)
	checkAllAnswer(t, names)

	r := rebootAndWaitAll(t, l, names)
	t.Logf("all %d pods, addresses and onion services back %v after the reboot began (power-off included), "+
		"%v after the box's systemd started (daemon ready after %v, systemd done starting every unit after %v; target %v, %.2fx)",
		len(names), r.took.Round(10*time.Millisecond), r.sinceBoot.Round(10*time.Millisecond),
		r.daemonSinceBoot.Round(10*time.Millisecond), r.systemdSinceBoot.Round(10*time.Millisecond),
		rebootTarget, r.sinceBoot.Seconds()/rebootTarget.Seconds())
	if r.sinceBoot > rebootBound {
		t.Errorf("reconcile after the reboot took %v from the box's boot: more than %v (ten times the target)", r.sinceBoot, rebootBound)
	}
	for _, app := range names {
		if r.after[app].Onion.Address != before[app].Onion.Address || r.after[app].Network.LAN != before[app].Network.LAN {
			t.Errorf("%s moved: %+v, was %+v", app, r.after[app], before[app])
		}
	}
	checkAllAnswer(t, names)
}

// runHundredApps runs 100 apps with onion services, four CLIs at a time as several users (or a
// script) would, and removes them with their keys when tb ends.
func runHundredApps(tb testing.TB) []string {
	const n = 100
	img := demoImage(tb, "many", "many\n")
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("many%03d", i)
	}
	start := time.Now()
	parallel(tb, names, 4, func(app string) error {
		_, err := run(tb, tb.Context(), lab.InBox, "onionpod", "run", app, "--image", img, "--port", "80", "--onion")
		return err
	})
	tb.Logf("%d apps running in %v", n, time.Since(start))
	tb.Cleanup(func() {
		parallel(tb, names, 4, func(app string) error {
			_, err := run(tb, context.Background(), lab.InBox, "onionpod", "rm", "--purge-key", app)
			return err
		})
	})
	return names
}

// rebooted is what one reboot of the box measured.
type rebooted struct {
	took             time.Duration // from the reboot's start (power-off included) to every app running
	sinceBoot        time.Duration // from the box's systemd starting to every app running
	daemonSinceBoot  time.Duration // from the box's systemd starting to the daemon ready (answering)
	systemdSinceBoot time.Duration // from the box's systemd starting to its start of every unit done
	after            map[string]appStatus
}

// rebootAndWaitAll reboots the lab's box and waits (up to twice rebootBound) until every app in
// names runs again.
func rebootAndWaitAll(tb testing.TB, l *lab.Lab, names []string) rebooted {
	start := time.Now()
	if err := l.Reboot(tb.Context()); err != nil {
		tb.Fatal(err)
	}
	var r rebooted
	var err1, err2 error
	r.systemdSinceBoot, err1 = l.SinceBoot(tb.Context())
	r.daemonSinceBoot, err2 = l.ActiveAfterBoot(tb.Context(), "onionpod.service")
	if err := errors.Join(err1, err2); err != nil {
		tb.Fatal(err)
	}
	waitFor(tb, 2*rebootBound, fmt.Sprintf("all %d apps back", len(names)), func() bool {
		r.after = appsByName(tb)
		for _, app := range names {
			if r.after[app].State != running {
				return false
			}
		}
		return true
	})
	r.took = time.Since(start)
	var err error
	if r.sinceBoot, err = l.SinceBoot(tb.Context()); err != nil {
		tb.Fatal(err)
	}
	return r
}

func appsByName(t testing.TB) map[string]appStatus {
	t.Helper()
	var list []struct {
		App struct {
			Name string `json:"name"`
		} `json:"app"`
		appStatus
	}
	if err := json.Unmarshal([]byte(onionpod(t, "ls", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]appStatus{}
	for _, a := range list {
		out[a.App.Name] = a.appStatus
	}
	return out
}

// checkAllAnswer fetches every app by its DNS name from the LAN client.
func checkAllAnswer(t testing.TB, names []string) {
	t.Helper()
	parallel(t, names, 8, func(app string) error {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		for {
			out, err := run(t, ctx, lab.InClient, "curl", "-sS", "--fail", "--max-time", "5", "http://"+app+"."+lab.Zone+"/")
			if err == nil && out == "many\n" {
				return nil
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%s does not answer on the LAN: %v %q", app, err, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

func parallel(t testing.TB, items []string, width int, fn func(string) error) {
	t.Helper()
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, it := range items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(it); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
}
