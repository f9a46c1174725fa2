package store

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"blog", "a", "my-app-2", "0day", string(make63('a'))} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Blog_1", "Blog", "my_app", "-x", "x-", "a.b", "ünï", "a b", "../etc", string(make63('a')) + "a"} {
		err := ValidateName(bad)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func make63(c byte) []byte {
	b := make([]byte, 63)
	for i := range b {
		b[i] = c
	}
	return b
}

func TestParsePortAndVolume(t *testing.T) {
	if p, err := ParsePort("80"); err != nil || p != (Port{80, 80}) {
		t.Errorf("ParsePort(80) = %v, %v", p, err)
	}
	if p, err := ParsePort("80:8080"); err != nil || p != (Port{80, 8080}) {
		t.Errorf("ParsePort(80:8080) = %v, %v", p, err)
	}
	for _, bad := range []string{"", "0", "65536", "http", "80:", ":80", "-1", "80:0"} {
		if _, err := ParsePort(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParsePort(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if v, err := ParseVolume("data:/var/lib/app"); err != nil || v != (Volume{"data", "/var/lib/app"}) {
		t.Errorf("ParseVolume = %v, %v", v, err)
	}
	for _, bad := range []string{"data", "Data:/x", "data:relative", "data:/", "data:/a/../../etc"} {
		if _, err := ParseVolume(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseVolume(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestAppValidate(t *testing.T) {
	good := App{Name: "blog", Image: "registry.example/blog:1", Ports: []Port{{80, 80}}, Onion: true}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(*App){
		"no image":       func(a *App) { a.Image = "" },
		"image + static": func(a *App) { a.Static = "/srv/site" },
		"onion no port":  func(a *App) { a.Ports = nil },
		"dup port":       func(a *App) { a.Ports = []Port{{80, 80}, {80, 81}} },
		"bad env":        func(a *App) { a.Env = []string{"NOEQUALS"} },
		"onion-only v4":  func(a *App) { a.OnionOnly, a.IPv4 = true, true },
	}
	for name, mutate := range cases {
		a := good
		mutate(&a)
		if err := a.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate = %v, want ErrInvalid", name, err)
		}
	}
}

func TestPutGetListDelete(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	app := App{Name: "blog", Image: "r.example/blog:1", Ports: []Port{{80, 8080}}, Onion: true, Env: []string{"A=b"}}
	if err := s.Update(ctx, func() error { return s.Put(app) }); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get("blog")
	if err != nil || got.Image != app.Image || got.Ports[0] != app.Ports[0] || !got.Onion {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	for _, p := range []string{dir, filepath.Join(dir, "apps")} {
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o700 {
			t.Errorf("%s has mode %v, want 0700", p, st.Mode().Perm())
		}
	}
	if st, _ := os.Stat(filepath.Join(dir, "apps", "blog.json")); st.Mode().Perm() != 0o600 {
		t.Errorf("record has mode %v, want 0600", st.Mode().Perm())
	}
	if _, err := s.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(nope) = %v", err)
	}
	apps, err := s.List()
	if err != nil || len(apps) != 1 {
		t.Fatalf("List = %v, %v", apps, err)
	}
	s.Update(ctx, func() error { return s.Delete("blog") })
	s.Update(ctx, func() error { return s.Delete("blog") }) // idempotent
	if apps, _ := s.List(); len(apps) != 0 {
		t.Errorf("after delete: %v", apps)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "apps"))
	if len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	s, _ := Open(t.TempDir())
	os.WriteFile(filepath.Join(s.Dir(), "apps", "blog.json"), []byte(`{"schema": 99, "app": {"name": "blog"}}`), 0o600)
	if _, err := s.Get("blog"); err == nil {
		t.Fatal("read a record of a newer schema")
	}
}

func TestLockExcludesAndTimesOut(t *testing.T) {
	s, _ := Open(t.TempDir())
	unlock, err := s.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Lock(ctx); err == nil {
		t.Fatal("a second lock was granted while the first is held")
	}
	unlock()
	unlock2, err := s.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	unlock2()
}

// TestTwoProcessesWriting runs writers in separate processes (the daemon and an offline CLI are
// separate processes) doing read-modify-write of one record under the lock: no update is lost.
func TestTwoProcessesWriting(t *testing.T) {
	if dir := os.Getenv("STORE_TEST_WRITER_DIR"); dir != "" {
		s, _ := Open(dir)
		for i := 0; i < 50; i++ {
			err := s.Update(context.Background(), func() error {
				a, err := s.Get("counter")
				if err != nil {
					return err
				}
				a.Env = append(a.Env, "N="+strconv.Itoa(len(a.Env)))
				return s.Put(a)
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	dir := t.TempDir()
	s, _ := Open(dir)
	s.Update(context.Background(), func() error {
		return s.Put(App{Name: "counter", Static: "/srv"})
	})
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestTwoProcessesWriting$")
			cmd.Env = append(os.Environ(), "STORE_TEST_WRITER_DIR="+dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- errors.New(string(out))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	a, err := s.Get("counter")
	if err != nil || len(a.Env) != 150 {
		t.Fatalf("want 150 updates, got %d (%v)", len(a.Env), err)
	}
}
