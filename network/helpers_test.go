package network_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/network/nettest"
)

// testEnv is one simulated LAN with a Manager working on its box.
type testEnv struct {
	lan *nettest.LAN
	cfg network.Config
	m   *network.Manager
}

// newEnv builds a LAN (skipping when not root or radvd is missing) and a Manager on its box with a
// random ULA prefix and private state and netns dirs. At cleanup it detaches every pod and checks
// that nothing is left.
func newEnv(t *testing.T, opts nettest.Options, edit ...func(*network.Config)) *testEnv {
	t.Helper()
	for _, tool := range []string{"ip", "curl", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian packages iproute2, curl, busybox-static)", tool)
		}
	}
	lan := nettest.New(t, opts)
	cfg := network.Config{
		Uplink:    "auto",
		ULAPrefix: randomULA(),
		CNIPaths:  []string{"/opt/cni/bin", "/usr/lib/cni"},
		StateDir:  t.TempDir(),
		NetnsDir:  t.TempDir(),
		BoxNetns:  lan.BoxNetns(),
	}
	for _, e := range edit {
		e(&cfg)
	}
	m, err := network.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{lan: lan, cfg: cfg, m: m}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		apps, err := m.Attached(ctx)
		if err != nil {
			t.Error(err)
		}
		for _, app := range apps {
			if err := m.Detach(ctx, app); err != nil {
				t.Error(err)
			}
		}
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		if !t.Failed() {
			e.assertNothingLeft(t)
		}
	})
	return e
}

// waitForBox waits until the box has learnt the advertised prefix (so Attach can predict the LAN
// address) and has a default route (so uplink "auto" resolves).
func (e *testEnv) waitForBox(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // readiness, not speed: a loaded machine is slow
	for {
		out, _ := nettest.Exec(context.Background(), e.lan.BoxNetns(), "ip", "-6", "-o", "addr", "show", "dev", e.lan.Uplink(), "scope", "global")
		routes, _ := nettest.Exec(context.Background(), e.lan.BoxNetns(), "ip", "-6", "route", "show", "default")
		prefix := strings.TrimSuffix(e.lan.Prefix().Masked().Addr().String(), "::")
		if strings.Contains(string(out), prefix) && len(routes) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("box never configured its uplink from the router:\n%s\n%s", out, routes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *testEnv) attach(t testing.TB, a network.Attachment) network.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := e.m.Attach(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (e *testEnv) detach(t testing.TB, app string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := e.m.Detach(ctx, app); err != nil {
		t.Fatal(err)
	}
}

// waitLAN waits until the pod has a usable LAN address and returns it.
func (e *testEnv) waitLAN(t testing.TB, app string) netip.Addr {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := e.m.Addresses(context.Background(), app)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := nettest.Exec(context.Background(), res.Netns, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global", "-tentative", "-deprecated")
		if res.LAN.IsValid() && strings.Contains(string(out), res.LAN.String()+"/64") {
			return res.LAN
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s never got a usable LAN address; addresses now:\n%s", app, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// assertNothingLeft checks the box, the netns dir and the state dir after every pod was detached.
func (e *testEnv) assertNothingLeft(t *testing.T) {
	t.Helper()
	entries, _ := os.ReadDir(e.cfg.NetnsDir)
	for _, en := range entries {
		t.Errorf("netns left behind: %s", filepath.Join(e.cfg.NetnsDir, en.Name()))
	}
	leases, _ := os.ReadDir(filepath.Join(e.cfg.StateDir, "leases"))
	for _, en := range leases {
		t.Errorf("lease left behind: %s", en.Name())
	}
	results, _ := os.ReadDir(filepath.Join(e.cfg.StateDir, "cni-cache", "results"))
	for _, en := range results {
		t.Errorf("CNI cache entry left behind: %s", en.Name())
	}
	out, err := nettest.Exec(context.Background(), e.lan.BoxNetns(), "ip", "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.Contains(line, ": lo:") && !strings.Contains(line, ": "+e.lan.Uplink()+"@") {
			t.Errorf("link left behind in the box: %s", line)
		}
	}
}

// serveHTTP runs a Go HTTP server inside the namespace at netnsPath on [::]:80 until the test
// ends. The socket is created on a thread switched into the namespace; it stays there, so the
// server goroutines may run anywhere.
func serveHTTP(t testing.TB, netnsPath, body string) {
	t.Helper()
	serveHTTPOn(t, netnsPath, 80, body)
}

// serveHTTPOn is serveHTTP on [::]:port (IPv6 and IPv4).
func serveHTTPOn(t testing.TB, netnsPath string, port uint16, body string) {
	t.Helper()
	var ln net.Listener
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf("[::]:%d", port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// fetch gets url with curl from inside the namespace at netnsPath.
func fetch(netnsPath, url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := nettest.Exec(ctx, netnsPath, "curl", "-sS", "-g", "--max-time", "3", url)
	return string(out), err
}

// fetchEventually retries fetch for a few seconds (neighbour discovery of a new link).
func fetchEventually(t testing.TB, netnsPath, url, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := fetch(netnsPath, url)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s from %s: got %q, %v; want %q", url, filepath.Base(netnsPath), got, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func httpURL(a netip.Addr) string { return httpURLPort(a, 80) }

func httpURLPort(a netip.Addr, port uint16) string {
	return "http://" + netip.AddrPortFrom(a, port).String() + "/"
}

// randomULA is a random fdXX:XXXX:XXXX:XXXX::/64, different for every test.
func randomULA() netip.Prefix {
	var b [16]byte
	rand.Read(b[1:8])
	b[0] = 0xfd
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// startDHCPDaemon runs the CNI DHCP daemon in the box as a child process, stopped by PID at
// cleanup or by calling the returned stop.
func startDHCPDaemon(t testing.TB, box, socket string, extra ...string) (stop func()) {
	t.Helper()
	argv := append(network.DHCPDaemonCommand("/opt/cni/bin", socket), extra...)
	cmd := exec.Command("nsenter", append([]string{"--net=" + box, "--"}, argv...)...)
	logf, err := os.Create(filepath.Join(t.TempDir(), "dhcp.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop = func() {
		cmd.Process.Kill()
		<-done
	}
	t.Cleanup(func() {
		stop()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("dhcp daemon log:\n%s", b)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			return stop
		}
		if time.Now().After(deadline) {
			t.Fatal("dhcp daemon did not open its socket")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// flushFirewallByHand empties the nftables ruleset of the namespace at netnsPath with Debian's nft,
// as an administrator would.
func flushFirewallByHand(t testing.TB, netnsPath string) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatal("nft not installed (apt-get install nftables; bash .ci/install-deps installs it)")
	}
	if out, err := nettest.Exec(context.Background(), netnsPath, "nft", "flush", "ruleset"); err != nil {
		t.Fatalf("nft flush ruleset: %v: %s", err, out)
	}
}
