package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/chromedp/chromedp"

	"github.com/onionpod/onionpod/internal/browsertest"
	"github.com/onionpod/onionpod/internal/lab"
	"github.com/onionpod/onionpod/internal/netnsfile"
	"github.com/onionpod/onionpod/internal/promtest"
	"github.com/onionpod/onionpod/onion"
)

// The lab's ULA prefix (its config): the host holds ::1, where the dashboard listens.
const (
	dashboardAddr = "[fd6f:6e69:6f6e:1::1]:8411"
	dashboardURL  = "http://" + dashboardAddr
)

// artifactsDir is where screenshots go: $ONIONPOD_ARTIFACTS, else the test's temp dir.
func artifactsDir(t *testing.T) string {
	if d := os.Getenv("ONIONPOD_ARTIFACTS"); d != "" {
		return d
	}
	return t.TempDir()
}

// TestDashboard: the dashboard as its owner meets it, with real parts. From the LAN client,
// headless Chromium logs in with the key `onionpod dashboard login` prints, sees the app,
// stops and starts it with the page's buttons (the daemon does it), and downloads a backup that
// its passphrase decrypts into the app's key. Forged or foreign requests change nothing. A real
// Prometheus scrapes /metrics and PromQL returns the app's state. The probes reach the app over
// its .onion and its DNS name (status shows them). `dashboard enable` prints the dashboard's
// .onion and a device's key: a Tor client holding it fetches the dashboard, one without it is
// refused for missing client authorization.
func TestDashboard(t *testing.T) {
	l := needLab(t)
	page := "seen from the dashboard " + randomHex(4) + "\n"
	e := parseExposed(t, onionpod(t, "expose", "seen", "--image", demoImage(t, "seen", page), "--port", "80"))
	st := l.State()

	// The LAN client reaches the host's ULA (a route its router would hand out).
	if out, err := exec.Command("nsenter", "--net="+st.Client, "ip", "-6", "route", "replace",
		"fd6f:6e69:6f6e:1::1/128", "dev", "eth0").CombinedOutput(); err != nil {
		t.Fatalf("route to the ULA: %v %s", err, out)
	}
	login := onionpod(t, "dashboard", "login")
	key := regexp.MustCompile(`login key: (\S+)`).FindStringSubmatch(login)
	if key == nil || !strings.Contains(login, dashboardURL) {
		t.Fatalf("dashboard login printed:\n%s", login)
	}

	shots := artifactsDir(t)
	downloads := t.TempDir()
	ctx := browsertest.New(t, browsertest.Options{Netns: st.Client, Downloads: downloads})
	t.Run("browser", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.Navigate(dashboardURL+"/"), chromedp.WaitVisible(chromedp.ID("key")),
			chromedp.SendKeys(chromedp.ID("key"), key[1]), chromedp.Click(chromedp.ID("login")),
			chromedp.WaitVisible(chromedp.ID("app-seen"))); err != nil {
			t.Fatal(err)
		}
		browsertest.Screenshot(t, ctx, shots, "lab-dashboard-apps")
		for _, step := range []struct{ click, state string }{{"stop", "stopped"}, {"start", running}} {
			if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`button[data-action="seen-`+step.click+`"]`))); err != nil {
				t.Fatal(err)
			}
			waitFor(t, time.Minute, "seen "+step.state, func() bool { return status(t, "seen").State == step.state })
			// The page shows it (reloaded here; with scripts on it refreshes by itself).
			waitFor(t, 30*time.Second, "the page says "+step.state, func() bool {
				v, err := chromedp.Run(ctx, chromedp.Steps(chromedp.Navigate(dashboardURL+"/"), chromedp.WaitVisible(chromedp.ID("app-seen"))))
				_ = v
				if err != nil {
					return false
				}
				s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("app-seen").dataset.state`))
				return s == step.state
			})
		}
		if got := fetch(t, lab.InClient, e.DNS, 30*time.Second); got != page {
			t.Errorf("after stop and start from the dashboard: %q", got)
		}
		if err := chromedp.Do(ctx, chromedp.Navigate(dashboardURL+"/apps/seen"), chromedp.WaitVisible(chromedp.CSS(".qr img"))); err != nil {
			t.Fatal(err)
		}
		browsertest.Screenshot(t, ctx, shots, "lab-dashboard-app")
		pass := "the lab's backup passphrase"
		if err := chromedp.Do(ctx, chromedp.Navigate(dashboardURL+"/backup?app=seen"), chromedp.WaitVisible(chromedp.ID("passphrase")),
			chromedp.SendKeys(chromedp.ID("passphrase"), pass), chromedp.SendKeys(chromedp.ID("again"), pass)); err != nil {
			t.Fatal(err)
		}
		file, err := browsertest.Download(ctx, downloads, chromedp.Click(chromedp.ID("download")))
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		id, _ := age.NewScryptIdentity(pass)
		ks := &onion.KeyStore{Dir: t.TempDir()}
		if _, err := onion.Restore(f, ks, []age.Identity{id}, false); err != nil {
			t.Fatalf("the downloaded backup: %v", err)
		}
		if k, err := ks.Load("seen"); err != nil || "http://"+k.Address()+"/" != e.Onion {
			t.Errorf("the backup holds %v (%v), want the key of %s", k, err, e.Onion)
		}
		t.Logf("screenshots in %s", shots)
	})

	t.Run("bad input", func(t *testing.T) {
		curl := func(args ...string) string {
			out, _ := run(t, t.Context(), lab.InClient, append([]string{"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-g", "--max-time", "10"}, args...)...)
			return out
		}
		jar := filepath.Join(t.TempDir(), "jar")
		if code := curl("-c", jar, "-d", "key="+key[1], dashboardURL+"/login"); code != "303" {
			t.Fatalf("login with curl: %s", code)
		}
		for what, c := range map[string]struct {
			args []string
			want string
		}{
			"forged CSRF token": {[]string{"-b", jar, "-d", "csrf=forged", dashboardURL + "/apps/seen/stop"}, "403"},
			"no session":        {[]string{"-d", "csrf=forged", dashboardURL + "/apps/seen/stop"}, "403"},
			"unknown app":       {[]string{"-b", jar, dashboardURL + "/apps/nosuch"}, "404"},
			"no login":          {[]string{dashboardURL + "/apps/seen"}, "303"},
			"wrong login key":   {[]string{"-d", "key=AAAA-BBBB", dashboardURL + "/login"}, "401"},
		} {
			if got := curl(c.args...); got != c.want {
				t.Errorf("%s: HTTP %s, want %s", what, got, c.want)
			}
		}
		if s := status(t, "seen"); s.State != running {
			t.Errorf("after the refused requests seen is %s", s.State)
		}
		// The CLI: a device name that is not a file name is bad input (exit 2); nothing is added.
		if _, err := run(t, t.Context(), lab.InBox, "onionpod", "dashboard", "client", "add", "../phone"); exitCode(err) != 2 {
			t.Errorf("dashboard client add ../phone: %v, want exit 2", err)
		}
		if ls := onionpod(t, "dashboard", "client", "ls"); strings.TrimSpace(ls) != "" {
			t.Errorf("devices after the refused add: %q", ls)
		}
	})

	t.Run("prometheus", func(t *testing.T) {
		p := promtest.Start(t, promtest.Options{Netns: st.BoxNetns, Targets: []string{"127.0.0.1:8412"}})
		got := p.WaitQuery(t, st.BoxNetns, `onionpod_app_state{app="seen",state="running"} == 1`, time.Minute,
			func(s []promtest.Sample) bool { return len(s) == 1 })
		t.Logf("PromQL: %v", got)
		p.WaitQuery(t, st.BoxNetns, `onionpod_tor_bootstrap_percent`, 30*time.Second,
			func(s []promtest.Sample) bool { return len(s) == 1 && s[0].Value == "100" })
	})

	t.Run("probes", func(t *testing.T) {
		type result struct {
			Path    string        `json:"path"`
			OK      bool          `json:"ok"`
			Status  int           `json:"status"`
			Latency time.Duration `json:"latency_ns"`
			Hop     string        `json:"hop"`
		}
		var last []result
		waitFor(t, 3*time.Minute, "seen probed ok over its .onion and its DNS name", func() bool {
			var s struct {
				Health string   `json:"health"`
				Probes []result `json:"probes"`
			}
			json.Unmarshal([]byte(onionpod(t, "status", "seen", "--json")), &s)
			last = s.Probes
			ok := map[string]bool{}
			for _, r := range s.Probes {
				ok[r.Path] = r.OK
			}
			return ok["onion"] && ok["ipv6"] && s.Health == "healthy"
		})
		for _, r := range last {
			t.Logf("probe %s: HTTP %d in %v", r.Path, r.Status, r.Latency)
		}
		if ls := onionpod(t, "ls"); !strings.Contains(ls, "onion:ok") {
			t.Errorf("ls has no probe column:\n%s", ls)
		}
		if err := chromedp.Do(ctx, chromedp.Navigate(dashboardURL+"/apps/seen"), chromedp.WaitVisible(chromedp.CSS(".probe-table"))); err != nil {
			t.Fatal(err)
		}
		browsertest.Screenshot(t, ctx, shots, "lab-dashboard-app-probed")
		if err := chromedp.Do(ctx, chromedp.Navigate(dashboardURL+"/")); err != nil {
			t.Fatal(err)
		}
		browsertest.Screenshot(t, ctx, shots, "lab-dashboard-apps-probed")
	})

	t.Run("onion with client auth", func(t *testing.T) {
		out := onionpod(t, "dashboard", "enable", "--client", "phone")
		addr := regexp.MustCompile(`http://([a-z2-7]{56}\.onion)/`).FindStringSubmatch(out)
		authLine := regexp.MustCompile(`(?m)^\s+([a-z2-7]{56}:descriptor:x25519:[A-Z2-7]{52})$`).FindStringSubmatch(out)
		// Not a terminal: the lines alone, no QR codes (those are for a terminal).
		if addr == nil || authLine == nil || strings.Contains(out, "QR code") {
			t.Fatalf("dashboard enable printed:\n%s", out)
		}
		waitFor(t, 3*time.Minute, "the dashboard's descriptor uploaded", func() bool {
			var s struct {
				Onion struct{ Published bool } `json:"onion"`
			}
			json.Unmarshal([]byte(onionpod(t, "dashboard", "--json")), &s)
			return s.Onion.Published
		})
		ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
		defer cancel()
		phone, err := l.TorNetwork().StartClient(ctx, t.TempDir(), []string{authLine[1]})
		if err != nil {
			t.Fatal(err)
		}
		defer phone.Close()
		if err := phone.WaitBootstrapped(ctx); err != nil {
			t.Fatal(err)
		}
		socks, err := phone.SocksAddr(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var body []byte
		deadline := time.Now().Add(3 * time.Minute)
		for {
			body, err = exec.CommandContext(ctx, "nsenter", "--net="+st.BoxNetns, "curl", "-sS", "--fail", "--max-time", "60",
				"-x", "socks5h://"+socks, "http://"+addr[1]+"/").Output()
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(2 * time.Second)
		}
		if err != nil || !strings.Contains(string(body), `id="app-seen"`) {
			t.Fatalf("the device with the key: %v\n%.300s", err, body)
		}
		t.Log("the device holding the key fetched the dashboard over its .onion, with no login")
		// The lab's own Tor client has no key: tor cannot decrypt the descriptor (SOCKS5
		// extended error 0xF4, missing client authorization).
		var code byte
		err = netnsfile.Do(st.BoxNetns, func() error {
			code, err = socksReply(ctx, st.Socks, addr[1], 80)
			return err
		})
		if err != nil || code != 0xF4 {
			t.Errorf("a client without the key: reply 0x%02X (%v), want 0xF4 (missing client authorization)", code, err)
		} else {
			t.Log("a client without the key: SOCKS5 0xF4, onion service missing client authorization")
		}
	})
}

// socksReply asks the SOCKS5 proxy (tor, with ExtendedErrors) for host:port and returns its
// reply code (0: connected).
func socksReply(ctx context.Context, proxy, host string, port uint16) (byte, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", proxy)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	r := bufio.NewReader(c)
	c.Write([]byte{5, 1, 0})
	var hello [2]byte
	if _, err := io.ReadFull(r, hello[:]); err != nil || hello != [2]byte{5, 0} {
		return 0, fmt.Errorf("socks greeting: %v %v", hello, err)
	}
	req := append([]byte{5, 1, 0, 3, byte(len(host))}, host...)
	c.Write(binary.BigEndian.AppendUint16(req, port))
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, fmt.Errorf("socks reply: %w", err)
	}
	return head[1], nil
}

// exitCode is a command's exit code (0 when it succeeded, -1 when it did not run).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}
