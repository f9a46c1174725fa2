package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
	"github.com/onionpod/onionpod/internal/lab/debimage"
	"github.com/onionpod/onionpod/internal/lab/debimage/debimagetest"
	"github.com/onionpod/onionpod/internal/lab/hostcheck"
	"github.com/onionpod/onionpod/internal/lab/registry"
)

// diaryApp is the notes app (PostgreSQL + notes) from the lab's registry, the database's volume
// backed up as its own dump (pg-dump / pg-restore), the web container's health check quick.
const diaryApp = `name = "diary"
onion = true

[[containers]]
name = "db"
image = "%[1]s/postgres:15"
env = ["POSTGRES_USER=diary", "POSTGRES_DB=diary", "POSTGRES_PASSWORD=d1ary-s3cret"]
volumes = ["pgdata:%[2]s"]
[containers.health]
command = ["pg_isready", "-h", "127.0.0.1", "-U", "diary"]
interval = "2s"
timeout = "5s"
retries = 3
[containers.backup]
volume = "pgdata"
dump = ["%[3]s"]
restore = ["%[4]s"]

[[containers]]
name = "web"
image = "%[1]s/diary:latest"
after = ["db"]
ports = ["80:%[5]d"]
env = ["DATABASE_URL=postgres://diary:d1ary-s3cret@127.0.0.1:%[6]d/diary?sslmode=disable"]
[containers.health]
http = "/healthz"
interval = "1s"
retries = 3
start_period = "10s"
`

// labRegistry starts Debian's docker-registry on the lab's LAN (its router, lab.RegistryAddr),
// with its storage in dir.
func labRegistry(t testing.TB, l *lab.Lab, dir string) *registry.Registry {
	t.Helper()
	if err := hostcheck.Missing(hostcheck.Registry, hostcheck.Skopeo); err != nil {
		t.Skip(err)
	}
	ns := l.LAN().RouterNetns()
	if out, err := exec.Command("nsenter", "--net="+ns, "--", "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in the LAN: %v: %s", err, out)
	}
	reg, err := registry.Start(t.Context(), registry.Options{Dir: dir, Host: "2001:db8:1::1", Port: 5000, Netns: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	if reg.Addr() != lab.RegistryAddr {
		t.Fatalf("the registry is at %s, the lab's config says %s", reg.Addr(), lab.RegistryAddr)
	}
	return reg
}

func push(t testing.TB, reg *registry.Registry, archive, repoTag string) {
	t.Helper()
	if err := reg.Push(t.Context(), archive, repoTag); err != nil {
		t.Fatal(err)
	}
}

// notesVersion is the X-Notes-Version of the app at base, from where ("" when it does not answer).
func notesVersion(t *testing.T, l *lab.Lab, where, base string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	out, err := l.Command(ctx, where, "curl", "-sS", "-g", "--max-time", "5", "-o", "/dev/null", "-D", "-", base+"healthz").Output()
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "X-Notes-Version") {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestUpdateRollbackBackupRestore runs the notes app from a registry on the lab's LAN: it is
// updated to v2 by pushing the same tag again and applying its file again (the notes stay), a
// broken release pushed under the tag is rolled back automatically while v2 keeps serving,
// onionpod-update.service (the timer's job) does not take the broken image again, the app is
// backed up (the database as its own dump) and restored into a fresh lab box, which serves the
// same notes at the same .onion.
func TestUpdateRollbackBackupRestore(t *testing.T) {
	l := needLab(t)
	apps := debimagetest.Apps(t)
	regDir := filepath.Join(labDir, "registry")
	reg := labRegistry(t, l, regDir)
	push(t, reg, apps.Postgres.Path, "postgres:15")
	push(t, reg, apps.NotesV1.Path, "diary:latest")

	dir := filepath.Join(labDir, "diary")
	os.MkdirAll(dir, 0o755)
	file := filepath.Join(dir, "diary.toml")
	os.WriteFile(file, []byte(fmt.Sprintf(diaryApp, lab.RegistryAddr, debimage.PostgresVolume, debimage.PostgresDump,
		debimage.PostgresRestore, debimage.NotesPort, debimage.PostgresPort)), 0o644)
	start := time.Now()
	out := onionpod(t, "apply", "-f", file)
	t.Logf("apply from the registry in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	e := parseExposed(t, out)
	// The LAN client reaches the app at its IPv6 address: the box's DNS answers UDP queries to its
	// static address from another of its addresses (its SLAAC one), which the client drops
	// (udpbatch replies without the destination address: noticed here, left to the dns package).
	lan := e.IPv6
	postNote(t, lab.InClient, lan, "before the updates")
	postNote(t, lab.InTor, e.Onion, "over the onion")
	if v := notesVersion(t, l, lab.InClient, lan); v != debimage.NotesV1 {
		t.Fatalf("version %q, want %s", v, debimage.NotesV1)
	}

	// v2 under the same tag: applying the same file again takes it.
	push(t, reg, apps.NotesV2.Path, "diary:latest")
	start = time.Now()
	out = onionpod(t, "apply", "-f", file)
	t.Logf("apply again after v2 was pushed, in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if v := notesVersion(t, l, lab.InClient, lan); v != debimage.NotesV2 || !strings.Contains(out, "updated") {
		t.Fatalf("after v2 was pushed under the tag and the file applied again: version %q\n%s", v, out)
	}
	if notes := readNotes(t, lab.InClient, lan); !sameSet(notes, "before the updates", "over the onion") {
		t.Errorf("notes after the update: %q", notes)
	}

	// A broken release under the tag: rolled back, v2 serves again. A client keeps asking
	// meanwhile: what it saw is logged.
	push(t, reg, apps.NotesBroken.Path, "diary:latest")
	seen := watchVersions(t, l, lan)
	start = time.Now()
	out, errOut, code := cliCode(t, "update", "diary")
	took := time.Since(start)
	versions := seen()
	t.Logf("update to the broken release: exit %d in %v\n%s%s\nversions seen meanwhile: %s", code, took.Round(time.Millisecond), out, errOut, versions)
	if code != 1 || !strings.Contains(out, "rolled back") {
		t.Fatalf("update to the broken release: exit %d\n%s%s", code, out, errOut)
	}
	if v := notesVersion(t, l, lab.InClient, lan); v != debimage.NotesV2 {
		t.Fatalf("after the rollback: version %q, want %s", v, debimage.NotesV2)
	}
	// The timer's job, for an app that allows automatic updates: the rejected image is skipped.
	onionpod(t, "run", "diary", "--auto-update")
	if _, err := run(t, t.Context(), lab.InBox, "systemctl", "start", "onionpod-update.service"); err != nil {
		t.Fatal(err)
	}
	journal, _ := run(t, t.Context(), lab.InBox, "journalctl", "--no-pager", "-u", "onionpod-update.service", "-n", "20")
	if !strings.Contains(journal, "skipped") {
		t.Errorf("onionpod-update.service:\n%s", journal)
	}
	if v := notesVersion(t, l, lab.InClient, lan); v != debimage.NotesV2 {
		t.Errorf("after the automatic update: version %q", v)
	}

	// The whole app, backed up.
	pass := filepath.Join(dir, "passphrase")
	os.WriteFile(pass, []byte("a long passphrase\n"), 0o600)
	backup := filepath.Join(dir, "diary.backup")
	start = time.Now()
	out = onionpod(t, "backup", "diary", "-o", backup, "--passphrase-file", pass)
	t.Logf("backup in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if !strings.Contains(out, "volume pgdata: its backup hook's dump") {
		t.Errorf("backup:\n%s", out)
	}
	postNote(t, lab.InClient, lan, "after the backup") // not in the backup

	// A fresh box: a second lab, its own LAN (the same addresses) and Tor network, the same
	// registry storage on its LAN.
	reg.Stop()
	l2 := secondLab(t)
	labRegistry(t, l2, regDir)
	start = time.Now()
	out = run2(t, l2, "onionpod", "restore", backup, "--passphrase-file", pass)
	t.Logf("restore into a fresh box in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	var st struct {
		State string `json:"state"`
		Onion struct {
			Address string `json:"address"`
		} `json:"onion"`
	}
	json.Unmarshal([]byte(run2(t, l2, "onionpod", "status", "diary", "--json")), &st)
	if want := strings.TrimSuffix(strings.TrimPrefix(e.Onion, "http://"), "/"); st.Onion.Address != want || st.State != running {
		t.Fatalf("the restored app: %+v, want running at %s", st, want)
	}
	for _, where := range []string{lab.InClient, lab.InTor} {
		base := lan
		if where == lab.InTor {
			base = e.Onion
		}
		var notes []struct{ Text string }
		body := fetchIn(t, l2, where, base+"notes", 3*time.Minute)
		if err := json.Unmarshal([]byte(body), &notes); err != nil {
			t.Fatalf("notes from the restored app (%s): %v: %s", where, err, body)
		}
		var texts []string
		for _, n := range notes {
			texts = append(texts, n.Text)
		}
		if !sameSet(texts, "before the updates", "over the onion") {
			t.Errorf("notes read from the restored app (%s): %q", where, texts)
		}
	}
	if v := notesVersion(t, l2, lab.InClient, lan); v != debimage.NotesV2 {
		t.Errorf("the restored app runs version %q, want %s (the image it ran, by its digest)", v, debimage.NotesV2)
	}
}

// watchVersions asks the app at base for its version from the LAN client every 100 ms until the
// returned func is called, which says what was seen, run-length encoded ("2 x31, - x5, 2 x40";
// "-": no answer).
func watchVersions(t *testing.T, l *lab.Lab, base string) func() string {
	var mu sync.Mutex
	var seen []string
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			v := notesVersion(t, l, lab.InClient, base)
			if v == "" {
				v = "-"
			}
			mu.Lock()
			seen = append(seen, v)
			mu.Unlock()
		}
	}()
	return func() string {
		close(done)
		<-finished
		var b strings.Builder
		for i := 0; i < len(seen); {
			j := i
			for j < len(seen) && seen[j] == seen[i] {
				j++
			}
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s x%d", seen[i], j-i)
			i = j
		}
		return b.String()
	}
}

// secondLab brings up another lab, a fresh box with its own LAN and Tor network, for the test.
func secondLab(t *testing.T) *lab.Lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	opts := lab.Options{Name: "e2f" + randomHex(3), TorNetwork: true, Dir: filepath.Join(labDir, "lab2"),
		Binary: filepath.Join(labDir, "onionpod"),
		Log:    func(format string, args ...any) { t.Logf("second lab: "+format, args...) }}
	l, err := lab.Up(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Down(context.Background()) })
	if err := l.TorNetwork().WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return l
}

// run2 runs argv in the box of l and fails the test if it fails.
func run2(t *testing.T, l *lab.Lab, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	out, err := runIn(t, ctx, l, lab.InBox, argv...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return out
}

// fetchIn GETs url from where in l, retrying for up to d (see curlRetrying).
func fetchIn(t *testing.T, l *lab.Lab, where, url string, d time.Duration) string {
	t.Helper()
	return curlRetrying(t, l, where, d, url)
}
