package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
	"github.com/onionpod/onionpod/internal/lab/hostcheck"
	"github.com/onionpod/onionpod/internal/lab/named"
	"github.com/onionpod/onionpod/internal/lab/pebble"
)

// startNamedInBox runs a BIND primary of zone on the box's loopback (where the daemon sends its
// updates).
func startNamedInBox(t *testing.T, l *lab.Lab, zone string) *named.Server {
	t.Helper()
	if err := hostcheck.Missing(hostcheck.Named); err != nil {
		t.Skip(err)
	}
	n, err := named.Start(t.Context(), named.Options{Dir: filepath.Join(labDir, "named-"+randomHex(3)), Zone: zone,
		Keys: []named.Key{named.RandomKey("onionpod-lab.", "hmac-sha256")}, Netns: l.State().BoxNetns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// startPebbleInBox runs Pebble on the box's loopback, its DNS-01 checks asked of dnsServer there.
func startPebbleInBox(t *testing.T, l *lab.Lab, dnsServer string, validity time.Duration) (*pebble.Pebble, string) {
	t.Helper()
	if err := hostcheck.Missing(pebble.Needs()...); err != nil {
		t.Skipf("Pebble: %v", err)
	}
	p, err := pebble.Start(t.Context(), pebble.Options{Dir: filepath.Join(labDir, "pebble-"+randomHex(3)),
		Netns: l.State().BoxNetns, DNSServer: dnsServer, Validity: validity})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	root, err := p.IssuingRoot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(labDir, "pebble-root-"+randomHex(3)+".pem")
	os.WriteFile(rootFile, root, 0o644)
	return p, rootFile
}

// TestHTTPSWithRFC2136: in rfc2136 mode the challenges go as signed updates to a real BIND (the
// zone's primary, which Pebble asks), the certificate is obtained and served, `onionpod tls
// renew` replaces it while a client keeps fetching with no failed request, and the challenge
// records are gone from BIND afterwards.
func TestHTTPSWithRFC2136(t *testing.T) {
	l := needLab(t)
	bind := startNamedInBox(t, l, lab.Zone+".")
	p, root := startPebbleInBox(t, l, bind.Addr(), time.Hour)
	key := bind.Key()
	withConfigEdit(t, l, func(c string) string {
		c = strings.Replace(c, `mode = "builtin"`, `mode = "rfc2136"`, 1)
		return c + fmt.Sprintf(`
[dns.rfc2136]
server = %q
key = %q

[[dns.tsig]]
name = %q
algorithm = "hmac-sha256"
secret = %q

[tls]
mode = "acme"
directory = %q
ca_root = %q
`, bind.Addr(), key.Name, key.Name, key.Secret, p.DirectoryURL(), p.CACertFile())
	})
	onionpod(t, "run", "bound", "--image", demoImage(t, "bound", "via bind\n"), "--port", "80")
	t.Cleanup(func() { removeApp(t, "bound") })
	waitFor(t, 90*time.Second, "served by its HTTPS front", func() bool {
		st := tlsOf(t, "bound")
		return st.TLS != nil && st.TLS.Front
	})
	var lan string
	waitFor(t, 30*time.Second, "a LAN address", func() bool { lan = status(t, "bound").Network.LAN; return lan != "" })
	name := "bound." + lab.Zone
	resolve := []string{"--resolve", name + ":443:[" + lan + "]"}
	url := "https://" + name + "/"
	waitFor(t, 30*time.Second, "fetched over HTTPS", func() bool {
		out, err := curl(t, root, append(resolve, "--fail", url)...)
		return err == nil && out == "via bind\n"
	})
	var before time.Time
	waitFor(t, 30*time.Second, "the certificate in status", func() bool {
		before = tlsOf(t, "bound").TLS.NotAfter
		return !before.IsZero()
	})

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
			if _, err := curl(t, root, append(resolve, "--fail", url)...); err != nil {
				failed.Add(1)
			}
			fetched.Add(1)
			time.Sleep(100 * time.Millisecond)
		}
	}()
	time.Sleep(time.Second)
	out := onionpod(t, "tls", "renew", "bound")
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("tls renew:\n%s", out)
	// Status is the last pass's view: the renewal shows there after the pass it asks for.
	waitFor(t, 30*time.Second, "the renewed certificate in status", func() bool {
		return tlsOf(t, "bound").TLS.NotAfter.After(before)
	})
	if failed.Load() > 0 {
		t.Errorf("%d of %d fetches failed during the renewal", failed.Load(), fetched.Load())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	txt, _ := run(t, ctx, lab.InBox, "dig", "@127.0.0.1", "-p", fmt.Sprint(bind.Port()), "+short", "_acme-challenge."+name, "TXT")
	if strings.TrimSpace(txt) != "" {
		t.Errorf("challenge records left at BIND: %q", txt)
	}
}

// TestHTTPSBadInput: what goes wrong shows where the user looks, and the apps keep serving over
// plain IPv6 and the .onion: a malformed CA root is refused by `config check` (exit 2, naming
// tls.ca_root); an unreachable ACME server, and a zone the CA's DNS does not see served by the
// box (it asks a server authoritative for another zone), show in status.
func TestHTTPSBadInput(t *testing.T) {
	l := needLab(t)
	junk := filepath.Join(labDir, "junk-root.pem")
	os.WriteFile(junk, []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"), 0o644)
	cfg, _ := os.ReadFile(l.State().Config)
	bad := filepath.Join(labDir, "bad-root.toml")
	os.WriteFile(bad, append(cfg, fmt.Sprintf("\n[tls]\nmode = \"acme\"\nca_root = %q\n", junk)...), 0o644)
	out, err := combined(t.Context(), lab.InBox, "onionpod", "config", "check", bad)
	if code := exitCode(err); code != 2 || !strings.Contains(out, "tls.ca_root") {
		t.Errorf("config check of a malformed CA root: exit %d, %q", code, out)
	}

	other := startNamedInBox(t, l, "other.example.")
	p, _ := startPebbleInBox(t, l, other.Addr(), time.Hour)
	withConfig(t, l, fmt.Sprintf("\n[tls]\nmode = \"acme\"\ndirectory = %q\nca_root = %q\n", p.DirectoryURL(), p.CACertFile()))
	onionpod(t, "run", "nodeleg", "--image", demoImage(t, "nodeleg", "still here\n"), "--port", "80", "--onion")
	t.Cleanup(func() { removeApp(t, "nodeleg") })
	waitFor(t, 90*time.Second, "the CA's DNS problem in status", func() bool {
		st := tlsOf(t, "nodeleg")
		return st.TLS != nil && strings.Contains(strings.ToLower(st.TLS.LastError), "dns")
	})
	t.Logf("not delegated: %s", tlsOf(t, "nodeleg").TLS.LastError)
	if got := fetch(t, lab.InClient, "http://nodeleg."+lab.Zone+"/", 30*time.Second); got != "still here\n" {
		t.Errorf("plain IPv6 without a certificate: %q", got)
	}
	st := status(t, "nodeleg")
	waitFor(t, 3*time.Minute, "published on the .onion", func() bool { return status(t, "nodeleg").Onion.Published })
	if got := fetch(t, lab.InTor, "http://"+st.Onion.Address+"/", 3*time.Minute); got != "still here\n" {
		t.Errorf("over the .onion: %q", got)
	}
	// The CA itself unreachable.
	p.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err = combined(ctx, lab.InBox, "onionpod", "tls", "renew", "nodeleg")
	if err == nil || exitCode(err) != 1 {
		t.Errorf("tls renew with the CA down: exit %d %q", exitCode(err), out)
	}
	// Status is the last pass's view: the pass the failed renewal asks for may come a moment later.
	var lastErr string
	waitFor(t, time.Minute, "the unreachable CA in status", func() bool {
		lastErr = tlsOf(t, "nodeleg").TLS.LastError
		return strings.Contains(lastErr, "unable to communicate with the API server")
	})
	t.Logf("status with the CA down: %s", lastErr)
	if got := fetch(t, lab.InClient, "http://nodeleg."+lab.Zone+"/", 30*time.Second); got != "still here\n" {
		t.Errorf("plain IPv6 with the CA down: %q", got)
	}
}

// combined runs argv in the lab and returns its stdout and stderr together.
func combined(ctx context.Context, where string, argv ...string) (string, error) {
	out, err := theLab.Command(ctx, where, argv...).CombinedOutput()
	return string(out), err
}
