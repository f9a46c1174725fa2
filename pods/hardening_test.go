package pods

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/onionpod/onionpod/pods/podstest"
)

// secret is an environment value that must never be world-readable.
const secret = "DB_PASSWORD=s3cr3t-hunter2"

// TestHardeningUnderSystemd boots a real systemd and checks, inside it, what the hardening
// items promise: secrets stay out of unit files and `systemctl show`, hostile-looking values read
// back as they are.
func TestHardeningUnderSystemd(t *testing.T) {
	if podstest.Inside() {
		t.Skip("runs on the host")
	}
	if err := podstest.Available(); err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat(busyboxPath); err != nil {
		t.Skipf("busybox-static needed: %v", err)
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("go needed: %v", err)
	}
	work := t.TempDir()
	// The static server built the default way: cgo on, so dynamically linked.
	dynBin := filepath.Join(work, "onionpod-dynamic")
	build := exec.Command("go", "build", "-o", dynBin, "./testdata/staticserver")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the static server with cgo: %v\n%s", err, out)
	}
	if deps, err := binaryDeps(dynBin); err != nil || deps.Interp == "" || len(deps.Libs) == 0 {
		t.Fatalf("the cgo build is not dynamically linked here: %+v, %v", deps, err)
	}
	site := filepath.Join(work, "site")
	if err := os.MkdirAll(site, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]os.FileMode{"index.html": 0o644, "root-only.txt": 0o600}
	for name, mode := range files {
		if err := os.WriteFile(filepath.Join(site, name), []byte(name+"\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range map[string]string{"environ": "/proc/self/environ", "passwd": "/etc/passwd"} {
		if err := os.Symlink(target, filepath.Join(site, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(site, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{envStore + "=" + filepath.Join(work, "store"), envStaticBin + "=" + dynBin, envSite + "=" + site}
	box := podstest.New(t, podstest.Options{})
	box.RunTestInside(t, "TestInsideSecretsAndQuoting", env...)
	box.RunTestInside(t, "TestInsideDynamicStaticSite", env...)
}

// TestInsideDynamicStaticSite runs a static site with a dynamically linked server binary: it
// serves, through its dynamic loader, as its dynamic user, only the site's files that user may
// read, and nothing a symlink points to outside the site (its own environment!).
func TestInsideDynamicStaticSite(t *testing.T) {
	store, sd := inside(t)
	ctx := t.Context()
	const app, netns = "dynsite", "onionpod-dynsite"
	spec, err := store.StaticSpec(app, os.Getenv(envSite), os.Getenv(envStaticBin), 8080)
	if err != nil {
		t.Fatal(err)
	}
	spec.Env = []string{secret}
	spec.Netns = "/run/netns/" + netns
	spec.NetUp, spec.NetDown = netCommands(netns)
	units, err := PodUnits(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.Apply(ctx, units...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sd.Remove(context.Background(), app) })
	st := waitRunning(t, sd, app, 0)
	checkSandbox(t, st.MainPID, 0)
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", st.MainPID)); err != nil || !strings.Contains(exe, "ld-") {
		t.Errorf("the server runs as %q, %v; want its dynamic loader", exe, err)
	}
	if got := httpGet(t, netns, "http://127.0.0.1:8080/"); got != "index.html\n" {
		t.Errorf("GET / = %q", got)
	}
	value := strings.SplitN(secret, "=", 2)[1]
	for _, p := range []string{"/root-only.txt", "/environ", "/passwd", "/fifo"} {
		code, body := httpStatus(t, netns, "http://127.0.0.1:8080"+p)
		if code != "404" && code != "403" || strings.Contains(body, value) || strings.Contains(body, p[1:]) {
			t.Errorf("GET %s = %s %q, want it not served (404 or 403)", p, code, body)
		}
	}
}

// httpStatus GETs url in netns and returns the status code and the body.
func httpStatus(t *testing.T, netns, url string) (string, string) {
	t.Helper()
	out, err := exec.Command("nsenter", "--net=/run/netns/"+netns, "curl", "-sS", "--max-time", "5",
		"-w", "\n%{http_code}", url).Output()
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return "", ""
	}
	body, code, _ := strings.Cut(string(out), "\n")
	if i := strings.LastIndex(string(out), "\n"); i >= 0 {
		body, code = string(out[:i]), string(out[i+1:])
	}
	return code, body
}

// TestInsideSecretsAndQuoting runs a pod with a secret and hostile-looking values: the pod sees
// them exactly; the unit file and `systemctl show` never hold the secret; changing only the
// environment restarts the pod with the new value; removing the app removes the file.
func TestInsideSecretsAndQuoting(t *testing.T) {
	store, sd := inside(t)
	ctx := t.Context()
	archive := filepath.Join(t.TempDir(), "busybox.tar")
	writeDockerArchive(t, archive, "example.com/busybox:1", busyboxImage(t))
	img, err := store.LoadArchive(ctx, archive, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(img.Root, strings.TrimPrefix(hostileLooking.wd, "/")), 0o755); err != nil {
		t.Fatal(err)
	}
	const app = "secrets"
	// sh keeps running (a loop does not exec), so /proc/PID/cmdline is the argv systemd gave.
	argv := append([]string{"/bin/busybox", "sh", "-c", "while :; do /bin/busybox sleep 1; done", "sh"}, hostileLooking.args...)
	spec := Spec{App: app, Root: img.Root, Command: argv, Env: append(slices.Clone(hostileLooking.env), secret),
		WorkingDir: hostileLooking.wd}
	units, err := PodUnits(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.Apply(ctx, units...); err != nil {
		t.Fatal(err)
	}
	st := waitRunning(t, sd, app, 0)

	// The pod sees its argv, environment and working directory exactly.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", st.MainPID))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00"); !slices.Equal(got, argv) {
		t.Errorf("argv = %q\nwant   %q", got, argv)
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", st.MainPID))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range spec.Env {
		if !bytes.Contains(environ, []byte("\x00"+e+"\x00")) {
			t.Errorf("the pod's environment lacks %q:\n%q", e, environ)
		}
	}
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", st.MainPID)); err != nil || !strings.HasSuffix(cwd, hostileLooking.wd) {
		t.Errorf("cwd = %q, %v; want ...%s", cwd, err, hostileLooking.wd)
	}

	// The secret is in a root-only file, never in the unit nor in what systemctl shows anyone.
	value := strings.SplitN(secret, "=", 2)[1]
	unitFile, err := os.ReadFile(filepath.Join("/etc/systemd/system", PodUnitName(app)))
	if err != nil || bytes.Contains(unitFile, []byte(value)) {
		t.Errorf("unit file holds the secret (%v):\n%s", err, unitFile)
	}
	show, err := exec.Command("systemctl", "show", "-p", "Environment", "-p", "EnvironmentFiles", PodUnitName(app)).CombinedOutput()
	if err != nil || bytes.Contains(show, []byte(value)) || !bytes.Contains(show, []byte(EnvFile(PodUnitName(app)))) {
		t.Errorf("systemctl show (%v):\n%s", err, show)
	}
	fi, err := os.Stat(EnvFile(PodUnitName(app)))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("environment file: %v, %v; want root's, 0600", fi, err)
	} else if di, err := os.Stat(EnvDir); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("environment dir: %v, %v; want 0700", di, err)
	} else if pi, err := os.Stat(filepath.Dir(EnvDir)); err != nil || pi.Mode().Perm() != 0o755 {
		t.Errorf("%s: %v, %v; want 0755 (the config is there)", filepath.Dir(EnvDir), pi, err)
	}

	// A new secret changes only the environment file: the pod is restarted with it.
	spec.Env[len(spec.Env)-1] = secret + "-rotated"
	rotated, err := PodUnits(spec)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rotated[0].Content, units[0].Content) || sd.Current(t.Context(), rotated) || !sd.Current(t.Context(), units) {
		t.Fatalf("Current: an environment change must show, the unit must not change")
	}
	if err := sd.Apply(ctx, rotated...); err != nil {
		t.Fatal(err)
	}
	if !sd.Current(t.Context(), rotated) {
		t.Errorf("not Current after Apply")
	}
	st2 := waitRunning(t, sd, app, st.MainPID)
	if environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", st2.MainPID)); err != nil ||
		!bytes.Contains(environ, []byte("\x00"+secret+"-rotated\x00")) {
		t.Errorf("after the change the pod's environment is %q, %v", environ, err)
	}

	if err := sd.Remove(ctx, app); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(EnvFile(PodUnitName(app))); !os.IsNotExist(err) {
		t.Errorf("environment file after Remove: %v", err)
	}
}
