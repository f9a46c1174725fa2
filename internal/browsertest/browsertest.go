// Package browsertest drives Debian's headless Chromium for tests through chromedp: started as
// root with --no-sandbox, with the background networking a closed machine refuses turned off, in
// a fresh profile, optionally inside a network namespace (a lab's LAN client), and stopped in
// t.Cleanup.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

// Binary is Debian's Chromium.
const Binary = "/usr/bin/chromium"

// SkipReason says why Chromium cannot run here ("" when it can).
func SkipReason() string {
	if _, err := os.Stat(Binary); err != nil {
		return "chromium is not installed (apt-get install chromium; bash .ci/install-deps)"
	}
	return ""
}

// Options configure New.
type Options struct {
	// Netns runs Chromium inside that network namespace (nsenter --net); "" = the test's.
	Netns string
	// Downloads is where downloads land ("" = none allowed).
	Downloads string
	// Width and Height of the window (default 1280x860).
	Width, Height int
}

// New starts Chromium and returns a chromedp context for it (a tab), cancelled in t.Cleanup.
func New(t testing.TB, opts Options) context.Context {
	t.Helper()
	if r := SkipReason(); r != "" {
		t.Skip(r)
	}
	if opts.Width == 0 {
		opts.Width, opts.Height = 1280, 860
	}
	dir := t.TempDir()
	exec := Binary
	if opts.Netns != "" {
		// chromedp talks to Chromium over a pipe (fds 3 and 4), which nsenter passes on.
		exec = filepath.Join(dir, "chromium-in-netns")
		script := fmt.Sprintf("#!/bin/sh\nexec nsenter --net=%s -- %s \"$@\"\n", opts.Netns, Binary)
		if err := os.WriteFile(exec, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	allocOpts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exec),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider"),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(opts.Width, opts.Height),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), allocOpts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first Run starts the browser, which lives as long as ctx: no timeout on it.
	if _, err := chromedp.Run(ctx, chromedp.Location()); err != nil {
		t.Fatalf("browsertest: starting chromium: %v", err)
	}
	if opts.Downloads != "" {
		on := true
		if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: opts.Downloads, EventsEnabled: &on,
		}); err != nil {
			t.Fatalf("browsertest: downloads: %v", err)
		}
	}
	return ctx
}

// Screenshot saves a full-page PNG of the current page as dir/name.png.
func Screenshot(t testing.TB, ctx context.Context, dir, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Download runs trigger (a click that downloads) and waits for the download to complete; it
// returns the file (named by its GUID in the download dir).
func Download(ctx context.Context, dir string, trigger chromedp.Action[chromedp.Void]) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
	if err := chromedp.Do(ctx, trigger); err != nil {
		return "", err
	}
	for ev, err := range progress {
		if err != nil {
			return "", fmt.Errorf("waiting for the download: %w", err)
		}
		switch ev.State {
		case browser.DownloadProgressStateCompleted:
			return filepath.Join(dir, ev.GUID), nil
		case browser.DownloadProgressStateCanceled:
			return "", fmt.Errorf("the download was cancelled")
		}
	}
	return "", fmt.Errorf("no download completed: %w", ctx.Err())
}
