package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
	"github.com/onionpod/onionpod/internal/lab/debimage"
	"github.com/onionpod/onionpod/internal/lab/debimage/debimagetest"
)

// notesApp is the app file of the notes app: PostgreSQL (from Debian's packages) and notes v1, a
// web app of ours that keeps notes in it, in one pod; only notes is published (the database
// listens on the pod's localhost); each has a health check.
const notesApp = `# notes: a web app on PostgreSQL
name = "notes"
onion = true

[[containers]]
name = "db"
image = "postgres.tar"
env = ["POSTGRES_USER=notes", "POSTGRES_DB=notes", "POSTGRES_PASSWORD=n0tes-s3cret"]
volumes = ["pgdata:%s"]
[containers.health]
command = ["pg_isready", "-h", "127.0.0.1", "-U", "notes"]
interval = "2s"
timeout = "5s"
retries = 3

[[containers]]
name = "web"
image = "notes-1.tar"
after = ["db"]
ports = ["80:%d"]
env = ["DATABASE_URL=postgres://notes:n0tes-s3cret@127.0.0.1:%d/notes?sslmode=disable"]
[containers.health]
http = "/healthz"
interval = "5s"
retries = 10
`

// notesStatus is what the test reads of `onionpod status notes --json`.
type notesStatus struct {
	State     string `json:"state"`
	LastError string `json:"last_error"`
	App       struct {
		Generation int64 `json:"generation"`
	} `json:"app"`
	Containers []struct {
		Name string `json:"name"`
		Unit struct {
			ActiveState string `json:"active_state"`
			MainPID     int    `json:"main_pid"`
		} `json:"unit"`
		Health *struct {
			Check         string `json:"check"`
			State         string `json:"state"`
			Restarts      int    `json:"restarts"`
			RestartReason string `json:"restart_reason"`
		} `json:"health"`
	} `json:"containers"`
}

func notesState(t *testing.T) notesStatus {
	t.Helper()
	var st notesStatus
	if err := json.Unmarshal([]byte(onionpod(t, "status", "notes", "--json")), &st); err != nil {
		t.Fatalf("status notes: %v", err)
	}
	return st
}

// TestNotesApp creates the notes app with an app file (the images are local archives built from
// Debian's packages, sent through the CLI's upload path), writes notes over the .onion and over
// IPv6 and reads them back, sees both containers healthy, applies the file again (nothing
// changes), refuses an app file with a typo and logs of an unknown container (exit 2, nothing
// changed), freezes the database's process and sees its health check restart it with the notes
// kept, reboots the box, and reads the notes again over both.
func TestNotesApp(t *testing.T) {
	l := needLab(t)
	apps := debimagetest.Apps(t)
	dir := filepath.Join(labDir, "notes-app")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stage(t, apps.Postgres.Path, filepath.Join(dir, "postgres.tar"))
	stage(t, apps.NotesV1.Path, filepath.Join(dir, "notes-1.tar"))
	file := filepath.Join(dir, "notes.toml")
	os.WriteFile(file, []byte(fmt.Sprintf(notesApp, debimage.PostgresVolume, debimage.NotesPort, debimage.PostgresPort)), 0o644)

	start := time.Now()
	out := onionpod(t, "apply", "-f", file)
	t.Logf("apply created the app in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	e := parseExposed(t, out)
	if e.Onion == "" || e.DNS != "http://notes."+lab.Zone+"/" {
		t.Fatalf("apply's addresses: %+v", e)
	}
	st := notesState(t)
	if st.State != running || len(st.Containers) != 2 {
		t.Fatalf("after apply: %+v", st)
	}
	for _, c := range st.Containers {
		if c.Health == nil || c.Health.State != "healthy" || c.Unit.ActiveState != "active" {
			t.Errorf("container %s after apply: %+v, health %+v", c.Name, c.Unit, c.Health)
		}
	}
	t.Logf("health: db %s; web %s", st.Containers[0].Health.Check, st.Containers[1].Health.Check)

	// A note over IPv6 (by DNS name, from the LAN client), one over the .onion; both read back.
	postNote(t, lab.InClient, e.DNS, "written over IPv6")
	postNote(t, lab.InTor, e.Onion, "written over the onion")
	for _, where := range []struct{ name, base string }{{lab.InClient, e.DNS}, {lab.InTor, e.Onion}} {
		if notes := readNotes(t, where.name, where.base); !sameSet(notes, "written over IPv6", "written over the onion") {
			t.Errorf("notes read from %s: %q", where.name, notes)
		}
	}

	// Apply again: nothing changes.
	if out := onionpod(t, "apply", "-f", file); out != fmt.Sprintf("notes: unchanged (generation %d)\n", st.App.Generation) {
		t.Errorf("apply again: %q", out)
	}
	// An export applies as nothing either.
	exported := filepath.Join(dir, "exported.toml")
	os.WriteFile(exported, []byte(onionpod(t, "export", "notes")), 0o600)
	if out := onionpod(t, "apply", "-f", exported, "--dry-run"); !strings.Contains(out, "unchanged") {
		t.Errorf("apply of the export: %q", out)
	}

	// Bad input: a typo in the app file, logs of a container the app has not. Exit 2, nothing changed.
	typo := filepath.Join(dir, "typo.toml")
	os.WriteFile(typo, []byte(strings.Replace(fmt.Sprintf(notesApp, debimage.PostgresVolume, debimage.NotesPort, debimage.PostgresPort),
		"after = [", "aftr = [", 1)), 0o644)
	if _, errOut, code := cliCode(t, "apply", "-f", typo); code != 2 || !strings.Contains(errOut, `line 19: unknown key "containers.aftr"`) {
		t.Errorf("apply of a typo: exit %d: %s", code, errOut)
	}
	if _, errOut, code := cliCode(t, "logs", "notes", "nosuch"); code != 2 || !strings.Contains(errOut, `no container "nosuch"`) {
		t.Errorf("logs notes nosuch: exit %d: %s", code, errOut)
	}
	if now := notesState(t); now.App.Generation != st.App.Generation || now.State != running ||
		now.Containers[0].Unit.MainPID != st.Containers[0].Unit.MainPID {
		t.Errorf("bad input changed the app: %+v, was %+v", now, st)
	}
	if logs := onionpod(t, "logs", "notes", "db"); !strings.Contains(logs, "database system is ready to accept connections") {
		t.Errorf("logs notes db:\n%s", logs)
	}

	// Freeze the database's process: its checks fail, the daemon restarts it, the notes are kept.
	dbPID := st.Containers[0].Unit.MainPID
	if _, err := run(t, t.Context(), lab.InBox, "kill", "-STOP", fmt.Sprint(dbPID)); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	var why string
	waitFor(t, 2*time.Minute, "the database restarted by its health check", func() bool {
		now := notesState(t)
		if now.State != running && why == "" {
			why = now.LastError
		}
		db := now.Containers[0]
		return db.Health.Restarts >= 1 && db.Unit.MainPID != dbPID && db.Unit.MainPID != 0
	})
	t.Logf("db restarted %v after it froze; meanwhile the app said: %s", time.Since(frozen).Round(time.Millisecond), why)
	waitFor(t, 2*time.Minute, "notes running again", func() bool { return notesState(t).State == running })
	after := notesState(t)
	if r := after.Containers[0].Health.RestartReason; !strings.Contains(r, "checks failed in a row") || !strings.Contains(r, "pg_isready") {
		t.Errorf("db's restart reason: %q", r)
	}
	t.Logf("web's health restarts meanwhile: %d", after.Containers[1].Health.Restarts)
	if notes := readNotes(t, lab.InClient, e.DNS); !sameSet(notes, "written over IPv6", "written over the onion") {
		t.Errorf("notes after the database's restart: %q", notes)
	}

	// Reboot the box: the app comes back by itself, with its notes, at both addresses.
	start = time.Now()
	if err := l.Reboot(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, "notes running after the reboot", func() bool {
		out, err := cliOut(t, "status", "notes", "--json")
		var st notesStatus
		return err == nil && json.Unmarshal([]byte(out), &st) == nil && st.State == running
	})
	t.Logf("notes running %v after the reboot began", time.Since(start).Round(time.Millisecond))
	for _, where := range []struct{ name, base string }{{lab.InClient, e.DNS}, {lab.InTor, e.Onion}} {
		if notes := readNotes(t, where.name, where.base); !sameSet(notes, "written over IPv6", "written over the onion") {
			t.Errorf("after the reboot, notes read from %s: %q", where.name, notes)
		}
	}
}

// stage puts an image archive where the box sees it (a hard link, or a copy).
func stage(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Link(from, to); err == nil {
		return
	}
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// postNote adds a note through the app at base (http://NAME/), from where, retrying while
// circuits and descriptors settle.
func postNote(t *testing.T, where, base, text string) {
	t.Helper()
	curlRetrying(t, theLab, where, 3*time.Minute, "-H", "Accept: application/json",
		"--data", "text="+url.QueryEscape(text), base+"notes")
}

// readNotes lists the notes' texts through the app at base, from where.
func readNotes(t *testing.T, where, base string) []string {
	t.Helper()
	var notes []struct{ Text string }
	if err := json.Unmarshal([]byte(fetch(t, where, base+"notes", 3*time.Minute)), &notes); err != nil {
		t.Fatalf("GET %snotes: %v", base, err)
	}
	var texts []string
	for _, n := range notes {
		texts = append(texts, n.Text)
	}
	return texts
}

func sameSet(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		if !contains(got, w) {
			return false
		}
	}
	return true
}

// cliCode runs the CLI in the box and returns its stdout, stderr and exit code.
func cliCode(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	c := theLab.Command(ctx, lab.InBox, append([]string{"onionpod"}, args...)...)
	c.Stdout, c.Stderr = &out, &errOut
	err := c.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("onionpod %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// cliOut runs the CLI in the box; an error is returned, not fatal (the daemon may be starting).
func cliOut(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	return run(t, ctx, lab.InBox, append([]string{"onionpod"}, args...)...)
}
