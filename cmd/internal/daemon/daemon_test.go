package daemon_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/daemon"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/pods"
)

// TestDaemonRFC2136AndSystemTor runs the daemon in-process inside a real systemd, with the modes
// the lab does not use: DNS by RFC 2136 updates to a real BIND, and a "system" tor it does not
// manage (offline, cookie auth). Real LAN, CNI, units.
func TestDaemonRFC2136AndSystemTor(t *testing.T) { inBox(t, "TestInsideDaemon") }

func TestInsideDaemon(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	client := r.client
	img := r.upload(r.image("web", "web\n"))
	web := store.App{Name: "web", Containers: []store.Container{{Name: "web", Image: img}}, Ports: []store.Port{{Public: 80, Target: 80}}, Onion: true}
	put, err := client.Put(ctx, web)
	if err != nil {
		t.Fatal(err)
	}
	st, err := client.Wait(ctx, "web", api.WaitRunning, put.App.Generation, time.Minute)
	if err != nil {
		journal, _ := exec.Command("journalctl", "--no-pager", "-n", "30", "-u", "onionpod-net-web", "-u", "onionpod-pod-web").CombinedOutput()
		t.Fatalf("%v\n%s", err, journal)
	}
	// The daemon attached web's network before it started the pod: systemd skipped the network
	// unit (its net-up runs at boot, where no namespace is named).
	if out, err := exec.Command("systemctl", "show", "--value", "-p", "ConditionResult", pods.NetUnitName("web")).Output(); err != nil || strings.TrimSpace(string(out)) != "no" {
		t.Errorf("web's network unit after the daemon attached it: ConditionResult=%s, %v; want no (skipped)", strings.TrimSpace(string(out)), err)
	}
	// The boot's networks unit is installed for the next boot, not run by the daemon: it would
	// attach apps beside the daemon's own attaches.
	if out, err := exec.Command("systemctl", "show", "-p", "ActiveState,UnitFileState", "onionpod-networks.service").Output(); err != nil ||
		!strings.Contains(string(out), "ActiveState=inactive") || !strings.Contains(string(out), "UnitFileState=enabled") {
		t.Errorf("onionpod-networks.service with the daemon running: %q, %v; want inactive and enabled", out, err)
	}
	// The record is in BIND, by a signed dynamic update.
	if got := aaaa(t, r.named, "web"); got != st.Network.LAN || got == "" {
		t.Fatalf("BIND has AAAA %q for web, the pod has %q", got, st.Network.LAN)
	}
	// The onion service is in the system tor.
	if !slices.Contains(detached(t, r.tor), strings.TrimSuffix(st.Onion.Address, ".onion")) {
		t.Fatalf("the system tor does not have %s", st.Onion.Address)
	}

	// A daemon killed in the middle of an attach leaves web's namespace named but without its
	// link, and its pod not started. The next daemon attaches it again before it starts the
	// pod (the network unit skips a named namespace: it would not).
	r.stop()
	if out, err := exec.Command("systemctl", "stop", pods.PodUnitName("web")).CombinedOutput(); err != nil {
		t.Fatalf("stop web's pod: %v\n%s", err, out)
	}
	webNetns := network.NetnsPath(r.cfg.Network.NetnsDir, "web")
	if out, err := exec.Command("nsenter", "--net="+webNetns, "ip", "link", "del", "eth0").CombinedOutput(); err != nil {
		t.Fatalf("delete web's link: %v\n%s", err, out)
	}
	r.start()
	if _, err := client.Wait(ctx, "web", api.WaitRunning, 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "web answering at its ULA after the half-made attach", func() bool {
		return page(t, r, "web") == "web\n"
	})

	// BIND down: the next app waits (starting, saying why); BIND back: the update arrives by itself.
	if err := r.named.Stop(); err != nil {
		t.Fatal(err)
	}
	put, err = client.Put(ctx, store.App{Name: "late", Containers: []store.Container{{Name: "late", Image: img}}, Ports: []store.Port{{Public: 80, Target: 80}}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "late waiting on DNS", func() bool {
		st, err := client.App(ctx, "late")
		return err == nil && st.State == api.StateStarting && strings.Contains(st.LastError, "dns")
	})
	if err := r.named.Start(ctx); err != nil {
		t.Fatal(err)
	}
	late, err := client.Wait(ctx, "late", api.WaitRunning, put.App.Generation, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got := aaaa(t, r.named, "late"); got != late.Network.LAN {
		t.Fatalf("after BIND came back, AAAA late = %q, want %q", got, late.Network.LAN)
	}

	// rm cleans BIND and tor.
	if err := client.Remove(ctx, "web", false); err != nil {
		t.Fatal(err)
	}
	if left := r.remains("web", st.Onion.Address); len(left) > 0 {
		t.Errorf("after rm, left of web: %v", left)
	}
	// rm prunes the images no app uses any more: web's image stays, late runs it.
	if apps := imageApps(t, client, img); !slices.Equal(apps, []string{"late"}) {
		t.Errorf("after rm web, its image is used by %v, want late", apps)
	}
	// A removal cut short after web's container unit went (the daemon killed: CI's e2e saw it)
	// leaves its network unit: the restarted daemon removes it.
	lone := filepath.Join(daemon.UnitDir, pods.NetUnitName("web"))
	if err := os.WriteFile(lone, []byte("[Unit]\nDescription=onionpod network of web\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A restart leaves none of the daemon's goroutines behind, and the new daemon carries on.
	r.restart()
	if _, err := client.Wait(ctx, "late", api.WaitRunning, 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "web's lone network unit removed", func() bool {
		_, err := os.Stat(lone)
		return errors.Is(err, os.ErrNotExist) && len(r.remains("web", "")) == 0
	})
	// systemd reads every unit again, as at a boot: multi-user.target now wants late's pod,
	// which keeps its unit loaded after a removal until systemd reloads.
	if out, err := exec.Command("systemctl", "daemon-reload").CombinedOutput(); err != nil {
		t.Fatalf("daemon-reload: %v\n%s", err, out)
	}
	// The last app using the image removed, the image goes with it.
	if err := client.Remove(ctx, "late", false); err != nil {
		t.Fatal(err)
	}
	if apps := imageApps(t, client, img); apps != nil {
		t.Errorf("after rm late, its image is still in the store (used by %v)", apps)
	}
	// rm reloads no systemd (2 s with 1000 apps); once the box is quiet (TidyAfter, 1 s here),
	// the daemon reloads it and systemd forgets the removed units.
	removed := []string{pods.PodUnitName("late"), pods.NetUnitName("late")}
	waitFor(t, 30*time.Second, "systemd forgets late's units", func() bool {
		out, err := exec.Command("systemctl", append([]string{"list-units", "--all", "--plain", "--no-legend"}, removed...)...).Output()
		return err == nil && strings.TrimSpace(string(out)) == ""
	})
}

// imageApps returns the apps using image id, as image ls shows them; nil when the image is not
// in the store.
func imageApps(t *testing.T, client *api.Client, id string) []string {
	t.Helper()
	images, err := client.Images(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range images {
		if img.ID == id {
			return append([]string{}, img.Apps...)
		}
	}
	return nil
}

// TestExposeReportsTheSubmittedSpec: an app whose spec failed (its static directory was deleted)
// is fixed with `expose --static NEWDIR`: the CLI reports the new spec's outcome (exit 0), never
// the old spec's failure.
func TestExposeReportsTheSubmittedSpec(t *testing.T) { inBox(t, "TestInsideExposeNewSpec") }

func TestInsideExposeNewSpec(t *testing.T) {
	r := newRig(t)
	site := func(name string) string {
		dir := filepath.Join(r.dir, name)
		os.MkdirAll(dir, 0o755)
		os.Chmod(r.dir, 0o755)
		os.WriteFile(filepath.Join(dir, "index.html"), []byte(name+"\n"), 0o644)
		return dir
	}
	old := site("old")
	r.must("expose", "probe", "--static", old, "--port", "80", "--no-wait", "--timeout", "1m")
	os.RemoveAll(old)
	if err := r.client.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "probe failed on its deleted directory", func() bool {
		return r.status("probe").State == api.StateFailed
	})
	out, errOut, code := r.onionpod("expose", "probe", "--static", site("new"), "--port", "80", "--no-wait", "--timeout", "1m")
	if code != 0 || strings.Contains(errOut, old) {
		t.Fatalf("expose with a new directory: exit %d\n%s%s", code, out, errOut)
	}
	if st := r.status("probe"); st.State != api.StateRunning {
		t.Fatalf("probe is %s (%s)", st.State, st.LastError)
	}
}

// TestConcurrentRunsLoseNoUpdate: 20 `onionpod run web --env K_i=i` at once, each setting its own
// key and keeping the others: all 20 keys end in the record.
func TestConcurrentRunsLoseNoUpdate(t *testing.T) { inBox(t, "TestInsideConcurrentEnv") }

func TestInsideConcurrentEnv(t *testing.T) {
	r := newRig(t)
	r.must("run", "web", "--image", r.image("web", "web\n"), "--port", "80", "--timeout", "1m")
	const n = 20
	var wg sync.WaitGroup
	errs := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, errOut, code := r.onionpod("run", "web", "--env", fmt.Sprintf("K_%d=%d", i, i), "--timeout", "3m")
			if code != 0 {
				errs[i] = fmt.Sprintf("run %d: exit %d\n%s%s", i, code, out, errOut)
			}
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != "" {
			t.Error(e)
		}
	}
	env := r.status("web").App.Containers[0].Env
	for i := range n {
		if !slices.Contains(env, fmt.Sprintf("K_%d=%d", i, i)) {
			t.Errorf("K_%d lost: the record's environment is %v", i, env)
		}
	}
}

// TestDamagedRecordIsHeld: app records truncated and garbled are quarantined and reported; their
// apps are held as they are (pod, onion service, DNS record), across a daemon restart; other apps
// are unaffected and their removal works; rm of a damaged app removes all of it; and rm never
// says ok while something of the app remains.
func TestDamagedRecordIsHeld(t *testing.T) { inBox(t, "TestInsideDamagedRecord") }

func TestInsideDamagedRecord(t *testing.T) {
	r := newRig(t)
	img := r.image("web", "web\n")
	apps := []string{"trunc", "garbled", "other", "third"}
	onions := map[string]string{}
	for _, app := range apps {
		r.must("run", app, "--image", img, "--port", "80", "--onion", "--timeout", "1m")
		onions[app] = r.status(app).Onion.Address
	}
	for _, app := range apps {
		r.published(app) // what a held app keeps includes its DNS record
	}
	recs := filepath.Join(r.cfg.StateDir, "apps")
	data, err := os.ReadFile(filepath.Join(recs, "trunc.json"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(recs, "trunc.json"), data[:len(data)/2], 0o600)
	os.WriteFile(filepath.Join(recs, "garbled.json"), []byte("\x00\xff{not json at all"), 0o600)
	r.sync()

	held := func(when string) {
		t.Helper()
		for _, app := range []string{"trunc", "garbled"} {
			if !r.unitActive(app) {
				t.Errorf("%s: the pod of damaged %s stopped", when, app)
			}
			if left := r.remains(app, onions[app]); !slices.Contains(left, "dns") || !slices.Contains(left, "onion service") {
				t.Errorf("%s: damaged %s keeps only %v of its DNS record and onion service", when, app, left)
			}
		}
	}
	held("after the damage")

	// Another app's removal works, key included.
	r.must("rm", "--purge-key", "other")
	if left := r.remains("other", onions["other"]); len(left) > 0 {
		t.Errorf("rm other said ok and left %v", left)
	}
	if strings.Contains(r.must("onion", "ls"), "other") {
		t.Error("rm --purge-key other left its key")
	}

	// ls and status say what is wrong and what to do; the damaged copies are kept.
	ls := r.must("ls")
	for _, app := range []string{"trunc", "garbled"} {
		if !regexpMatch(`(?m)^`+app+`\s+damaged`, ls) {
			t.Errorf("ls does not report %s as damaged:\n%s", app, ls)
		}
		out, errOut, _ := r.onionpod("status", app)
		if !strings.Contains(out+errOut, "damaged") || !strings.Contains(out+errOut, "onionpod rm "+app) {
			t.Errorf("status %s:\n%s%s", app, out, errOut)
		}
		if copies, _ := filepath.Glob(filepath.Join(recs, app+".json.damaged-*")); len(copies) != 1 {
			t.Errorf("damaged copies of %s: %v", app, copies)
		}
	}

	r.restart()
	r.sync()
	held("after a daemon restart")
	if st := r.status("third"); st.State != api.StateRunning {
		t.Errorf("third is %s after the restart (%s)", st.State, st.LastError)
	}

	// rm never says ok while something of the app remains: with BIND down, its record stays.
	if err := r.named.Stop(); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := r.onionpod("rm", "third")
	if code != 1 || !strings.Contains(strings.ToLower(errOut), "dns") {
		t.Errorf("rm third with BIND down: exit %d (want 1, naming the DNS record)\n%s%s", code, out, errOut)
	}
	if err := r.named.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "third's record withdrawn once BIND is back", func() bool { return aaaa(t, r.named, "third") == "" })

	// rm of a damaged app removes all of it, and its damaged copy.
	r.must("rm", "trunc")
	r.must("rm", "--purge-key", "garbled")
	for _, app := range []string{"trunc", "garbled"} {
		if left := r.remains(app, onions[app]); len(left) > 0 {
			t.Errorf("rm %s said ok and left %v", app, left)
		}
		if copies, _ := filepath.Glob(filepath.Join(recs, app+".json*")); len(copies) > 0 {
			t.Errorf("rm %s left %v", app, copies)
		}
	}
	if ls := r.must("ls"); strings.Contains(ls, "trunc") || strings.Contains(ls, "garbled") {
		t.Errorf("ls after rm:\n%s", ls)
	}
}

// TestAPILimits: pprof only for root (by the connection's peer credentials), request bodies
// bounded, concurrent waits and log followers bounded per client uid.
func TestAPILimits(t *testing.T) { inBox(t, "TestInsideAPILimits") }

func TestInsideAPILimits(t *testing.T) {
	r := newRigWith(t, "nogroup")
	r.must("run", "web", "--image", r.image("web", "web\n"), "--port", "80", "--timeout", "1m")
	sock := r.cfg.API.Socket

	// pprof: root yes, a member of the API group no.
	if code := curlAs(t, 0, sock, "GET", "/debug/pprof/"); code != "200" {
		t.Errorf("pprof for root: %s", code)
	}
	if code := curlAs(t, 65534, sock, "GET", "/v1/apps"); code != "200" {
		t.Fatalf("the group member cannot use the API: %s", code)
	}
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/profile?seconds=1", "/debug/pprof/trace?seconds=1", "/debug/pprof/goroutine"} {
		if code := curlAs(t, 65534, sock, "GET", p); code != "403" {
			t.Errorf("%s for a group member: %s, want 403", p, code)
		}
	}

	// A body beyond the bound is refused as such.
	big := fmt.Sprintf(`{"name":"web","image":"r.example/web:1","env":["K=%s"]}`, strings.Repeat("x", 2<<20))
	bigFile := filepath.Join(r.dir, "big.json")
	os.WriteFile(bigFile, []byte(big), 0o600)
	if code := curlAs(t, 0, sock, "PUT", "/v1/apps/web", "--data-binary", "@"+bigFile); code != "413" {
		t.Errorf("PUT of 2 MiB: %s, want 413", code)
	}

	// Waits and log followers: bounded per uid; another uid is not affected.
	var held []*bytes.Buffer
	hold := func(uid uint32, path string) {
		cmd := exec.Command("curl", "-sS", "-N", "--unix-socket", sock, "http://onionpod"+path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		held = append(held, &out)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	const waits, followers = 16, 4
	r.must("stop", "web") // waits for it to run never end by themselves
	waitFor(t, 30*time.Second, "web stopped", func() bool { return r.status("web").State == api.StateStopped })
	for range waits {
		hold(0, "/v1/apps/web/wait?for=running&timeout=1m")
	}
	for range followers {
		hold(0, "/v1/apps/web/logs?follow=true")
	}
	time.Sleep(time.Second) // the held requests reach the daemon
	if code := curlAs(t, 0, sock, "GET", "/v1/apps/web/wait?for=running&timeout=5s"); code != "429" {
		t.Errorf("wait number %d of root: %s, want 429", waits+1, code)
		for _, out := range held {
			t.Logf("a held request: %q", out.String())
		}
	}
	if code := curlAs(t, 0, sock, "GET", "/v1/apps/web/logs?follow=true", "--max-time", "5"); code != "429" {
		t.Errorf("log follower number %d of root: %s, want 429", followers+1, code)
	}
	if code := curlAs(t, 65534, sock, "GET", "/v1/apps/web/wait?for=running&timeout=1s"); code != "504" {
		t.Errorf("a wait of another uid: %s, want 504 (timed out, not refused)", code)
	}
}

// curlAs makes one request to the API socket as uid (gid the same) and returns the HTTP status.
func curlAs(t *testing.T, uid uint32, sock, method, path string, extra ...string) string {
	t.Helper()
	args := append([]string{"-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, "--unix-socket", sock}, extra...)
	cmd := exec.Command("curl", append(args, "http://onionpod"+path)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, _ := cmd.Output()
	return strings.TrimSpace(string(out))
}

// TestFailingAppBacksOff: an app whose image cannot be fetched is not tried again on every pass:
// it waits out its backoff (the status says when), and a change of the app retries at once.
func TestFailingAppBacksOff(t *testing.T) { inBox(t, "TestInsideBackoff") }

func TestInsideBackoff(t *testing.T) {
	r := newRig(t)
	out, errOut, code := r.onionpod("run", "flaky", "--image", "127.0.0.1:1/nothing:1", "--port", "80", "--timeout", "30s")
	if code != 1 || !strings.Contains(errOut, "127.0.0.1:1") {
		t.Fatalf("run with an unreachable registry: exit %d, want 1 naming the image\n%s%s", code, out, errOut)
	}
	st := r.status("flaky")
	if st.State != api.StateFailed || st.RetryAt.IsZero() {
		t.Fatalf("flaky is %s, retry at %v", st.State, st.RetryAt)
	}
	r.sync()
	r.sync()
	if st := r.status("flaky"); len(st.Steps) != 0 || st.State != api.StateFailed {
		t.Errorf("passes within the backoff tried flaky again: %s, steps %+v", st.State, st.Steps)
	}
	if out := r.must("status", "flaky"); !strings.Contains(out, "retry:") {
		t.Errorf("status does not say when flaky is retried:\n%s", out)
	}
	r.must("run", "flaky", "--image", r.image("flaky", "flaky\n"), "--timeout", "1m")
}

// TestDaemonOpensNothingAUserNames: the root daemon never opens an image path a user names (the
// CLI opens it, as that user, and sends it): a FIFO is refused at once and holds nothing; a
// group member cannot publish a root-only archive, nor a directory it cannot read as a static
// site; onionpod's own state is never a static site.
func TestDaemonOpensNothingAUserNames(t *testing.T) { inBox(t, "TestInsideNoUserPath") }

func TestInsideNoUserPath(t *testing.T) {
	r := newRigWith(t, "nogroup")
	os.Chmod(r.cfgPath, 0o644) // the group member reads the config (its TSIG secret is the rig's own)
	web := r.image("web", "web\n")
	fifo := filepath.Join(r.dir, "fifo.tar")
	if err := syscall.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := r.onionpod("run", "fifo", "--image", fifo, "--port", "80", "--timeout", "10s")
	if code != 2 || !strings.Contains(errOut, "not a regular file") {
		t.Errorf("run with a FIFO as the image: exit %d, want 2\n%s%s", code, out, errOut)
	}
	r.must("run", "web", "--image", web, "--port", "80", "--timeout", "1m")

	secret := filepath.Join(r.dir, "secret.tar")
	copyFile(t, web, secret, 0o600)
	private := filepath.Join(r.dir, "private")
	public := filepath.Join(r.dir, "public")
	for dir, mode := range map[string]os.FileMode{private: 0o700, public: 0o755} {
		os.Mkdir(dir, mode)
		os.WriteFile(filepath.Join(dir, "index.html"), []byte(dir+"\n"), 0o644)
	}
	const nobody = 65534
	code, out, errOut = r.onionpodAs(nobody, "run", "stolen", "--image", secret, "--port", "80", "--timeout", "20s")
	if code != 2 || !strings.Contains(errOut, "permission denied") {
		t.Errorf("a group member's run with a root-only archive: exit %d, want 2\n%s%s", code, out, errOut)
	}
	code, out, errOut = r.onionpodAs(nobody, "run", "peek", "--static", private, "--timeout", "20s")
	if code != 2 || !strings.Contains(errOut, "may not read") {
		t.Errorf("a group member's run with a directory only root reads: exit %d, want 2\n%s%s", code, out, errOut)
	}
	for _, app := range []string{"stolen", "peek"} {
		if _, err := r.client.App(t.Context(), app); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("%s was created: %v", app, err)
		}
	}
	if code, out, errOut := r.onionpodAs(nobody, "run", "shared", "--static", public, "--timeout", "1m"); code != 0 {
		t.Errorf("a group member's run with its readable directory: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = r.onionpod("run", "own", "--static", filepath.Join(r.cfg.StateDir, "apps"), "--timeout", "20s")
	if code != 2 || !strings.Contains(errOut, "onionpod's own state") {
		t.Errorf("run with onionpod's state as the site: exit %d, want 2\n%s%s", code, out, errOut)
	}
}

// TestStalledFetchHoldsNothing: a registry that accepts connections and never answers stalls one
// app's fetch, in the background: the app says so, and another app still starts at once.
func TestStalledFetchHoldsNothing(t *testing.T) { inBox(t, "TestInsideStalledFetch") }

func TestInsideStalledFetch(t *testing.T) {
	r := newRig(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() }) // held open, never answered
		}
	}()
	ref := ln.Addr().String() + "/stalled:1"
	out, errOut, code := r.onionpod("run", "stalled", "--image", ref, "--port", "80", "--timeout", "5s")
	if code != 1 {
		t.Errorf("run with a stalled registry: exit %d, want 1 (not running after 5 s)\n%s%s", code, out, errOut)
	}
	if st := r.status("stalled"); st.State != api.StateStarting || !strings.Contains(st.LastError, "fetching") {
		t.Errorf("stalled is %s (%s), want starting, fetching", st.State, st.LastError)
	}
	r.must("run", "quick", "--image", r.image("quick", "quick\n"), "--port", "80", "--timeout", "1m")
	if st := r.status("stalled"); st.State != api.StateStarting {
		t.Errorf("stalled is %s (%s)", st.State, st.LastError)
	}
}

// TestStatusFollowsAUnitSystemdStarts: a pass that finds an app's unit still being started by
// systemd (activating: here a drop-in holds its start in an ExecStartPre= until the test lets it
// go, as a loaded boot or a restart after a crash can) shows the app starting, and the app is
// shown running soon after systemd has started the unit, not at the next drift pass (an hour
// here).
func TestStatusFollowsAUnitSystemdStarts(t *testing.T) { inBox(t, "TestInsideUnitSettles") }

func TestInsideUnitSettles(t *testing.T) {
	r := newRig(t)
	r.stop()
	r.drift = time.Hour
	r.start()
	r.must("run", "slow", "--image", r.image("slow", "slow\n"), "--port", "80", "--timeout", "1m")
	unit := pods.PodUnitName("slow")
	dropin := filepath.Join("/etc/systemd/system", unit+".d")
	if err := os.MkdirAll(dropin, 0o755); err != nil {
		t.Fatal(err)
	}
	// In the pod's sandbox (its root is the image's, busybox); "-": its end by a signal, below,
	// is no failure, and the start goes on.
	if err := os.WriteFile(filepath.Join(dropin, "held.conf"), []byte("[Service]\nExecStartPre=-/bin/busybox sleep 600\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	systemctl := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("systemctl", args...).CombinedOutput(); err != nil {
			t.Fatalf("systemctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	systemctl("daemon-reload")
	systemctl("restart", "--no-block", unit)
	waitFor(t, 30*time.Second, "slow's unit held in its ExecStartPre=", func() bool {
		out, _ := exec.Command("systemctl", "show", "--value", "-p", "SubState", unit).Output()
		return strings.TrimSpace(string(out)) == "start-pre"
	})
	// The pod's restart is followed, about 2 s later, by the address watch's report of slow and
	// its pass: looked at after that, only the daemon's own looks can see the start go on.
	time.Sleep(4 * time.Second)
	r.sync()
	if st := r.status("slow"); st.Unit.ActiveState != "activating" || st.State != api.StateStarting {
		t.Fatalf("slow with its unit held starting: %s, unit %s; want starting, activating", st.State, st.Unit.ActiveState)
	}
	systemctl("kill", "--kill-whom=control", "--signal=SIGKILL", unit) // let the start go on
	// A look every 0.5-8 s while the unit settles. A minute is far below the hour of the drift
	// pass and far above what a loaded machine takes.
	waitFor(t, time.Minute, "slow shown running after systemd started its unit", func() bool {
		return r.status("slow").State == api.StateRunning
	})
	if !r.unitActive("slow") {
		t.Fatal("slow shown running while its unit is not active")
	}
}
