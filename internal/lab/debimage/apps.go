package debimage

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
)

// The test apps' references.
const (
	PostgresRef = "onionpod.test/postgres:15"
	NotesRepo   = "onionpod.test/notes"
)

// The notes releases the tests use: two good ones and a broken one (its health check fails).
const (
	NotesV1     = "1"
	NotesV2     = "2"
	NotesBroken = "3-broken"
)

// The PostgreSQL image's paths.
const (
	// PostgresVolume is where the image expects its volume: the data directory is a
	// subdirectory (PGDATA, PostgresData), so the volume's own mode never matters.
	PostgresVolume = "/var/lib/postgresql"
	PostgresData   = "/var/lib/postgresql/data"
	// PostgresDump writes a SQL dump of POSTGRES_DB to stdout: the backup hook.
	PostgresDump = "/usr/local/bin/pg-dump"
	// PostgresRestore applies such a dump, read on stdin, in one transaction.
	PostgresRestore = "/usr/local/bin/pg-restore"
	// PostgresPort is the TCP port it listens on, on 127.0.0.1.
	PostgresPort = 5432
)

// NotesPort is the notes app's HTTP port.
const NotesPort = 8080

//go:embed postgres/*.sh
var postgresScripts embed.FS

// Postgres is the recipe of a PostgreSQL 15 image from Debian's postgresql-15 (bookworm): only
// the packages it needs (extract variant; no documentation, no LLVM JIT, no Perl), an entrypoint
// that initialises the data directory in the volume when empty and runs postgres as whatever
// unprivileged uid it is given (a systemd dynamic user has no passwd entry in the image:
// libnss-wrapper gives it one from a file in /tmp), listening on 127.0.0.1:5432 only, and the
// backup hooks PostgresDump and PostgresRestore.
func Postgres() Recipe {
	script := func(name string) []byte {
		b, err := fs.ReadFile(postgresScripts, "postgres/"+name)
		if err != nil {
			panic("debimage: embedded " + name + ": " + err.Error())
		}
		return b
	}
	return Recipe{
		Ref: PostgresRef,
		Debian: &Debian{
			Suite:    "bookworm",
			Packages: []string{"postgresql-15", "libnss-wrapper", "dash", "coreutils"},
			Exclude: []string{
				"/usr/share/doc", "/usr/share/man", "/usr/share/info", "/usr/share/lintian",
				"/usr/share/locale", "/usr/share/i18n", "/usr/share/bug", "/usr/share/perl",
				"/usr/share/perl5", "/usr/lib/*/perl", "/usr/lib/*/perl5", "/usr/lib/*/perl-base",
				"/usr/bin/perl*", "/usr/lib/*/libperl*", "/usr/lib/*/libLLVM*", "/usr/lib/*/libz3*",
				"/usr/lib/postgresql/15/lib/bitcode", "/usr/lib/postgresql/15/lib/llvmjit*",
				"/usr/share/postgresql-common", "/var/cache/apt", "/var/lib/apt/lists",
			},
		},
		Files: []File{
			{Path: "/bin/sh", Mode: fs.ModeSymlink, Data: []byte("dash")},
			{Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")},
			{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
			{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
			// Owned by 999 so `podman run --user 999` finds a writable volume; onionpod mounts its
			// own volume (owned by the pod's dynamic user) over it.
			{Path: PostgresVolume, Mode: fs.ModeDir | 0o755, UID: 999, GID: 999},
			{Path: "/usr/local/lib/onionpod-postgres/common.sh", Mode: 0o644, Data: script("common.sh")},
			{Path: "/usr/local/bin/postgres-entrypoint", Mode: 0o755, Data: script("entrypoint.sh")},
			{Path: PostgresDump, Mode: 0o755, Data: script("dump.sh")},
			{Path: PostgresRestore, Mode: 0o755, Data: script("restore.sh")},
		},
		Config: Config{
			Entrypoint: []string{"/usr/local/bin/postgres-entrypoint"},
			Env: []string{
				"PATH=/usr/local/bin:/usr/lib/postgresql/15/bin:/usr/bin:/bin",
				"PGDATA=" + PostgresData,
				"LANG=C.UTF-8",
			},
			User:         "999:999",
			ExposedPorts: []string{"5432/tcp"},
			Volumes:      []string{PostgresVolume},
			StopSignal:   "SIGINT", // fast shutdown (SIGTERM waits for every client to leave)
		},
	}
}

// Notes is the recipe of a notes image: the static binary of e2e/testapps/notes alone, with
// NOTES_VERSION=version in its environment; broken adds NOTES_BROKEN=1 (its health check then
// always fails). Tagged NotesRepo:version.
func Notes(binary []byte, version string, broken bool) Recipe {
	env := []string{"NOTES_VERSION=" + version, "LISTEN=:8080"}
	if broken {
		env = append(env, "NOTES_BROKEN=1")
	}
	return Recipe{
		Ref: NotesRepo + ":" + version,
		Files: []File{
			{Path: "/notes", Mode: 0o755, Data: binary},
			{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		},
		Config: Config{
			Entrypoint:   []string{"/notes"},
			Env:          env,
			User:         "65534:65534",
			ExposedPorts: []string{"8080/tcp"},
			StopSignal:   "SIGTERM",
		},
	}
}

// NotesPackage is the notes app's Go package, relative to the module's root.
const NotesPackage = "./e2e/testapps/notes"

// GoBinary builds the Go main package pkg of the module in moduleDir as a static binary
// (CGO_ENABLED=0, -trimpath, stripped: the same source gives the same bytes, so the images'
// cache keys stay the same) with the go command in PATH, and returns it.
func GoBinary(ctx context.Context, moduleDir, pkg string) ([]byte, error) {
	if _, err := exec.LookPath("go"); err != nil {
		return nil, fmt.Errorf("debimage: %w: the go command: %w", ErrUnavailable, err)
	}
	tmp, err := os.MkdirTemp("", "debimage-go-")
	if err != nil {
		return nil, fmt.Errorf("debimage: %w", err)
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "bin")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("debimage: go build %s: %w: %s", pkg, err, tail(b, 2000))
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("debimage: %w", err)
	}
	return b, nil
}

// Apps are the test apps' archives.
type Apps struct {
	Postgres    Result
	NotesV1     Result
	NotesV2     Result
	NotesBroken Result
}

// Apps builds (or finds in the cache) the PostgreSQL image and the three notes images, the notes
// binary built from moduleDir (the onionpod module's root).
func (b *Builder) Apps(ctx context.Context, moduleDir string) (Apps, error) {
	var apps Apps
	bin, err := GoBinary(ctx, moduleDir, NotesPackage)
	if err != nil {
		return apps, err
	}
	for _, x := range []struct {
		res    *Result
		recipe Recipe
	}{
		{&apps.NotesV1, Notes(bin, NotesV1, false)},
		{&apps.NotesV2, Notes(bin, NotesV2, false)},
		{&apps.NotesBroken, Notes(bin, NotesBroken, true)},
		{&apps.Postgres, Postgres()},
	} {
		if *x.res, err = b.Build(ctx, x.recipe); err != nil {
			return apps, err
		}
	}
	return apps, nil
}
