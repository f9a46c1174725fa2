package store

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/dirwatch"
)

func TestParsePortAndVolume(t *testing.T) {
	if p, err := ParsePort("80"); err != nil || p != (Port{Public: 80, Target: 80}) {
		t.Errorf("ParsePort(80) = %v, %v", p, err)
	}
	if p, err := ParsePort("80:8080"); err != nil || p != (Port{Public: 80, Target: 8080}) {
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
	good := App{Name: "blog", Containers: []Container{{Name: "blog", Image: "registry.example/blog:1"}}, Ports: []Port{{Public: 80, Target: 80}}, Onion: true}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(*App){
		"no image":       func(a *App) { a.Containers[0].Image = "" },
		"image + static": func(a *App) { a.Containers[0].Static = "/srv/site" },
		"onion no port":  func(a *App) { a.Ports = nil },
		"dup port":       func(a *App) { a.Ports = []Port{{Public: 80, Target: 80}, {Public: 80, Target: 81}} },
		"bad env":        func(a *App) { a.Containers[0].Env = []string{"NOEQUALS"} },
		"onion-only v4":  func(a *App) { a.OnionOnly, a.IPv4 = true, true },
		"no container":   func(a *App) { a.Containers = nil },
	}
	for name, mutate := range cases {
		a := good
		a.Containers = slices.Clone(good.Containers)
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
	app := App{Name: "blog", Containers: []Container{{Name: "blog", Image: "r.example/blog:1", Env: []string{"A=b"}}}, Ports: []Port{{Public: 80, Target: 8080}}, Onion: true}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.Put(app) }); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get("blog")
	if err != nil || got.Containers[0].Image != app.Containers[0].Image || got.Ports[0] != app.Ports[0] || !got.Onion {
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
	apps, held, err := s.List()
	if err != nil || len(apps) != 1 || len(held) != 0 {
		t.Fatalf("List = %v, %v, %v", apps, held, err)
	}
	if got.Generation != 1 {
		t.Errorf("a record written without a generation reads as generation %d, want 1", got.Generation)
	}
	for i, want := range []bool{true, false} { // idempotent
		var existed bool
		s.Update(ctx, func(tx *Tx) (err error) { existed, err = tx.Delete("blog"); return err })
		if existed != want {
			t.Errorf("delete #%d: existed = %v", i+1, existed)
		}
	}
	if apps, _, _ := s.List(); len(apps) != 0 {
		t.Errorf("after delete: %v", apps)
	}
	for _, d := range []string{"apps", "apps/.last"} {
		entries, _ := os.ReadDir(filepath.Join(dir, d))
		for _, e := range entries {
			if !e.IsDir() {
				t.Errorf("left behind: %s/%s", d, e.Name())
			}
		}
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
	unlock, err := s.lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.lock(ctx); err == nil {
		t.Fatal("a second lock was granted while the first is held")
	}
	unlock()
	unlock2, err := s.lock(context.Background())
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
			err := s.Update(context.Background(), func(tx *Tx) error {
				a, err := tx.Get("counter")
				if err != nil {
					return err
				}
				c := &a.Containers[0]
				c.Env = append(c.Env, "N"+strconv.Itoa(len(c.Env))+"=x")
				return tx.Put(a)
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	dir := t.TempDir()
	s, _ := Open(dir)
	s.Update(context.Background(), func(tx *Tx) error {
		return tx.Put(App{Name: "counter", Containers: []Container{{Name: "counter", Static: "/srv"}}})
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
	if err != nil || len(a.Containers[0].Env) != 150 {
		t.Fatalf("want 150 updates, got %d (%v)", len(a.Containers[0].Env), err)
	}
}

func TestEnvSetAndUnset(t *testing.T) {
	env := []string{"A=1", "B=2", "C=3"}
	got := SetEnv(env, []string{"B=two", "D=4", "A=one"})
	if !slices.Equal(got, []string{"A=one", "B=two", "C=3", "D=4"}) {
		t.Errorf("SetEnv = %v", got)
	}
	if !slices.Equal(env, []string{"A=1", "B=2", "C=3"}) {
		t.Errorf("SetEnv changed its input: %v", env)
	}
	got, err := UnsetEnv(got, []string{"B", "NOPE"})
	if err != nil || !slices.Equal(got, []string{"A=one", "C=3", "D=4"}) {
		t.Errorf("UnsetEnv = %v, %v", got, err)
	}
	if _, err := UnsetEnv(got, []string{"A=1"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("UnsetEnv(A=1) = %v, want bad input", err)
	}
}

// TestDamagedRecordsAreHeld: a truncated, a garbled and a misnamed record are held (reported,
// not listed as apps), the other apps are listed; Quarantine keeps the damaged record aside, and
// the app stays held; a newer schema is held but not quarantined; Delete removes the copies.
func TestDamagedRecordsAreHeld(t *testing.T) {
	s, _ := Open(t.TempDir())
	ctx := context.Background()
	for _, name := range []string{"good", "trunc", "garbled", "misnamed", "newer"} {
		if err := s.Update(ctx, func(tx *Tx) error {
			return tx.Put(App{Name: name, Containers: []Container{{Name: name, Static: "/srv/" + name}}})
		}); err != nil {
			t.Fatal(err)
		}
	}
	apps := filepath.Join(s.Dir(), "apps")
	data, _ := os.ReadFile(filepath.Join(apps, "trunc.json"))
	os.WriteFile(filepath.Join(apps, "trunc.json"), data[:len(data)/3], 0o600)
	os.WriteFile(filepath.Join(apps, "garbled.json"), []byte("\x00\x01garbage"), 0o600)
	os.WriteFile(filepath.Join(apps, "misnamed.json"), []byte(`{"schema":1,"app":{"name":"good","static":"/srv/x"}}`), 0o600)
	os.WriteFile(filepath.Join(apps, "newer.json"), []byte(`{"schema":99,"app":{"name":"newer"}}`), 0o600)

	list, held, err := s.List()
	if err != nil || len(list) != 1 || list[0].Name != "good" {
		t.Fatalf("List = %v, %v", list, err)
	}
	kinds := map[string]bool{}
	for _, h := range held {
		kinds[h.Name] = h.Damaged
		if !h.Record {
			t.Errorf("%s: the record is still there", h.Name)
		}
	}
	if !maps.Equal(kinds, map[string]bool{"trunc": true, "garbled": true, "misnamed": true, "newer": false}) {
		t.Fatalf("held: %v", kinds)
	}
	err = s.Update(ctx, func(tx *Tx) error {
		for _, name := range []string{"trunc", "garbled", "misnamed"} {
			if _, err := tx.Quarantine(name, time.Unix(1700000000, 0)); err != nil {
				return err
			}
		}
		if _, err := tx.Quarantine("newer", time.Now()); err == nil {
			t.Error("a record of a newer schema was quarantined")
		}
		if _, err := tx.Quarantine("good", time.Now()); err == nil {
			t.Error("a good record was quarantined")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Get("trunc")
	var h *Held
	if !errors.As(err, &h) || !h.Damaged || h.Record || len(h.Copies) != 1 || !strings.HasSuffix(h.Copies[0], "trunc.json.damaged-1700000000") {
		t.Fatalf("Get(trunc) after quarantine = %#v", err)
	}
	if copied, _ := os.ReadFile(h.Copies[0]); !bytes.Equal(copied, data[:len(data)/3]) {
		t.Error("the quarantined copy differs from the damaged record")
	}
	if h.Last == nil || h.Last.Static() != "/srv/trunc" {
		t.Errorf("the last good record of trunc: %+v", h.Last)
	}
	if _, held, _ := s.List(); len(held) != 4 {
		t.Errorf("after quarantine, held: %v", held)
	}
	s.Update(ctx, func(tx *Tx) error {
		if existed, err := tx.Delete("trunc"); !existed || err != nil {
			t.Errorf("Delete(trunc) = %v, %v", existed, err)
		}
		return nil
	})
	if _, err := s.Get("trunc"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after Delete, Get(trunc) = %v", err)
	}
}

// Records are read through a cache (decoded again only when their file changed): a record
// another process wrote, or that was edited in place, is read as it is on disk, and a caller
// changing the record it was given changes nothing of what the next reader gets.
func TestCachedRecordsFollowTheDisk(t *testing.T) {
	t.Run("stat", func(t *testing.T) { testCachedRecords(t, nil) })
	w, err := dirwatch.New()
	if err != nil {
		t.Skipf("no inotify: %v", err)
	}
	defer w.Close()
	t.Run("watch", func(t *testing.T) { testCachedRecords(t, w) })
}

func testCachedRecords(t *testing.T, w *dirwatch.Watch) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.FollowFiles(w)
	ctx := context.Background()
	app := App{Name: "blog", Containers: []Container{{Name: "blog", Image: "r.example/blog:1", Env: []string{"A=b"}}},
		Ports: []Port{{Public: 80, Target: 8080}}, Onion: true, Generation: 1}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.Put(app) }); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // decoded, then from the cache
		got, err := s.Get("blog")
		if err != nil {
			t.Fatal(err)
		}
		if got.Containers[0].Env[0] != "A=b" || got.Containers[0].Image != "r.example/blog:1" || got.Ports[0].Public != 80 {
			t.Errorf("read %d: a caller's change of its copy reached the store: %+v", i, got)
		}
		got.Containers[0].Env[0] = "A=changed"
		got.Containers[0].Image = "r.example/other:1"
		got.Ports[0].Public = 81
	}

	// Another process (a second Store on the dir) changes the record.
	other, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	app.Generation = 2
	app.Containers[0].Image = "r.example/blog:2"
	if err := other.Update(ctx, func(tx *Tx) error { return tx.Put(app) }); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get("blog"); got.Generation != 2 || got.Containers[0].Image != "r.example/blog:2" {
		t.Errorf("after another process's change: %+v", got)
	}

	// Edited in place (same inode, same size): its times tell.
	path := filepath.Join(dir, "apps", "blog.json")
	data, _ := os.ReadFile(path)
	edited := bytes.Replace(data, []byte("blog:2"), []byte("blog:3"), 1)
	if err := os.WriteFile(path, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	if apps, _, _ := s.List(); len(apps) != 1 || apps[0].Containers[0].Image != "r.example/blog:3" {
		t.Errorf("after an edit in place: %+v", apps)
	}

	// Damaged in place: held, not served from the cache.
	if err := os.WriteFile(path, []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	var h *Held
	if _, err := s.Get("blog"); !errors.As(err, &h) || !h.Damaged {
		t.Errorf("a damaged record read as %v", err)
	}

	// The list follows the directory: an app another process adds, then removes; the copies too.
	names := func() (list []string) {
		apps, held, _ := s.List()
		for _, a := range apps {
			list = append(list, a.Name)
		}
		for _, h := range held {
			list = append(list, h.Name+" (held)")
		}
		return list
	}
	for range 2 {
		if got := names(); !slices.Equal(got, []string{"blog (held)"}) {
			t.Fatalf("listed %q", got)
		}
	}
	wiki := App{Name: "wiki", Containers: []Container{{Name: "wiki", Image: "r.example/wiki:1"}}, Generation: 1}
	if err := other.Update(ctx, func(tx *Tx) error { return errors.Join(tx.Put(wiki), tx.Copy("wiki")) }); err != nil {
		t.Fatal(err)
	}
	if got := names(); !slices.Equal(got, []string{"wiki", "blog (held)"}) {
		t.Errorf("after another process added wiki: %q", got)
	}
	if copied, err := s.Copied(); err != nil || !copied["wiki"] {
		t.Errorf("wiki's copy: %v, %v", copied, err)
	}
	if err := other.Update(ctx, func(tx *Tx) error { _, err := tx.Delete("wiki"); return err }); err != nil {
		t.Fatal(err)
	}
	if got := names(); !slices.Equal(got, []string{"blog (held)"}) {
		t.Errorf("after another process removed wiki: %q", got)
	}
}
