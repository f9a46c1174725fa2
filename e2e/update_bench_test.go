package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
	"github.com/onionpod/onionpod/internal/lab/debimage"
	"github.com/onionpod/onionpod/internal/lab/debimage/debimagetest"
)

// The update benchmark: onionpod update and rollback against podman auto-update, on the same
// images (notes v1 and v2, already pulled on both sides), in the lab's box, interleaved:
//
//	go test -run '^$' -bench UpdateVsPodman -benchtime 5x ./e2e
//
// onionpod's app runs notes from the lab's registry (a TCP health check: notes answers at once,
// without its database); podman's container runs the same image from its local storage, through
// the unit `podman generate systemd --new` writes, label io.containers.autoupdate=local. Each
// iteration: onionpod update v1 -> v2 (the tag pushed again, v2 in the image store), onionpod
// rollback v2 -> v1; podman auto-update after tagging v2, then after tagging v1 again (podman's
// rollback by hand). Each is timed from the command to the new version's first answer (a curl
// loop in the box, 10-20 ms a round) and to the command's end (onionpod's: the app healthy on it).
// The floor of each is its container started by systemd (stopped first): the app's own start.
// Printed: medians, and each side over its floor.
func BenchmarkUpdateVsPodman(b *testing.B) {
	l := theLab
	if l == nil {
		b.Skip("the lab cannot run here: " + skipReason)
	}
	if _, err := exec.LookPath("podman"); err != nil {
		b.Skip("podman needed for the comparison (bash .ci/install-deps --bench)")
	}
	apps := debimagetest.Apps(b)
	reg := labRegistry(b, l, filepath.Join(labDir, "bench-registry"))
	ref := lab.RegistryAddr + "/pbench:latest"
	push(b, reg, apps.NotesV1.Path, "pbench:latest")

	// onionpod's app.
	file := filepath.Join(labDir, "pbench.toml")
	os.WriteFile(file, []byte(fmt.Sprintf(`name = "pbench"
[[containers]]
name = "pbench"
image = %q
ports = ["80:8080"]
env = ["DATABASE_URL=postgres://x@127.0.0.1:1/x", "LISTEN=:8080"]
[containers.health]
tcp = true
interval = "1s"
start_period = "5s"
`, ref)), 0o644)
	boxB(b, l, "onionpod", "apply", "-f", file)
	var st struct {
		Network struct {
			ULA string `json:"ula"`
		} `json:"network"`
	}
	if err := json.Unmarshal([]byte(boxB(b, l, "onionpod", "status", "pbench", "--json")), &st); err != nil {
		b.Fatal(err)
	}
	ours := fmt.Sprintf("http://[%s]:8080/healthz", st.Network.ULA)
	push(b, reg, apps.NotesV2.Path, "pbench:latest")
	boxB(b, l, "onionpod", "update", "pbench") // pulls v2 once
	boxB(b, l, "onionpod", "rollback", "pbench")

	// podman's container, its storage outside the box's overlay /var.
	podman := setUpPodman(b, l, apps.NotesV1.Path, apps.NotesV2.Path)
	theirs := "http://127.0.0.1:18080/healthz"

	var upServe, upCmd, rbServe, rbCmd, floor, pmServe, pmCmd, pmBackServe, pmBackCmd, pmFloor []time.Duration
	b.ResetTimer()
	for b.Loop() {
		s, c := timedSwitch(b, l, ours, debimage.NotesV2, "onionpod", "update", "pbench")
		upServe, upCmd = append(upServe, s), append(upCmd, c)
		s, c = timedSwitch(b, l, theirs, debimage.NotesV2, "sh", "-c", "podman tag onionpod.test/notes:2 localhost/pbench:latest && podman auto-update")
		pmServe, pmCmd = append(pmServe, s), append(pmCmd, c)
		s, c = timedSwitch(b, l, ours, debimage.NotesV1, "onionpod", "rollback", "pbench")
		rbServe, rbCmd = append(rbServe, s), append(rbCmd, c)
		s, c = timedSwitch(b, l, theirs, debimage.NotesV1, "sh", "-c", "podman tag onionpod.test/notes:1 localhost/pbench:latest && podman auto-update")
		pmBackServe, pmBackCmd = append(pmBackServe, s), append(pmBackCmd, c)
		// The floors: the same container started by systemd (stopped first, untimed).
		boxB(b, l, "systemctl", "stop", "onionpod-pod-pbench.service")
		s, _ = timedSwitch(b, l, ours, debimage.NotesV1, "systemctl", "start", "onionpod-pod-pbench.service")
		floor = append(floor, s)
		boxB(b, l, "systemctl", "stop", podman)
		s, _ = timedSwitch(b, l, theirs, debimage.NotesV1, "systemctl", "start", podman)
		pmFloor = append(pmFloor, s)
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	m := func(ds []time.Duration) time.Duration { return median(ds) }
	b.ReportMetric(ms(m(upServe)), "ms-update-serving")
	b.ReportMetric(ms(m(upCmd)), "ms-update-healthy")
	b.ReportMetric(ms(m(rbServe)), "ms-rollback-serving")
	b.ReportMetric(ms(m(rbCmd)), "ms-rollback-healthy")
	b.ReportMetric(ms(m(floor)), "ms-restart-floor")
	b.ReportMetric(ms(m(pmServe)), "ms-podman-autoupdate-serving")
	b.ReportMetric(ms(m(pmCmd)), "ms-podman-autoupdate-cmd")
	b.ReportMetric(ms(m(pmFloor)), "ms-podman-restart-floor")
	b.ReportMetric(float64(m(upServe))/float64(m(pmServe)), "x-update/podman")
	b.ReportMetric(float64(m(rbServe))/float64(m(pmBackServe)), "x-rollback/podman")
	fmt.Printf("\nupdate with the new image already pulled, median of %d each, interleaved (old -> new answering / command done)\n", len(upServe))
	fmt.Printf("  onionpod update   : %7.1f ms / %7.1f ms (healthy)   over its restart floor %6.1f ms: %+7.1f ms (target < 1000)\n",
		ms(m(upServe)), ms(m(upCmd)), ms(m(floor)), ms(m(upServe)-m(floor)))
	fmt.Printf("  onionpod rollback : %7.1f ms / %7.1f ms (healthy)   over its restart floor: %+7.1f ms (target < 500)\n",
		ms(m(rbServe)), ms(m(rbCmd)), ms(m(rbServe)-m(floor)))
	fmt.Printf("  podman auto-update: %7.1f ms / %7.1f ms             over its restart floor %6.1f ms: %+7.1f ms\n",
		ms(m(pmServe)), ms(m(pmCmd)), ms(m(pmFloor)), ms(m(pmServe)-m(pmFloor)))
	fmt.Printf("  podman, back by re-tag + auto-update: %7.1f ms / %7.1f ms\n", ms(m(pmBackServe)), ms(m(pmBackCmd)))
	fmt.Printf("  ratios: update/podman %.2f, rollback/podman-back %.2f\n",
		float64(m(upServe))/float64(m(pmServe)), float64(m(rbServe))/float64(m(pmBackServe)))
	boxB(b, l, "systemctl", "stop", podman)
	boxB(b, l, "onionpod", "rm", "--purge-key", "pbench")
}

// timedSwitch runs argv in the box and measures, from its start, when url first answers with
// X-Notes-Version want (serving) and when argv ended (done).
func timedSwitch(b *testing.B, l *lab.Lab, url, want string, argv ...string) (serving, done time.Duration) {
	b.Helper()
	script := `url=$1; want=$2; shift 2
t0=$(date +%s%N)
"$@" >/tmp/pbench.out 2>&1 &
pid=$!
while :; do
  v=$(curl -s -m 1 -o /dev/null -D - "$url" | tr -d '\r' | sed -n 's/^[Xx]-[Nn]otes-[Vv]ersion: //p')
  [ "$v" = "$want" ] && break
done
t1=$(date +%s%N)
wait $pid; rc=$?
t2=$(date +%s%N)
echo $(( (t1-t0)/1000 )) $(( (t2-t0)/1000 )) $rc`
	ctx, cancel := context.WithTimeout(b.Context(), 3*time.Minute)
	defer cancel()
	out, err := l.Command(ctx, lab.InBox, append([]string{"sh", "-c", script, "pbench", url, want}, argv...)...).CombinedOutput()
	f := strings.Fields(string(out))
	if err != nil || len(f) != 3 || f[2] != "0" {
		log, _ := l.Command(ctx, lab.InBox, "cat", "/tmp/pbench.out").CombinedOutput()
		b.Fatalf("%s: %v: %s\n%s", strings.Join(argv, " "), err, out, log)
	}
	s, _ := strconv.ParseInt(f[0], 10, 64)
	d, _ := strconv.ParseInt(f[1], 10, 64)
	return time.Duration(s) * time.Microsecond, time.Duration(d) * time.Microsecond
}

// setUpPodman runs notes v1 as podman's container pbench in the box, through the unit podman
// generates, label io.containers.autoupdate=local, v2 loaded beside it. Its storage is under the
// lab's dir (overlay does not stack on the box's overlay /var); no pids limit (this host's
// cgroups lack the pids controller). It returns the unit's name.
func setUpPodman(b *testing.B, l *lab.Lab, v1, v2 string) string {
	b.Helper()
	root := filepath.Join(labDir, "podman")
	os.MkdirAll(root, 0o700)
	setup := fmt.Sprintf(`set -e
mkdir -p /etc/containers
printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "/run/podman-bench"\n' > /etc/containers/storage.conf
printf '[containers]\npids_limit = 0\n' > /etc/containers/containers.conf
podman load -q -i %s >/dev/null
podman load -q -i %s >/dev/null
podman tag onionpod.test/notes:1 localhost/pbench:latest
podman create --name pbench --network host -e DATABASE_URL=postgres://x@127.0.0.1:1/x -e LISTEN=:18080 \
  --label io.containers.autoupdate=local localhost/pbench:latest >/dev/null
cd /etc/systemd/system
podman generate systemd --new --files --name pbench >/dev/null
systemctl daemon-reload
systemctl start container-pbench.service
`, filepath.Join(root, "storage"), v1, v2)
	boxB(b, l, "sh", "-c", setup)
	b.Cleanup(func() {
		ctx := context.Background()
		l.Command(ctx, lab.InBox, "sh", "-c", "systemctl stop container-pbench.service; podman rm -af; podman rmi -af; rm -f /etc/systemd/system/container-pbench.service /etc/containers/storage.conf /etc/containers/containers.conf; systemctl daemon-reload").Run()
	})
	return "container-pbench.service"
}

func boxB(b *testing.B, l *lab.Lab, argv ...string) string {
	b.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()
	out, err := l.Command(ctx, lab.InBox, argv...).CombinedOutput()
	if err != nil {
		b.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}
