package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/configs"
	"github.com/onionpod/onionpod/internal/errkind"
)

// TestMain lets the testscripts run "onionpod" as a real command (this test binary, re-executed).
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"onionpod": func() { os.Exit(Main(os.Args[1:])) },
	})
}

// TestScripts runs the CLI end to end as a user would (testdata/script/*.txtar): exit codes,
// messages, and what lands on disk.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(e *testscript.Env) error {
			// Configs in the scripts may say $WORK: make it the script's real work dir.
			cfg := filepath.Join(e.WorkDir, "onionpod.toml")
			if data, err := os.ReadFile(cfg); err == nil {
				os.WriteFile(cfg, []byte(strings.ReplaceAll(string(data), "$WORK", e.WorkDir)), 0o644)
			}
			e.Setenv("ONIONPOD_CONFIG", cfg)
			return nil
		},
		RequireExplicitExec: true,
		Condition: func(cond string) (bool, error) {
			if cond == "root" {
				return os.Geteuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
	})
}

func TestExitCodes(t *testing.T) {
	cases := []struct {
		args []string
		want int
	}{
		{[]string{"version"}, 0},
		{[]string{"run", "Blog_1", "--image", "x"}, 2},
		{[]string{"status", "-bad-"}, 2},
		{[]string{"nope"}, 2},
		{[]string{"ls", "--nope"}, 2},
		{[]string{"ls", "extra"}, 2},
		{[]string{"config", "check", "testdata/missing.toml"}, 1},
		// Bad input is refused before the daemon is asked (none runs here): exit 2, not 1.
		{[]string{"run", "blog", "--image", "Registry.example/UPPER:1"}, 2},
		{[]string{"run", "blog", "--image", "r.example/blog:1", "--port", "http"}, 2},
		{[]string{"expose", "blog", "--image", "r.example/blog:1", "--port", "0"}, 2},
		{[]string{"run", "blog", "--static", "/nonexistent/site"}, 2},
		{[]string{"run", "blog", "--image", "r.example/blog:1", "--volume", "data"}, 2},
		{[]string{"run", "blog", "--image", "r.example/blog:1", "--env", "NOVALUE"}, 2},
		{[]string{"run", "blog", "--image", "x", "--static", "/tmp"}, 2},
		{[]string{"run", "blog", "--image", "r.example/blog:1", "--unset-env", "A=B"}, 2},
		{[]string{"update"}, 2},
		{[]string{"update", "blog", "--all"}, 2},
		{[]string{"update", "blog", "--auto"}, 2},
		{[]string{"update", "Blog_1"}, 2},
		{[]string{"update", "blog", "--image", "Registry.example/UPPER:1"}, 2},
		{[]string{"update", "blog", "--container", "-x-"}, 2},
		{[]string{"update", "blog", "--grace", "0s"}, 2},
		{[]string{"rollback"}, 2},
		{[]string{"rollback", "Blog_1"}, 2},
		{[]string{"backup", "blog"}, 2},
		{[]string{"backup", "-o", "x.backup"}, 2},
		{[]string{"backup", "Blog_1", "-o", "x.backup"}, 2},
		{[]string{"backup", "blog", "-o", "x.backup", "--recipient", "not-a-key"}, 2},
		{[]string{"restore"}, 2},
		{[]string{"restore", "/nonexistent/backup"}, 2},
	}
	for _, c := range cases {
		var out, errOut nopWriter
		if got := Run(context.Background(), c.args, IO{Out: &out, Err: &errOut}); got != c.want {
			t.Errorf("onionpod %v: exit %d, want %d", c.args, got, c.want)
		}
	}
}

// TestOneBadInputKind: the exit code is 2 for any error of errkind's BadInput kind, 1 for a
// conflict or another failure, whatever package it comes from.
func TestOneBadInputKind(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{errkind.BadInputf("genvalue: field %q: control character", "x"), exitBadInput},
		{fmt.Errorf("api: %w", api.ErrBadInput), exitBadInput},
		{configs.ErrInvalid, exitBadInput},
		{errkind.Conflictf("changed"), exitFailed},
		{errkind.NotFoundf("no such app"), exitFailed},
		{errors.New("boom"), exitFailed},
	}
	for _, c := range cases {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

type nopWriter struct{}

func (*nopWriter) Write(p []byte) (int, error) { return len(p), nil }
