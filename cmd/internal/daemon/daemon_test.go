package daemon_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/daemon"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/dns/dnstest"
	"github.com/onionpod/onionpod/e2e/lab"
	"github.com/onionpod/onionpod/network/nettest"
	"github.com/onionpod/onionpod/onion/oniontest"
	"github.com/onionpod/onionpod/pods/podstest"
)

// binEnv carries the onionpod binary built on the host to the test inside the box (the units the
// daemon writes run it: `onionpod internal net-up`).
const binEnv = "ONIONPOD_TEST_BIN"

// TestDaemonRFC2136AndSystemTor runs the daemon in-process inside a real systemd, with the modes
// the lab does not use: DNS by RFC 2136 updates to a real BIND, and a "system" tor it does not
// manage (offline, cookie auth). Real LAN, CNI, units.
func TestDaemonRFC2136AndSystemTor(t *testing.T) {
	if podstest.Inside() {
		t.Skip("runs on the host")
	}
	if err := podstest.Available(); err != nil {
		t.Skip(err)
	}
	bin := filepath.Join(t.TempDir(), "onionpod")
	build := exec.Command("go", "build", "-o", bin, "../../onionpod")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build onionpod: %v\n%s", err, out)
	}
	box := podstest.New(t, podstest.Options{})
	box.RunTestInside(t, "TestInsideDaemon", binEnv+"="+bin)
}

func TestInsideDaemon(t *testing.T) {
	if !podstest.Inside() {
		t.Skip("runs inside a podstest box")
	}
	ctx := t.Context()
	// The box's namespace by a path that names it whatever thread reads it: its PID 1's.
	lan := nettest.New(t, nettest.Options{BoxNetns: "/proc/1/ns/net"})
	tor := oniontest.NewOffline(t)
	named := dnstest.New(t, dnstest.NamedOptions{Zone: lab.Zone})
	dir := t.TempDir()
	key := named.Key()
	cfgPath := filepath.Join(dir, "onionpod.toml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`state_dir = %q
[api]
socket = %q
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
`, filepath.Join(dir, "state"), filepath.Join(dir, "api.sock"), lan.Uplink(), lab.Zone,
		key.Name, key.Algorithm, key.Secret, named.Addr(), key.Name, tor.ControlSocket())), 0o600)
	cfg, err := configs.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(cfg, daemon.Options{
		Self: os.Getenv(binEnv), ConfigPath: cfgPath,
		Log: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	client := api.NewClient(cfg.API.Socket)
	waitFor(t, 10*time.Second, "the daemon answers", func() bool { _, err := client.Apps(ctx); return err == nil })

	img := filepath.Join(dir, "web.tar")
	if err := lab.WriteDemoImage(img, "web\n"); err != nil {
		t.Fatal(err)
	}
	web := store.App{Name: "web", Image: img, Ports: []store.Port{{Public: 80, Target: 80}}, Onion: true}
	if _, err := client.Put(ctx, web); err != nil {
		t.Fatal(err)
	}
	st, err := client.Wait(ctx, "web", api.WaitRunning, time.Minute)
	if err != nil {
		journal, _ := exec.Command("journalctl", "--no-pager", "-n", "30", "-u", "onionpod-net-web", "-u", "onionpod-pod-web").CombinedOutput()
		t.Fatalf("%v\n%s", err, journal)
	}
	// The record is in BIND, by a signed dynamic update.
	if got := aaaa(t, named, "web"); got != st.Network.LAN || got == "" {
		t.Fatalf("BIND has AAAA %q for web, the pod has %q", got, st.Network.LAN)
	}
	// The onion service is in the system tor.
	if !slices.Contains(detached(t, tor), strings.TrimSuffix(st.Onion.Address, ".onion")) {
		t.Fatalf("the system tor does not have %s", st.Onion.Address)
	}

	// BIND down: the next app waits (starting, saying why); BIND back: the update arrives by itself.
	if err := named.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Put(ctx, store.App{Name: "late", Image: img, Ports: []store.Port{{Public: 80, Target: 80}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "late waiting on DNS", func() bool {
		st, err := client.App(ctx, "late")
		return err == nil && st.State == api.StateStarting && strings.Contains(st.LastError, "dns")
	})
	if err := named.Start(ctx); err != nil {
		t.Fatal(err)
	}
	late, err := client.Wait(ctx, "late", api.WaitRunning, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got := aaaa(t, named, "late"); got != late.Network.LAN {
		t.Fatalf("after BIND came back, AAAA late = %q, want %q", got, late.Network.LAN)
	}

	// rm cleans BIND and tor.
	if err := client.Remove(ctx, "web", false); err != nil {
		t.Fatal(err)
	}
	if got := aaaa(t, named, "web"); got != "" {
		t.Errorf("after rm, BIND still has web: %q", got)
	}
	if slices.Contains(detached(t, tor), strings.TrimSuffix(st.Onion.Address, ".onion")) {
		t.Errorf("after rm, the system tor still has %s", st.Onion.Address)
	}
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
