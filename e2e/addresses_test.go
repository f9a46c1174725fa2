package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/onionpod/onionpod/internal/lab"
)

// TestEveryPrintedAddressAnswers: the addresses `expose` and `status` print are what users type,
// so every one of them answers, with the app listening on another port than the public one: an
// image app serving on 8080 exposed with --port 80:8080 (and IPv4), and a static site (served on
// 8080, published as 80 by default). The .onion through the lab's Tor client; http://NAME.ZONE/,
// http://[IPv6]/ and http://IPv4/ from the LAN client. The target port itself is not on the
// clearnet.
func TestEveryPrintedAddressAnswers(t *testing.T) {
	needLab(t)
	imagePage := "served on 8080 " + randomHex(4) + "\n"
	img := demoImageOn8080(t, "on8080", imagePage)
	site := filepath.Join(labDir, "site8080")
	sitePage := "<p>static " + randomHex(4) + "</p>\n"
	if err := os.MkdirAll(site, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, "site8080/index.html", sitePage)

	apps := []struct {
		name, page string
		expose     []string
		ipv4       bool
	}{
		{"on8080", imagePage, []string{"--image", img, "--port", "80:8080", "--ipv4"}, true},
		{"site8080", sitePage, []string{"--static", site}, false},
	}
	for _, app := range apps {
		t.Run(app.name, func(t *testing.T) {
			out := onionpod(t, append([]string{"expose", app.name}, app.expose...)...)
			printed := parseExposed(t, out)
			if printed.Onion == "" || printed.DNS != "http://"+app.name+"."+lab.Zone+"/" || printed.IPv6 == "" {
				t.Fatalf("expose printed %+v, want a .onion, http://%s.%s/ and http://[IPv6]/:\n%s", printed, app.name, lab.Zone, out)
			}
			var st appStatus
			waitFor(t, time.Minute, app.name+" running", func() bool {
				st = status(t, app.name)
				return st.State == running && (!app.ipv4 || st.Network.IPv4 != "")
			})
			human := onionpod(t, "status", app.name)
			fromStatus := parseExposed(t, human)
			if fromStatus != printed {
				t.Errorf("status prints %+v, expose printed %+v", fromStatus, printed)
			}
			lan := []string{printed.DNS, printed.IPv6}
			if app.ipv4 {
				v4 := ipv4Printed(human)
				if v4 == "" || v4 != st.Network.IPv4 {
					t.Fatalf("status prints IPv4 %q, want %q:\n%s", v4, st.Network.IPv4, human)
				}
				lan = append(lan, "http://"+v4+"/")
			}
			for _, url := range lan {
				if got := fetch(t, lab.InClient, url, 30*time.Second); got != app.page {
					t.Errorf("LAN client GET %s = %q, want %q", url, got, app.page)
				}
			}
			if got := fetch(t, lab.InTor, printed.Onion, 3*time.Minute); got != app.page {
				t.Errorf("Tor client GET %s = %q, want %q", printed.Onion, got, app.page)
			}
			// Published is 80, not the app's own 8080.
			target := strings.TrimSuffix(printed.IPv6, "/") + ":8080/"
			if out, err := run(t, t.Context(), lab.InClient, "curl", "-sS", "-g", "--max-time", "5", target); err == nil {
				t.Errorf("the target port answers on the clearnet: GET %s = %q", target, out)
			}
		})
	}
}

// ipv4Printed is the address on the "ipv4:" line of `onionpod status`.
func ipv4Printed(status string) string {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "ipv4:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// demoImageOn8080 is the lab's demo image (busybox httpd serving page) listening on port 8080.
func demoImageOn8080(t *testing.T, name, page string) string {
	t.Helper()
	on80 := demoImage(t, name+"-80", page)
	img, err := tarball.ImageFromPath(on80, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Config
	c.Entrypoint = []string{"/bin/busybox", "httpd", "-f", "-v", "-p", "[::]:8080", "-h", "/www"}
	c.ExposedPorts = map[string]struct{}{"8080/tcp": {}}
	if img, err = mutate.Config(img, c); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(labDir, name+".tar")
	if err := tarball.WriteToFile(path, mustTag(t), img); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustTag(t *testing.T) name.Tag {
	t.Helper()
	tag, err := name.NewTag(lab.DemoImageRef)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}
