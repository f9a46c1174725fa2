package pods

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/pods/podstest"
)

// What is left of `expose` at 1000 apps (issue 14): systemd starting the app's two new units.
//
//	go test -run '^$' -bench BenchmarkNewUnitBesideUnitFiles -benchtime 1x ./pods/
//
// In a podstest box it applies new units (Systemd.Apply: the file written, enabled, started, to
// running) and restarts loaded ones, median of 7 each: beside no other unit file, beside 2000
// (onionpod writes two per app), and beside 2000 of which 1000 are wanted by multi-user.target
// and loaded, as pods are after a boot. A new unit makes systemd read its unit directories again.

// unitDirCase is one row: a new unit's apply and a loaded unit's restart, in ms.
type unitDirCase struct {
	Name    string  `json:"name"`
	New     float64 `json:"new_ms"`
	Restart float64 `json:"restart_ms"`
}

func BenchmarkNewUnitBesideUnitFiles(b *testing.B) {
	if podstest.Inside() {
		b.Skip("runs on the host")
	}
	if err := podstest.Available(); err != nil {
		b.Skip(err)
	}
	out := filepath.Join(b.TempDir(), "unitdir.json")
	box := podstest.New(b, podstest.Options{})
	for b.Loop() {
		var log strings.Builder
		if err := box.RunTest(context.Background(), "TestInsideBenchNewUnit", &log, envBenchOut+"="+out); err != nil {
			b.Fatalf("%v\n%s", err, log.String())
		}
	}
	data, err := os.ReadFile(out)
	if err != nil {
		b.Fatal(err)
	}
	var rows []unitDirCase
	if err := json.Unmarshal(data, &rows); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("\nsystemd 252, median of 7: a new unit applied (written, enabled, started) / a loaded unit restarted\n")
	for _, r := range rows {
		fmt.Printf("  %-55s %6.1f ms  %6.1f ms\n", r.Name, r.New, r.Restart)
	}
	b.ReportMetric(rows[len(rows)-1].New/rows[0].New, "new-unit-slowdown")
	b.ReportMetric(rows[len(rows)-1].Restart/rows[0].Restart, "restart-slowdown")
}

func TestInsideBenchNewUnit(t *testing.T) {
	if !podstest.Inside() || os.Getenv(envBenchOut) == "" {
		t.Skip("benchmark phase: runs inside a podstest box, from BenchmarkNewUnitBesideUnitFiles")
	}
	_, sd := inside(t)
	ctx := t.Context()
	const dir = "/etc/systemd/system"
	n := 0
	median := func(f func(name string)) (newest []string, ms float64) {
		var took []time.Duration
		for range 7 {
			n++
			name := fmt.Sprintf("%sbench-%d.service", UnitPrefix, n)
			start := time.Now()
			f(name)
			took = append(took, time.Since(start))
			newest = append(newest, name)
		}
		slices.Sort(took)
		return newest, float64(took[3].Microseconds()) / 1000
	}
	row := func(what string) unitDirCase {
		names, applied := median(func(name string) {
			u := Unit{Name: name, Content: []byte("[Service]\nExecStart=/bin/sleep 1000\n[Install]\nWantedBy=multi-user.target\n")}
			if err := sd.Apply(ctx, u); err != nil {
				t.Fatal(err)
			}
		})
		var took []time.Duration
		for _, name := range names {
			start := time.Now()
			if err := sd.RestartUnit(ctx, name); err != nil {
				t.Fatal(err)
			}
			took = append(took, time.Since(start))
		}
		slices.Sort(took)
		return unitDirCase{Name: what, New: applied, Restart: float64(took[3].Microseconds()) / 1000}
	}
	rows := []unitDirCase{row("beside no other unit file")}
	for i := range 2000 {
		content := "[Service]\nType=oneshot\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("filler-%04d.service", i)), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rows = append(rows, row("beside 2000 unit files"))
	for i := range 1000 {
		name := fmt.Sprintf("filler-%04d.service", i)
		if err := os.Symlink(filepath.Join(dir, name), filepath.Join(dir, "multi-user.target.wants", name)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("systemctl", "daemon-reload").CombinedOutput(); err != nil {
		t.Fatalf("daemon-reload: %v\n%s", err, out)
	}
	rows = append(rows, row("beside 2000, of which 1000 wanted and loaded"))
	writeBench(t, rows)
}
