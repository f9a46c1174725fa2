package daemon_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/onionpod/onionpod/internal/lab"
	"github.com/onionpod/onionpod/internal/lab/registry"
	"github.com/onionpod/onionpod/internal/lab/registry/registrytest"
	"github.com/onionpod/onionpod/pods"
)

// httpdArchiveAfter writes a `docker save` archive of busybox httpd serving files (path ->
// content) from /www on port 80, started delay after the container.
func httpdArchiveAfter(t *testing.T, path string, files map[string]string, delay time.Duration) {
	t.Helper()
	bb, err := os.ReadFile(lab.BusyboxPath)
	if err != nil {
		t.Skipf("busybox-static needed: %v", err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	add := func(h *tar.Header, data []byte) {
		h.ModTime = time.Unix(0, 0)
		h.Size = int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	add(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755}, bb)
	add(&tar.Header{Name: "www/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	for p, content := range files {
		add(&tar.Header{Name: "www/" + p, Typeflag: tar.TypeReg, Mode: 0o644}, []byte(content))
	}
	tw.Close()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	entrypoint := []string{"/bin/busybox", "httpd", "-f", "-p", "[::]:80", "-h", "/www"}
	if delay > 0 {
		entrypoint = []string{"/bin/busybox", "sh", "-c", fmt.Sprintf("/bin/busybox sleep %d; exec %s", int(delay.Seconds()), strings.Join(entrypoint, " "))}
	}
	img, err = mutate.Config(img, v1.Config{
		Entrypoint: entrypoint,
		Env:        []string{"PATH=/bin"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag("onionpod.test/web:build")
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		t.Fatal(err)
	}
}

// pushWeb builds a web image (its index page says page; healthy ones answer /healthz) and
// pushes it to reg as web:latest, as a user's CI would.
func pushWeb(t *testing.T, reg *registry.Registry, page string, healthy bool) {
	t.Helper()
	pushWebAfter(t, reg, page, healthy, 0)
}

// pushWebAfter is pushWeb of an image whose web server starts delay after the container.
func pushWebAfter(t *testing.T, reg *registry.Registry, page string, healthy bool, delay time.Duration) {
	t.Helper()
	files := map[string]string{"index.html": page}
	if healthy {
		files["healthz"] = "ok\n"
	}
	archive := filepath.Join(t.TempDir(), "web.tar")
	httpdArchiveAfter(t, archive, files, delay)
	if err := reg.Push(t.Context(), archive, "web:latest"); err != nil {
		t.Fatal(err)
	}
}

// page fetches / of the app at its ULA (the path tor takes).
func page(t *testing.T, r *rig, app string) string {
	t.Helper()
	st := r.status(app)
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(st.Network.ULA, "80") + "/")
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestUpdate(t *testing.T) { inBox(t, "TestInsideUpdate") }

// TestInsideUpdate runs an app from a real registry (Debian's docker-registry, images pushed by
// skopeo) through updates: the tag is pushed again and `onionpod run` with the same --image takes
// the new image (it kept serving the old one before: the tag was never resolved again); status
// shows both images and digests; a broken image pushed under the tag is rolled back by `onionpod
// update` and the old version keeps serving; an automatic update does not take that image again;
// `onionpod rollback` goes back by hand; the volume's data survives every step; a tag that does
// not exist fails the update and changes nothing, a malformed reference is bad input.
func TestInsideUpdate(t *testing.T) {
	r := newRig(t)
	reg := registrytest.New(t)
	ref := reg.Ref("web:latest")
	pushWeb(t, reg, "v1\n", true)
	appFile := filepath.Join(r.dir, "web.toml")
	os.WriteFile(appFile, []byte(`name = "web"
[[containers]]
name = "web"
image = "`+ref+`"
ports = ["80"]
volumes = ["data:/data"]
[containers.health]
http = "/healthz"
interval = "300ms"
timeout = "1s"
retries = 2
start_period = "1s"
`), 0o644)
	r.must("apply", "-f", appFile)
	v1ID := r.status("web").Containers[0].ImageID
	if got := page(t, r, "web"); got != "v1\n" {
		t.Fatalf("page %q, want v1", got)
	}
	marker := filepath.Join(pods.VolumeHostDir("web", "data"), "marker")
	if err := os.WriteFile(marker, []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}

	// The tag pushed again: running the app again with the same reference takes it.
	pushWeb(t, reg, "v2\n", true)
	out := r.must("run", "web", "--image", ref)
	if got := page(t, r, "web"); got != "v2\n" {
		t.Fatalf("after `run --image %s` with the tag pushed again the app serves %q, want v2\n%s", ref, got, out)
	}
	st := r.status("web").Containers[0]
	v2ID := st.ImageID
	if v2ID == v1ID || st.PreviousImageID != v1ID || !strings.HasPrefix(st.Digest, "sha256:") || !strings.HasPrefix(st.PreviousDigest, "sha256:") || st.Digest == st.PreviousDigest {
		t.Errorf("after the update the container says %+v (v1 %s)", st, v1ID)
	}
	if !strings.Contains(out, "updated") {
		t.Errorf("run says:\n%s", out)
	}
	status := r.must("status", "web")
	for _, want := range []string{shortHex(v2ID), shortHex(v1ID), "digest"} {
		if !strings.Contains(status, want) {
			t.Errorf("status does not show %s:\n%s", want, status)
		}
	}
	if out := r.must("update", "web"); !strings.Contains(out, "up to date") {
		t.Errorf("update with nothing new:\n%s", out)
	}

	// A broken image under the tag: rolled back, the old version serves again.
	pushWeb(t, reg, "broken\n", false)
	start := time.Now()
	out, errOut, code := r.onionpod("update", "web", "--grace", "30s")
	if code != 1 || !strings.Contains(out, "rolled back") {
		t.Fatalf("update to a broken image: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("update to a broken image rolled back in %v:\n%s%s", time.Since(start).Round(time.Millisecond), out, errOut)
	if got := page(t, r, "web"); got != "v2\n" {
		t.Fatalf("after the rollback the app serves %q, want v2", got)
	}
	st = r.status("web").Containers[0]
	rejected := st.Rejected
	if st.ImageID != v2ID || st.PreviousImageID != v1ID || rejected == "" || rejected == v2ID || rejected == v1ID {
		t.Errorf("after the rollback (want v2 %s running, v1 %s before, the broken image rejected): %+v", v2ID, v1ID, st)
	}
	// The rejected image is pruned with the trial's end; v1 stays, for a rollback.
	if out := r.must("image", "ls", "--json"); strings.Contains(out, strings.TrimPrefix(rejected, "sha256:")) || !strings.Contains(out, strings.TrimPrefix(v1ID, "sha256:")) {
		t.Errorf("after the rollback, the images kept (want v1 %s, not the rejected %s):\n%s", v1ID, rejected, out)
	}
	// Automatic updates: off for this app, then on; they never take the rejected image again.
	if out := r.must("update", "--all", "--auto"); !strings.Contains(out, "skipped") {
		t.Errorf("automatic update of an app without auto_update:\n%s", out)
	}
	r.must("run", "web", "--auto-update")
	if out := r.must("update", "--all", "--auto"); !strings.Contains(out, "skipped") || !strings.Contains(out, "rolled back") {
		t.Errorf("automatic update to the rejected image:\n%s", out)
	}
	if got := r.status("web").Containers[0].ImageID; got != v2ID {
		t.Errorf("the automatic update changed the image to %s", got)
	}

	// By hand: back to v1, then forward to v2 again (a rollback of the rollback).
	out = r.must("rollback", "web")
	if got := page(t, r, "web"); got != "v1\n" {
		t.Fatalf("after `rollback` the app serves %q, want v1\n%s", got, out)
	}
	if st := r.status("web").Containers[0]; st.ImageID != v1ID || st.PreviousImageID != v2ID {
		t.Errorf("after `rollback`: %+v", st)
	}
	// The second one through the dashboard's button, as the owner's browser presses it.
	if notice := dashboardAction(t, r, "web", "rollback"); !strings.Contains(notice, "web: rolled back") {
		t.Errorf("the dashboard's notice after its rollback: %q", notice)
	}
	if got := page(t, r, "web"); got != "v2\n" {
		t.Fatalf("after a second rollback (the dashboard's) the app serves %q, want v2", got)
	}

	// Bad input, and a tag that does not exist: the app is untouched.
	before := r.status("web").Containers[0]
	if _, errOut, code := r.onionpod("update", "web", "--image", "Not/A:Ref:"); code != 2 {
		t.Errorf("update to a malformed reference: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := r.onionpod("update", "web", "--image", reg.Ref("web:nothing")); code != 1 {
		t.Errorf("update to a tag that does not exist: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := r.onionpod("update", "web", "--container", "nope"); code != 2 {
		t.Errorf("update of a container the app does not have: exit %d\n%s", code, errOut)
	}
	if after := r.status("web").Containers[0]; after.ImageID != before.ImageID || after.Image != before.Image {
		t.Errorf("a failed update changed the container: %+v -> %+v", before, after)
	}
	if got := page(t, r, "web"); got != "v2\n" {
		t.Errorf("after the failed updates the app serves %q", got)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "kept" {
		t.Errorf("the volume's file after the updates and rollbacks: %q, %v", b, err)
	}
}

func shortHex(id string) string {
	h := strings.TrimPrefix(id, "sha256:")
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

// dashboardAction logs in to the daemon's dashboard on loopback with the key `onionpod dashboard
// login` prints, presses the button of action on app's page (a POST with the page's CSRF token)
// and returns the notice the page then shows.
func dashboardAction(t *testing.T, r *rig, app, action string) string {
	t.Helper()
	var key string
	for _, line := range strings.Split(r.must("dashboard", "login"), "\n") {
		if k, ok := strings.CutPrefix(line, "login key: "); ok {
			key = strings.TrimSpace(k)
		}
	}
	if key == "" {
		t.Fatal("dashboard login printed no key")
	}
	jar, _ := cookiejar.New(nil)
	const base = "http://127.0.0.1:8411"
	c := &http.Client{Jar: jar, Timeout: 3 * time.Minute}
	post := func(path string, form url.Values) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", base)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %s\n%.500s", path, resp.Status, body)
		}
		return string(body)
	}
	post("/login", url.Values{"key": {key}})
	resp, err := c.Get(base + "/apps/" + app)
	if err != nil {
		t.Fatal(err)
	}
	html, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(html)
	if m == nil || !strings.Contains(string(html), `data-action="`+app+`-`+action+`"`) {
		t.Fatalf("the dashboard's page of %s has no token or no %s button:\n%.800s", app, action, html)
	}
	after := post("/apps/"+app+"/"+action, url.Values{"csrf": {string(m[1])}})
	n := regexp.MustCompile(`class="flash[^"]*"[^>]*>([^<]*)<`).FindStringSubmatch(after)
	if n == nil {
		return ""
	}
	return n[1]
}
