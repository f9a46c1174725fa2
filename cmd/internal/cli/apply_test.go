package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/appfile"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
)

// fakeApps stands in for the daemon in apply's and export's unit tests: it keeps records with
// generations and conflicts, as the daemon does, and says every app runs.
type fakeApps struct {
	apps   map[string]store.App
	images map[string]bool
	calls  []string
}

func (f *fakeApps) App(_ context.Context, name string) (api.AppStatus, error) {
	a, ok := f.apps[name]
	if !ok {
		return api.AppStatus{}, errkind.NotFoundf("no such app")
	}
	return api.AppStatus{App: a, State: api.StateRunning}, nil
}

func (f *fakeApps) Put(_ context.Context, app store.App) (api.AppStatus, error) {
	f.calls = append(f.calls, "put "+app.Name)
	if err := app.Validate(); err != nil {
		return api.AppStatus{}, err
	}
	if app.Generation != f.apps[app.Name].Generation {
		return api.AppStatus{}, errkind.Conflictf("changed")
	}
	app.Generation++
	f.apps[app.Name] = app
	return api.AppStatus{App: app}, nil
}

func (f *fakeApps) Plan(_ context.Context, app store.App) (api.PlannedChange, error) {
	f.calls = append(f.calls, "plan "+app.Name)
	return api.PlannedChange{Plan: "converge " + app.Name + ":\n  write-unit     the app or its image changed\n"}, nil
}

func (f *fakeApps) Image(_ context.Context, id string) (api.ImageInfo, error) {
	if !f.images[id] {
		return api.ImageInfo{}, errkind.NotFoundf("no image")
	}
	return api.ImageInfo{ID: id}, nil
}

func (f *fakeApps) LoadImage(_ context.Context, r io.Reader) (api.ImageInfo, error) {
	f.calls = append(f.calls, "send image")
	io.Copy(io.Discard, r)
	return api.ImageInfo{}, errors.New("the fake takes no image")
}

func (f *fakeApps) Wait(_ context.Context, name, _ string, _ int64, _ time.Duration) (api.AppStatus, error) {
	return api.AppStatus{App: f.apps[name], State: api.StateRunning}, nil
}

// Update finds nothing new (the fake has no registry).
func (f *fakeApps) Update(_ context.Context, name string, req api.UpdateRequest) (api.UpdateResult, error) {
	f.calls = append(f.calls, "update "+name+" "+req.Container+" "+req.Image)
	return api.UpdateResult{App: name, Result: api.UpdateUpToDate, Status: api.AppStatus{App: f.apps[name], State: api.StateRunning}}, nil
}

const notesFile = `name = "notes"
onion = true
[[containers]]
name = "db"
image = "onionpod.test/postgres:15"
volumes = ["pgdata:/var/lib/postgresql"]
[containers.health]
command = ["pg_isready", "-h", "127.0.0.1"]
[[containers]]
name = "web"
image = "onionpod.test/notes:1"
ports = ["80:8080"]
after = ["db"]
`

func applyWith(t *testing.T, f *fakeApps, path string, dryRun bool) (string, error) {
	t.Helper()
	var out bytes.Buffer
	opts := &applyOptions{IO: IO{Out: &out, Err: io.Discard}, Ctx: context.Background(), Path: path, DryRun: dryRun,
		Client: func() (applyClient, error) { return f, nil }}
	err := runApply(opts)
	return out.String(), err
}

// TestApplyIsIdempotent: apply creates the app; a second apply of the same file changes nothing
// and says so; a dry run shows the difference and the daemon's plan and stores nothing; apply of
// an export changes nothing.
func TestApplyIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "notes.toml")
	os.WriteFile(file, []byte(notesFile), 0o644)
	f := &fakeApps{apps: map[string]store.App{}}
	out, err := applyWith(t, f, file, false)
	if err != nil || !strings.HasPrefix(out, "notes is new (generation 1):\n+ version = 1\n") || !strings.Contains(out, "notes is running") {
		t.Fatalf("first apply: %v\n%s", err, out)
	}
	// The daemon resolved the images meanwhile (its own fields: no change of the file).
	a := f.apps["notes"]
	a.Containers[0].ImageID = "sha256:" + strings.Repeat("1", 64)
	f.apps["notes"] = a
	out, err = applyWith(t, f, file, false)
	if err != nil || out != "notes: unchanged (generation 1)\n" {
		t.Errorf("second apply: %v\n%s", err, out)
	}

	os.WriteFile(file, []byte(strings.Replace(notesFile, "notes:1", "notes:2", 1)), 0o644)
	out, err = applyWith(t, f, file, true)
	want := "notes changes (dry run: nothing is changed):\n"
	if err != nil || !strings.HasPrefix(out, want) || !strings.Contains(out, "- image = 'onionpod.test/notes:1'\n+ image = 'onionpod.test/notes:2'\n") ||
		!strings.HasSuffix(out, "plan:\nconverge notes:\n  write-unit     the app or its image changed\n") {
		t.Errorf("dry run: %v\n%s", err, out)
	}
	if f.apps["notes"].Generation != 1 || slices.Contains(f.calls[1:], "put notes") {
		t.Errorf("a dry run stored something: %v", f.calls)
	}

	var exported bytes.Buffer
	err = runExport(&exportOptions{IO: IO{Out: &exported}, Ctx: context.Background(), App: "notes",
		Client: func() (exportClient, error) { return f, nil }})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(file, exported.Bytes(), 0o644)
	if out, err := applyWith(t, f, file, false); err != nil || out != "notes: unchanged (generation 1)\n" {
		t.Errorf("apply of the export: %v\n%s", err, out)
	}
	if !bytes.Equal(exported.Bytes(), appfile.Format(f.apps["notes"])) {
		t.Error("export is not the app's file")
	}
}

// TestApplyBadInput: a typo in one file of a directory is bad input naming the file, key and
// line, and nothing of any file is applied; two files of one app too.
func TestApplyBadInput(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a-notes.toml"), []byte(notesFile), 0o644)
	os.WriteFile(filepath.Join(dir, "b-blog.toml"), []byte("name = \"blog\"\n[[containers]]\nimage = \"r.example/blog:1\"\nprots = [\"80\"]\n"), 0o644)
	f := &fakeApps{apps: map[string]store.App{}}
	_, err := applyWith(t, f, dir, false)
	if !errors.Is(err, errkind.BadInput) || !strings.Contains(err.Error(), `b-blog.toml: line 4: unknown key "containers.prots"`) {
		t.Errorf("apply of a directory with a typo: %v", err)
	}
	if len(f.calls) != 0 {
		t.Errorf("something was applied: %v", f.calls)
	}
	os.WriteFile(filepath.Join(dir, "b-blog.toml"), []byte(notesFile), 0o644)
	if _, err := applyWith(t, f, dir, false); !errors.Is(err, errkind.BadInput) || !strings.Contains(err.Error(), `both describe app "notes"`) {
		t.Errorf("two files of one app: %v", err)
	}
	if code := Run(context.Background(), []string{"apply", "-f", filepath.Join(dir, "nope.toml")}, IO{Out: io.Discard, Err: io.Discard}); code != 2 {
		t.Errorf("apply of a missing file: exit %d", code)
	}
	if code := Run(context.Background(), []string{"apply"}, IO{Out: io.Discard, Err: io.Discard}); code != 2 {
		t.Errorf("apply without -f: exit %d", code)
	}
}
