package appfile

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"

	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
)

var update = flag.Bool("update", false, "rewrite the golden sections of testdata")

// golden compares got with section name of the txtar archive at file (rewriting it with -update).
func golden(t *testing.T, file string, ar *txtar.Archive, name, got string) {
	t.Helper()
	for i, f := range ar.Files {
		if f.Name == name {
			if *update {
				ar.Files[i].Data = []byte(got)
				os.WriteFile(file, txtar.Format(ar), 0o644)
				return
			}
			if string(f.Data) != got {
				t.Errorf("%s differs\n--- got\n%s--- want\n%s", name, got, f.Data)
			}
			return
		}
	}
	if !*update {
		t.Fatalf("no %s section (run with -update)", name)
	}
	ar.Files = append(ar.Files, txtar.File{Name: name, Data: []byte(got)})
	os.WriteFile(file, txtar.Format(ar), 0o644)
}

func section(t *testing.T, ar *txtar.Archive, name string) []byte {
	t.Helper()
	for _, f := range ar.Files {
		if f.Name == name {
			return f.Data
		}
	}
	t.Fatalf("no %s section", name)
	return nil
}

// TestParseErrorsGolden: each testdata/errors/*.txtar holds an app file with a mistake, and the
// error Parse gives (bad input, naming the key or value and its line).
func TestParseErrorsGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/errors/*.txtar")
	if len(files) < 20 {
		t.Fatalf("only %d cases", len(files))
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(section(t, ar, "app.toml"), "app.toml", "/srv/apps")
			if !errors.Is(err, errkind.BadInput) {
				t.Fatalf("Parse = %v, want bad input", err)
			}
			golden(t, file, ar, "error", err.Error()+"\n")
		})
	}
}

// TestParseAndFormatGolden: each testdata/apps/*.txtar holds an app file, the record it reads as
// (record.json) and the file export writes of that record (export.toml), which reads back as the
// same record.
func TestParseAndFormatGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/apps/*.txtar")
	if len(files) == 0 {
		t.Fatal("no cases")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "notes-1.tar"), []byte("an archive"), 0o644)
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			app, err := Parse(section(t, ar, "app.toml"), "app.toml", dir)
			if err != nil {
				t.Fatal(err)
			}
			for c, p := range app.Local { // as the CLI does once it has sent the archive
				if p != filepath.Join(dir, "notes-1.tar") {
					t.Errorf("container %s: local image %s", c, p)
				}
				for i := range app.Containers {
					if app.Containers[i].Name == c {
						app.Containers[i].Image = "sha256:" + strings.Repeat("ab", 32)
						app.Containers[i].Source = "/srv/apps/notes-1.tar"
					}
				}
			}
			if err := app.Validate(); err != nil {
				t.Fatalf("the app read does not validate: %v", err)
			}
			record, _ := json.MarshalIndent(app.App, "", "  ")
			golden(t, file, ar, "record.json", string(record)+"\n")
			exported := Format(app.App)
			golden(t, file, ar, "export.toml", string(exported))
			again, err := Parse(exported, "export.toml", dir)
			if err != nil {
				t.Fatalf("the export does not read back: %v", err)
			}
			if !Same(again.App, app.App) || len(again.Local) != 0 {
				t.Errorf("the export reads back as another app:\n%s", Diff(app.App, again.App))
			}
		})
	}
}

func TestDiff(t *testing.T) {
	data, _ := os.ReadFile("testdata/apps/01-notes.txtar")
	ar := txtar.Parse(data)
	app, err := Parse(section(t, ar, "app.toml"), "app.toml", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	changed := app.App
	changed.Containers = append([]store.Container(nil), app.Containers...)
	changed.Containers[1].Image = "onionpod.test/notes:2"
	changed.IPv4 = true
	changed.Generation, changed.Containers[1].ImageID = 7, "sha256:"+strings.Repeat("cd", 32) // the daemon's: not in the file
	got := Diff(app.App, changed)
	want := `  onion = true
  onion_only = false
- ipv4 = false
+ ipv4 = true
  
  [limits]
  ...
  [[containers]]
  name = 'web'
- image = 'onionpod.test/notes:1'
+ image = 'onionpod.test/notes:2'
  env = ['DATABASE_URL=postgres://notes:s3cret@127.0.0.1:5432/notes?sslmode=disable']
  ports = ['80:8080']
  ...
`
	if got != want {
		t.Errorf("Diff:\n%s\nwant\n%s", got, want)
	}
	if Same(app.App, changed) || !Same(app.App, app.App) {
		t.Error("Same")
	}
	changed = app.App
	changed.Generation = 9
	if d := Diff(app.App, changed); d != "" {
		t.Errorf("a change of the daemon's fields only: %q", d)
	}
	if d := Diff(store.App{}, app.App); !strings.HasPrefix(d, "+ version = 1\n+ name = 'notes'\n") {
		t.Errorf("a new app's diff:\n%s", d)
	}
}

// TestReadDir: a directory's app files are its *.toml files, sorted; none is bad input.
func TestReadDir(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b.toml", "a.toml", "notes.txt"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o644)
	}
	os.Mkdir(filepath.Join(dir, "c.toml"), 0o755)
	got, err := ReadDir(dir)
	if err != nil || !reflect.DeepEqual(got, []string{filepath.Join(dir, "a.toml"), filepath.Join(dir, "b.toml")}) {
		t.Errorf("ReadDir = %v, %v", got, err)
	}
	if _, err := ReadDir(t.TempDir()); !errors.Is(err, errkind.BadInput) {
		t.Errorf("an empty directory: %v", err)
	}
}

// TestREADMEExample: the app file in the README reads as the app it describes.
func TestREADMEExample(t *testing.T) {
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(readme), "## Apps of several containers")
	_, block, ok := strings.Cut(rest, "```toml\n")
	block, _, _ = strings.Cut(block, "```")
	if !ok {
		t.Fatal("no app file in the README")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "postgres.tar"), nil, 0o644)
	app, err := Parse([]byte(block), "README.md", dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(app.Containers) != 2 || app.Local["db"] == "" || app.PortContainer(app.Ports[0]) != "web" || app.Containers[1].Limits.Memory != "512M" {
		t.Errorf("the README's app: %+v", app)
	}
}
