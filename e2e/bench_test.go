package e2e

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
)

// BenchmarkExposeCachedImage measures `onionpod expose APP --no-wait` with a cached image, end to
// end through the CLI in the box: from the command to "pod running + onion added + DNS published"
// (the descriptor upload, tor's own work, is not waited for). Side by side in the same run: the
// floor of a CLI round trip that changes nothing (`onionpod ls`). Target (issue 7): under 0.5 s.
//
//	go test -run '^$' -bench ExposeCached -benchtime 20x ./e2e
func BenchmarkExposeCachedImage(b *testing.B) {
	if theLab == nil {
		b.Skip("the lab cannot run here: " + skipReason)
	}
	img := demoImage(b, "bench", "bench\n")
	ctx := b.Context()
	// Cache the image once.
	if out, err := theLab.Command(ctx, lab.InBox, "onionpod", "run", "benchwarm", "--image", img, "--port", "80").CombinedOutput(); err != nil {
		b.Fatalf("%v\n%s", err, out)
	}
	var expose, floor []time.Duration
	var apps []string
	for i := 0; b.Loop(); i++ {
		app := fmt.Sprintf("bench%03d", i)
		apps = append(apps, app)
		start := time.Now()
		if out, err := theLab.Command(ctx, lab.InBox, "onionpod", "expose", app, "--image", img, "--port", "80", "--no-wait").CombinedOutput(); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		expose = append(expose, time.Since(start))
		start = time.Now()
		if out, err := theLab.Command(ctx, lab.InBox, "onionpod", "ls").CombinedOutput(); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		floor = append(floor, time.Since(start))
	}
	b.StopTimer()
	e, f := median(expose), median(floor)
	b.ReportMetric(float64(e.Microseconds())/1000, "ms-expose-median")
	b.ReportMetric(float64(f.Microseconds())/1000, "ms-cli-floor-median")
	b.ReportMetric(float64(e)/float64(f), "x-floor")
	for _, app := range append(apps, "benchwarm") {
		theLab.Command(ctx, lab.InBox, "onionpod", "rm", "--purge-key", app).Run()
	}
}

// BenchmarkHundredAppsReboot reboots the lab's box with 100 apps (pods with onion services) and
// measures, from the box's systemd starting: every pod, address and onion service back (the
// target of issue 7: under 10 s), side by side with the floor of the same boot, the box's systemd
// done starting every unit (the pods' included: onionpod cannot have them back before). Reported:
// s-all-back, s-systemd-floor, x-floor (all-back/floor), x-target (all-back/10 s: under 1 meets
// the target) and s-daemon-ready (the daemon answering).
//
//	go test -run '^$' -bench HundredAppsReboot -benchtime 3x ./e2e
func BenchmarkHundredAppsReboot(b *testing.B) {
	if theLab == nil {
		b.Skip("the lab cannot run here: " + skipReason)
	}
	names := runHundredApps(b)
	var all, floor, ready []time.Duration
	for b.Loop() {
		r := rebootAndWaitAll(b, theLab, names)
		all = append(all, r.sinceBoot)
		floor = append(floor, r.systemdSinceBoot)
		ready = append(ready, r.daemonSinceBoot)
	}
	a, f := median(all), median(floor)
	b.ReportMetric(a.Seconds(), "s-all-back")
	b.ReportMetric(f.Seconds(), "s-systemd-floor")
	b.ReportMetric(median(ready).Seconds(), "s-daemon-ready")
	b.ReportMetric(a.Seconds()/f.Seconds(), "x-floor")
	b.ReportMetric(a.Seconds()/rebootTarget.Seconds(), "x-target")
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
