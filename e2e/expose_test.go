package e2e

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/lab"
)

// TestExposeReachableOverOnionAndDNS is the promise: one command, and the app answers over its
// .onion (through the Tor network) and by its DNS name over IPv6 on the LAN.
func TestExposeReachableOverOnionAndDNS(t *testing.T) {
	needLab(t)
	page := "hello from e2e " + randomHex(4) + "\n"
	img := demoImage(t, "hello", page)
	start := time.Now()
	e := parseExposed(t, onionpod(t, "expose", "hello", "--image", img, "--port", "80"))
	t.Logf("expose took %v: %+v", time.Since(start), e)
	if e.Onion == "" || e.DNS != "http://hello.box.example/" || e.IPv6 == "" {
		t.Fatalf("expose printed %+v, want a .onion, http://hello.box.example/ and http://[IPv6]/", e)
	}
	if got := fetch(t, lab.InClient, e.DNS, 30*time.Second); got != page {
		t.Errorf("LAN client by DNS name got %q, want %q", got, page)
	}
	if got := fetch(t, lab.InClient, e.IPv6, 30*time.Second); got != page {
		t.Errorf("LAN client by IPv6 address got %q, want %q", got, page)
	}
	if got := fetch(t, lab.InTor, e.Onion, 3*time.Minute); got != page {
		t.Errorf("Tor client over the .onion got %q, want %q", got, page)
	}

	// The name resolves, from the LAN client, to the address expose printed (real dig, the box's
	// built-in server).
	aaaa, err := run(t, t.Context(), lab.InClient, "dig", "+short", "AAAA", "hello.box.example", "@"+lab.BoxLANIP.String())
	if err != nil {
		t.Fatal(err)
	}
	ip := strings.Trim(strings.TrimPrefix(e.IPv6, "http://"), "[]/")
	if strings.TrimSpace(aaaa) != ip {
		t.Errorf("dig AAAA hello.box.example = %q, want %q", aaaa, ip)
	}
	if addr := netip.MustParseAddr(ip); !lab.LANPrefix.Contains(addr) {
		t.Errorf("pod address %s is not in the LAN's prefix %s", addr, lab.LANPrefix)
	}

	st := status(t, "hello")
	if st.State != running || !st.Onion.Published || !st.DNS.Published || st.Unit.MainPID == 0 {
		t.Errorf("status after expose: %+v", st)
	}
	dnsList := onionpod(t, "dns", "ls")
	if !strings.Contains(dnsList, "hello.box.example.") || !strings.Contains(dnsList, ip) {
		t.Errorf("dns ls does not show the record:\n%s", dnsList)
	}
}

// TestStaticSiteAndOnionOnly: a directory served without an image, and an onion-only app that has
// no clearnet presence at all (no DNS record, no LAN address, no route to the LAN).
func TestStaticSiteAndOnionOnly(t *testing.T) {
	needLab(t)
	site := filepath.Join(labDir, "site")
	page := "<p>static " + randomHex(4) + "</p>\n"
	if err := os.MkdirAll(site, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, "site/index.html", page)
	e := parseExposed(t, onionpod(t, "expose", "site", "--static", site, "--port", "80"))
	if got := fetch(t, lab.InClient, e.DNS, 30*time.Second); got != page {
		t.Errorf("static site by DNS got %q, want %q", got, page)
	}

	secretPage := "only on the darknet " + randomHex(4) + "\n"
	img := demoImage(t, "secret", secretPage)
	out := onionpod(t, "expose", "secret", "--image", img, "--port", "80", "--onion-only")
	e = parseExposed(t, out)
	if e.Onion == "" || e.DNS != "" || e.IPv6 != "" {
		t.Fatalf("onion-only expose printed clearnet addresses:\n%s", out)
	}
	if got := fetch(t, lab.InTor, e.Onion, 3*time.Minute); got != secretPage {
		t.Errorf("onion-only app over tor got %q", got)
	}
	nx, _ := run(t, t.Context(), lab.InClient, "dig", "+noall", "+comments", "AAAA", "secret.box.example", "@"+lab.BoxLANIP.String())
	if !strings.Contains(nx, "NXDOMAIN") {
		t.Errorf("secret.box.example is published:\n%s", nx)
	}
	// From inside the pod the host (tor's side) answers, the LAN's router does not.
	pingFromPod := func(addr string) error {
		_, err := run(t, t.Context(), lab.InBox, "nsenter", "--net="+boxNetnsDir+"/onionpod-secret",
			"busybox", "ping", "-6", "-c", "1", "-W", "2", addr)
		return err
	}
	if err := pingFromPod("fd6f:6e69:6f6e:1::1"); err != nil {
		t.Fatalf("the onion-only pod cannot reach the host's ULA: %v", err)
	}
	if err := pingFromPod("2001:db8:1::1"); err == nil {
		t.Error("the onion-only pod reached the LAN router")
	}
}
