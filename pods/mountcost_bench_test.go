package pods

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/pods/podstest"
)

// Where a pod's start time goes as the box fills up (issue 14: 1000 apps boot in 99-110 s):
//
//	go test -run '^$' -bench BenchmarkUnitStartOverMounts -benchtime 1x ./pods/
//
// It starts one pod unit, then the same unit without its file-system sandbox options, then
// without RootDirectory= too (so systemd makes no mount namespace for it), each with no other
// pod and then with 1000 more network namespaces bind-mounted under /run/netns (one per pod, as
// onionpod keeps them), and prints the medians and the cost per mount.

const envMountCostOut = "PODS_MOUNTCOST_OUT"

// mountCostVariant is one shape of the pod unit, measured with and without the extra mounts.
type mountCostVariant struct {
	Name   string  `json:"name"`
	Before float64 `json:"before_ms"`
	After  float64 `json:"after_ms"`
}

func BenchmarkUnitStartOverMounts(b *testing.B) {
	box, work, archive := benchBox(b, "localhost/onionpod-mountcost:1")
	out := filepath.Join(work, "mountcost.json")
	for b.Loop() {
		var log strings.Builder
		if err := box.RunTest(context.Background(), "TestInsideBenchMountCost", &log,
			envStore+"="+filepath.Join(work, "store"), envBenchArchive+"="+archive, envMountCostOut+"="+out); err != nil {
			b.Fatalf("%v\n%s", err, log.String())
		}
	}
	data, err := os.ReadFile(out)
	if err != nil {
		b.Fatal(err)
	}
	var res struct {
		Mounts   int                `json:"mounts"`
		Variants []mountCostVariant `json:"variants"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("\npod unit start to running, median of 7, with no other pod and with %d more netns mounts\n", res.Mounts)
	for _, v := range res.Variants {
		fmt.Printf("  %-44s %6.1f ms  %6.1f ms   %+.3f ms per mount\n", v.Name, v.Before, v.After, (v.After-v.Before)/float64(res.Mounts))
	}
	b.ReportMetric(res.Variants[0].After-res.Variants[0].Before, "pod-unit-extra-ms")
}

func TestInsideBenchMountCost(t *testing.T) {
	if !podstest.Inside() || os.Getenv(envMountCostOut) == "" {
		t.Skip("benchmark phase: runs inside a podstest box, from BenchmarkUnitStartOverMounts")
	}
	store, sd := inside(t)
	img, err := store.LoadArchive(t.Context(), os.Getenv(envBenchArchive), nil)
	if err != nil {
		t.Fatal(err)
	}
	argv, err := img.Command(nil)
	if err != nil {
		t.Fatal(err)
	}
	const app, mounts = "mountcost", 1000
	if out, err := exec.Command("ip", "netns", "add", "onionpod-"+app).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	units, err := PodUnits(Spec{App: app, Root: img.Root, Netns: "/run/netns/onionpod-" + app, Command: argv, Env: img.Config.Env})
	if err != nil {
		t.Fatal(err)
	}
	unit := units[0]
	sandbox := []string{"ProtectSystem", "PrivateDevices", "PrivateTmp", "MountAPIVFS", "DynamicUser", "User"}
	variants := []struct{ name, content string }{
		{"the pod unit", string(unit.Content)},
		{"without its file-system sandbox options", withoutKeys(string(unit.Content), sandbox...)},
		{"without them and RootDirectory= (no mount ns)", withoutKeys(string(unit.Content), append(sandbox, "RootDirectory")...) +
			"\n[Service]\nExecStart=\nExecStart=" + strings.Join(underRoot(img.Root, argv), " ") + "\n"},
	}
	measure := func() []float64 {
		var medians []float64
		for _, v := range variants {
			var d []float64
			for range 7 {
				u := unit
				u.Content = []byte(v.content)
				start := time.Now()
				if err := sd.Apply(t.Context(), u); err != nil {
					t.Fatalf("%s: %v", v.name, err)
				}
				d = append(d, ms(time.Since(start)))
				if st, err := sd.Status(t.Context(), app); err != nil || st.SubState != "running" {
					t.Fatalf("%s: %+v %v", v.name, st, err)
				}
				if err := sd.Stop(t.Context(), app); err != nil {
					t.Fatal(err)
				}
			}
			sort.Float64s(d)
			medians = append(medians, d[len(d)/2])
		}
		return medians
	}
	before := measure()
	var batch strings.Builder
	for i := range mounts {
		fmt.Fprintf(&batch, "netns add mountcost-%d\n", i)
	}
	add := exec.Command("ip", "-batch", "-")
	add.Stdin = strings.NewReader(batch.String())
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ip -batch: %v %s", err, out)
	}
	t.Cleanup(func() {
		for i := range mounts {
			exec.Command("ip", "netns", "del", "mountcost-"+strconv.Itoa(i)).Run()
		}
	})
	after := measure()
	res := struct {
		Mounts   int                `json:"mounts"`
		Variants []mountCostVariant `json:"variants"`
	}{Mounts: mounts}
	for i, v := range variants {
		res.Variants = append(res.Variants, mountCostVariant{Name: v.name, Before: before[i], After: after[i]})
	}
	data, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(os.Getenv(envMountCostOut), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// withoutKeys drops the unit file's lines that set any of keys.
func withoutKeys(unit string, keys ...string) string {
	var kept []string
	for _, line := range strings.Split(unit, "\n") {
		key, _, _ := strings.Cut(line, "=")
		drop := false
		for _, k := range keys {
			drop = drop || key == k
		}
		if !drop {
			kept = append(kept, line)
		}
	}
	return strings.Join(kept, "\n")
}

// underRoot is argv with each absolute path that exists under root (the image's) taken there:
// the same program and files, run without RootDirectory=.
func underRoot(root string, argv []string) []string {
	out := slices.Clone(argv)
	for i, a := range out {
		if _, err := os.Stat(filepath.Join(root, a)); strings.HasPrefix(a, "/") && err == nil {
			out[i] = filepath.Join(root, a)
		}
	}
	return out
}
