package daemon_test

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/onionpod/onionpod/pods"
)

func TestBackupRestore(t *testing.T) { inBox(t, "TestInsideBackupRestore") }

// TestInsideBackupRestore backs an app of two containers up and restores it as on a fresh box:
// "db" keeps rows in a volume its backup hook dumps (with the app running) and loads back once
// the restored app runs; "web" serves a volume copied as files (with the app stopped for the
// copy); both run an image sent to the box as an archive, which the backup holds. After
// `rm --purge-key` (which prunes the image) and the volumes' removal, `onionpod restore` brings
// the app back with the same .onion, the rows and the page, its image loaded from the backup. A wrong passphrase, a flipped byte and a file cut
// short are refused with nothing written; restoring over the existing app needs --force.
func TestInsideBackupRestore(t *testing.T) {
	r := newRig(t)
	img := r.upload(r.image("duo", "unused\n"))
	appFile := filepath.Join(r.dir, "duo.toml")
	os.WriteFile(appFile, []byte(`name = "duo"
onion = true
[[containers]]
name = "db"
image = "`+img+`"
entrypoint = ["/bin/busybox", "sh", "-c", "touch /db/rows; exec /bin/busybox httpd -f -p 127.0.0.1:5432 -h /db"]
volumes = ["dbdata:/db"]
[containers.backup]
volume = "dbdata"
dump = ["/bin/busybox", "cat", "/db/rows"]
restore = ["/bin/busybox", "sh", "-c", "cat > /db/rows.new && mv /db/rows.new /db/rows"]
[[containers]]
name = "web"
image = "`+img+`"
entrypoint = ["/bin/busybox", "sh", "-c", "[ -f /files/index.html ] || echo new > /files/index.html; exec /bin/busybox httpd -f -p [::]:80 -h /files"]
volumes = ["files:/files"]
ports = ["80"]
after = ["db"]
[containers.health]
http = "/index.html"
interval = "300ms"
retries = 2
start_period = "1s"
`), 0o644)
	r.must("apply", "-f", appFile)
	addr := r.status("duo").Onion.Address
	if addr == "" {
		t.Fatal("no onion address")
	}
	// The data, written as the app's user: rows in db's volume, a page and a hard link, a
	// symlink and a sparse file in web's.
	dbDir, filesDir := pods.VolumeHostDir("duo", "dbdata"), pods.VolumeHostDir("duo", "files")
	uid := ownerOf(t, filesDir)
	writeAs(t, filepath.Join(dbDir, "rows"), "row 1\nrow 2\n", uid)
	writeAs(t, filepath.Join(filesDir, "index.html"), "hello from the backup\n", uid)
	os.Link(filepath.Join(filesDir, "index.html"), filepath.Join(filesDir, "same.html"))
	os.Symlink("index.html", filepath.Join(filesDir, "link.html"))
	sparse, _ := os.Create(filepath.Join(filesDir, "sparse"))
	sparse.WriteAt([]byte("end"), 1<<30)
	sparse.Close()
	os.Lchown(filepath.Join(filesDir, "sparse"), uid, uid)
	if got := webPage(t, r, "duo"); got != "hello from the backup\n" {
		t.Fatalf("page before the backup: %q", got)
	}

	pass := filepath.Join(r.dir, "pass")
	os.WriteFile(pass, []byte("correct horse\n"), 0o600)
	wrong := filepath.Join(r.dir, "wrong")
	os.WriteFile(wrong, []byte("wrong horse\n"), 0o600)
	backup := filepath.Join(r.dir, "duo.backup")
	webSince := r.status("duo").Containers[1].Unit.Since
	out := r.must("backup", "duo", "-o", backup, "--passphrase-file", pass)
	t.Logf("backup:\n%s", out)
	if !strings.Contains(out, "volume dbdata: its backup hook's dump") || !strings.Contains(out, addr) || !strings.Contains(out, "image "+img[7:19]) {
		t.Errorf("backup says:\n%s", out)
	}
	if st, err := os.Stat(backup); err != nil || st.Size() > 4<<20 { // the image (busybox, 2 MB) and the files
		t.Fatalf("backup file: %v, %v (the 1 GiB sparse file stored whole?)", st, err)
	}
	// The app was stopped for the copy of its files, and runs again.
	if _, err := r.client.Wait(t.Context(), "duo", "running", 0, time.Minute); err != nil {
		t.Fatalf("after the backup: %v", err)
	}
	if since := r.status("duo").Containers[1].Unit.Since; !since.After(webSince) {
		t.Errorf("web was not stopped for the backup (running since %v, before %v)", since, webSince)
	}

	// Restoring over the app needs --force; damaged files and a wrong passphrase are refused.
	if _, errOut, code := r.onionpod("restore", backup, "--passphrase-file", pass); code != 1 || !strings.Contains(errOut, "--force") {
		t.Errorf("restore over the existing app: exit %d\n%s", code, errOut)
	}
	data, _ := os.ReadFile(backup)
	flipped := filepath.Join(r.dir, "flipped.backup")
	damaged := append([]byte(nil), data...)
	damaged[len(damaged)/2] ^= 1
	os.WriteFile(flipped, damaged, 0o600)
	short := filepath.Join(r.dir, "short.backup")
	os.WriteFile(short, data[:len(data)-100], 0o600)

	// As on a fresh box: the app, its key and its volumes gone.
	r.must("rm", "duo", "--purge-key")
	os.RemoveAll(filepath.Dir(dbDir))
	for _, c := range []struct {
		file, pass string
	}{{backup, wrong}, {flipped, pass}, {short, pass}} {
		if _, errOut, code := r.onionpod("restore", c.file, "--passphrase-file", c.pass); code != 2 {
			t.Errorf("restore of %s with %s: exit %d\n%s", filepath.Base(c.file), filepath.Base(c.pass), code, errOut)
		}
		if _, err := os.Stat(filepath.Dir(dbDir)); !os.IsNotExist(err) {
			t.Errorf("a refused restore left %s: %v", filepath.Dir(dbDir), err)
		}
		if _, err := r.client.App(t.Context(), "duo"); err == nil {
			t.Errorf("a refused restore made the app")
		}
	}

	// The image was sent from an archive, which no registry serves (rm pruned it): the backup
	// holds it, and the restore loads it.
	if _, err := r.client.Image(t.Context(), img); err == nil {
		t.Fatalf("the image %s is still on the box after rm", img)
	}
	start := time.Now()
	out = r.must("restore", backup, "--passphrase-file", pass)
	t.Logf("restore in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if _, err := r.client.Image(t.Context(), img); err != nil {
		t.Errorf("the image after the restore: %v", err)
	}
	st, err := r.client.Wait(t.Context(), "duo", "running", 0, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if st.Onion.Address != addr {
		t.Errorf("restored at %s, want %s", st.Onion.Address, addr)
	}
	if got := webPage(t, r, "duo"); got != "hello from the backup\n" {
		t.Errorf("page after the restore: %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(dbDir, "rows")); err != nil || string(b) != "row 1\nrow 2\n" {
		t.Errorf("rows after the restore (loaded by the hook): %q, %v", b, err)
	}
	var a, b syscall.Stat_t
	syscall.Stat(filepath.Join(filesDir, "index.html"), &a)
	syscall.Stat(filepath.Join(filesDir, "same.html"), &b)
	if a.Ino != b.Ino {
		t.Errorf("the hard link came back as a copy")
	}
	if l, _ := os.Readlink(filepath.Join(filesDir, "link.html")); l != "index.html" {
		t.Errorf("symlink: %q", l)
	}
	var sp syscall.Stat_t
	if err := syscall.Stat(filepath.Join(filesDir, "sparse"), &sp); err != nil || sp.Size != 1<<30+3 || sp.Blocks*512 > 1<<20 {
		t.Errorf("sparse file after the restore: size %d, %d blocks, %v", sp.Size, sp.Blocks, err)
	}
	if out, _ := exec.Command("ls", "-la", filepath.Dir(dbDir)).CombinedOutput(); strings.Contains(string(out), ".restore-") || strings.Contains(string(out), ".dump-") {
		t.Errorf("staging left beside the volumes:\n%s", out)
	}
}

func ownerOf(t *testing.T, path string) int {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return int(st.Uid)
}

func writeAs(t *testing.T, path, content string, uid int) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(path, uid, uid)
}

// webPage fetches /index.html of the app at its ULA.
func webPage(t *testing.T, r *rig, app string) string {
	t.Helper()
	st := r.status(app)
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(st.Network.ULA, "80") + "/index.html")
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}
