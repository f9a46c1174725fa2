package pods

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestCheckStaticDir(t *testing.T) {
	dir := t.TempDir()
	site := filepath.Join(dir, "site")
	state := filepath.Join(dir, "state")
	for _, d := range []string{site, filepath.Join(state, "images"), filepath.Join(dir, "home")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	etcLink := filepath.Join(dir, "etc-link")
	if err := os.Symlink("/etc", etcLink); err != nil {
		t.Fatal(err)
	}
	siteLink := filepath.Join(dir, "site-link")
	if err := os.Symlink(site, siteLink); err != nil {
		t.Fatal(err)
	}
	refuse := []string{state}
	for _, ok := range []string{site, siteLink} {
		if err := CheckStaticDir(ok, refuse); err != nil {
			t.Errorf("CheckStaticDir(%s) = %v", ok, err)
		}
	}
	bad := []string{"/", "/etc", "/etc/ssl", "/usr", "/usr/share/doc", "/proc", "/proc/self", "/sys",
		"/dev", "/run", "/boot", "/root", "/var", "/var/lib", "/var/lib/dpkg", "/var/log", "/home", "/tmp",
		"/srv", "/lib", "/bin", etcLink, state, filepath.Join(state, "images"), "relative/site",
		filepath.Join(dir, "missing")}
	if home, err := os.ReadDir("/home"); err == nil && len(home) > 0 && home[0].IsDir() {
		bad = append(bad, filepath.Join("/home", home[0].Name()))
	}
	for _, b := range bad {
		if err := CheckStaticDir(b, refuse); !errors.Is(err, ErrBadInput) {
			t.Errorf("CheckStaticDir(%s) = %v, want ErrBadInput", b, err)
		}
	}
	// A directory above the refused one holds it; without the refusal it is fine.
	if err := CheckStaticDir(dir, refuse); !errors.Is(err, ErrBadInput) {
		t.Errorf("a directory holding a refused one = %v, want ErrBadInput", err)
	}
	if err := CheckStaticDir(dir, nil); err != nil {
		t.Errorf("CheckStaticDir(%s, nil) = %v", dir, err)
	}
	// StaticSpec checks too (with the store's directory refused).
	store := &ImageStore{Dir: filepath.Join(state, "images")}
	for _, b := range []string{"/etc", store.Dir, state} {
		if _, err := store.StaticSpec("site", b, "/bin/true", 80); !errors.Is(err, ErrBadInput) {
			t.Errorf("StaticSpec(%s) = %v, want ErrBadInput", b, err)
		}
	}
}

// The static server opens nothing outside the site: no symlink out of it (absolute, climbing,
// or to /proc), no FIFO (which would block), while symlinks inside it work.
func TestServeStaticStaysInside(t *testing.T) {
	dir := t.TempDir()
	site := filepath.Join(dir, "site")
	if err := os.MkdirAll(filepath.Join(site, "docs"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"index.html": "home", "docs/a.txt": "a", "../outside.txt": "outside"} {
		if err := os.WriteFile(filepath.Join(site, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"passwd":    "/etc/passwd",
		"environ":   "/proc/self/environ",
		"up":        "../outside.txt",
		"docs/upup": "../../outside.txt",
		"alias.txt": "docs/a.txt",
		"docs/back": "../index.html",
		"dirlink":   "docs",
		"loop":      "loop",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(site, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(site, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := openSite(site)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	srv := httptest.NewServer(staticHandler(s))
	defer srv.Close()
	cases := map[string]struct {
		code int
		body string
	}{
		"/alias.txt": {200, "a"}, "/docs/back": {200, "home"}, "/dirlink/a.txt": {200, "a"},
		"/passwd": {404, ""}, "/environ": {404, ""}, "/up": {404, ""}, "/docs/upup": {404, ""},
		"/loop": {404, ""}, "/fifo": {404, ""}, "/../outside.txt": {404, ""},
	}
	for p, want := range cases {
		err := returnsWithin(t, 5e9, "GET "+p, func() error {
			resp, err := http.Get(srv.URL + p)
			if err != nil {
				return err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want.code || want.code == 200 && string(b) != want.body {
				t.Errorf("GET %s = %d %q, want %d %q", p, resp.StatusCode, b, want.code, want.body)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
