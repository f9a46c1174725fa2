package cli

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/probe"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/lab"
)

// The commands' output, tested without a daemon: each run function gets its options with a
// fake LocalAPI client (fakeDaemon), buffers for streams, and whether they are terminals. Human
// output is compared with golden files (testdata/golden; go test -update rewrites them), and is
// the same on a terminal and off one (onionpod prints no colours; only the progress bar of a
// prefetch and the passphrase prompts need a terminal). --json output is golden too: scripts
// rely on it.

var updateGolden = flag.Bool("update", false, "rewrite the golden files of the commands' output")

// streams returns IO over buffers; tty says whether they count as terminals.
func streams(tty bool) (IO, *bytes.Buffer, *bytes.Buffer) {
	var out, errOut bytes.Buffer
	return IO{In: strings.NewReader(""), Out: &out, Err: &errOut, InTTY: tty, OutTTY: tty, ErrTTY: tty}, &out, &errOut
}

// golden compares got with testdata/golden/name.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- got\n%s--- want\n%s", name, got, want)
	}
}

// bothTerminals runs fn with streams that are terminals and with streams that are not, and
// checks that the two print the same, with no escape sequence (no colours).
func bothTerminals(t *testing.T, fn func(streams IO) error) (out, errOut string) {
	t.Helper()
	var outs [2]string
	for i, tty := range []bool{false, true} {
		io, o, e := streams(tty)
		if err := fn(io); err != nil {
			t.Fatalf("tty=%v: %v", tty, err)
		}
		outs[i] = o.String()
		if i == 0 {
			errOut = e.String()
		}
		if strings.Contains(o.String()+e.String(), "\x1b") {
			t.Errorf("tty=%v: an escape sequence in the output:\n%q", tty, o.String()+e.String())
		}
	}
	if outs[0] != outs[1] {
		t.Errorf("output differs on a terminal:\n--- not a terminal\n%s--- terminal\n%s", outs[0], outs[1])
	}
	return outs[0], errOut
}

var (
	blogApp = store.App{Name: "blog", Containers: []store.Container{{Name: "blog", Image: "registry.example/blog:1"}}, Ports: []store.Port{{Public: 80, Target: 8080}},
		Onion: true, Generation: 3}
	notesApp = store.App{Name: "notes", Containers: []store.Container{{Name: "notes", Static: "/srv/notes"}}, Ports: []store.Port{{Public: 80, Target: 8080}},
		OnionOnly: true, Generation: 1}
	wikiApp = store.App{Name: "wiki", Containers: []store.Container{{Name: "wiki", Image: "sha256:" + strings.Repeat("0123456789abcdef", 4), Source: "/home/me/wiki.tar"}},
		Ports: []store.Port{{Public: 80, Target: 3000}}, Stopped: true, Generation: 7}
)

// someApps are one app of each kind: running with an onion and the LAN, static onion-only,
// stopped (sent from a local archive), and one whose record is damaged.
func someApps() []api.AppStatus {
	blog := observedAt(blogApp)
	probedAt := time.Date(2026, 3, 1, 11, 58, 0, 0, time.UTC)
	blog.Probes = []probe.Result{
		{Path: probe.PathOnion, At: probedAt, OK: true, Status: 200},
		{Path: probe.PathIPv6, At: probedAt, Hop: "connect", Err: "connection refused"},
	}
	return []api.AppStatus{
		blog,
		observedAt(notesApp),
		observedAt(wikiApp),
		{App: store.App{Name: "zed"}, State: api.StateDamaged,
			LastError: "its record is damaged (kept as /var/lib/onionpod/apps/zed.json.damaged-1); ...",
			Damaged:   []string{"/var/lib/onionpod/apps/zed.json.damaged-1"}},
	}
}

func TestLsOutput(t *testing.T) {
	f := newFakeDaemon(someApps()...)
	out, _ := bothTerminals(t, func(s IO) error {
		return runLs(&lsOptions{IO: s, Ctx: t.Context(), Client: client[lsClient](f)})
	})
	golden(t, "ls.txt", out)
	out, _ = bothTerminals(t, func(s IO) error {
		return runLs(&lsOptions{IO: s, Ctx: t.Context(), Client: client[lsClient](f), JSON: true})
	})
	golden(t, "ls.json", out)

	out, _ = bothTerminals(t, func(s IO) error {
		return runLs(&lsOptions{IO: s, Ctx: t.Context(), Client: client[lsClient](newFakeDaemon())})
	})
	golden(t, "ls-empty.txt", out)
	out, _ = bothTerminals(t, func(s IO) error {
		return runLs(&lsOptions{IO: s, Ctx: t.Context(), Client: client[lsClient](newFakeDaemon()), JSON: true})
	})
	if out != "[]\n" {
		t.Errorf("ls --json with no apps: %q, want []", out)
	}
}

func TestStatusOutput(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	shop := blogApp
	shop.Name = "shop"
	failed := observedAt(shop)
	failed.State, failed.LastError = api.StateFailed, "pod: unit onionpod-pod-shop.service failed"
	failed.RetryAt = now.Add(40 * time.Second)
	failed.App.Generation = 4 // a change not applied yet
	failed.Unit.MainPID, failed.Unit.Restarts, failed.Unit.Since = 4242, 2, now.Add(-time.Hour)
	failed.Onion.Clients = 2
	apps := append(someApps(), failed, podOfContainers(now))
	apps = append(apps, withTLS(now)...)
	f := newFakeDaemon(apps...)
	for _, a := range apps {
		name := a.App.Name
		out, _ := bothTerminals(t, func(s IO) error {
			return runStatus(&statusOptions{IO: s, Ctx: t.Context(), Client: client[statusClient](f), Now: func() time.Time { return now }, App: name})
		})
		golden(t, "status-"+name+".txt", out)
	}
	out, _ := bothTerminals(t, func(s IO) error {
		return runStatus(&statusOptions{IO: s, Ctx: t.Context(), Client: client[statusClient](f), Now: time.Now, App: "shop", JSON: true})
	})
	golden(t, "status-shop.json", out)
	out, _ = bothTerminals(t, func(s IO) error {
		return runStatus(&statusOptions{IO: s, Ctx: t.Context(), Client: client[statusClient](f), Now: time.Now, App: "www", JSON: true})
	})
	golden(t, "status-www.json", out)

	// A bad name is refused before the daemon is asked.
	asked := len(f.calls)
	s, _, _ := streams(false)
	if err := runStatus(&statusOptions{IO: s, Ctx: t.Context(), Client: client[statusClient](f), Now: time.Now, App: "-bad-"}); exitCode(err) != exitBadInput {
		t.Errorf("status -bad-: %v (exit %d), want bad input", err, exitCode(err))
	}
	if len(f.calls) != asked {
		t.Errorf("the daemon was asked %v", f.calls[asked:])
	}
}

// took hides how long a change took ("(0.01 s)", "after 0.02 s"): the only part of the output
// that varies.
var took = regexp.MustCompile(`\d+\.\d\d s`)

func TestRunOutput(t *testing.T) {
	for _, tty := range []bool{false, true} {
		f := newFakeDaemon()
		cache := &fakeCache{}
		s, out, errOut := streams(tty)
		opts := &runOptions{IO: s, Ctx: t.Context(), Client: client[submitClient](f),
			Images: func() (imageCache, error) { return cache, nil }, App: "blog", Onion: true}
		opts.Image, opts.Ports, opts.Env = "registry.example/blog:1", []string{"80:8080"}, []string{"A=1"}
		opts.Timeout = time.Minute
		opts.Changed = map[string]bool{"image": true, "port": true, "env": true, "onion": true}
		if err := runRun(opts); err != nil {
			t.Fatal(err)
		}
		golden(t, "run.txt", took.ReplaceAllString(out.String(), "T s"))
		// The progress bar of the prefetch: on a terminal only.
		if tty != (len(cache.pulled) == 1) || tty != strings.Contains(errOut.String(), "[progress bar] registry.example/blog:1") {
			t.Errorf("tty=%v: pulled %v, stderr %q", tty, cache.pulled, errOut.String())
		}
		if !tty && errOut.Len() > 0 {
			t.Errorf("stderr off a terminal: %q", errOut.String())
		}
		rec := f.apps["blog"].App
		if rec.Containers[0].Image != "registry.example/blog:1" || !rec.Onion || rec.Stopped || !slices.Equal(rec.Containers[0].Env, []string{"A=1"}) ||
			len(rec.Ports) != 1 || rec.Ports[0] != (store.Port{Public: 80, Target: 8080}) || rec.Generation != 1 {
			t.Errorf("stored record %+v", rec)
		}
		if want := []string{"app blog", "put blog", "wait blog running 1"}; !slices.Equal(f.calls, want) {
			t.Errorf("asked %v, want %v", f.calls, want)
		}
	}
}

// TestRunKeepsWhatIsNotGiven: flags not given keep their value; a change that lost a race with
// another one is made again on the new record, keeping the other change.
func TestRunKeepsWhatIsNotGiven(t *testing.T) {
	f := newFakeDaemon(observedAt(blogApp))
	f.conflicts = 1
	f.racer = func(app *store.App) { app.Containers[0].Env = append(app.Containers[0].Env, "OTHER=1") }
	s, out, _ := streams(false)
	opts := &runOptions{IO: s, Ctx: t.Context(), Client: client[submitClient](f), App: "blog"}
	opts.Env, opts.Timeout, opts.Changed = []string{"A=2"}, time.Minute, map[string]bool{"env": true}
	if err := runRun(opts); err != nil {
		t.Fatal(err)
	}
	rec := f.apps["blog"].App
	if rec.Containers[0].Image != blogApp.Containers[0].Image || !rec.Onion || !slices.Equal(rec.Containers[0].Env, []string{"OTHER=1", "A=2"}) || rec.Generation != blogApp.Generation+2 {
		t.Errorf("stored record %+v", rec)
	}
	golden(t, "run-change.txt", took.ReplaceAllString(out.String(), "T s"))
}

// TestRunSendsALocalImage: --image FILE is read here and sent to the daemon; the record names
// what it loaded as, and where it came from.
func TestRunSendsALocalImage(t *testing.T) {
	archive := filepath.Join(t.TempDir(), "web.tar")
	if err := lab.WriteDemoImage(archive, "hi\n"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeDaemon()
	s, _, _ := streams(true)
	cache := &fakeCache{}
	opts := &runOptions{IO: s, Ctx: t.Context(), Client: client[submitClient](f),
		Images: func() (imageCache, error) { return cache, nil }, App: "web"}
	opts.Image, opts.Ports, opts.Timeout = archive, []string{"80"}, time.Minute
	opts.Changed = map[string]bool{"image": true, "port": true}
	if err := runRun(opts); err != nil {
		t.Fatal(err)
	}
	rec := f.apps["web"].App
	if !bytes.Equal(f.uploaded, data) || rec.Containers[0].Image != "sha256:"+strings.Repeat("ab", 32) || rec.Containers[0].Source != archive {
		t.Errorf("sent %d bytes (want %d); record %+v", len(f.uploaded), len(data), rec)
	}
	if len(cache.pulled) > 0 {
		t.Errorf("a sent image was pulled too: %v", cache.pulled)
	}
}

// TestRunWaitsForAnUploadTurn: the daemon takes a few uploads per user at once; a run whose
// upload is refused for now (429) sends its image again when a turn is free, and succeeds.
func TestRunWaitsForAnUploadTurn(t *testing.T) {
	archive := filepath.Join(t.TempDir(), "web.tar")
	if err := lab.WriteDemoImage(archive, "hi\n"); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(archive)
	f := newFakeDaemon()
	f.busy = 3
	s, _, _ := streams(false)
	opts := &runOptions{IO: s, Ctx: t.Context(), Client: client[submitClient](f), App: "web"}
	opts.Image, opts.Ports, opts.Timeout = archive, []string{"80"}, time.Minute
	opts.Changed = map[string]bool{"image": true, "port": true}
	if err := runRun(opts); err != nil {
		t.Fatal(err)
	}
	if f.busy != 0 || !bytes.Equal(f.uploaded, data) {
		t.Errorf("refusals left %d, sent %d bytes of %d", f.busy, len(f.uploaded), len(data))
	}
}

// TestRunRefusesBadInputFirst: bad flags are refused (exit 2) before the daemon is asked.
func TestRunRefusesBadInputFirst(t *testing.T) {
	cases := []struct {
		name  string
		flags appFlags
	}{
		{"Blog_1", appFlags{Image: "r.example/a:1", Changed: map[string]bool{"image": true}}},
		{"blog", appFlags{Image: "r.example/a:1", Ports: []string{"http"}, Changed: map[string]bool{"image": true, "port": true}}},
		{"blog", appFlags{Static: "/nonexistent/site", Changed: map[string]bool{"static": true}}},
		{"blog", appFlags{Env: []string{"NOVALUE"}, Changed: map[string]bool{"env": true}}},
	}
	for _, c := range cases {
		f := newFakeDaemon()
		s, _, _ := streams(false)
		err := runRun(&runOptions{IO: s, Ctx: t.Context(), Client: client[submitClient](f), App: c.name, appFlags: c.flags})
		if exitCode(err) != exitBadInput || len(f.calls) > 0 {
			t.Errorf("run %s %+v: %v (exit %d), asked %v", c.name, c.flags, err, exitCode(err), f.calls)
		}
	}
}

func TestExposeOutput(t *testing.T) {
	f := newFakeDaemon()
	out, errOut := bothTerminals(t, func(s IO) error {
		delete(f.apps, "site")
		f.calls = nil
		opts := &exposeOptions{IO: s, Ctx: t.Context(), Client: client[submitClient](f), App: "site"}
		opts.Static, opts.Timeout, opts.Changed = t.TempDir(), time.Minute, map[string]bool{"static": true}
		return runExpose(opts)
	})
	golden(t, "expose.txt", out)
	golden(t, "expose.stderr", took.ReplaceAllString(errOut, "T s"))
	if want := []string{"app site", "put site", "wait site running 1", "wait site published 1"}; !slices.Equal(f.calls, want) {
		t.Errorf("asked %v, want %v", f.calls, want)
	}

	// An app that does not exist needs an image: a usage error, with the hint.
	s, _, _ := streams(false)
	err := runExpose(&exposeOptions{IO: s, Ctx: t.Context(), Client: client[submitClient](f), App: "nope",
		appFlags: appFlags{Timeout: time.Minute}})
	if exitCode(err) != exitBadInput || describe(err) != "onionpod: app \"nope\" does not exist yet: give --image REF or --static DIR\n"+
		"Run 'onionpod expose --help' for usage." {
		t.Errorf("expose of a new app without an image: %q (exit %d)", describe(err), exitCode(err))
	}
}

func TestUnexposeOutput(t *testing.T) {
	f := newFakeDaemon(observedAt(blogApp), observedAt(notesApp))
	out, _ := bothTerminals(t, func(s IO) error {
		return runUnexpose(&unexposeOptions{IO: s, Ctx: t.Context(), Client: client[unexposeClient](f), App: "blog"})
	})
	golden(t, "unexpose.txt", out)
	if f.apps["blog"].App.Onion {
		t.Error("blog still wants an onion service")
	}
	s, _, _ := streams(false)
	err := runUnexpose(&unexposeOptions{IO: s, Ctx: t.Context(), Client: client[unexposeClient](f), App: "notes"})
	if exitCode(err) != exitBadInput || !strings.Contains(err.Error(), "onion-only") {
		t.Errorf("unexpose of an onion-only app: %v", err)
	}
	err = runUnexpose(&unexposeOptions{IO: s, Ctx: t.Context(), Client: client[unexposeClient](f), App: "gone"})
	if exitCode(err) != exitFailed || !strings.Contains(err.Error(), "no such app") {
		t.Errorf("unexpose of no app: %v", err)
	}
}

func TestLifecycleOutput(t *testing.T) {
	f := newFakeDaemon(observedAt(blogApp), observedAt(wikiApp))
	f.logs = "line 1\nline 2\n"
	var all strings.Builder
	for _, run := range []func(IO) error{
		func(s IO) error {
			return runStop(&stopOptions{IO: s, Ctx: t.Context(), Client: client[stopClient](f), App: "blog"})
		},
		func(s IO) error {
			return runStart(&startOptions{IO: s, Ctx: t.Context(), Client: client[startClient](f), App: "blog", Timeout: time.Minute})
		},
		func(s IO) error {
			return runLogs(&logsOptions{IO: s, Ctx: t.Context(), Client: client[logsClient](f), App: "blog", Follow: true})
		},
		func(s IO) error {
			f.apps["blog"] = observedAt(blogApp)
			return runRm(&rmOptions{IO: s, Ctx: t.Context(), Client: client[rmClient](f), App: "blog"})
		},
		func(s IO) error {
			f.apps["wiki"] = observedAt(wikiApp)
			return runRm(&rmOptions{IO: s, Ctx: t.Context(), Client: client[rmClient](f), App: "wiki", PurgeKey: true})
		},
	} {
		out, _ := bothTerminals(t, run)
		all.WriteString(out)
	}
	golden(t, "lifecycle.txt", all.String())
}

func TestImageOutput(t *testing.T) {
	used := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f := newFakeDaemon()
	f.images = []api.Image{
		{ID: "sha256:" + strings.Repeat("1a", 32), Refs: []string{"registry.example/blog:1"}, Size: 4_718_592, LastUsed: used, Apps: []string{"blog", "blog2"}},
		{ID: "sha256:" + strings.Repeat("2b", 32), Refs: []string{"archive:wiki.tar"}, Size: 123_456_789, LastUsed: used.Add(-time.Hour), Apps: []string{"wiki"}},
		{ID: "sha256:" + strings.Repeat("3c", 32), Size: 812, LastUsed: used.Add(-48 * time.Hour)},
	}
	out, _ := bothTerminals(t, func(s IO) error {
		return runImageLs(&imageLsOptions{IO: s, Ctx: t.Context(), Client: client[imagesClient](f)})
	})
	golden(t, "image-ls.txt", out)
	out, _ = bothTerminals(t, func(s IO) error {
		return runImageLs(&imageLsOptions{IO: s, Ctx: t.Context(), Client: client[imagesClient](f), JSON: true})
	})
	golden(t, "image-ls.json", out)

	out, _ = bothTerminals(t, func(s IO) error {
		return runImagePrune(&imagePruneOptions{IO: s, Ctx: t.Context(), Client: client[imagesClient](f)})
	})
	if out != "Nothing to remove: every image is in use.\n" {
		t.Errorf("prune with nothing to remove: %q", out)
	}
	f.pruned = api.PruneReport{Images: []string{"sha256:" + strings.Repeat("3c", 32), "sha256:" + strings.Repeat("4d", 32)}, Layers: 3, Bytes: 52_428_800}
	out, _ = bothTerminals(t, func(s IO) error {
		return runImagePrune(&imagePruneOptions{IO: s, Ctx: t.Context(), Client: client[imagesClient](f)})
	})
	golden(t, "image-prune.txt", out)
	out, _ = bothTerminals(t, func(s IO) error {
		return runImagePrune(&imagePruneOptions{IO: s, Ctx: t.Context(), Client: client[imagesClient](f), JSON: true})
	})
	golden(t, "image-prune.json", out)
}

func TestDNSLsOutput(t *testing.T) {
	f := newFakeDaemon()
	f.dns = api.DNSStatus{Mode: "rfc2136", Zone: "box.example.", Server: "[2001:db8::53]:53", Serial: 2026030101,
		Pending: true, Error: "dns: update refused: NOTAUTH",
		Records: []api.DNSRecord{{Name: "blog.box.example.", Addresses: []string{"2001:db8:1::6", "192.0.2.6"}, Published: true}}}
	out, _ := bothTerminals(t, func(s IO) error {
		return runDNSLs(&dnsLsOptions{IO: s, Ctx: t.Context(), Client: client[dnsClient](f)})
	})
	golden(t, "dns-ls.txt", out)
}

// TestTLSRenewOutput: tls renew prints the app's certificate lines as status does (and the TLS
// part of its status as JSON); a bad name is refused before the daemon is asked, and what the
// daemon refuses (no certificate for an onion-only app) is bad input.
func TestTLSRenewOutput(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	www := withTLS(now)[0]
	www.TLS.LastRenewal, www.TLS.RenewAt, www.TLS.LastError, www.TLS.Failures = now, now.Add(40*24*time.Hour), "", 0
	f := newFakeDaemon(www, observedAt(notesApp))
	opts := func(s IO, app string, json bool) *tlsRenewOptions {
		return &tlsRenewOptions{IO: s, Ctx: t.Context(), Client: client[tlsRenewClient](f), Now: func() time.Time { return now },
			App: app, JSON: json, Timeout: time.Minute}
	}
	out, _ := bothTerminals(t, func(s IO) error { return runTLSRenew(opts(s, "www", false)) })
	golden(t, "tls-renew.txt", out)
	out, _ = bothTerminals(t, func(s IO) error { return runTLSRenew(opts(s, "www", true)) })
	golden(t, "tls-renew.json", out)
	if !slices.Contains(f.calls, "renew tls www") {
		t.Errorf("the daemon was asked %v", f.calls)
	}

	asked := len(f.calls)
	s, _, _ := streams(false)
	if err := runTLSRenew(opts(s, "-bad-", false)); exitCode(err) != exitBadInput {
		t.Errorf("tls renew -bad-: %v (exit %d), want bad input", err, exitCode(err))
	}
	if len(f.calls) != asked {
		t.Errorf("the daemon was asked %v", f.calls[asked:])
	}
	s, out2, _ := streams(false)
	if err := runTLSRenew(opts(s, "notes", false)); exitCode(err) != exitBadInput || out2.Len() > 0 {
		t.Errorf("tls renew notes (onion-only): %v (exit %d), printed %q; want bad input and nothing printed", err, exitCode(err), out2)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 999: "999 B", 1000: "1.0 kB", 4_718_592: "4.7 MB", 123_456_789: "123 MB", 5e12: "5.0 TB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestUsageErrors: a usage error exits 2 with the command's usage hint, a word that is no
// subcommand of a group too; a group alone prints its help (exit 0).
func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want int
		msg  string
	}{
		{[]string{"onion", "nope"}, 2, "onionpod: unknown command \"nope\" for \"onionpod onion\"\nRun 'onionpod onion --help' for usage.\n"},
		{[]string{"onion", "auth", "nope"}, 2, "onionpod: unknown command \"nope\" for \"onionpod onion auth\"\nRun 'onionpod onion auth --help' for usage.\n"},
		{[]string{"dashboard", "client", "nope"}, 2, "onionpod: unknown command \"nope\" for \"onionpod dashboard client\"\nRun 'onionpod dashboard client --help' for usage.\n"},
		{[]string{"image", "nope"}, 2, "onionpod: unknown command \"nope\" for \"onionpod image\"\nRun 'onionpod image --help' for usage.\n"},
		{[]string{"tls", "nope"}, 2, "onionpod: unknown command \"nope\" for \"onionpod tls\"\nRun 'onionpod tls --help' for usage.\n"},
		{[]string{"tls", "renew"}, 2, "onionpod: onionpod tls renew expects APP, got 0 argument(s)\nRun 'onionpod tls renew --help' for usage.\n"},
		{[]string{"dns", "nope"}, 2, "onionpod: unknown command \"nope\" for \"onionpod dns\"\nRun 'onionpod dns --help' for usage.\n"},
		{[]string{"config", "nope"}, 2, "onionpod: unknown command \"nope\" for \"onionpod config\"\nRun 'onionpod config --help' for usage.\n"},
		{[]string{"lab", "nope"}, 2, "onionpod: unknown command \"nope\" for \"onionpod lab\"\nRun 'onionpod lab --help' for usage.\n"},
		{[]string{"completion", "nope"}, 2, "onionpod: unknown command \"nope\" for \"onionpod completion\"\nRun 'onionpod completion --help' for usage.\n"},
		{[]string{"nope"}, 2, "onionpod: unknown command \"nope\" for \"onionpod\"\nRun 'onionpod --help' for usage.\n"},
		{[]string{"image", "ls", "x"}, 2, "onionpod: onionpod image ls expects no arguments, got 1 argument(s)\nRun 'onionpod image ls --help' for usage.\n"},
		{[]string{"run", "blog", "--image", "x", "--static", "/tmp"}, 2, "onionpod: give --image or --static, not both\nRun 'onionpod run --help' for usage.\n"},
		{[]string{"onion"}, 0, ""},
		{[]string{"image"}, 0, ""},
		{[]string{"dashboard", "client"}, 0, ""},
	}
	for _, c := range cases {
		var out, errOut bytes.Buffer
		got := Run(context.Background(), c.args, IO{Out: &out, Err: &errOut})
		if got != c.want || errOut.String() != c.msg {
			t.Errorf("onionpod %v: exit %d, stderr %q; want %d, %q", c.args, got, errOut.String(), c.want, c.msg)
		}
		if c.want == 0 && !strings.Contains(out.String(), "Available Commands") {
			t.Errorf("onionpod %v: no help on stdout:\n%s", c.args, out.String())
		}
	}
}

// withTLS are apps on the clearnet with tls.mode = "acme": www has a certificate its front
// serves, and failed to renew it twice; api serves its own TLS (no front).
func withTLS(now time.Time) []api.AppStatus {
	www := blogApp
	www.Name = "www"
	www.Containers = []store.Container{{Name: "www", Image: "registry.example/www:1"}}
	wwwSt := observedAt(www)
	wwwSt.Probes = []probe.Result{{Path: probe.PathIPv6, At: now.Add(-time.Minute), OK: true, Status: 200, TLS: true, Latency: 12 * time.Millisecond}}
	wwwSt.TLS = &api.TLSStatus{Issuer: "Pebble Intermediate CA 5e1d2f", NotAfter: now.Add(60*24*time.Hour + time.Hour),
		RenewAt: now.Add(time.Hour), LastRenewal: now.Add(-30 * 24 * time.Hour), Front: true, Serves: "www:8080",
		LastError: "certs: app \"www\": acme: the CA's DNS does not see the challenge record", Failures: 2}
	apiApp := store.App{Name: "api", Containers: []store.Container{{Name: "api", Image: "registry.example/api:1"}},
		Ports: []store.Port{{Public: 443, Target: 8443}}, Generation: 1}
	apiSt := observedAt(apiApp)
	apiSt.TLS = &api.TLSStatus{Note: "no front: the app publishes no web port, or 443 itself"}
	return []api.AppStatus{wwwSt, apiSt}
}

// podOfContainers is an app of two containers with health checks: the database, updated from
// 15 to 16 and on trial, restarted once by its check and starting again; the web app healthy,
// running its second image (an update to a third was rolled back).
func podOfContainers(now time.Time) api.AppStatus {
	app := store.App{Name: "pod", Onion: true, Generation: 2,
		Containers: []store.Container{
			{Name: "db", Image: "onionpod.test/postgres:16", ImageID: "sha256:" + strings.Repeat("d", 64),
				PreviousImage: "onionpod.test/postgres:15", PreviousImageID: "sha256:" + strings.Repeat("c", 64),
				Health: &store.Health{Command: []string{"pg_isready"}},
				Trial: &store.Trial{Deadline: now.Add(90 * time.Second), Grace: 2 * time.Minute,
					Back: store.ImageFields{Image: "onionpod.test/postgres:15", ImageID: "sha256:" + strings.Repeat("c", 64)}}},
			{Name: "web", Image: "onionpod.test/notes:2", ImageID: "sha256:" + strings.Repeat("2", 64),
				PreviousImageID: "sha256:" + strings.Repeat("1", 64), After: []string{"db"}, Health: &store.Health{HTTP: "/healthz"}},
		},
		Ports: []store.Port{{Public: 80, Target: 8080, Container: "web"}}}
	st := observedAt(app)
	st.State = api.StateStarting
	st.LastError = "container db was restarted by its health check at 11:59:30 (3 checks failed in a row, the last: pg_isready exited with status 2: 127.0.0.1:5432 - no response); waiting for it to be healthy"
	unit := func(name string, pid int) api.UnitStatus {
		return api.UnitStatus{Name: name, ActiveState: "active", SubState: "running", MainPID: pid, Since: now.Add(-time.Minute)}
	}
	st.Containers = []api.ContainerStatus{
		{Name: "db", Image: app.Containers[0].Image, ImageID: app.Containers[0].ImageID, PreviousImageID: app.Containers[0].PreviousImageID,
			Trial: app.Containers[0].Trial, Unit: unit("onionpod-pod-pod_db.service", 311),
			Health: &api.HealthStatus{Check: "command pg_isready every 10s (timeout 5s, 3 retries, start period 1m0s)", State: api.HealthStarting,
				Since: now.Add(-30 * time.Second), Failures: 1, LastError: "pg_isready exited with status 2: 127.0.0.1:5432 - rejecting connections",
				Restarts: 1, LastRestart: now.Add(-30 * time.Second), RestartReason: "3 checks failed in a row, the last: pg_isready exited with status 2: 127.0.0.1:5432 - no response"}},
		{Name: "web", Image: app.Containers[1].Image, ImageID: app.Containers[1].ImageID, PreviousImageID: app.Containers[1].PreviousImageID,
			Digest: "sha256:" + strings.Repeat("a", 64), PreviousDigest: "sha256:" + strings.Repeat("b", 64), Rejected: "sha256:" + strings.Repeat("3", 64),
			Unit: unit("onionpod-pod-pod_web.service", 312), Ports: []string{"80->8080"},
			Health: &api.HealthStatus{Check: "http GET :8080/healthz every 10s (timeout 5s, 3 retries, start period 1m0s)", State: api.HealthHealthy,
				Since: now.Add(-50 * time.Second)}},
	}
	st.Unit = st.Containers[0].Unit
	// Its certificate is not there yet: the first attempt failed.
	st.TLS = &api.TLSStatus{RenewAt: now.Add(5 * time.Minute), Serves: "web:8080",
		LastError: "certs: app \"pod\": acme: connection refused", Failures: 1}
	return st
}

// TestTimeLeft: a certificate's life in days, in hours under two days, expired once over.
func TestTimeLeft(t *testing.T) {
	for d, want := range map[time.Duration]string{
		60*24*time.Hour + time.Hour: "60 days left",
		36 * time.Hour:              "36h0m0s left",
		-time.Minute:                "EXPIRED",
	} {
		if got := timeLeft(d); got != want {
			t.Errorf("timeLeft(%v) = %q, want %q", d, got, want)
		}
	}
}
