package dashboard

import (
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/chromedp/chromedp"

	"github.com/onionpod/onionpod/internal/browsertest"
	"github.com/onionpod/onionpod/onion"
)

// artifacts is where screenshots go: $ONIONPOD_ARTIFACTS, else the test's temp dir.
func artifacts(t *testing.T) string {
	if d := os.Getenv("ONIONPOD_ARTIFACTS"); d != "" {
		return d
	}
	return t.TempDir()
}

// TestBrowserDashboard: headless Chromium logs in on the LAN side with the key, sees the apps,
// stops and starts one with the page's buttons (the CSRF token travels in the forms) and
// downloads a backup that its passphrase decrypts. The pages hold no script error under the
// strict CSP (live.js runs).
func TestBrowserDashboard(t *testing.T) {
	box := newTestBox(t, 6)
	s := newServer(t, box, Config{})
	srv := httptest.NewServer(s.Handler(RealmLAN))
	defer srv.Close()
	downloads := t.TempDir()
	ctx := browsertest.New(t, browsertest.Options{Downloads: downloads})
	shots := artifacts(t)

	err := chromedp.Do(ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("key")),
	)
	if err != nil {
		t.Fatal(err)
	}
	browsertest.Screenshot(t, ctx, shots, "dashboard-login")
	err = chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("key"), s.LoginKey()),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("app-blog")),
	)
	if err != nil {
		t.Fatal(err)
	}
	browsertest.Screenshot(t, ctx, shots, "dashboard-apps")

	state := func() string {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("app-blog").dataset.state`))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`button[data-action="blog-stop"]`)),
		chromedp.WaitVisible(chromedp.CSS(`button[data-action="blog-start"]`))); err != nil {
		t.Fatal(err)
	}
	if got := state(); got != "stopped" {
		t.Errorf("after Stop the page says %q", got)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`button[data-action="blog-start"]`)),
		chromedp.WaitVisible(chromedp.CSS(`button[data-action="blog-stop"]`))); err != nil {
		t.Fatal(err)
	}
	if got := state(); got != "running" {
		t.Errorf("after Start the page says %q", got)
	}
	if got := strings.Join(box.recorded(), ","); got != "stop blog,start blog" {
		t.Errorf("actions: %s", got)
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/apps/blog"), chromedp.WaitVisible(chromedp.CSS(".qr img"))); err != nil {
		t.Fatal(err)
	}
	browsertest.Screenshot(t, ctx, shots, "dashboard-app")

	pass := "a long passphrase for the test"
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/backup"), chromedp.WaitVisible(chromedp.ID("passphrase")),
		chromedp.SendKeys(chromedp.ID("passphrase"), pass), chromedp.SendKeys(chromedp.ID("again"), pass)); err != nil {
		t.Fatal(err)
	}
	browsertest.Screenshot(t, ctx, shots, "dashboard-backup")
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
	restored := &onion.KeyStore{Dir: t.TempDir()}
	got, err := onion.Restore(f, restored, []age.Identity{id}, false)
	if err != nil || len(got) != 6 {
		t.Fatalf("the downloaded backup: %v %v", got, err)
	}
	t.Logf("screenshots in %s; backup of %d keys in %v", shots, len(got), time.Duration(0))
}
