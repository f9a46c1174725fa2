package daemon_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/lab/registry/registrytest"
)

// webApp is an app of one container from the image IMAGE, its health check quick, failures
// not counted for START after a start.
const webApp = `name = "web"
[[containers]]
name = "web"
image = "IMAGE"
ports = ["80"]
[containers.health]
http = "/healthz"
interval = "300ms"
timeout = "1s"
retries = 2
start_period = "START"
`

// writeWebApp writes the file of webApp.
func writeWebApp(t *testing.T, r *rig, image, start string) string {
	t.Helper()
	p := filepath.Join(r.dir, "web.toml")
	if err := os.WriteFile(p, []byte(strings.NewReplacer("IMAGE", image, "START", start).Replace(webApp)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// updateInBackground starts `onionpod update web` with grace, and returns a func that waits for
// it to end and returns its output and exit code.
func updateInBackground(t *testing.T, r *rig, grace string) func() (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	cmd := exec.CommandContext(ctx, os.Getenv(binEnv), "--config", r.cfgPath, "update", "web", "--grace", grace)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return func() (string, int) {
		defer cancel()
		cmd.Wait()
		return out.String(), cmd.ProcessState.ExitCode()
	}
}

func TestUpdateSurvivesCrash(t *testing.T) { inBox(t, "TestInsideUpdateSurvivesCrash") }

// TestInsideUpdateSurvivesCrash: an update to a broken image, the daemon killed with SIGKILL
// during its grace period and kept down past its deadline. The record written by the update
// says the image is on trial; the next daemon resumes the trial (status shows it), gives it a
// last look, and rolls back: the old image serves again, the broken one is rejected, and the
// record says why. (Before, the health wait and the rollback lived in the killed daemon's
// memory: the broken image stayed for good.)
func TestInsideUpdateSurvivesCrash(t *testing.T) {
	r := newRig(t)
	reg := registrytest.New(t)
	pushWeb(t, reg, "v1\n", true)
	// Failures of the check count 20 s after a start: the trial ends at its deadline.
	r.must("apply", "-f", writeWebApp(t, r, reg.Ref("web:latest"), "20s"))
	v1 := r.status("web").Containers[0].ImageID
	if got := page(t, r, "web"); got != "v1\n" {
		t.Fatalf("page %q, want v1", got)
	}

	// The daemon as onionpod.service runs it, which the test can kill.
	r.stop()
	r.startProcess()
	pushWeb(t, reg, "broken\n", false)
	const grace = 8 * time.Second
	wait := updateInBackground(t, r, grace.String())
	waitFor(t, time.Minute, "the broken image in the record", func() bool { return r.status("web").Containers[0].ImageID != v1 })
	broken := r.status("web").Containers[0].ImageID
	r.crash()
	out, code := wait()
	t.Logf("update with its daemon killed: exit %d\n%s", code, out)
	rec := record(t, r, "web").Containers[0]
	if rec.ImageID != broken || rec.Trial == nil || rec.Trial.Back.ImageID != v1 || rec.Trial.Grace != grace {
		t.Fatalf("the record the killed daemon left: %+v (trial %+v), want %s on trial for %v, back to %s", rec, rec.Trial, broken, grace, v1)
	}
	time.Sleep(time.Until(rec.Trial.Deadline) + time.Second) // past the deadline, no daemon

	r.start()
	if status := r.must("status", "web"); !strings.Contains(status, "updating:  trial of "+reg.Ref("web:latest")+" until ") {
		t.Errorf("status during the resumed trial:\n%s", status)
	}
	waitFor(t, 2*time.Minute, "v1 serving again", func() bool { return page(t, r, "web") == "v1\n" })
	waitFor(t, time.Minute, "the trial ended", func() bool { return r.status("web").Containers[0].Trial == nil })
	st := r.status("web").Containers[0]
	if st.ImageID != v1 || st.Rejected != broken || !strings.Contains(st.RejectedReason, "not healthy after "+grace.String()) {
		t.Errorf("after the rollback: %+v, want %s running, %s rejected as not healthy", st, v1, broken)
	}
	if status := r.must("status", "web"); !strings.Contains(status, "why: not healthy after") {
		t.Errorf("status after the rollback:\n%s", status)
	}
}

// record reads the app's record from the daemon's state directory.
func record(t *testing.T, r *rig, name string) store.App {
	t.Helper()
	s, err := store.Open(r.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	app, err := s.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func TestUpdateSurvivesRestart(t *testing.T) { inBox(t, "TestInsideUpdateSurvivesRestart") }

// TestInsideUpdateSurvivesRestart: an update to a good image that takes a few seconds to serve,
// the daemon restarted during its grace period. The update's client is told the trial goes on;
// the next daemon resumes it and keeps the new image once the app is healthy on it, the image
// before it recorded: a rollback puts v1 back. (Before, a daemon that stopped during the wait
// rolled the update back.)
func TestInsideUpdateSurvivesRestart(t *testing.T) {
	r := newRig(t)
	reg := registrytest.New(t)
	pushWeb(t, reg, "v1\n", true)
	// v2 starts serving 6 s after its container: its check's failures count after 30 s.
	r.must("apply", "-f", writeWebApp(t, r, reg.Ref("web:latest"), "30s"))
	v1 := r.status("web").Containers[0].ImageID

	pushWebAfter(t, reg, "v2\n", true, 6*time.Second)
	wait := updateInBackground(t, r, "2m")
	waitFor(t, time.Minute, "v2 in the record", func() bool { return r.status("web").Containers[0].ImageID != v1 })
	v2 := r.status("web").Containers[0].ImageID
	r.restart()
	r.sync()
	out, code := wait()
	t.Logf("update with its daemon restarted: exit %d\n%s", code, out)
	if code == 0 || !strings.Contains(out, "on trial until") {
		t.Errorf("the update's client when its daemon stopped: exit %d\n%s", code, out)
	}
	waitFor(t, 2*time.Minute, "the trial decided", func() bool { return r.status("web").Containers[0].Trial == nil })
	st := r.status("web").Containers[0]
	if st.ImageID != v2 || st.PreviousImageID != v1 || st.Rejected != "" {
		t.Errorf("after the trial: %+v, want %s kept (before it %s)", st, v2, v1)
	}
	if got := page(t, r, "web"); got != "v2\n" {
		t.Errorf("after the trial the app serves %q, want v2", got)
	}
	r.must("rollback", "web")
	if st := r.status("web").Containers[0]; st.ImageID != v1 || st.Trial != nil {
		t.Errorf("after the rollback: %+v (trial %+v), want %s", st, st.Trial, v1)
	}
	waitFor(t, time.Minute, "v1 serving after the rollback", func() bool { return page(t, r, "web") == "v1\n" })
}
