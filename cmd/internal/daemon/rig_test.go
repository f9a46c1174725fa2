package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/daemon"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/dns/dnstest"
	"github.com/onionpod/onionpod/internal/lab"
	"github.com/onionpod/onionpod/network/nettest"
	"github.com/onionpod/onionpod/onion/oniontest"
	"github.com/onionpod/onionpod/pods/podstest"
)

// binEnv carries the onionpod binary built on the host to the test inside the box (the units the
// daemon writes run it: `onionpod internal net-up`; the tests run it as the CLI).
const binEnv = "ONIONPOD_TEST_BIN"

// inBox runs the test function inside (TestInsideX) in a fresh box: a real systemd as PID 1 of
// new namespaces, with the onionpod binary built from this tree.
func inBox(t *testing.T, inside string) {
	t.Helper()
	if podstest.Inside() {
		t.Skip("runs on the host")
	}
	if err := podstest.Available(); err != nil {
		t.Skip(err)
	}
	binDir := t.TempDir()
	os.Chmod(binDir, 0o755) // other users run it too
	os.Chmod(filepath.Dir(binDir), 0o755)
	bin := filepath.Join(binDir, "onionpod")
	build := exec.Command("go", "build", "-o", bin, "../../onionpod")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build onionpod: %v\n%s", err, out)
	}
	box := podstest.New(t, podstest.Options{})
	box.RunTestInside(t, inside, binEnv+"="+bin)
}

// rig is a daemon run in-process inside a box, with real parts around it: a simulated LAN,
// an offline system tor (cookie auth), and a BIND taking RFC 2136 updates signed with TSIG.
type rig struct {
	t       *testing.T
	dir     string
	cfgPath string
	cfg     *configs.Config
	lan     *nettest.LAN
	tor     *oniontest.Tor
	named   *dnstest.Named
	client  *api.Client
	stop    func()        // stops the running daemon; nil when none runs
	drift   time.Duration // the next daemon's DriftInterval (0: the daemon's default)
	done    chan error    // Run's result, of the daemon start runs
}

// newRig sets up the parts and starts the daemon. Call it inside a box.
func newRig(t *testing.T) *rig { return newRigWith(t, "") }

// newRigWith is newRig with the API socket open to group too.
func newRigWith(t *testing.T, group string) *rig {
	t.Helper()
	if !podstest.Inside() {
		t.Skip("runs inside a podstest box")
	}
	r := &rig{t: t, dir: t.TempDir()}
	// Others may traverse the rig's dir (the API group reaches the socket, pods their files).
	os.Chmod(r.dir, 0o755)
	os.Chmod(filepath.Dir(r.dir), 0o755)
	// The box's namespace by a path that names it whatever thread reads it: its PID 1's.
	r.lan = nettest.New(t, nettest.Options{BoxNetns: "/proc/1/ns/net"})
	// The box is online, as at network-online.target: its uplink has seen the LAN's prefix
	// (router advertisement), so a clearnet app is running once its address is published.
	waitFor(t, 30*time.Second, "the box's SLAAC address on the LAN", func() bool {
		out, _ := exec.Command("ip", "-6", "-o", "addr", "show", "dev", r.lan.Uplink(), "scope", "global", "dynamic").Output()
		return strings.TrimSpace(string(out)) != ""
	})
	r.tor = oniontest.NewOffline(t)
	// Persist: no parent-death signal. Go ties it to the thread that started named, and the
	// in-process daemon ends threads (those it locked into a pod's namespace): named would get
	// SIGTERM at random. The test's cleanup and the box's end stop it.
	r.named = dnstest.New(t, dnstest.NamedOptions{Zone: lab.Zone, Persist: true})
	key := r.named.Key()
	r.cfgPath = filepath.Join(r.dir, "onionpod.toml")
	os.WriteFile(r.cfgPath, []byte(fmt.Sprintf(`state_dir = %q
[api]
socket = %q
group = %q
[network]
uplink = %q
[dns]
mode = "rfc2136"
zone = %q
ttl = 60
[[dns.tsig]]
name = %q
algorithm = %q
secret = %q
[dns.rfc2136]
server = %q
key = %q
[tor]
mode = "system"
control = "unix:%s"
auth = "cookie"
`, filepath.Join(r.dir, "state"), filepath.Join(r.dir, "api.sock"), group, r.lan.Uplink(), lab.Zone,
		key.Name, key.Algorithm, key.Secret, r.named.Addr(), key.Name, r.tor.ControlSocket())), 0o600)
	cfg, err := configs.Load(r.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	r.cfg = cfg
	r.client = api.NewClient(cfg.API.Socket)
	r.start()
	t.Cleanup(func() {
		if r.stop != nil {
			r.stop()
		}
	})
	return r
}

// start runs a daemon on the rig's config until stopDaemon (or the test's end).
func (r *rig) start() {
	t := r.t
	t.Helper()
	d, err := daemon.New(r.cfg, daemon.Options{
		Self: os.Getenv(binEnv), ConfigPath: r.cfgPath, TidyAfter: time.Second, DriftInterval: r.drift,
		Log: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	r.done = done
	go func() { done <- d.Run(ctx) }()
	r.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
		r.stop = nil
	}
	waitFor(t, time.Minute, "the daemon answers", func() bool { _, err := r.client.Apps(t.Context()); return err == nil })
}

// startProcess runs the daemon as a process of its own (`onionpod daemon`, as onionpod.service
// does) on the rig's config; stopping it (r.stop, or crash) kills it with SIGKILL: nothing of
// it runs a line more.
func (r *rig) startProcess() {
	t := r.t
	t.Helper()
	cmd := exec.Command(os.Getenv(binEnv), "--config", r.cfgPath, "daemon")
	cmd.Stdout, cmd.Stderr = testWriter{t}, testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.stop = func() {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		r.stop = nil
	}
	waitFor(t, time.Minute, "the daemon process answers", func() bool { _, err := r.client.Apps(t.Context()); return err == nil })
}

// crash kills the daemon started by startProcess with SIGKILL.
func (r *rig) crash() {
	r.t.Helper()
	r.stop()
}

// restart stops the daemon and starts a new one on the same state (pods, tor and BIND go on).
// The stopped daemon must leave none of its goroutines running.
func (r *rig) restart() {
	r.t.Helper()
	r.stop()
	if g := daemonGoroutines(); g != "" {
		r.t.Errorf("goroutines of the stopped daemon still run:\n%s", g)
	}
	r.start()
}

// daemonGoroutines are the stacks of goroutines running code of package daemon (other than the
// test's own).
func daemonGoroutines() string {
	var buf bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&buf, 2)
	var out []string
	for _, g := range strings.Split(buf.String(), "\n\n") {
		if strings.Contains(g, "cmd/internal/daemon.") && !strings.Contains(g, "daemon_test.") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// onionpod runs the CLI (the binary built from this tree) on the rig's config and returns its
// stdout, stderr and exit code.
func (r *rig) onionpod(args ...string) (stdout, stderr string, code int) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Getenv(binEnv), append([]string{"--config", r.cfgPath}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		r.t.Fatalf("onionpod %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// must runs the CLI and fails the test unless it exits 0.
func (r *rig) must(args ...string) string {
	r.t.Helper()
	out, errOut, code := r.onionpod(args...)
	if code != 0 {
		r.t.Fatalf("onionpod %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// image writes a busybox httpd image serving page, as a docker archive.
func (r *rig) image(name, page string) string {
	r.t.Helper()
	p := filepath.Join(r.dir, name+".tar")
	if err := lab.WriteDemoImage(p, page); err != nil {
		r.t.Fatal(err)
	}
	return p
}

// upload sends an image archive to the daemon, as the CLI does, and returns its ID.
func (r *rig) upload(archive string) string {
	r.t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	info, err := r.client.LoadImage(r.t.Context(), f)
	if err != nil {
		r.t.Fatal(err)
	}
	return info.ID
}

// status is the app's status as the daemon reports it.
func (r *rig) status(app string) api.AppStatus {
	r.t.Helper()
	st, err := r.client.App(r.t.Context(), app)
	if err != nil {
		r.t.Fatalf("status %s: %v", app, err)
	}
	return st
}

// unitActive reports whether the app's pod unit runs, asking systemd.
// published waits until the app's DNS record is in BIND (its pod's LAN address comes by SLAAC a
// few seconds after the pod starts, the box's own first).
func (r *rig) published(app string) {
	r.t.Helper()
	for deadline := time.Now().Add(time.Minute); aaaa(r.t, r.named, app) == ""; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: no AAAA record in BIND after a minute (status: %+v)", app, r.status(app))
		}
	}
}

func (r *rig) unitActive(app string) bool {
	out, _ := exec.Command("systemctl", "is-active", "onionpod-pod-"+app+".service").Output()
	return strings.TrimSpace(string(out)) == "active"
}

// remains lists what is left of app in the box: unit files, netns, DNS record, onion service.
func (r *rig) remains(app, onionAddr string) []string {
	r.t.Helper()
	var left []string
	if out, _ := exec.Command("systemctl", "list-unit-files", "--no-legend", "onionpod-*-"+app+".service").Output(); strings.TrimSpace(string(out)) != "" {
		left = append(left, "units")
	}
	if _, err := os.Stat(filepath.Join(r.cfg.Network.NetnsDir, "onionpod-"+app)); err == nil {
		left = append(left, "netns")
	}
	if aaaa(r.t, r.named, app) != "" {
		left = append(left, "dns")
	}
	if onionAddr != "" && slices.Contains(detached(r.t, r.tor), strings.TrimSuffix(onionAddr, ".onion")) {
		left = append(left, "onion service")
	}
	return left
}

func aaaa(t *testing.T, n *dnstest.Named, app string) string {
	t.Helper()
	out, err := dnstest.Dig(t.Context(), "@127.0.0.1", "-p", fmt.Sprint(n.Port()), "+short", "AAAA", app+"."+lab.Zone)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func detached(t *testing.T, tor *oniontest.Tor) []string {
	t.Helper()
	ids, err := tor.Detached(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s after %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testWriter sends the daemon's log to the test's.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// sync asks the daemon for a pass and waits until one has run.
func (r *rig) sync() {
	r.t.Helper()
	for range 2 { // the first may end a pass that began before the call
		before := r.lastPass()
		if err := r.client.Sync(r.t.Context()); err != nil {
			r.t.Fatal(err)
		}
		waitFor(r.t, 30*time.Second, "a pass after sync", func() bool { return r.lastPass().After(before) })
	}
}

// lastPass is when the daemon's last pass ended (GET /v1/status).
func (r *rig) lastPass() time.Time {
	r.t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", r.cfg.API.Socket)
	}}}
	resp, err := hc.Get("http://onionpod/v1/status")
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var st api.DaemonStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		r.t.Fatal(err)
	}
	return st.LastPass
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

// onionpodAs runs the CLI as uid (gid the same), and returns its exit code, stdout and stderr.
func (r *rig) onionpodAs(uid uint32, args ...string) (code int, stdout, stderr string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Getenv(binEnv), append([]string{"--config", r.cfgPath}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	cmd.Dir = "/"
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		r.t.Fatalf("onionpod %s: %v", strings.Join(args, " "), err)
	}
	return code, out.String(), errOut.String()
}

func copyFile(t *testing.T, from, to string, perm os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, perm); err != nil {
		t.Fatal(err)
	}
}
