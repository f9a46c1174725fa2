package pods

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/golden")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	file := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from the golden file (run with -update if intended):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func blogSpec() Spec {
	return Spec{
		App:        "blog",
		Root:       "/var/lib/onionpod/images/roots/0123abcd",
		Netns:      "/run/netns/onionpod-blog",
		Command:    []string{"/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"},
		Env:        []string{"PATH=/usr/bin:/bin", "GREETING=hello \"world\" 100% $HOME"},
		WorkingDir: "/www",
		Volumes:    []Volume{{Name: "data", Path: "/data"}},
		NetUp:      []string{"/usr/bin/onionpod", "internal", "net-up", "blog"},
		NetDown:    []string{"/usr/bin/onionpod", "internal", "net-down", "blog"},
		NetAfter:   []string{"onionpod-netns.service"},
		NetBoot:    "onionpod-networks.service",
	}
}

func TestRenderUnitsGolden(t *testing.T) {
	units, err := PodUnits(blogSpec())
	if err != nil {
		t.Fatal(err)
	}
	if len(units) != 2 || units[0].Name != "onionpod-net-blog.service" || units[1].Name != "onionpod-pod-blog.service" {
		t.Fatalf("units = %v", units)
	}
	for _, u := range units {
		golden(t, u.Name, u.Content)
	}
	golden(t, "onionpod-pod-blog.env", units[1].Env)

	web := blogSpec()
	web.App = "web"
	web.Capabilities = []string{"CAP_NET_BIND_SERVICE"}
	web.Command = []string{"/bin/busybox", "httpd", "-f", "-p", "80"}
	web.NetUp, web.NetDown, web.Volumes, web.Env, web.WorkingDir = nil, nil, nil, nil, ""
	web.BindReadOnly = []Bind{{Source: "/srv/site", Target: "/site"}}
	units, err = PodUnits(web)
	if err != nil {
		t.Fatal(err)
	}
	if len(units) != 1 {
		t.Fatalf("without NetUp there is no network unit: %v", units)
	}
	golden(t, units[0].Name, units[0].Content)

	tor, err := HostService{Name: "tor", ExecStart: []string{"/usr/bin/tor", "-f", "/var/lib/onionpod/tor/torrc"},
		Environment: []string{"HOME=/var/lib/onionpod/tor"}, Type: "notify", Restart: "always", After: []string{"network.target"}}.Unit()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, tor.Name, tor.Content)

	boot, err := HostService{Name: "net-boot", ExecStart: []string{"/usr/bin/onionpod", "internal", "net-boot"},
		Type: "oneshot", RemainAfterExit: true, Restart: "no", After: []string{"onionpod-netns.service"}}.Unit()
	if err == nil {
		t.Errorf("a host service named net-*: %s, want an error (the name of an app's network unit)", boot.Name)
	}
	boot, err = HostService{Name: "networks", ExecStart: []string{"/usr/bin/onionpod", "internal", "net-boot"},
		Type: "oneshot", RemainAfterExit: true, Restart: "no", After: []string{"onionpod-netns.service"}}.Unit()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, boot.Name, boot.Content)
}

// notesSpecs are the containers of a two-container app (a database and a web app sharing a
// volume-less network namespace and one dynamic user) plus a third running as its own user.
func notesSpecs() []Spec {
	up := []string{"/usr/bin/onionpod", "internal", "net-up", "notes"}
	db := Spec{
		App: "notes", Container: "db", Root: "/var/lib/onionpod/images/roots/postgres",
		Netns: "/run/netns/onionpod-notes", Command: []string{"/usr/local/bin/postgres-entrypoint"},
		Env:        []string{"POSTGRES_PASSWORD=s3cret"},
		Volumes:    []Volume{{Name: "pgdata", Path: "/var/lib/postgresql"}},
		NetUp:      up,
		KillSignal: "SIGINT",
		Limits:     Limits{Memory: "512M", CPU: "150%", CPUWeight: 200, Tasks: 256},
	}
	web := Spec{
		App: "notes", Container: "notes", Root: "/var/lib/onionpod/images/roots/notes1",
		Netns: "/run/netns/onionpod-notes", Command: []string{"/notes"},
		NetUp: up, After: []string{"db"}, Limits: Limits{Tasks: -1, Memory: "infinity"},
	}
	cache := Spec{
		App: "notes", Container: "cache", Root: "/var/lib/onionpod/images/roots/cache",
		Netns: "/run/netns/onionpod-notes", Command: []string{"/bin/cache"},
		NetUp: up, OwnUser: true, Volumes: []Volume{{Name: "cache", Path: "/cache"}},
	}
	return []Spec{db, web, cache}
}

// TestAppUnitsGolden: the units of an app of several containers: one network unit ordered
// before all of them, each container its own unit (the app's own container keeps the app's unit
// name), one dynamic user but for the container that asks for its own, start order, stop
// signal and limits.
func TestAppUnitsGolden(t *testing.T) {
	units, err := AppUnits(notesSpecs()...)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range units {
		got = append(got, u.Name)
		golden(t, u.Name, u.Content)
	}
	want := "onionpod-net-notes.service onionpod-pod-notes_db.service onionpod-pod-notes.service onionpod-pod-notes_cache.service"
	if strings.Join(got, " ") != want {
		t.Errorf("units %s\nwant  %s", strings.Join(got, " "), want)
	}
	if string(units[1].Env) == "" || units[2].Env != nil {
		t.Errorf("environment files: db %q, notes %q", units[1].Env, units[2].Env)
	}

	bad := map[string]func([]Spec){
		"after an unknown container": func(s []Spec) { s[1].After = []string{"nosuch"} },
		"after itself":               func(s []Spec) { s[0].After = []string{"db"} },
		"two of one name":            func(s []Spec) { s[2].Container = "db" },
		"another netns":              func(s []Spec) { s[2].Netns = "/run/netns/other" },
		"another app":                func(s []Spec) { s[2].App = "other" },
		"a bad container name":       func(s []Spec) { s[2].Container = "Cache_1" },
		"an unknown signal":          func(s []Spec) { s[0].KillSignal = "SIGNOPE" },
		"a signal by number":         func(s []Spec) { s[0].KillSignal = "2" },
		"memory":                     func(s []Spec) { s[0].Limits.Memory = "lots" },
		"memory percent":             func(s []Spec) { s[0].Limits.Memory = "101%" },
		"cpu":                        func(s []Spec) { s[0].Limits.CPU = "1.5" },
		"cpu weight":                 func(s []Spec) { s[0].Limits.CPUWeight = 10001 },
		"tasks":                      func(s []Spec) { s[0].Limits.Tasks = 2 },
	}
	for name, mutate := range bad {
		specs := notesSpecs()
		mutate(specs)
		if _, err := AppUnits(specs...); !errors.Is(err, ErrBadInput) {
			t.Errorf("%s: AppUnits = %v, want ErrBadInput", name, err)
		}
	}
}

func TestUnitNamesAndUsers(t *testing.T) {
	for _, c := range []struct{ app, container, unit string }{
		{"blog", "", "onionpod-pod-blog.service"},
		{"blog", "blog", "onionpod-pod-blog.service"},
		{"notes", "db", "onionpod-pod-notes_db.service"},
		{"notes-db", "notes-db", "onionpod-pod-notes-db.service"},
	} {
		if got := ContainerUnitName(c.app, c.container); got != c.unit {
			t.Errorf("ContainerUnitName(%s, %s) = %s, want %s", c.app, c.container, got, c.unit)
		}
		r, ok := ParsePodUnit(c.unit)
		want := PodRef{App: c.app, Container: cmp.Or(c.container, c.app)}
		if !ok || r != want {
			t.Errorf("ParsePodUnit(%s) = %+v, %v", c.unit, r, ok)
		}
	}
	for _, bad := range []string{"onionpod-pod-notes_notes.service", "onionpod-pod-a_b_c.service", "onionpod-net-a.service", "onionpod-pod-.service", "onionpod-pod-A.service"} {
		if r, ok := ParsePodUnit(bad); ok {
			t.Errorf("ParsePodUnit(%s) = %+v", bad, r)
		}
	}
	for _, app := range []string{"blog", "notes-db"} {
		if got, ok := ParseNetUnit(NetUnitName(app)); !ok || got != app {
			t.Errorf("ParseNetUnit(%s) = %q, %v", NetUnitName(app), got, ok)
		}
	}
	for _, bad := range []string{"onionpod-pod-blog.service", "onionpod-net-.service", "onionpod-net-A.service", "onionpod-net-a_b.service", "onionpod-net-a.socket"} {
		if app, ok := ParseNetUnit(bad); ok {
			t.Errorf("ParseNetUnit(%s) = %q", bad, app)
		}
	}
	long := strings.Repeat("a", 40)
	users := map[string]string{
		AppUser("blog"): "blog", AppUser(long): "long", AppUser("a-b"): "a-b",
		ContainerUser("a", "b"): "a/b", ContainerUser(long, "db"): "long/db", ContainerUser(long, "web"): "long/web",
		AppUser(long[:4] + "x"): "short", ContainerUser("notes", "db"): "notes/db",
	}
	if len(users) != 8 {
		t.Errorf("two of the users are the same: %v", users)
	}
	userName := regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,30}$`)
	for u := range users {
		if !userName.MatchString(u) {
			t.Errorf("%q is not a user name systemd takes", u)
		}
	}
	if AppUser("blog") != "onionpod-blog" || ContainerUser("notes", "db") != "onionpod-notes_db" {
		t.Errorf("AppUser(blog) = %s, ContainerUser(notes, db) = %s", AppUser("blog"), ContainerUser("notes", "db"))
	}
}

func TestNormalizeSignal(t *testing.T) {
	for in, want := range map[string]string{"SIGINT": "SIGINT", "INT": "SIGINT", "2": "SIGINT", "15": "SIGTERM",
		"SIGQUIT": "SIGQUIT", "": "", "SIGNOPE": "", "0": "", "99": "", "sigint": ""} {
		if got := NormalizeSignal(in); got != want {
			t.Errorf("NormalizeSignal(%q) = %q, want %q", in, got, want)
		}
	}
}

// The rendered unit parses back (go-systemd's parser) to the settings that matter; the
// environment is in the environment file, not in the unit.
func TestRenderUnitParsesBack(t *testing.T) {
	s := blogSpec()
	units, err := PodUnits(s)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := unit.DeserializeOptions(strings.NewReader(string(units[1].Content)))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, o := range opts {
		got[o.Section+"."+o.Name] = append(got[o.Section+"."+o.Name], o.Value)
	}
	want := map[string]string{
		"Service.RootDirectory":         s.Root,
		"Service.NetworkNamespacePath":  s.Netns,
		"Service.DynamicUser":           "yes",
		"Service.NoNewPrivileges":       "yes",
		"Service.CapabilityBoundingSet": "",
		"Service.ProtectSystem":         "strict",
		"Service.PrivateDevices":        "yes",
		"Service.MountAPIVFS":           "yes",
		"Service.Restart":               "on-failure",
		"Service.WorkingDirectory":      "/www",
		"Service.StateDirectory":        "onionpod-volumes/blog/data",
		"Service.BindPaths":             "/var/lib/private/onionpod-volumes/blog/data:/data",
		"Service.EnvironmentFile":       "/etc/onionpod/env/onionpod-pod-blog.env",
		"Unit.Requires":                 "onionpod-net-blog.service",
		"Unit.After":                    "onionpod-net-blog.service",
		"Install.WantedBy":              "multi-user.target",
	}
	for k, v := range want {
		if len(got[k]) != 1 || got[k][0] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["Service.AmbientCapabilities"]; ok {
		t.Errorf("AmbientCapabilities set without capabilities")
	}
	if env, ok := got["Service.Environment"]; ok {
		t.Errorf("the unit holds the environment: %q", env)
	}
	if want := "# Written by onionpod; changes are overwritten.\nPATH=\"/usr/bin:/bin\"\nGREETING=\"hello \\\"world\\\" 100% \\$HOME\"\n"; string(units[1].Env) != want {
		t.Errorf("environment file:\n%s\nwant\n%s", units[1].Env, want)
	}
}

func TestCommandQuoting(t *testing.T) {
	got, err := unitValue(commandValue, "command", "/bin/sh", "-c", `echo "$HOME" 50% \ok`, ";", "it's")
	want := `"/bin/sh" "-c" "echo \"$$HOME\" 50%% \\ok" ";" "it's"`
	if err != nil || got != want {
		t.Errorf("command = %s, %v\nwant      %s", got, err, want)
	}
}

func TestSpecValidate(t *testing.T) {
	bad := []func(*Spec){
		func(s *Spec) { s.App = "Blog_1" },
		func(s *Spec) { s.App = "" },
		func(s *Spec) { s.App = strings.Repeat("a", 64) },
		func(s *Spec) { s.Root = "relative/root" },
		func(s *Spec) { s.Root = "/roots/../etc" },
		func(s *Spec) { s.Netns = "/run/netns/a b" },
		func(s *Spec) { s.Command = nil },
		func(s *Spec) { s.Command = []string{"httpd"} },
		func(s *Spec) { s.Env = []string{"NOEQUALS"} },
		func(s *Spec) { s.Env = []string{"1BAD=x"} },
		func(s *Spec) { s.Capabilities = []string{"CAP_NET_BIND_SERVICE; rm -rf"} },
		func(s *Spec) { s.Volumes = []Volume{{Name: "../x", Path: "/data"}} },
		func(s *Spec) { s.Volumes = []Volume{{Name: "d", Path: "/"}} },
		func(s *Spec) { s.Volumes = []Volume{{Name: "d", Path: "/a"}, {Name: "d", Path: "/b"}} },
		func(s *Spec) { s.BindReadOnly = []Bind{{Source: "/a:b", Target: "/x"}} },
		func(s *Spec) { s.NetUp = []string{"onionpod", "net-up"} },
	}
	for i, mutate := range bad {
		s := blogSpec()
		mutate(&s)
		if err := s.Validate(); !errors.Is(err, ErrBadInput) {
			t.Errorf("case %d: Validate() = %v, want ErrBadInput", i, err)
		}
	}
	if err := blogSpec().Validate(); err != nil {
		t.Errorf("valid spec: %v", err)
	}
	if _, err := (HostService{Name: "pod-x", ExecStart: []string{"/bin/true"}}).Unit(); !errors.Is(err, ErrBadInput) {
		t.Errorf("host service named pod-x accepted: %v", err)
	}
}

func TestMergeEnv(t *testing.T) {
	got := MergeEnv([]string{"PATH=/bin", "A=1", "bad"}, []string{"A=2", "B=3"})
	if strings.Join(got, " ") != "PATH=/bin A=2 B=3" {
		t.Errorf("MergeEnv = %q", got)
	}
}

func TestServeStatic(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "docs"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"index.html": "home", "docs/a.txt": "a", "docs/index.html": "docs"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	// An index that cannot be opened (as one the pod's user may not read): still no listing.
	if err := os.Mkdir(filepath.Join(dir, "broken"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nowhere", filepath.Join(dir, "broken", "index.html")); err != nil {
		t.Fatal(err)
	}
	site, err := openSite(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer site.Close()
	srv := httptest.NewServer(staticHandler(site))
	defer srv.Close()
	cases := map[string]struct {
		code int
		body string
	}{
		"/":                 {200, "home"},
		"/docs/":            {200, "docs"},
		"/docs/a.txt":       {200, "a"},
		"/empty/":           {404, ""},
		"/broken/":          {404, ""},
		"/../../etc/passwd": {404, ""},
		"/nothere":          {404, ""},
	}
	for path, want := range cases {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want.code || want.code == 200 && string(b) != want.body {
			t.Errorf("GET %s = %d %q, want %d %q", path, resp.StatusCode, b, want.code, want.body)
		}
	}
	resp, err := http.Post(srv.URL+"/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST = %d", resp.StatusCode)
	}

	// ServeStatic itself returns when its context ends; a missing directory is bad input.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeStatic(ctx, dir, "127.0.0.1:0") }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ServeStatic after cancel: %v", err)
	}
	if err := ServeStatic(context.Background(), filepath.Join(dir, "missing"), "127.0.0.1:0"); !errors.Is(err, ErrBadInput) {
		t.Errorf("ServeStatic(missing dir) = %v, want ErrBadInput", err)
	}
	if _, err := (&ImageStore{Dir: t.TempDir()}).StaticSpec("site", dir, "/etc/passwd", 80); !errors.Is(err, ErrBadInput) {
		t.Errorf("StaticSpec with a binary that is no ELF binary = %v, want ErrBadInput", err)
	}
}
