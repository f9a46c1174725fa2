package testapps_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab/debimage"
	"github.com/onionpod/onionpod/internal/lab/debimage/debimagetest"
	"github.com/onionpod/onionpod/pods"
	"github.com/onionpod/onionpod/pods/podstest"
)

// Environment passed from the host test to its phases inside the box.
const (
	envStore    = "TESTAPPS_STORE"
	envPostgres = "TESTAPPS_POSTGRES"
	envNotesV1  = "TESTAPPS_NOTES_V1"
	envNotesV2  = "TESTAPPS_NOTES_V2"
	envNotesBad = "TESTAPPS_NOTES_BROKEN"
)

// The app "notes" is a pod of two containers sharing one network namespace, as pods renders
// them (AppUnits): "db" (PostgreSQL) and "notes" (the web app, the app's own container), one
// dynamic user for both, the web app started after the database, the database stopped with its
// image's StopSignal. (The first version of this test added all of that as drop-ins.)
const (
	app      = "notes"
	dbApp    = "db"    // the database container
	webApp   = "notes" // the web container: the app's own
	netns    = "onionpod-notes"
	password = "s3cret-for-tests"
)

var (
	appUser = pods.AppUser(app) // the dynamic user both containers share
	dbUnit  = pods.ContainerUnitName(app, dbApp)
	webUnit = pods.ContainerUnitName(app, webApp)
)

// TestNotesPodUnderSystemd builds the PostgreSQL image from Debian and the notes images (or takes
// them from the shared cache), boots a real systemd (podstest), and inside it: loads the archives
// with pods.ImageStore, runs PostgreSQL and notes v1 as two units of pods' sandbox sharing one
// network namespace, writes a note over HTTP and reads it back, restarts PostgreSQL and reads it
// again, dumps and restores the database with the image's hooks, switches the web container to v2
// and to the broken release and back; then reboots the box and finds both containers and the
// note again.
func TestNotesPodUnderSystemd(t *testing.T) {
	if podstest.Inside() {
		t.Skip("runs on the host")
	}
	if testing.Short() {
		t.Skip("builds Debian images and boots systemd: not with -short")
	}
	if err := podstest.Available(); err != nil {
		t.Skip(err)
	}
	for _, tool := range []string{"curl", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s needed: %v", tool, err)
		}
	}
	apps := debimagetest.Apps(t)
	env := []string{
		envStore + "=" + filepath.Join(t.TempDir(), "store"),
		envPostgres + "=" + apps.Postgres.Path,
		envNotesV1 + "=" + apps.NotesV1.Path,
		envNotesV2 + "=" + apps.NotesV2.Path,
		envNotesBad + "=" + apps.NotesBroken.Path,
	}
	box := podstest.New(t, podstest.Options{})
	box.RunTestInside(t, "TestInsideNotesPod", env...)
	start := time.Now()
	box.RebootT(t)
	t.Logf("box rebooted in %v", time.Since(start))
	box.RunTestInside(t, "TestInsideNotesPodAfterReboot", env...)
}

// inside is what each phase inside the box starts with.
type inside struct {
	t     *testing.T
	store *pods.ImageStore
	sd    *pods.Systemd
}

func newInside(t *testing.T) *inside {
	t.Helper()
	if !podstest.Inside() {
		t.Skip("runs inside a podstest box")
	}
	sd, err := pods.Connect(t.Context(), "/etc/systemd/system")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sd.Close() })
	return &inside{t: t, store: &pods.ImageStore{Dir: os.Getenv(envStore)}, sd: sd}
}

func (in *inside) load(envName string) *pods.Image {
	in.t.Helper()
	start := time.Now()
	img, err := in.store.LoadArchive(in.t.Context(), os.Getenv(envName), nil)
	if err != nil {
		in.t.Fatal(err)
	}
	in.t.Logf("loaded %s (%s) in %v", img.Ref, img.Digest, time.Since(start).Round(time.Millisecond))
	return img
}

// dbSpec is the PostgreSQL container: it owns the app's network (NetUp) and the data volume.
func dbSpec(t *testing.T, img *pods.Image) pods.Spec {
	argv, err := img.Command(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pods.Spec{
		App: app, Container: dbApp, Root: img.Root, Netns: "/run/netns/" + netns, Command: argv,
		KillSignal: img.Config.StopSignal,
		Env: pods.MergeEnv(img.Config.Env, []string{
			"POSTGRES_USER=notes", "POSTGRES_DB=notes", "POSTGRES_PASSWORD=" + password,
		}),
		WorkingDir: img.Config.WorkingDir,
		Volumes:    []pods.Volume{{Name: "pgdata", Path: debimage.PostgresVolume}},
		NetUp:      []string{"/bin/sh", "-c", fmt.Sprintf("ip netns del %[1]s 2>/dev/null; ip netns add %[1]s && ip -n %[1]s link set lo up", netns)},
		NetDown:    []string{"/usr/sbin/ip", "netns", "del", netns},
	}
}

// webSpec is the notes container, in the same network namespace (and network unit), started
// after the database.
func webSpec(t *testing.T, img *pods.Image, db pods.Spec) pods.Spec {
	argv, err := img.Command(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pods.Spec{
		App: app, Container: webApp, Root: img.Root, Netns: "/run/netns/" + netns, Command: argv,
		NetUp: db.NetUp, NetDown: db.NetDown, After: []string{dbApp}, KillSignal: img.Config.StopSignal,
		Env: pods.MergeEnv(img.Config.Env, []string{
			fmt.Sprintf("DATABASE_URL=postgres://notes:%s@127.0.0.1:%d/notes?sslmode=disable", password, debimage.PostgresPort),
		}),
		WorkingDir: img.Config.WorkingDir,
	}
}

func TestInsideNotesPod(t *testing.T) {
	in := newInside(t)
	ctx := t.Context()
	pg := in.load(envPostgres)
	v1 := in.load(envNotesV1)

	if pg.Config.StopSignal != "SIGINT" {
		t.Errorf("PostgreSQL's stop signal %q, want SIGINT (fast shutdown)", pg.Config.StopSignal)
	}
	db := dbSpec(t, pg)
	units, err := pods.AppUnits(db, webSpec(t, v1, db))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := in.sd.ApplyApp(ctx, app, units); err != nil {
		t.Fatal(err)
	}
	dbSt := waitRunning(t, in.sd, dbApp, 0)
	webSt := waitRunning(t, in.sd, webApp, 0)
	waitHealthy(t, "1")
	t.Logf("postgres (initdb included) and notes v1 healthy %v after Apply", time.Since(start).Round(time.Millisecond))

	// One dynamic user for both containers, not root, no capabilities; the volume is theirs.
	dbUID, webUID := procUID(t, dbSt.MainPID), procUID(t, webSt.MainPID)
	if dbUID == 0 || dbUID != webUID {
		t.Errorf("uids: postgres %d, notes %d: want one non-root dynamic user", dbUID, webUID)
	}
	for _, pid := range []int{dbSt.MainPID, webSt.MainPID} {
		if caps := procStatus(t, pid, "CapEff"); caps != "0000000000000000" {
			t.Errorf("pid %d CapEff %s", pid, caps)
		}
	}
	vol := pods.VolumeHostDir(app, "pgdata")
	if st, err := os.Stat(filepath.Join(vol, "data", "PG_VERSION")); err != nil || int(st.Sys().(*syscall.Stat_t).Uid) != dbUID {
		t.Errorf("data directory in the volume: %v, %v", st, err)
	}
	// PostgreSQL listens on 127.0.0.1 of the pod's namespace only.
	if out := inNetns(t, "ss", "-Htln"); !strings.Contains(out, "127.0.0.1:5432") || strings.Contains(out, "0.0.0.0:5432") || strings.Contains(out, "*:5432") {
		t.Errorf("listening sockets in the pod:\n%s", out)
	}

	// Write a note over HTTP and read it back, HTML and JSON.
	postNote(t, "first note, kept in PostgreSQL")
	if notes := listNotes(t); len(notes) != 1 || notes[0] != "first note, kept in PostgreSQL" {
		t.Fatalf("notes = %q", notes)
	}
	if page, hdr := get(t, "/"); !strings.Contains(page, "first note, kept in PostgreSQL") || !strings.Contains(page, "notes 1") || hdr != "1" {
		t.Errorf("GET / (version %q):\n%s", hdr, page)
	}

	// Restart PostgreSQL: the note is still there, read through the same web container.
	start = time.Now()
	if err := in.sd.RestartUnit(ctx, dbUnit); err != nil {
		t.Fatal(err)
	}
	t.Logf("postgres restarted (stop + start) in %v", time.Since(start).Round(time.Millisecond))
	waitRunning(t, in.sd, dbApp, dbSt.MainPID)
	waitHealthy(t, "1")
	t.Logf("notes healthy again %v after the restart began", time.Since(start).Round(time.Millisecond))
	if notes := listNotes(t); len(notes) != 1 || notes[0] != "first note, kept in PostgreSQL" {
		t.Fatalf("after a restart of postgres, notes = %q", notes)
	}
	if out := journal(t, dbUnit); strings.Contains(out, "database system was interrupted") || strings.Contains(out, "was not properly shut down") {
		t.Errorf("postgres did not shut down cleanly:\n%s", out)
	}

	// The backup hooks, run as pods would run a hook: a transient unit in the container's root,
	// network namespace, user and sandbox.
	dump := runHook(t, pg, debimage.PostgresDump, nil)
	if !strings.Contains(dump, "first note, kept in PostgreSQL") || !strings.Contains(dump, "DROP TABLE IF EXISTS public.notes") {
		t.Fatalf("pg-dump wrote:\n%s", tail(dump))
	}
	postNote(t, "written after the dump")
	runHook(t, pg, debimage.PostgresRestore, []byte(dump))
	if notes := listNotes(t); len(notes) != 1 || notes[0] != "first note, kept in PostgreSQL" {
		t.Errorf("after restoring the dump, notes = %q (want the dump's one note)", notes)
	}

	// Another release of the web container over the same data, a broken one, and back.
	v2 := in.load(envNotesV2)
	broken := in.load(envNotesBad)
	for _, step := range []struct {
		img     *pods.Image
		version string
		healthy bool
	}{{v2, "2", true}, {broken, debimage.NotesBroken, false}, {v1, "1", true}} {
		units, err := pods.AppUnits(db, webSpec(t, step.img, db))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := in.sd.ApplyApp(ctx, app, units); err != nil {
			t.Fatal(err)
		}
		waitRunning(t, in.sd, webApp, 0)
		if !step.healthy {
			code, hdr := healthz(t)
			for range 50 {
				if hdr == step.version {
					break
				}
				time.Sleep(100 * time.Millisecond)
				code, hdr = healthz(t)
			}
			if code != 500 || hdr != step.version {
				t.Errorf("broken release: healthz %d, version %q", code, hdr)
			}
			continue
		}
		waitHealthy(t, step.version)
		t.Logf("web container switched to %s and healthy in %v", step.version, time.Since(start).Round(time.Millisecond))
		if notes := listNotes(t); len(notes) != 1 {
			t.Errorf("notes with %s = %q", step.version, notes)
		}
	}
}

func TestInsideNotesPodAfterReboot(t *testing.T) {
	in := newInside(t)
	ctx := t.Context()
	// Both containers came back by themselves, network included, in order.
	waitRunning(t, in.sd, dbApp, 0)
	waitRunning(t, in.sd, webApp, 0)
	waitHealthy(t, "1")
	if notes := listNotes(t); len(notes) != 1 || notes[0] != "first note, kept in PostgreSQL" {
		t.Errorf("after a reboot, notes = %q", notes)
	}
	postNote(t, "after the reboot")
	if notes := listNotes(t); len(notes) != 2 || notes[0] != "after the reboot" {
		t.Errorf("notes = %q", notes)
	}
	if err := in.sd.Remove(ctx, app); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/" + netns); err == nil {
		t.Errorf("netns %s left after Remove", netns)
	}
}

// waitRunning waits until the container's unit is active/running with a main PID other than notPID.
func waitRunning(t *testing.T, sd *pods.Systemd, container string, notPID int) pods.Status {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := sd.ContainerStatus(t.Context(), app, container)
		if err == nil && st.ActiveState == "active" && st.SubState == "running" && st.MainPID != 0 && st.MainPID != notPID {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not running: %+v, %v\n%s", container, st, err, journal(t, pods.ContainerUnitName(app, container)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitHealthy waits until the notes app answers its health check (it waits for the database)
// with the given version.
func waitHealthy(t *testing.T, version string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		code, hdr := healthz(t)
		if code == 200 && hdr == version {
			return
		}
		// A container that systemd gave up on will not become healthy.
		failed := exec.Command("systemctl", "is-failed", "--quiet", dbUnit, webUnit).Run() == nil
		if failed || time.Now().After(deadline) {
			t.Fatalf("notes not healthy (last: %d, version %q)\n%s\n%s", code, hdr, journal(t, dbUnit), journal(t, webUnit))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func healthz(t *testing.T) (int, string) {
	t.Helper()
	out, err := curl("-o", "/dev/null", "-w", "%{http_code} %header{x-notes-version}", "http://127.0.0.1:8080/healthz")
	if err != nil {
		return 0, ""
	}
	code, hdr, _ := strings.Cut(strings.TrimSpace(out), " ")
	n, _ := strconv.Atoi(code)
	return n, hdr
}

func postNote(t *testing.T, text string) {
	t.Helper()
	out, err := curl("-f", "-H", "Accept: application/json", "--data", "text="+url.QueryEscape(text), "http://127.0.0.1:8080/notes")
	if err != nil {
		t.Fatalf("POST /notes: %v: %s", err, out)
	}
}

func listNotes(t *testing.T) []string {
	t.Helper()
	out, err := curl("-f", "http://127.0.0.1:8080/notes")
	if err != nil {
		t.Fatalf("GET /notes: %v: %s", err, out)
	}
	var notes []struct{ Text string }
	if err := json.Unmarshal([]byte(out), &notes); err != nil {
		t.Fatalf("GET /notes: %v: %s", err, out)
	}
	var texts []string
	for _, n := range notes {
		texts = append(texts, n.Text)
	}
	return texts
}

func get(t *testing.T, path string) (body, version string) {
	t.Helper()
	out, err := curl("-f", "-D", "/dev/stderr", "http://127.0.0.1:8080"+path)
	if err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, out)
	}
	hdrs, body, _ := strings.Cut(out, "\x00")
	for _, line := range strings.Split(hdrs, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "X-Notes-Version") {
			version = strings.TrimSpace(v)
		}
	}
	return body, version
}

// curl runs curl in the pod's network namespace. Its output is stderr (headers with -D
// /dev/stderr), a NUL, then stdout.
func curl(args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + netns, "curl", "-sS", "--max-time", "5"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if stderr.Len() > 0 {
		return stderr.String() + "\x00" + stdout.String(), err
	}
	return stdout.String(), err
}

func inNetns(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=/run/netns/" + netns}, argv...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v: %s", argv, err, out)
	}
	return string(out)
}

// runHook runs a command of the database image the way a backup hook would run: a transient
// unit with the container's root, network namespace, shared dynamic user and sandbox, stdin and
// stdout piped.
func runHook(t *testing.T, img *pods.Image, hook string, stdin []byte) string {
	t.Helper()
	args := []string{"--wait", "--pipe", "--quiet", "--collect",
		"-p", "RootDirectory=" + img.Root, "-p", "MountAPIVFS=yes",
		"-p", "NetworkNamespacePath=/run/netns/" + netns,
		"-p", "DynamicUser=yes", "-p", "User=" + appUser,
		"-p", "NoNewPrivileges=yes", "-p", "CapabilityBoundingSet=",
		"-p", "ProtectSystem=strict", "-p", "PrivateDevices=yes", "-p", "PrivateTmp=yes",
	}
	for _, e := range pods.MergeEnv(img.Config.Env, []string{"POSTGRES_USER=notes", "POSTGRES_DB=notes", "POSTGRES_PASSWORD=" + password}) {
		args = append(args, "-E", e)
	}
	start := time.Now()
	cmd := exec.Command("systemd-run", append(args, hook)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", hook, err, stderr.String())
	}
	t.Logf("%s ran in %v (%d bytes out)", hook, time.Since(start).Round(time.Millisecond), stdout.Len())
	return stdout.String()
}

func journal(t *testing.T, unit string) string {
	out, _ := exec.Command("journalctl", "--no-pager", "-o", "cat", "-n", "40", "-u", unit).CombinedOutput()
	return string(out)
}

func procUID(t *testing.T, pid int) int {
	t.Helper()
	f := strings.Fields(procStatus(t, pid, "Uid"))
	if len(f) == 0 {
		t.Fatalf("no Uid for %d", pid)
	}
	uid, _ := strconv.Atoi(f[0])
	return uid
}

func procStatus(t *testing.T, pid int, key string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func tail(s string) string {
	if len(s) > 2000 {
		return "..." + s[len(s)-2000:]
	}
	return s
}
