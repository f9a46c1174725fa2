package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
)

// TestHundredApps runs 100 apps with onion services on the lab's box: every one answers on the
// LAN by its DNS name; after a reboot of the box, every pod, address and onion service is back
// within 10 s (the target of issue 7). Skipped with -short.
func TestHundredApps(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 100 apps take a minute")
	}
	l := needLab(t)
	const n = 100
	img := demoImage(t, "many", "many\n")
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("many%03d", i)
	}
	start := time.Now()
	// Four CLIs at a time, as several users (or a script) would.
	parallel(t, names, 4, func(app string) error {
		_, err := run(t, t.Context(), lab.InBox, "onionpod", "run", app, "--image", img, "--port", "80", "--onion")
		return err
	})
	t.Logf("%d apps running in %v", n, time.Since(start))
	defer func() {
		parallel(t, names, 4, func(app string) error {
			_, err := run(t, context.Background(), lab.InBox, "onionpod", "rm", "--purge-key", app)
			return err
		})
	}()
	before := appsByName(t)
	checkAllAnswer(t, names)

	start = time.Now()
	if err := l.Reboot(t.Context()); err != nil {
		t.Fatal(err)
	}
	var after map[string]appStatus
	waitFor(t, 60*time.Second, "all 100 apps back", func() bool {
		after = appsByName(t)
		for _, app := range names {
			if after[app].State != running {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	sinceBoot := sinceBoxBoot(t)
	t.Logf("all %d pods, addresses and onion services back %v after the reboot began (power-off included), %v after the box's systemd started",
		n, took.Round(10*time.Millisecond), sinceBoot.Round(10*time.Millisecond))
	if sinceBoot > 10*time.Second {
		t.Errorf("reconcile after the reboot took %v from the box's boot, want under 10 s", sinceBoot)
	}
	for _, app := range names {
		if after[app].Onion.Address != before[app].Onion.Address || after[app].Network.LAN != before[app].Network.LAN {
			t.Errorf("%s moved: %+v, was %+v", app, after[app], before[app])
		}
	}
	checkAllAnswer(t, names)
}

// sinceBoxBoot is how long ago the box's systemd started (both clocks are the host's monotonic
// clock: /proc/uptime and systemd's UserspaceTimestampMonotonic).
func sinceBoxBoot(t *testing.T) time.Duration {
	t.Helper()
	out, err := run(t, t.Context(), lab.InBox, "sh", "-c", "cut -d' ' -f1 /proc/uptime; systemctl show -P UserspaceTimestampMonotonic")
	f := strings.Fields(out)
	if err != nil || len(f) != 2 {
		t.Fatalf("box clock: %v %q", err, out)
	}
	up, err1 := strconv.ParseFloat(f[0], 64)
	started, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("box clock: %q", out)
	}
	return time.Duration(up*float64(time.Second)) - time.Duration(started)*time.Microsecond
}

func appsByName(t *testing.T) map[string]appStatus {
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
func checkAllAnswer(t *testing.T, names []string) {
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

func parallel(t *testing.T, items []string, width int, fn func(string) error) {
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
