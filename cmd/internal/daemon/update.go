package daemon

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
	"github.com/onionpod/onionpod/pods"
)

// Updates. An update resolves a container's registry reference again (pods.ImageStore.Refresh:
// one HEAD at the registry, only new layers fetched), puts the new image in the app's record with
// the one it ran as the previous (kept in the image store: a rollback needs no registry), lets a
// pass restart the container on it, and waits for the app to be healthy: running, with every
// updated container's health check passing (a container without a check: active and not
// restarted for settleTime). When that does not happen within the grace period, or an updated
// container turns unhealthy or keeps restarting, the previous images are put back the same way
// (rolled back) and the new one is remembered as rejected: automatic updates do not take it
// again. Volumes belong to the app, not to an image: they stay through every update and rollback.
//
// The wait is the update's trial, and it is desired state: the record of each updated container
// holds it (store.Trial: the deadline, the grace, the image fields to go back to), written with
// the new image and cleared when it is kept or rolled back. A daemon that stops during a trial
// (restarted, killed, the box rebooted) leaves it there; the next one resumes it at start
// (resumeTrials) before it serves the LocalAPI, and decides it the same way.

// settleTime is how long an updated container without a health check must run without a restart
// to count as healthy.
const settleTime = 3 * time.Second

// updateLocks makes updates and rollbacks of one app one at a time.
type updateLocks struct {
	mu   sync.Mutex
	busy map[string]bool
}

// begin marks app as being updated; a second update of it meanwhile is a conflict.
func (u *updateLocks) begin(app string) (end func(), err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.busy == nil {
		u.busy = map[string]bool{}
	}
	if u.busy[app] {
		return nil, errkind.Conflictf("daemon: app %q: an update or rollback of it is under way", app)
	}
	u.busy[app] = true
	return func() {
		u.mu.Lock()
		delete(u.busy, app)
		u.mu.Unlock()
	}, nil
}

// imageSwitch is one container's change of image: what it ran (before: its image fields) and
// what it is to run.
type imageSwitch struct {
	container           string
	before              store.Container
	toRef, to, toDigest string
}

// apply makes c run the switch's image, the one it ran becoming the previous one; trial is the
// update's trial (nil: a rollback asked for by hand, which is not tried).
func (s imageSwitch) apply(c *store.Container, trial *store.Trial) {
	c.PreviousImageID, c.PreviousDigest, c.PreviousImage = s.before.ImageID, s.before.Digest, ""
	if s.before.Image != s.toRef {
		c.PreviousImage = s.before.Image
	}
	c.Image, c.ImageID, c.Digest = s.toRef, s.to, s.toDigest
	c.Trial = nil
	if trial != nil {
		t := *trial
		t.Back = s.before.Images()
		c.Trial = &t
	}
}

// undo makes c what it was before the switch (apply undone), its image rejected for why.
func (s imageSwitch) undo(c *store.Container, why string) {
	c.SetImages(s.before.Images())
	c.RejectedImageID, c.RejectedReason, c.Trial = s.to, oneLine(why), nil
}

// oneLine is why as one line of at most store.MaxReason bytes.
func oneLine(why string) string {
	why = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || r == utf8.RuneError {
			return ' '
		}
		return r
	}, why)
	for len(why) > store.MaxReason {
		_, size := utf8.DecodeLastRuneInString(why)
		why = why[:len(why)-size]
	}
	return why
}

// switchMode is what a switch of images is.
type switchMode int

const (
	switchUpdate   switchMode = iota // to new images, on trial
	switchRollback                   // to the previous images, asked for by hand
	switchBack                       // a trial that failed undone
)

// updateApp updates the app's containers to the images their registries serve (see the comment
// at the top). A reference that does not resolve fails the update with the app untouched. A
// rollback is no error: the result says so, and why.
func (d *Daemon) updateApp(ctx context.Context, name string, req api.UpdateRequest) (api.UpdateResult, error) {
	res := api.UpdateResult{App: name}
	if err := checkUpdateRequest(name, req); err != nil {
		return res, err
	}
	end, err := d.updateLocks.begin(name)
	if err != nil {
		return res, err
	}
	defer end()
	app, err := d.store.Get(name)
	if err != nil {
		return res, err
	}
	switch {
	case req.Auto && !app.AutoUpdate:
		return d.skipped(res, "automatic updates are off for it (auto_update)")
	case app.Stopped:
		return d.skipped(res, "it is stopped (start it first)")
	}
	switches, err := d.resolveUpdates(ctx, app, req, &res)
	if err != nil {
		return res, err
	}
	res.Result = api.UpdateUpToDate
	if len(switches) == 0 {
		for _, cu := range res.Containers {
			if cu.Result == api.UpdateAvailable {
				res.Result = api.UpdateAvailable
			}
		}
		res.Status, _ = d.appStatus(name)
		return res, nil
	}
	grace := cmp.Or(req.Grace, api.DefaultGrace)
	gen, deadline, err := d.switchImages(name, switches, switchUpdate, grace, "")
	if err != nil {
		return res, err
	}
	tr, err := d.decideTrial(ctx, name, switches, gen, deadline, grace)
	return d.trialOutcome(res, name, switches, deadline, tr, err)
}

// checkUpdateRequest refuses a bad app or container name and an image reference that is not a
// registry's.
func checkUpdateRequest(name string, req api.UpdateRequest) error {
	if err := names.App(name); err != nil {
		return err
	}
	if req.Container != "" && !names.IsApp(req.Container) {
		return errkind.BadInputf("daemon: update %q: %q is not a container name", name, req.Container)
	}
	if req.Image != "" {
		if !RegistryImage(req.Image) {
			return errkind.BadInputf("daemon: update %q: an update takes a registry reference (send an archive with `onionpod run %s --image FILE`)", name, name)
		}
		if err := pods.CheckRef(req.Image); err != nil {
			return err
		}
	}
	return nil
}

// resolveUpdates asks the registry for each target container's image (outside the store's
// lock: a registry may be slow), adds what it found to res, and returns the switches to make:
// none for an image already running, one rolled back from (automatic updates), or a check.
func (d *Daemon) resolveUpdates(ctx context.Context, app store.App, req api.UpdateRequest, res *api.UpdateResult) ([]imageSwitch, error) {
	targets, err := updateTargets(app, req)
	if err != nil {
		return nil, err
	}
	var switches []imageSwitch
	for _, c := range targets {
		ref := cmpOr(req.Image, c.Image)
		img, _, err := d.parts.images.Refresh(ctx, ref, io.Discard)
		if err != nil {
			return nil, fmt.Errorf("daemon: update %q: container %s: %w", app.Name, c.Name, err)
		}
		cu := api.ContainerUpdate{Name: c.Name, Image: ref, From: c.ImageID, To: img.Digest, Digest: img.RepoDigest}
		switch {
		case img.Digest == c.ImageID && ref == c.Image:
			cu.Result, cu.To = api.UpdateUpToDate, ""
		case req.Auto && img.Digest == c.RejectedImageID:
			cu.Result, cu.Reason = api.UpdateSkipped, "an update to it was rolled back (it failed its health check); update by hand to try it again"
		case req.Check:
			cu.Result = api.UpdateAvailable
		default:
			switches = append(switches, imageSwitch{container: c.Name, before: c, toRef: ref, to: img.Digest, toDigest: img.RepoDigest})
		}
		res.Containers = append(res.Containers, cu)
	}
	return switches, nil
}

// trialOutcome is the update's result once its trial ended (tr, and err from rolling back).
func (d *Daemon) trialOutcome(res api.UpdateResult, name string, switches []imageSwitch, deadline time.Time, tr trialResult, err error) (api.UpdateResult, error) {
	res.Took = tr.took
	switch {
	case tr.stopping:
		return res, fmt.Errorf("daemon: update %q: the daemon stopped during the update: the new image stays on trial until %s; when the daemon runs again it keeps it if the app is healthy on it by then, else rolls it back",
			name, deadline.UTC().Format(time.RFC3339))
	case tr.kept:
		setResults(&res, switches, api.UpdateUpdated, "")
		res.Result = api.UpdateUpdated
		res.Status, _ = d.appStatus(name)
		return res, nil
	}
	res.Result, res.Reason = api.UpdateRolledBack, tr.why
	setResults(&res, switches, api.UpdateRolledBack, tr.why)
	if err != nil {
		return res, fmt.Errorf("daemon: update %q failed (%s), and rolling back failed: %w", name, tr.why, err)
	}
	if !tr.backOK {
		res.Reason += "; after the rollback the app is not healthy either: " + tr.whyBack
	}
	res.Status, _ = d.appStatus(name)
	return res, nil
}

// trialResult is how an update's trial ended.
type trialResult struct {
	kept     bool // the app was healthy on the new images: they stay
	stopping bool // the daemon stopped first: the trial stays in the record for the next one
	why      string
	backOK   bool   // rolled back (not kept), the app is healthy on the images it ran
	whyBack  string // why not
	took     time.Duration
}

// decideTrial waits until the app, at generation gen or later, is healthy on the images the
// switches put on trial, or deadline passes (see awaitHealthy), and then ends the trial: the
// new images are kept, or (with the reason) rolled back. When the daemon stops first, the
// trial stays in the record: the next daemon resumes it (resumeTrials).
func (d *Daemon) decideTrial(ctx context.Context, name string, switches []imageSwitch, gen int64, deadline time.Time, grace time.Duration) (trialResult, error) {
	start := time.Now()
	var tr trialResult
	ok, why := d.awaitHealthy(ctx, name, gen, containersOf(switches), deadline, grace)
	tr.took = time.Since(start)
	if !ok && d.stopping() {
		tr.stopping = true
		d.log.Info("daemon stopping during an update's trial: the next daemon resumes it", "app", name, "deadline", deadline)
		return tr, nil
	}
	if ok {
		err := d.endTrial(name, switches)
		tr.kept = err == nil
		if err == nil {
			d.log.Info("app updated", "app", name, "took", tr.took.Round(time.Millisecond))
			d.pruneAfter(ctx, name, "an update")
			return tr, nil
		}
		why = err.Error()
	}
	tr.why = why
	d.log.Warn("update failed: rolling back", "app", name, "why", why)
	gen, backBy, err := d.switchImages(name, switches, switchBack, grace, why)
	if err != nil {
		return tr, err
	}
	start = time.Now()
	tr.backOK, tr.whyBack = d.awaitHealthy(ctx, name, gen, containersOf(switches), backBy, grace)
	tr.took += time.Since(start)
	d.pruneAfter(ctx, name, "a rollback")
	return tr, nil
}

// endTrial keeps the images the switches put on trial: their trial ends. It changes nothing
// that runs (no new generation).
func (d *Daemon) endTrial(name string, switches []imageSwitch) error {
	return d.store.Update(context.Background(), func(tx *store.Tx) error {
		app, err := tx.Get(name)
		if err != nil {
			return err
		}
		for _, s := range switches {
			i := slices.IndexFunc(app.Containers, func(c store.Container) bool { return c.Name == s.container })
			if i < 0 || app.Containers[i].ImageID != s.to || app.Containers[i].Image != s.toRef {
				return errkind.Conflictf("daemon: app %q: container %s changed while it was being updated", name, s.container)
			}
			app.Containers[i].Trial = nil
		}
		return tx.Put(app)
	})
}

// containersOf names the switches' containers.
func containersOf(switches []imageSwitch) []string {
	out := make([]string, len(switches))
	for i, s := range switches {
		out[i] = s.container
	}
	return out
}

// stopping says whether the daemon is stopping (its Run's context ended).
func (d *Daemon) stopping() bool {
	select {
	case <-d.runDone:
		return true
	default:
		return false
	}
}

// lastLook is the least time a resumed trial is given (at most its grace): a daemon that was
// down when its deadline passed (the box rebooted, say) does not reject an image it has not seen.
const lastLook = time.Minute

// resumeTrials resumes the trials of updates the records hold (the daemon stopped during them),
// each app's in a goroutine of its own (run) that holds the app's update lock until it ends.
// The locks are taken before the LocalAPI serves.
func (d *Daemon) resumeTrials(ctx context.Context, run func(func())) {
	apps, _, err := d.store.List()
	if err != nil {
		d.log.Error("updates on trial not resumed", "err", err)
		return
	}
	for _, app := range apps {
		if !slices.ContainsFunc(app.Containers, func(c store.Container) bool { return c.Trial != nil }) {
			continue
		}
		end, err := d.updateLocks.begin(app.Name)
		if err != nil {
			continue
		}
		run(func() {
			defer end()
			d.resumeTrial(ctx, app.Name)
		})
	}
}

// resumeTrial resumes the trial of the app's update: its deadline put off to give it at least
// lastLook (bounded by its grace) from now, and decided as the update would have.
func (d *Daemon) resumeTrial(ctx context.Context, name string) {
	var (
		switches []imageSwitch
		gen      int64
		deadline time.Time
		grace    time.Duration
	)
	err := d.store.Update(ctx, func(tx *store.Tx) error {
		switches = nil
		app, err := tx.Get(name)
		if err != nil {
			return err
		}
		for _, c := range app.Containers {
			if t := c.Trial; t != nil {
				deadline = maxTime(deadline, t.Deadline, time.Now().Add(min(t.Grace, lastLook)))
				grace = max(grace, t.Grace)
				before := c
				before.SetImages(t.Back)
				before.Trial = nil
				switches = append(switches, imageSwitch{container: c.Name, before: before, toRef: c.Image, to: c.ImageID, toDigest: c.Digest})
			}
		}
		if len(switches) == 0 {
			return nil
		}
		for i := range app.Containers {
			if t := app.Containers[i].Trial; t != nil {
				t.Deadline = deadline.UTC()
			}
		}
		gen = app.Generation
		return tx.Put(app)
	})
	if err != nil || len(switches) == 0 {
		if err != nil {
			d.log.Error("update on trial not resumed", "app", name, "err", err)
		}
		return
	}
	d.log.Info("resuming an update's trial", "app", name, "containers", containersOf(switches), "deadline", deadline)
	tr, err := d.decideTrial(ctx, name, switches, gen, deadline, grace)
	switch {
	case err != nil:
		d.log.Error("resumed update failed, and rolling back failed", "app", name, "why", tr.why, "err", err)
	case tr.kept || tr.stopping:
	case !tr.backOK:
		d.log.Error("resumed update rolled back, and the app is not healthy either", "app", name, "why", tr.why, "after", tr.whyBack)
	}
}

func maxTime(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

func (d *Daemon) skipped(res api.UpdateResult, why string) (api.UpdateResult, error) {
	res.Result, res.Reason = api.UpdateSkipped, why
	res.Status, _ = d.appStatus(res.App)
	return res, nil
}

// setResults marks the containers switches changed.
func setResults(res *api.UpdateResult, switches []imageSwitch, result, reason string) {
	for i, cu := range res.Containers {
		if slices.ContainsFunc(switches, func(s imageSwitch) bool { return s.container == cu.Name }) {
			res.Containers[i].Result, res.Containers[i].Reason = result, reason
		}
	}
}

// updateTargets are the containers an update resolves again: the one named (or, for a new
// image reference, the app's only one), or every container with a registry image.
func updateTargets(app store.App, req api.UpdateRequest) ([]store.Container, error) {
	pick := req.Container
	if pick == "" && req.Image != "" {
		if len(app.Containers) != 1 {
			return nil, errkind.BadInputf("daemon: update %q: name the container the image is for (it has %s)", app.Name, strings.Join(app.ContainerNames(), ", "))
		}
		pick = app.Containers[0].Name
	}
	if pick != "" {
		c, ok := app.Container(pick)
		switch {
		case !ok:
			return nil, errkind.BadInputf("daemon: update %q: no container %q (it has %s)", app.Name, pick, strings.Join(app.ContainerNames(), ", "))
		case req.Image == "" && !RegistryImage(c.Image):
			return nil, errkind.BadInputf("daemon: update %q: container %s has no registry image to update (%s)", app.Name, pick, cmpOr(c.Image, "a static site"))
		}
		return []store.Container{c}, nil
	}
	var out []store.Container
	for _, c := range app.Containers {
		if c.Static == "" && RegistryImage(c.Image) {
			out = append(out, c)
		}
	}
	return out, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// switchImages makes the containers run their new images (an update: on trial until grace
// from now; or a rollback by hand) or, back, undoes that: they run what they ran, the new images
// remembered as rejected for why. It returns the app's new generation and when grace ends.
func (d *Daemon) switchImages(name string, switches []imageSwitch, mode switchMode, grace time.Duration, why string) (gen int64, deadline time.Time, err error) {
	deadline = time.Now().Add(grace)
	var trial *store.Trial
	if mode == switchUpdate {
		trial = &store.Trial{Deadline: deadline.UTC(), Grace: grace}
	}
	err = d.store.Update(context.Background(), func(tx *store.Tx) error {
		app, err := tx.Get(name)
		if err != nil {
			return err
		}
		for _, s := range switches {
			i := slices.IndexFunc(app.Containers, func(c store.Container) bool { return c.Name == s.container })
			runs, ref := s.before.ImageID, s.before.Image
			if mode == switchBack {
				runs, ref = s.to, s.toRef
			}
			if i < 0 || app.Containers[i].ImageID != runs || app.Containers[i].Image != ref {
				return errkind.Conflictf("daemon: app %q: container %s changed while it was being updated", name, s.container)
			}
			if mode == switchBack {
				s.undo(&app.Containers[i], why)
			} else {
				s.apply(&app.Containers[i], trial)
			}
		}
		app.Generation++
		app.Updated = time.Now().UTC()
		if err := app.Validate(); err != nil {
			return err
		}
		gen = app.Generation
		return tx.Put(app)
	})
	if err != nil {
		return 0, time.Time{}, err
	}
	d.trigger("images of " + name + " switched")
	return gen, deadline, nil
}

// awaitHealthy waits until the app, at generation gen or later, runs with the containers named
// healthy (a container without a check: active and not restarted for settleTime), and reports
// false with the reason as soon as one of them is unhealthy, restarted by its check or by
// systemd, or the app failed, or the time by passed (grace names the period in the reason).
func (d *Daemon) awaitHealthy(ctx context.Context, name string, gen int64, containers []string, by time.Time, grace time.Duration) (bool, string) {
	deadline := time.NewTimer(time.Until(by))
	defer deadline.Stop()
	poll := time.NewTicker(200 * time.Millisecond)
	defer poll.Stop()
	w := &healthWait{name: name, gen: gen, containers: containers, first: map[string]pods.Status{}, state: "not applied yet"}
	for {
		d.mu.Lock()
		changed := d.changed
		d.mu.Unlock()
		if done, ok, why := d.updateOutcome(ctx, w); done {
			return ok, why
		}
		select {
		case <-ctx.Done():
			return false, "the update was cancelled: " + ctx.Err().Error()
		case <-deadline.C:
			return false, fmt.Sprintf("not healthy after %v (%s)", grace, w.state)
		case <-changed:
		case <-poll.C:
		}
	}
}

// healthWait is what awaitHealthy has seen.
type healthWait struct {
	name       string
	gen        int64
	containers []string
	// first is each container's unit as first seen active once gen was applied: what ran
	// before (a check's restart of the image left) is not held against the image switched to.
	first map[string]pods.Status
	state string // what the app looked like last, for a timeout's message
}

// updateOutcome looks at the app once: done says whether the wait is over, ok how it ended.
func (d *Daemon) updateOutcome(ctx context.Context, w *healthWait) (done, ok bool, why string) {
	st, err := d.appStatus(w.name)
	if err != nil {
		return true, false, err.Error()
	}
	if st.ObservedGeneration < w.gen {
		return false, false, ""
	}
	w.state = "state " + st.State + lastErr(st)
	if st.State == api.StateFailed {
		return true, false, "the app failed: " + st.LastError
	}
	settled := true
	for _, cs := range st.Containers {
		if !slices.Contains(w.containers, cs.Name) {
			continue
		}
		us, err := d.parts.systemd.ContainerStatus(ctx, w.name, cs.Name)
		switch {
		case err != nil:
			settled = false
			continue
		case us.ActiveState == "failed":
			return true, false, fmt.Sprintf("container %s failed (%s)", cs.Name, us.SubState)
		case us.ActiveState != "active":
			settled = false
			continue
		}
		first, seen := w.first[cs.Name]
		if !seen {
			w.first[cs.Name] = us
			settled = false
			continue
		}
		if us.Restarts > first.Restarts {
			return true, false, fmt.Sprintf("container %s keeps restarting (%d restarts)", cs.Name, us.Restarts-first.Restarts)
		}
		if h := cs.Health; h != nil {
			switch {
			case h.State == api.HealthUnhealthy:
				return true, false, fmt.Sprintf("container %s is unhealthy: %s", cs.Name, h.LastError)
			case h.Restarts > 0 && !h.LastRestart.Before(first.Since):
				return true, false, fmt.Sprintf("container %s was restarted by its health check (%s)", cs.Name, h.RestartReason)
			}
			continue // running (below) says it is healthy
		}
		if time.Since(us.Since) < settleTime {
			settled = false
		}
	}
	if st.State == api.StateRunning && settled {
		return true, true, ""
	}
	return false, false, ""
}

// rollbackApp puts back the previous images of the app's containers (the one named, or every one
// that has a previous image) and waits until the app is healthy on them.
func (d *Daemon) rollbackApp(ctx context.Context, name string, req api.RollbackRequest) (api.UpdateResult, error) {
	res := api.UpdateResult{App: name}
	if err := names.App(name); err != nil {
		return res, err
	}
	end, err := d.updateLocks.begin(name)
	if err != nil {
		return res, err
	}
	defer end()
	app, err := d.store.Get(name)
	if err != nil {
		return res, err
	}
	if req.Container != "" {
		if _, ok := app.Container(req.Container); !ok {
			return res, errkind.BadInputf("daemon: rollback %q: no container %q (it has %s)", name, req.Container, strings.Join(app.ContainerNames(), ", "))
		}
	}
	var switches []imageSwitch
	for _, c := range app.Containers {
		if req.Container != "" && c.Name != req.Container || c.PreviousImageID == "" {
			continue
		}
		if _, err := d.parts.images.Image(c.PreviousImageID); err != nil {
			return res, fmt.Errorf("daemon: rollback %q: container %s: its previous image %s is no longer in the image store: %w", name, c.Name, c.PreviousImageID, err)
		}
		s := imageSwitch{container: c.Name, before: c, toRef: cmpOr(c.PreviousImage, c.Image), to: c.PreviousImageID, toDigest: c.PreviousDigest}
		switches = append(switches, s)
		res.Containers = append(res.Containers, api.ContainerUpdate{Name: c.Name, Image: s.toRef, From: c.ImageID, To: s.to, Digest: s.toDigest, Result: api.UpdateRolledBack})
	}
	if len(switches) == 0 {
		return res, errkind.BadInputf("daemon: rollback %q: no container has a previous image to go back to", name)
	}
	grace := cmp.Or(req.Grace, api.DefaultGrace)
	gen, deadline, err := d.switchImages(name, switches, switchRollback, grace, "")
	if err != nil {
		return res, err
	}
	start := time.Now()
	ok, why := d.awaitHealthy(ctx, name, gen, containersOf(switches), deadline, grace)
	res.Took = time.Since(start)
	res.Result = api.UpdateRolledBack
	if !ok {
		res.Reason = "after the rollback the app is not healthy: " + why
	}
	res.Status, _ = d.appStatus(name)
	return res, nil
}
