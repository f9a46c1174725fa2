package daemon_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/pods"
)

func TestPodOfContainers(t *testing.T) { inBox(t, "TestInsidePodOfContainers") }

// TestInsidePodOfContainers runs an app of two containers through the daemon: "db" keeps a file
// in its volume and answers on the pod's localhost only (a command check in its sandbox), "web"
// is published (an HTTP check from the host to the pod's ULA). The app is running only once both
// are healthy; both run as the app's one dynamic user. db's process is frozen: its checks fail,
// the daemon restarts it, the app says why meanwhile, and the volume's file survives. A dry run
// plans a change without making it; logs are per container (an unknown one is bad input); a
// container taken out of the app goes. A record of schema 1, as an older onionpod wrote it, runs
// as it did (onionpod-pod-APP.service) and is written as schema 2 on its next change.
func TestInsidePodOfContainers(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	img := r.upload(r.image("duo", "the web container\n"))
	dbCmd := `[ -f /data/marker ] || date +%s%N > /data/marker; exec /bin/busybox httpd -f -p 127.0.0.1:5432 -h /data`
	app := store.App{
		Name: "duo",
		Containers: []store.Container{
			{Name: "db", Image: img, Entrypoint: []string{"/bin/busybox", "sh", "-c", dbCmd},
				Volumes: []store.Volume{{Name: "data", Path: "/data"}},
				Health: &store.Health{Command: []string{"/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:5432/marker"},
					Interval: 300 * time.Millisecond, Timeout: time.Second, Retries: 2, StartPeriod: 100 * time.Millisecond},
				Limits: pods.Limits{Memory: "64M", Tasks: 32}},
			{Name: "web", Image: img, After: []string{"db"},
				Health: &store.Health{HTTP: "/", Interval: 300 * time.Millisecond}},
		},
		Ports: []store.Port{{Public: 80, Target: 80, Container: "web"}},
		Onion: true,
	}
	put, err := r.client.Put(ctx, app)
	if err != nil {
		t.Fatal(err)
	}
	st, err := r.client.Wait(ctx, "duo", api.WaitRunning, put.App.Generation, time.Minute)
	if err != nil {
		out, _ := exec.Command("journalctl", "--no-pager", "-n", "40").CombinedOutput()
		t.Fatalf("%v\n%s", err, out)
	}
	for _, c := range st.Containers {
		if c.Health == nil || c.Health.State != api.HealthHealthy || c.ImageID != img {
			t.Errorf("container %s when running: %+v (health %+v)", c.Name, c, c.Health)
		}
	}
	if c := st.Containers[0]; c.Unit.Name != "onionpod-pod-duo_db.service" || !strings.Contains(c.Health.Check, "command /bin/busybox wget") {
		t.Errorf("db: %+v %+v", c, c.Health)
	}
	if c := st.Containers[1]; !strings.Contains(c.Health.Check, "http GET :80/ every 300ms") || len(c.Ports) != 1 || c.Ports[0] != "80->80" {
		t.Errorf("web: %+v %+v", c, c.Health)
	}
	detail := r.status("duo")
	dbPID, webPID := detail.Containers[0].Unit.MainPID, detail.Containers[1].Unit.MainPID
	if dbPID == 0 || webPID == 0 || uidOf(t, dbPID) != uidOf(t, webPID) || uidOf(t, dbPID) == 0 {
		t.Errorf("pids %d, %d: want both running as one dynamic user", dbPID, webPID)
	}
	if out, _ := exec.Command("systemctl", "show", "-p", "MemoryMax,TasksMax,CPUWeight", "onionpod-pod-duo_db.service").Output(); string(out) != fmt.Sprintf("CPUWeight=50\nMemoryMax=%d\nTasksMax=32\n", 64<<20) {
		t.Errorf("db's limits: %q", out)
	}
	// ls and status show the containers and their health.
	if out := r.must("ls"); !strings.Contains(out, "db:healthy web:healthy") {
		t.Errorf("ls:\n%s", out)
	}
	out := r.must("status", "duo")
	t.Logf("status duo:\n%s", out)
	for _, want := range []string{"containers:", "db: " + img, "unit:    onionpod-pod-duo_db.service active/running", "web: " + img + " (serves 80->80)",
		"check:   healthy since", "(http GET :80/ every 300ms"} {
		if !strings.Contains(out, want) {
			t.Errorf("status duo lacks %q", want)
		}
	}
	marker := filepath.Join(pods.VolumeHostDir("duo", "data"), "marker")
	before, err := os.ReadFile(marker)
	if err != nil {
		t.Fatal(err)
	}

	// Freeze db: its checks fail, the daemon restarts it; the app says why until it is back.
	if err := syscall.Kill(dbPID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	var why string
	waitFor(t, 30*time.Second, "db restarted by its health check", func() bool {
		st := r.status("duo")
		if st.State != api.StateRunning && st.LastError != "" && why == "" {
			why = st.LastError
		}
		h := st.Containers[0].Health
		return h.Restarts == 1 && st.Containers[0].Unit.MainPID != dbPID
	})
	t.Logf("db restarted %v after it froze; meanwhile the app said: %s", time.Since(frozen).Round(time.Millisecond), why)
	if !strings.Contains(why, "container db") {
		t.Errorf("the app's state did not say why: %q", why)
	}
	st, err = r.client.Wait(ctx, "duo", api.WaitRunning, 0, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	h := st.Containers[0].Health
	if !strings.Contains(h.RestartReason, "2 checks failed in a row") || h.LastRestart.Before(frozen) {
		t.Errorf("db's health after its restart: %+v", h)
	}
	if after, err := os.ReadFile(marker); err != nil || string(after) != string(before) {
		t.Errorf("the volume's file after the restart: %q, %v (was %q)", after, err, before)
	}
	if st.Containers[1].Health.Restarts != 0 {
		t.Errorf("web was restarted too: %+v", st.Containers[1].Health)
	}

	// Logs per container; an unknown container is bad input.
	out = r.must("logs", "duo", "db")
	if !strings.Contains(out, "container db") || strings.Contains(out, "container web") {
		t.Errorf("logs duo db:\n%s", out)
	}
	if _, errOut, code := r.onionpod("logs", "duo", "nosuch"); code != 2 || !strings.Contains(errOut, `no container "nosuch" (it has db, web)`) {
		t.Errorf("logs duo nosuch: exit %d: %s", code, errOut)
	}

	// A dry run: the plan of a change, nothing changed.
	change := st.App
	change.Containers[1].Env = []string{"NEW=1"}
	planned, err := r.client.Plan(ctx, change)
	if err != nil {
		t.Fatal(err)
	}
	if planned.Plan != "converge duo:\n  write-unit     web: the app or its image changed\n  start-unit     web: restart with the new unit\n" {
		t.Errorf("plan:\n%s", planned.Plan)
	}
	if now := r.status("duo"); now.App.Generation != st.App.Generation || len(now.App.Containers[1].Env) != 0 {
		t.Errorf("a dry run changed the app: %+v", now.App)
	}

	// Take db out: its unit goes, web runs on.
	change = r.status("duo").App
	change.Containers = change.Containers[1:]
	change.Containers[0].After = nil
	put, err = r.client.Put(ctx, change)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.Wait(ctx, "duo", api.WaitRunning, put.App.Generation, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/etc/systemd/system/onionpod-pod-duo_db.service"); err == nil {
		t.Error("db's unit is still there")
	}

	// A record of schema 1 runs as before, and becomes schema 2 on its next change.
	v1 := fmt.Sprintf(`{"schema": 1, "app": {"name": "old", "image": %q, "source": "/home/me/old.tar",
		"ports": [{"public": 80, "target": 80}], "env": ["A=1"], "onion": false, "onion_only": false,
		"ipv4": false, "stopped": false, "generation": 3, "created": "2026-11-01T10:00:00Z", "updated": "2026-11-01T10:00:00Z"}}`, img)
	if err := os.WriteFile(filepath.Join(r.cfg.StateDir, "apps", "old.json"), []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	r.sync()
	old, err := r.client.Wait(ctx, "old", api.WaitRunning, 3, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(old.Containers) != 1 || old.Containers[0].Name != "old" || old.Unit.Name != "onionpod-pod-old.service" || old.Unit.ActiveState != "active" {
		t.Errorf("the schema-1 app: %+v", old)
	}
	r.must("run", "old", "--env", "B=2")
	data, _ := os.ReadFile(filepath.Join(r.cfg.StateDir, "apps", "old.json"))
	if !strings.Contains(string(data), `"schema": 2`) || !strings.Contains(string(data), `"A=1"`) || !strings.Contains(string(data), `"B=2"`) {
		t.Errorf("the record after a change:\n%s", data)
	}
}

func uidOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			uid, _ := strconv.Atoi(strings.Fields(v)[0])
			return uid
		}
	}
	return -1
}
