package cli

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
)

var (
	idV1 = "sha256:" + strings.Repeat("1", 64)
	idV2 = "sha256:" + strings.Repeat("2", 64)
	idV3 = "sha256:" + strings.Repeat("3", 64)
)

// pinnedBlog is blog running a pinned image of its registry reference.
func pinnedBlog() store.App {
	app := blogApp
	app.Containers = []store.Container{{Name: "blog", Image: "registry.example/blog:1", ImageID: idV1}}
	return app
}

// TestRunResolvesTheImageAgain: `run --image` with the reference an existing app runs stores the
// change and then updates the container (the registry may name another image now); a new
// reference is not stored as such: the record keeps the running one, and the update takes the
// new one (health-checked, rolled back otherwise). Without --image nothing is resolved.
func TestRunResolvesTheImageAgain(t *testing.T) {
	for _, c := range []struct {
		name, image string
		flags       map[string]bool
		wantCalls   []string
	}{
		{"same reference", "registry.example/blog:1", map[string]bool{"image": true},
			[]string{"app blog", "put blog", "wait blog running 4", `update blog container="blog" image="" auto=false check=false`}},
		{"new reference", "registry.example/blog:2", map[string]bool{"image": true},
			[]string{"app blog", "put blog", "wait blog running 4", `update blog container="blog" image="registry.example/blog:2" auto=false check=false`}},
		{"no image", "", map[string]bool{"env": true},
			[]string{"app blog", "put blog", "wait blog running 4"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeDaemon(observedAt(pinnedBlog()))
			f.update = func(name string, req api.UpdateRequest) api.UpdateResult {
				return api.UpdateResult{App: name, Result: api.UpdateUpdated, Took: 1200 * time.Millisecond,
					Containers: []api.ContainerUpdate{{Name: "blog", Image: "registry.example/blog:2", From: idV1, To: idV2, Result: api.UpdateUpdated}}}
			}
			s, out, _ := streams(false)
			opts := &runOptions{IO: s, Ctx: t.Context(), Client: client[submitClient](f), App: "blog"}
			opts.Image, opts.Env, opts.Timeout, opts.Changed = c.image, []string{"A=1"}, time.Minute, c.flags
			if err := runRun(opts); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(f.calls, c.wantCalls) {
				t.Errorf("asked %q, want %q", f.calls, c.wantCalls)
			}
			if rec := f.apps["blog"].App.Containers[0]; rec.Image != "registry.example/blog:1" || rec.ImageID != idV1 {
				t.Errorf("the stored container %+v: the reference and image it runs change only through the update", rec)
			}
			if updated := strings.Contains(out.String(), "blog: updated, healthy in 1.20 s"); updated != (c.image != "") {
				t.Errorf("output:\n%s", out)
			}
		})
	}
}

// TestUpdateOutput: what update prints for each outcome, and its exit codes: a rollback fails
// (exit 1), up to date and skipped do not; --all updates the apps with registry images only.
func TestUpdateOutput(t *testing.T) {
	f := newFakeDaemon(observedAt(pinnedBlog()), observedAt(notesApp), observedAt(wikiApp))
	f.update = func(name string, req api.UpdateRequest) api.UpdateResult {
		switch {
		case req.Check:
			return api.UpdateResult{App: name, Result: api.UpdateAvailable,
				Containers: []api.ContainerUpdate{{Name: "blog", Image: "registry.example/blog:1", From: idV1, To: idV2, Result: api.UpdateAvailable}}}
		case req.Auto:
			return api.UpdateResult{App: name, Result: api.UpdateUpToDate,
				Containers: []api.ContainerUpdate{{Name: "blog", Image: "registry.example/blog:1", From: idV1, To: idV3, Result: api.UpdateSkipped,
					Reason: "an update to it was rolled back (it failed its health check); update by hand to try it again"}}}
		}
		return api.UpdateResult{App: name, Result: api.UpdateRolledBack, Took: 21 * time.Second,
			Reason:     "container blog is unhealthy: HTTP 500 Internal Server Error",
			Containers: []api.ContainerUpdate{{Name: "blog", Image: "registry.example/blog:1", From: idV1, To: idV3, Result: api.UpdateRolledBack}}}
	}
	run := func(opts updateOptions) (string, error) {
		s, out, _ := streams(false)
		opts.IO, opts.Ctx, opts.Client, opts.Grace = s, t.Context(), client[updateClient](f), time.Minute
		err := runUpdate(&opts)
		return out.String(), err
	}
	out, err := run(updateOptions{Apps: []string{"blog"}})
	if !errors.Is(err, errUpdateFailed) || exitCode(err) != exitFailed {
		t.Errorf("a rolled back update: %v (exit %d)", err, exitCode(err))
	}
	check, err := run(updateOptions{All: true, Check: true})
	if err != nil {
		t.Fatal(err)
	}
	auto, err := run(updateOptions{All: true, Auto: true})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "update.txt", out+"--- update --all --check\n"+check+"--- update --all --auto\n"+auto)
	for _, call := range f.calls {
		if strings.HasPrefix(call, "update notes") || strings.HasPrefix(call, "update wiki") {
			t.Errorf("--all updated an app without a registry image: %s", call)
		}
	}
}

// TestRollbackOutput: rollback prints the images put back; a rollback after which the app is
// not healthy fails.
func TestRollbackOutput(t *testing.T) {
	f := newFakeDaemon(observedAt(pinnedBlog()))
	healthy := true
	f.rollback = func(name string, req api.RollbackRequest) (api.UpdateResult, error) {
		res := api.UpdateResult{App: name, Result: api.UpdateRolledBack, Took: 800 * time.Millisecond,
			Containers: []api.ContainerUpdate{{Name: "blog", Image: "registry.example/blog:1", From: idV2, To: idV1, Result: api.UpdateRolledBack}}}
		if !healthy {
			res.Reason = "after the rollback the app is not healthy: container blog failed"
		}
		return res, nil
	}
	s, out, _ := streams(false)
	opts := &rollbackOptions{IO: s, Ctx: t.Context(), Client: client[updateClient](f), App: "blog", Grace: time.Minute}
	if err := runRollback(opts); err != nil {
		t.Fatal(err)
	}
	healthy = false
	if err := runRollback(opts); err == nil || exitCode(err) != exitFailed {
		t.Errorf("a rollback that leaves the app unhealthy: %v", err)
	}
	golden(t, "rollback.txt", out.String())
}
