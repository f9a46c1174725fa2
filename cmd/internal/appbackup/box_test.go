package appbackup

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"filippo.io/age"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/onion"
)

// testBox is a box for the engine's tests: app records in a map (a record is the JSON of
// testRecord: the volumes its app declares), volumes in directories under dir, the onion key
// store in dir/onion, dumps and loads of "dump" volumes as plain files. The file systems, the
// key store and age are real.
type testBox struct {
	dir  string
	keys OnionKeys

	mu       sync.Mutex
	records  map[string][]byte
	events   []string // quiesce APP, resume APP, commit APP, undo APP, load APP/VOL
	dumps    map[string][]byte
	loaded   map[string][]byte
	images   map[string][]byte // the box's image store: an image's ID is the sha256 of its bytes
	failLoad error
	failOn   string // app whose Commit fails
}

type testRecord struct {
	Image   string   `json:"image"`
	Volumes []Volume `json:"volumes"`
	Images  []string `json:"images,omitempty"` // images sent to the box that it runs
}

func newTestBox(t *testing.T) *testBox {
	t.Helper()
	dir := t.TempDir()
	// A box has its key store's directory (made on the first key).
	if err := os.Mkdir(filepath.Join(dir, "onion"), 0o700); err != nil {
		t.Fatal(err)
	}
	return &testBox{
		dir:     dir,
		keys:    OnionKeys{Store: &onion.KeyStore{Dir: filepath.Join(dir, "onion")}},
		records: map[string][]byte{},
		dumps:   map[string][]byte{},
		loaded:  map[string][]byte{},
		images:  map[string][]byte{},
	}
}

func (b *testBox) volumeDir(app, vol string) string {
	return filepath.Join(b.dir, "private", "onionpod", app, vol)
}

// addApp creates an app: its record, an onion key with clients, its volumes' directories.
func (b *testBox) addApp(t *testing.T, app string, vols []Volume, clients ...string) string {
	t.Helper()
	rec, err := json.Marshal(testRecord{Image: "registry.example/" + app + ":1", Volumes: vols})
	if err != nil {
		t.Fatal(err)
	}
	b.records[app] = rec
	k, _, err := b.keys.Store.Ensure(app)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		if _, err := b.keys.Store.AddClient(app, c); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range vols {
		if err := os.MkdirAll(b.volumeDir(app, v.Name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return k.Address()
}

func (b *testBox) event(format string, args ...any) {
	b.mu.Lock()
	b.events = append(b.events, fmt.Sprintf(format, args...))
	b.mu.Unlock()
}

func (b *testBox) Describe(_ context.Context, app string) (App, error) {
	rec, ok := b.records[app]
	if !ok {
		return App{}, fmt.Errorf("app %q: %w", app, errkind.NotFound)
	}
	var r testRecord
	if err := json.Unmarshal(rec, &r); err != nil {
		return App{}, err
	}
	a := App{Name: app, Record: rec, Images: r.Images}
	for _, v := range r.Volumes {
		v.Dir = b.volumeDir(app, v.Name)
		a.Volumes = append(a.Volumes, v)
	}
	return a, nil
}

func (b *testBox) Quiesce(_ context.Context, app string) (func(context.Context) error, error) {
	b.event("quiesce %s", app)
	return func(context.Context) error { b.event("resume %s", app); return nil }, nil
}

func (b *testBox) Dump(_ context.Context, app, vol string, w io.Writer) error {
	_, err := w.Write(b.dumps[app+"/"+vol])
	return err
}

func (b *testBox) Check(ctx context.Context, rec App, force bool) (App, error) {
	var r testRecord
	dec := json.NewDecoder(bytes.NewReader(rec.Record))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return App{}, errkind.BadInputf("record: %v", err)
	}
	_, exists := b.records[rec.Name]
	if exists && !force {
		return App{}, fmt.Errorf("app %q exists: %w", rec.Name, errkind.Conflict)
	}
	a := App{Name: rec.Name, Record: rec.Record, Replaces: exists, ImageDir: filepath.Join(b.dir, "images", "tmp")}
	for _, id := range r.Images {
		_, have := b.images[id]
		switch {
		case !have && slices.Contains(rec.Images, id):
			a.Images = append(a.Images, id)
		case !have:
			return App{}, fmt.Errorf("image %s: %w", id, errkind.NotFound)
		}
	}
	for _, v := range r.Volumes {
		v.Dir = b.volumeDir(rec.Name, v.Name)
		a.Volumes = append(a.Volumes, v)
	}
	return a, nil
}

func (b *testBox) Commit(_ context.Context, rec App) (func(context.Context) error, error) {
	if b.failOn == rec.Name {
		return nil, errors.New("commit refused by the test")
	}
	old, had := b.records[rec.Name]
	b.records[rec.Name] = rec.Record
	b.event("commit %s", rec.Name)
	return func(context.Context) error {
		b.event("undo %s", rec.Name)
		if had {
			b.records[rec.Name] = old
		} else {
			delete(b.records, rec.Name)
		}
		return nil
	}, nil
}

func (b *testBox) Load(_ context.Context, app, vol string, r io.Reader) error {
	b.event("load %s/%s", app, vol)
	if b.failLoad != nil {
		return b.failLoad
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	b.loaded[app+"/"+vol] = data
	return nil
}

func (b *testBox) WriteImage(_ context.Context, id string, w io.Writer) error {
	data, ok := b.images[id]
	if !ok {
		return fmt.Errorf("image %s: %w", id, errkind.NotFound)
	}
	_, err := w.Write(data)
	return err
}

func (b *testBox) LoadImage(_ context.Context, id string, r io.Reader) error {
	b.event("load image %s", id[:12])
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if sum := sha256.Sum256(data); id != "sha256:"+hex.EncodeToString(sum[:]) {
		return fmt.Errorf("image %s: the archive is another image", id)
	}
	b.images[id] = data
	return nil
}

// addImage puts an image of n random bytes in the box's image store and returns its ID.
func (b *testBox) addImage(t *testing.T, n int) string {
	data := randomBytes(t, n)
	sum := sha256.Sum256(data)
	id := "sha256:" + hex.EncodeToString(sum[:])
	b.images[id] = data
	return id
}

// passphrase returns a fast recipient/identity pair (X25519; scrypt's work factor would slow
// every test) and a passphrase pair for the tests that are about passphrases.
func x25519(t testing.TB) (age.Recipient, age.Identity) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id.Recipient(), id
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// backup runs Backup of apps on b into a buffer.
func (b *testBox) backup(t *testing.T, r age.Recipient, apps ...string) ([]byte, []AppReport) {
	t.Helper()
	var buf bytes.Buffer
	reps, err := Backup(t.Context(), &buf, b, b.keys, apps, r)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), reps
}

// emptyBox is listTree of a new testBox.
var emptyBox = []string{".", "onion"}

// listTree lists every path under dir (relative), sorted: what a refused restore must not leave.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel)
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// noKeys is a key store without keys (the benchmark's app has no onion service).
type noKeys struct{}

func (noKeys) Backup(io.Writer, string) (string, error) { return "", errkind.NotFound }
func (noKeys) Restore(io.Reader, string, bool) (string, func() error, error) {
	return "", nil, errors.New("no keys here")
}
