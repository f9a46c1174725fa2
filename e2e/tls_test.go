package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
	"github.com/onionpod/onionpod/internal/lab/hostcheck"
	"github.com/onionpod/onionpod/internal/lab/pebble"
)

// tlsStatus is what the tests read of `onionpod status APP --json`'s tls part.
type tlsStatus struct {
	TLS *struct {
		Issuer    string    `json:"issuer"`
		NotAfter  time.Time `json:"not_after"`
		LastError string    `json:"last_error"`
		Front     bool      `json:"front"`
	} `json:"tls"`
}

func tlsOf(t *testing.T, app string) tlsStatus {
	t.Helper()
	var st tlsStatus
	if err := json.Unmarshal([]byte(onionpod(t, "status", app, "--json")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// startPebble runs Pebble on the lab's LAN (in the router's namespace, at the router's address),
// validating DNS-01 through the box's DNS server, issuing certificates valid for validity. It
// returns Pebble and the file of its issuing root (what the LAN client trusts).
func startPebble(t *testing.T, l *lab.Lab, dnsServer string, validity time.Duration) (*pebble.Pebble, string) {
	t.Helper()
	if err := hostcheck.Missing(pebble.Needs()...); err != nil {
		t.Skipf("Pebble: %v (bash .ci/install-deps)", err)
	}
	p, err := pebble.Start(t.Context(), pebble.Options{Dir: filepath.Join(labDir, "pebble-"+randomHex(3)),
		Netns: l.LAN().RouterNetns(), Addr: l.LAN().RouterAddr(), DNSServer: dnsServer, Validity: validity})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	root, err := p.IssuingRoot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(labDir, "pebble-root-"+randomHex(3)+".pem")
	if err := os.WriteFile(rootFile, root, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, rootFile
}

// withConfig appends extra to the daemon's config and restarts it; the test's cleanup puts the
// config back (and restarts again), so the other tests see the lab as it was.
func withConfig(t *testing.T, l *lab.Lab, extra string) {
	t.Helper()
	withConfigEdit(t, l, func(c string) string { return c + extra })
}

// withConfigEdit is withConfig with the config rewritten by edit.
func withConfigEdit(t *testing.T, l *lab.Lab, edit func(string) string) {
	t.Helper()
	path := l.State().Config
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	restart := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if out, err := run(t, ctx, lab.InBox, "systemctl", "restart", "onionpod.service"); err != nil {
			t.Fatalf("restart: %v %s", err, out)
		}
		if err := l.WaitDaemon(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, []byte(edit(string(orig))), 0o644); err != nil {
		t.Fatal(err)
	}
	restart()
	t.Cleanup(func() {
		os.WriteFile(path, orig, 0o644)
		restart()
	})
}

// curl runs curl on the LAN client, trusting root only (no -k), and returns its output.
func curl(t *testing.T, root string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	return run(t, ctx, lab.InClient, append([]string{"curl", "-sS", "-g", "--max-time", "10", "--cacert", root}, args...)...)
}

// TestHTTPSThroughFrontAndEdge: with tls.mode = "acme" against Pebble on the LAN (its DNS-01
// checks asked of the box's DNS server) and the edge on, a clearnet app with an onion service
// gets a certificate by itself; the LAN client fetches https://APP.ZONE/ verifying the chain
// against Pebble's root, over IPv6 (the pod's own address, its firewall sending :443 to the
// front) and over IPv4 through the box's one address (the edge routing by server name); plain
// HTTP gets a redirect; the answer carries the app's Onion-Location; the box's IPv4 is the app's
// A record. Short-lived certificates are renewed while a client keeps fetching with no failed
// request; with Pebble stopped, the certificate in place keeps serving and status says why.
func TestHTTPSThroughFrontAndEdge(t *testing.T) {
	l := needLab(t)
	// Certificates of 90 s are renewed at 60 s: 30 s for a renewal (an ACME order, a DNS-01
	// check through the box's DNS, the front's reload) on a loaded CI machine. With 40 s
	// certificates, renewals that took over 13 s let the one served expire (CI saw it).
	p, root := startPebble(t, l, netip.AddrPortFrom(lab.BoxLANIP, 53).String(), 90*time.Second)
	// The private CA's roots: its HTTPS listener's and the one it issues under (the probes trust it).
	caRoots := filepath.Join(labDir, "pebble-roots-"+randomHex(3)+".pem")
	httpsRoot, err := os.ReadFile(p.CACertFile())
	if err != nil {
		t.Fatal(err)
	}
	issuingRoot, err := os.ReadFile(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caRoots, append(httpsRoot, issuingRoot...), 0o644); err != nil {
		t.Fatal(err)
	}
	withConfig(t, l, fmt.Sprintf(`
[tls]
mode = "acme"
directory = %q
ca_root = %q
email = "owner@box.example"

[edge]
mode = "on"
`, p.DirectoryURL(), caRoots))

	onionpod(t, "run", "web", "--image", demoImage(t, "web", "over https\n"), "--port", "80", "--onion")
	t.Cleanup(func() { removeApp(t, "web") })
	waitFor(t, 90*time.Second, "served by its HTTPS front", func() bool {
		st := tlsOf(t, "web")
		return st.TLS != nil && st.TLS.Front
	})
	onionAddr := status(t, "web").Onion.Address
	url := "https://web." + lab.Zone + "/"

	var body string
	waitFor(t, 30*time.Second, "fetched over HTTPS (IPv6)", func() bool {
		out, err := curl(t, root, "-6", "--fail", url)
		body = out
		return err == nil
	})
	if body != "over https\n" {
		t.Errorf("over IPv6: %q", body)
	}
	// The reachability probe fetches https://web.ZONE/ (plain HTTP is only the front's redirect),
	// verifying the certificate against the system's roots and tls.ca_root.
	type probeResult struct {
		Path   string `json:"path"`
		OK     bool   `json:"ok"`
		Status int    `json:"status"`
		TLS    bool   `json:"tls"`
		Addr   string `json:"addr"`
		Hop    string `json:"hop"`
		Err    string `json:"error"`
	}
	var probes []probeResult
	waitFor(t, 2*time.Minute, "probed over HTTPS from the LAN", func() bool {
		var s struct {
			Probes []probeResult `json:"probes"`
		}
		json.Unmarshal([]byte(onionpod(t, "status", "web", "--json")), &s)
		probes = s.Probes
		for _, r := range s.Probes {
			if r.Path == "ipv6" && r.OK && r.TLS && r.Status == 200 && strings.HasSuffix(r.Addr, ":443") {
				return true
			}
		}
		return false
	})
	t.Logf("probes: %+v", probes)
	headers, err := curl(t, root, "-6", "-D", "-", "-o", "/dev/null", url+"index.html?x=1")
	if err != nil {
		t.Fatal(err)
	}
	if want := "onion-location: http://" + onionAddr + "/index.html?x=1"; !strings.Contains(strings.ToLower(headers), strings.ToLower(want)) {
		t.Errorf("no %q in:\n%s", want, headers)
	}
	redirect, _ := curl(t, root, "-6", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "http://web."+lab.Zone+"/a?b")
	if redirect != "301 https://web."+lab.Zone+"/a?b" {
		t.Errorf("plain HTTP: %q, want a 301 to https", redirect)
	}

	waitFor(t, 30*time.Second, "the box's IPv4 published as the app's A record", func() bool {
		out, _ := run(t, t.Context(), lab.InClient, "dig", "+short", "A", "web."+lab.Zone, "@"+lab.BoxLANIP.String())
		return strings.TrimSpace(out) == lab.BoxIPv4.String()
	})
	if out, err := curl(t, root, "-4", "--fail", url); err != nil || out != "over https\n" {
		t.Errorf("over IPv4 through the edge: %q %v", out, err)
	}
	redirect, _ = curl(t, root, "-4", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "http://web."+lab.Zone+"/v4")
	if redirect != "301 https://web."+lab.Zone+"/v4" {
		t.Errorf("plain HTTP over IPv4: %q", redirect)
	}

	// The box's IPv4 changes (a new DHCP lease): the A record follows within seconds.
	box := filepath.Base(l.State().BoxNetns)
	ipAddr := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", box, "addr"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip addr %v: %v %s", args, err, out)
		}
	}
	const newV4 = "192.0.2.3"
	ipAddr("del", lab.BoxIPv4.String()+"/24", "dev", l.LAN().Uplink())
	ipAddr("add", newV4+"/24", "dev", l.LAN().Uplink())
	t.Cleanup(func() {
		exec.Command("ip", "-n", box, "addr", "del", newV4+"/24", "dev", l.LAN().Uplink()).Run()
		exec.Command("ip", "-n", box, "addr", "add", lab.BoxIPv4.String()+"/24", "dev", l.LAN().Uplink()).Run()
	})
	start := time.Now()
	waitFor(t, 10*time.Second, "the A record on the new address", func() bool {
		out, _ := run(t, t.Context(), lab.InClient, "dig", "+short", "A", "web."+lab.Zone, "@"+lab.BoxLANIP.String())
		return strings.TrimSpace(out) == newV4
	})
	t.Logf("the A record followed the box's new IPv4 in %v", time.Since(start).Round(time.Millisecond))
	if out, err := curl(t, root, "-4", "--fail", url); err != nil || out != "over https\n" {
		t.Errorf("over the new IPv4: %q %v", out, err)
	}

	// A WebSocket through the front (the app listens on 8080, published as 80).
	onionpod(t, "run", "echo", "--image", wsEchoImage(t), "--port", "80:8080")
	echoRemoved := false
	t.Cleanup(func() {
		if !echoRemoved {
			removeApp(t, "echo")
		}
	})
	waitFor(t, 90*time.Second, "echo served by its HTTPS front", func() bool {
		st := tlsOf(t, "echo")
		return st.TLS != nil && st.TLS.Front
	})
	var echoLAN string
	waitFor(t, 30*time.Second, "echo's LAN address", func() bool { echoLAN = status(t, "echo").Network.LAN; return echoLAN != "" })
	waitFor(t, 30*time.Second, "echo over HTTPS", func() bool {
		out, err := curl(t, root, "-6", "--fail", "https://echo."+lab.Zone+"/")
		return err == nil && out == "wsecho\n"
	})
	wsEcho(t, netip.MustParseAddr(echoLAN), "echo."+lab.Zone, root)

	// Removed, echo leaves nothing of its HTTPS behind: no certificate on disk, no front unit.
	const echoBundle = "/var/lib/onionpod/tls/certs/echo.pem"
	if _, err := run(t, t.Context(), lab.InBox, "test", "-f", echoBundle); err != nil {
		t.Fatalf("no %s while echo has a certificate: %v", echoBundle, err)
	}
	onionpod(t, "rm", "echo")
	echoRemoved = true
	if out, err := run(t, t.Context(), lab.InBox, "ls", "/var/lib/onionpod/tls/certs"); err != nil || strings.Contains(out, "echo") {
		t.Errorf("the certificates left after rm echo: %q %v", out, err)
	}
	if out, _ := run(t, t.Context(), lab.InBox, "systemctl", "list-unit-files", "--no-legend", "onionpod-front-echo.service"); strings.Contains(out, "front-echo") {
		t.Errorf("echo's front unit is left: %q", out)
	}

	// Renewals while a client keeps fetching (a new connection, so a new handshake, each time).
	first := tlsOf(t, "web").TLS.NotAfter
	var fetched, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := curl(t, root, "-6", "--fail", url); err != nil {
				failed.Add(1)
			}
			fetched.Add(1)
			time.Sleep(200 * time.Millisecond)
		}
	}()
	var renewed time.Time
	waitFor(t, 180*time.Second, "renewed", func() bool {
		renewed = tlsOf(t, "web").TLS.NotAfter
		return renewed.Sub(first) > 30*time.Second
	})
	close(stop)
	wg.Wait()
	t.Logf("%d fetches while the certificate was renewed (not after %s, then %s)", fetched.Load(), first.Format(time.TimeOnly), renewed.Format(time.TimeOnly))
	if failed.Load() > 0 {
		t.Errorf("%d of %d fetches failed during renewals", failed.Load(), fetched.Load())
	}
	served, err := curl(t, root, "-6", "-w", "%{certs}", "-o", "/dev/null", url)
	if err == nil && strings.Contains(served, "Expire date") {
		t.Logf("served: %s", firstLine(served, "Expire date"))
	}

	// The CA goes away: renewals fail, the certificate in place keeps serving, status says why.
	p.Stop()
	waitFor(t, 120*time.Second, "a failed renewal in status", func() bool {
		st := tlsOf(t, "web")
		return st.TLS.LastError != ""
	})
	st := tlsOf(t, "web")
	t.Logf("status: %s", st.TLS.LastError)
	if !strings.Contains(st.TLS.LastError, "connection refused") && !strings.Contains(st.TLS.LastError, "14000") {
		t.Errorf("the error does not say the CA is unreachable: %s", st.TLS.LastError)
	}
	if time.Now().Before(st.TLS.NotAfter) {
		if out, err := curl(t, root, "-6", "--fail", url); err != nil || out != "over https\n" {
			t.Errorf("with the CA gone, the certificate in place: %q %v", out, err)
		}
	}
	human := onionpod(t, "status", "web")
	if !strings.Contains(human, "tls error:") {
		t.Errorf("status does not show the renewal error:\n%s", human)
	}
}

// removeApp removes an app at the test's cleanup (when t.Context() is already done).
func removeApp(t *testing.T, app string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := run(t, ctx, lab.InBox, "onionpod", "rm", app); err != nil {
		t.Errorf("onionpod rm %s: %v %s", app, err, out)
	}
}

func firstLine(s, with string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, with) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}
