package store

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/pods"
)

// TestSchema1RecordsMigrate reads records of schema 1 (one image per app; testdata/schema1, as
// onionpod wrote them before apps had containers): each is an app of one container named like
// the app, with the image, source, environment, volumes and ports of the old record (an uploaded
// image's ID is also what runs), nothing else changed. A damaged record's copy of schema 1 still
// says what the app was. Written again, a record is of schema 2 and reads back the same.
func TestSchema1RecordsMigrate(t *testing.T) {
	s, _ := Open(t.TempDir())
	for _, name := range []string{"blog", "wiki", "site"} {
		data, err := os.ReadFile(filepath.Join("testdata", "schema1", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(s.Dir(), "apps", name+".json"), data, 0o600)
		os.WriteFile(filepath.Join(s.Dir(), "apps", ".last", name+".json"), data, 0o600)
	}
	day := func(d, h, m int) time.Time { return time.Date(2026, 11, d, h, m, 0, 0, time.UTC) }
	want := map[string]App{
		"blog": {Name: "blog", Containers: []Container{{Name: "blog", Image: "registry.example/blog:1",
			Env: []string{"GREETING=hello", "DB=/data/db"}, Volumes: []Volume{{Name: "data", Path: "/data"}}}},
			Ports: []Port{{Public: 80, Target: 8080}}, Onion: true, IPv4: true, Generation: 7,
			Created: day(1, 10, 0), Updated: day(20, 12, 30)},
		"wiki": {Name: "wiki", Containers: []Container{{Name: "wiki",
			Image:   "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			ImageID: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			Source:  "/home/me/wiki.tar"}},
			Ports: []Port{{Public: 80, Target: 3000}}, OnionOnly: true, Stopped: true, Generation: 2,
			Created: day(1, 10, 0), Updated: day(2, 10, 0)},
		"site": {Name: "site", Containers: []Container{{Name: "site", Static: "/srv/site"}},
			Ports: []Port{{Public: 80, Target: 8080}}, Onion: true, Generation: 1,
			Created: time.Date(2026, 10, 1, 10, 0, 0, 0, time.UTC), Updated: time.Date(2026, 10, 1, 10, 0, 0, 0, time.UTC)},
	}
	apps, held, err := s.List()
	if err != nil || len(held) != 0 || len(apps) != 3 {
		t.Fatalf("List = %v, %v, %v", apps, held, err)
	}
	for _, got := range apps {
		if w := want[got.Name]; !reflect.DeepEqual(got, w) {
			t.Errorf("%s reads as\n%+v\nwant\n%+v", got.Name, got, w)
		}
		if c := got.PortContainer(got.Ports[0]); c != got.Name {
			t.Errorf("%s: its port is served by %q", got.Name, c)
		}
	}

	// A damaged record whose copy is of schema 1: the copy says what the app was.
	os.WriteFile(filepath.Join(s.Dir(), "apps", "blog.json"), []byte("{garbage"), 0o600)
	_, err = s.Get("blog")
	var h *Held
	if !errors.As(err, &h) || h.Last == nil || !reflect.DeepEqual(*h.Last, want["blog"]) {
		t.Fatalf("Get(blog) with a damaged record = %v (last %+v)", err, h)
	}

	// Written again: schema 2, the same app.
	ctx := context.Background()
	err = s.Update(ctx, func(tx *Tx) error { return tx.Put(want["blog"]) })
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(s.Dir(), "apps", "blog.json"))
	var raw struct {
		Schema int            `json:"schema"`
		App    map[string]any `json:"app"`
	}
	if err := json.Unmarshal(data, &raw); err != nil || raw.Schema != 2 || raw.App["image"] != nil || raw.App["containers"] == nil {
		t.Errorf("written again: schema %d, %v\n%s", raw.Schema, err, data)
	}
	if got, err := s.Get("blog"); err != nil || !reflect.DeepEqual(got, want["blog"]) {
		t.Errorf("read again: %+v, %v", got, err)
	}
}

func goodTrial() *Trial {
	return &Trial{Deadline: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), Grace: 2 * time.Minute,
		Back: ImageFields{Image: "onionpod.test/notes:1", ImageID: "sha256:" + strings.Repeat("1", 64)}}
}

// onTrial puts the app's web container on trial (valid) and returns its trial.
func onTrial(a *App) *Trial {
	c := &a.Containers[1]
	c.ImageID, c.Trial = "sha256:"+strings.Repeat("2", 64), goodTrial()
	return c.Trial
}

// TestTrialIsStored: a container's trial is written with its record and read back the same.
func TestTrialIsStored(t *testing.T) {
	s, _ := Open(t.TempDir())
	a := notes()
	onTrial(&a)
	if err := s.Update(context.Background(), func(tx *Tx) error { return tx.Put(a) }); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get("notes")
	if err != nil || !reflect.DeepEqual(got.Containers[1].Trial, a.Containers[1].Trial) || got.Containers[0].Trial != nil {
		t.Fatalf("read back: %+v, %v", got.Containers, err)
	}
	data, _ := os.ReadFile(filepath.Join(s.Dir(), "apps", "notes.json"))
	if !strings.Contains(string(data), `"deadline": "2026-12-01T10:00:00Z"`) {
		t.Errorf("the record:\n%s", data)
	}
}

// notes is an app of two containers that passes Validate.
func notes() App {
	return App{
		Name: "notes",
		Containers: []Container{
			{Name: "db", Image: "onionpod.test/postgres:15", Env: []string{"POSTGRES_PASSWORD=x"},
				Volumes: []Volume{{Name: "pgdata", Path: "/var/lib/postgresql"}},
				Health:  &Health{Command: []string{"pg_isready", "-h", "127.0.0.1"}, Interval: time.Second},
				Limits:  pods.Limits{Memory: "512M"}},
			{Name: "web", Image: "onionpod.test/notes:1", After: []string{"db"},
				Health: &Health{HTTP: "/healthz"}},
		},
		Ports:  []Port{{Public: 80, Target: 8080, Container: "web"}},
		Limits: pods.Limits{CPU: "100%"},
		Onion:  true,
	}
}

func TestValidateContainers(t *testing.T) {
	if err := notes().Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		mutate func(*App)
		want   string
	}{
		"no container named by a port": {func(a *App) { a.Ports[0].Container = "" }, `port 80: name the container that serves it (the app has 2)`},
		"an unknown container":         {func(a *App) { a.Ports[0].Container = "nosuch" }, `port 80: no container "nosuch"`},
		"two of a name":                {func(a *App) { a.Containers[1].Name = "db" }, `container "db" given twice`},
		"a bad name":                   {func(a *App) { a.Containers[1].Name = "Web_1" }, `container name "Web_1"`},
		"after an unknown one":         {func(a *App) { a.Containers[1].After = []string{"cache"} }, `container "web": after "cache": another container of the app`},
		"after itself":                 {func(a *App) { a.Containers[1].After = []string{"web"} }, `after "web"`},
		"a circle": {func(a *App) { a.Containers[0].After = []string{"web"} },
			`containers start after each other in a circle: db -> web -> db`},
		"own user shares a volume": {func(a *App) {
			a.Containers[1].User = UserOwn
			a.Containers[1].Volumes = []Volume{{Name: "pgdata", Path: "/data"}}
		}, `volume "pgdata": container "web" runs as its own user, so it shares no volume`},
		"a bad user":           {func(a *App) { a.Containers[0].User = "root" }, `container "db": user "root"`},
		"two checks":           {func(a *App) { a.Containers[1].Health.TCP = true }, `health: exactly one of http, tcp or command`},
		"no check":             {func(a *App) { a.Containers[1].Health = &Health{Port: 80} }, `health: exactly one of http, tcp or command`},
		"a path with no slash": {func(a *App) { a.Containers[1].Health.HTTP = "healthz" }, `health: http "healthz": a path such as /healthz`},
		"a command with a port": {func(a *App) { a.Containers[0].Health.Port = 5432 },
			`health: a command check has no port`},
		"a tiny interval":          {func(a *App) { a.Containers[0].Health.Interval = time.Millisecond }, `health: interval 1ms: from 100ms to 24h`},
		"retries":                  {func(a *App) { a.Containers[0].Health.Retries = -1 }, `health: retries -1`},
		"memory":                   {func(a *App) { a.Containers[0].Limits.Memory = "half" }, `container "db": limits: memory "half"`},
		"app cpu":                  {func(a *App) { a.Limits.CPU = "2" }, `limits: cpu "2"`},
		"image id":                 {func(a *App) { a.Containers[0].ImageID = "sha256:abc" }, `image_id "sha256:abc"`},
		"image and static":         {func(a *App) { a.Containers[0].Static = "/srv" }, `needs exactly one of an image or a static directory`},
		"a control character":      {func(a *App) { a.Containers[0].Command = []string{"a\rb"} }, `command[0]: control character U+000D`},
		"a volume mounted twice":   {func(a *App) { a.Containers[0].Volumes = append(a.Containers[0].Volumes, Volume{"pgdata", "/x"}) }, `one mount per volume and per path`},
		"an empty entrypoint":      {func(a *App) { a.Containers[0].Entrypoint = []string{""} }, `entrypoint: an empty program name`},
		"too many containers":      {func(a *App) { a.Containers = slices.Repeat(a.Containers[:1], MaxContainers+1) }, `17 containers: at most 16`},
		"an onion without a port":  {func(a *App) { a.Ports, a.Containers[1].Health = nil, nil }, `an onion service needs at least one --port`},
		"an HTTP check of no port": {func(a *App) { a.Ports[0].Container = "db" }, `container "web": health: the check needs a port (the container serves none)`},
		"a trial of no image":      {func(a *App) { a.Containers[0].Trial = goodTrial() }, `trial: only a container running a resolved image is updated`},
		"a trial of no deadline":   {func(a *App) { onTrial(a).Deadline = time.Time{} }, `trial: no deadline`},
		"a trial of no grace":      {func(a *App) { onTrial(a).Grace = 0 }, `trial: grace 0s`},
		"a trial of no way back":   {func(a *App) { onTrial(a).Back.ImageID = "" }, `trial: back: the image to go back to is needed`},
		"a trial back to a bad ID": {func(a *App) { onTrial(a).Back.PreviousImageID = "sha256:x" },
			`container "web": trial: back: previous_image_id "sha256:x"`},
		"a trial back to a bad reference": {func(a *App) { onTrial(a).Back.Image = "a b" }, `trial: back: "a b" is not an image reference`},
		"a reason of two lines":           {func(a *App) { a.Containers[1].RejectedReason = "a\nb" }, `rejected_reason: one line of at most 1024 bytes`},
	}
	for name, c := range cases {
		a := notes()
		c.mutate(&a)
		err := a.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), `app "notes": `) {
			t.Errorf("%s: Validate = %v\nwant bad input with %q", name, err, c.want)
		}
	}
	// One container: its ports need not name it.
	one := notes()
	one.Containers = one.Containers[1:2]
	one.Containers[0].After = nil
	one.Ports[0].Container = ""
	if err := one.Validate(); err != nil || one.PortContainer(one.Ports[0]) != "web" {
		t.Errorf("one container, a port naming none: %v", err)
	}
}
