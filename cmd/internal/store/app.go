// Package store keeps onionpod's desired state: one record per app, written atomically under the
// state dir (0600 files in 0700 dirs), with a schema version and an exclusive lock so two writers
// (the daemon, an offline `onion restore`) cannot corrupt it. Records change only inside a
// transaction (Update). Observed state is never stored here.
package store

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/genvalue"
	"github.com/onionpod/onionpod/internal/names"
	"github.com/onionpod/onionpod/pods"
)

// Error kinds of the store (aliases of internal/errkind's, so errors.Is works with either).
var (
	// ErrInvalid marks bad input in an app record (name, port, volume...).
	ErrInvalid = errkind.BadInput
	// ErrNotFound is returned for an app that has no record.
	ErrNotFound = errkind.NotFound
)

// App is the desired state of one app, as the user asked for it (record schema 2): one or more
// containers sharing the app's network namespace, and what is per app (ports, the onion service,
// the clearnet address).
type App struct {
	Name       string      `json:"name"`
	Containers []Container `json:"containers"`
	Ports      []Port      `json:"ports,omitempty"`
	// Limits are the defaults of the app's containers (each may set its own).
	Limits    pods.Limits `json:"limits,omitzero"`
	Onion     bool        `json:"onion"`      // publish an onion service
	OnionOnly bool        `json:"onion_only"` // no LAN interface, nothing published on the clearnet
	IPv4      bool        `json:"ipv4"`       // ask the LAN's DHCP for an IPv4 address too
	Stopped   bool        `json:"stopped"`    // the user stopped it: keep everything, run nothing
	// AutoUpdate lets automatic updates (`onionpod update --all --auto`, the onionpod-update
	// timer) take new images its containers' registries serve under their references.
	AutoUpdate bool `json:"auto_update,omitempty"`
	// NoOnionLocation leaves Onion-Location out of the app's HTTPS responses (tls.onion_location).
	NoOnionLocation bool `json:"no_onion_location,omitempty"`
	// Generation counts the accepted changes of the record: 1 for a new app, one more on each
	// change. A change sent to the daemon carries the generation it was based on (0: a new app).
	Generation int64     `json:"generation"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
}

// MaxContainers bounds the containers of one app.
const MaxContainers = 16

// Container is one container of an app: an image (or a directory of static files) run as its own
// systemd unit in the app's network namespace.
type Container struct {
	// Name is a DNS label, unique in the app. The container named like its app (the only one of
	// an app made with `onionpod run`) keeps the unit name onionpod-pod-APP.service.
	Name string `json:"name"`
	// Image is a registry reference, or the ID ("sha256:...") of an image sent to the daemon.
	Image string `json:"image,omitempty"`
	// Source is the local archive or layout the image was sent from (shown, never opened).
	Source string `json:"source,omitempty"`
	// ImageID is the image (its ID, "sha256:...") that runs: Image resolved, and kept while Image
	// stays the same (a tag pushed again is not taken by itself). "" until resolved.
	ImageID string `json:"image_id,omitempty"`
	// PreviousImageID is the image that ran before ImageID (what a rollback returns to), and
	// PreviousImage the reference it was resolved from, when that was another one.
	PreviousImageID string `json:"previous_image_id,omitempty"`
	PreviousImage   string `json:"previous_image,omitempty"`
	// Digest is the registry's digest of the manifest ImageID was pulled as (what the registry
	// shows; "" for an image sent to the daemon), PreviousDigest that of PreviousImageID.
	Digest         string `json:"digest,omitempty"`
	PreviousDigest string `json:"previous_digest,omitempty"`
	// RejectedImageID is an image an update rolled back from (it failed its health check):
	// automatic updates do not try it again (an update asked for by hand does).
	RejectedImageID string `json:"rejected_image_id,omitempty"`
	// RejectedReason says why the update to RejectedImageID was rolled back (one line).
	RejectedReason string `json:"rejected_reason,omitempty"`
	// Trial is an update of the container under way: it runs its new image (ImageID) on trial
	// until the app is healthy on it, and goes back to what it ran (Trial.Back) if it is not by
	// Trial.Deadline. It is desired state, so that a daemon that stops during the trial
	// resumes it. nil: no update under way.
	Trial *Trial `json:"trial,omitempty"`
	// Static is a directory served by the built-in static server instead of an image.
	Static string `json:"static,omitempty"`
	// Entrypoint replaces the image's entrypoint (and drops its Cmd); Command replaces its Cmd.
	Entrypoint []string `json:"entrypoint,omitempty"`
	Command    []string `json:"command,omitempty"`
	Env        []string `json:"env,omitempty"`
	// Volumes are persistent directories of the app: two containers naming one volume share it.
	Volumes []Volume `json:"volumes,omitempty"`
	// User is "" (the dynamic user every container of the app shares) or UserOwn (a dynamic user
	// of the container's own, which then shares no volume).
	User string `json:"user,omitempty"`
	// After names the containers this one starts after (the order of starts, not their health).
	After  []string    `json:"after,omitempty"`
	Health *Health     `json:"health,omitempty"`
	Limits pods.Limits `json:"limits,omitzero"`
	// Backup is the container's backup hook: a whole-app backup stores the dump it writes
	// instead of copying the files of the volume it covers.
	Backup *BackupHook `json:"backup,omitempty"`
}

// BackupHook says how a container dumps the data of one of its volumes and loads it back: its
// own tools (a database's dump and restore), run in the container's sandbox while it runs.
type BackupHook struct {
	// Volume is the volume the dump covers (one of the container's).
	Volume string `json:"volume"`
	// Dump writes the dump to its standard output; Restore reads one on its standard input
	// and applies it (all or nothing, e.g. in one transaction).
	Dump    []string `json:"dump"`
	Restore []string `json:"restore"`
}

// Trial is an update of a container on trial (Container.Trial).
type Trial struct {
	// Deadline is when the new image must be healthy; Grace is the period it was given (a
	// daemon that was down when the deadline passed gives it a last look of at most that long).
	Deadline time.Time     `json:"deadline"`
	Grace    time.Duration `json:"grace"`
	// Back is what the container ran before the update: what a rollback puts back.
	Back ImageFields `json:"back"`
}

// ImageFields are the fields of a container that say which image it runs and ran before.
type ImageFields struct {
	Image           string `json:"image"`
	ImageID         string `json:"image_id,omitempty"`
	Digest          string `json:"digest,omitempty"`
	PreviousImage   string `json:"previous_image,omitempty"`
	PreviousImageID string `json:"previous_image_id,omitempty"`
	PreviousDigest  string `json:"previous_digest,omitempty"`
}

// Images returns the container's image fields.
func (c Container) Images() ImageFields {
	return ImageFields{Image: c.Image, ImageID: c.ImageID, Digest: c.Digest,
		PreviousImage: c.PreviousImage, PreviousImageID: c.PreviousImageID, PreviousDigest: c.PreviousDigest}
}

// SetImages sets the container's image fields.
func (c *Container) SetImages(f ImageFields) {
	c.Image, c.ImageID, c.Digest = f.Image, f.ImageID, f.Digest
	c.PreviousImage, c.PreviousImageID, c.PreviousDigest = f.PreviousImage, f.PreviousImageID, f.PreviousDigest
}

// MaxReason bounds Container.RejectedReason.
const MaxReason = 1024

// MaxGrace bounds the grace period of an update.
const MaxGrace = 24 * time.Hour

// validate checks a trial of a container that runs an image.
func (t *Trial) validate(c Container) error {
	if t == nil {
		return nil
	}
	switch {
	case c.Static != "" || c.ImageID == "":
		return errkind.BadInputf("trial: only a container running a resolved image is updated")
	case t.Deadline.IsZero():
		return errkind.BadInputf("trial: no deadline")
	case t.Grace <= 0 || t.Grace > MaxGrace:
		return errkind.BadInputf("trial: grace %v: from 1ns to %v", t.Grace, MaxGrace)
	case t.Back.Image == "" || t.Back.ImageID == "":
		return errkind.BadInputf("trial: back: the image to go back to is needed")
	}
	return t.Back.validate("trial: back: ")
}

// validate checks image references and IDs; prefix names where they are.
func (f ImageFields) validate(prefix string) error {
	for _, ref := range []string{f.Image, f.PreviousImage} {
		if ref != "" && (strings.ContainsAny(ref, " \t\n\x00") || genvalue.Check("image", ref) != nil) {
			return errkind.BadInputf("%s%q is not an image reference", prefix, ref)
		}
	}
	for _, id := range []struct{ field, value string }{{"image_id", f.ImageID}, {"previous_image_id", f.PreviousImageID},
		{"digest", f.Digest}, {"previous_digest", f.PreviousDigest}} {
		if id.value != "" && !imageID.MatchString(id.value) {
			return errkind.BadInputf("%s%s %q: want sha256: and 64 hex digits", prefix, id.field, id.value)
		}
	}
	return nil
}

// UserOwn is Container.User for a container that runs as a dynamic user of its own.
const UserOwn = "own"

// Health is a container's health check: exactly one of an HTTP GET of a path, a TCP connect, or
// a command run in the container. The daemon runs it every Interval (every second while the
// container starts); after Retries failures in a row (none counted during StartPeriod) the
// container is unhealthy and restarted. A container with a check counts as running only when
// healthy. Zero durations and counts take the defaults (HealthDefaults).
type Health struct {
	HTTP    string   `json:"http,omitempty"`    // the path of an HTTP GET that must answer 2xx or 3xx
	TCP     bool     `json:"tcp,omitempty"`     // a TCP connection that must be accepted
	Command []string `json:"command,omitempty"` // run in the container's sandbox; must exit 0
	// Port is the port of an HTTP or TCP check, in the pod's network namespace (reached at the
	// pod's ULA address, as tor reaches it); 0 is the first port the container serves.
	Port        uint16        `json:"port,omitempty"`
	Interval    time.Duration `json:"interval,omitempty"`
	Timeout     time.Duration `json:"timeout,omitempty"`
	Retries     int           `json:"retries,omitempty"`
	StartPeriod time.Duration `json:"start_period,omitempty"`
}

// HealthDefaults are the interval, timeout, retries and start period of a check that leaves
// them zero.
var HealthDefaults = Health{Interval: 10 * time.Second, Timeout: 5 * time.Second, Retries: 3, StartPeriod: 60 * time.Second}

// WithDefaults returns h with its zero durations and counts set to HealthDefaults'.
func (h Health) WithDefaults() Health {
	d := HealthDefaults
	if h.Interval == 0 {
		h.Interval = d.Interval
	}
	if h.Timeout == 0 {
		h.Timeout = d.Timeout
	}
	if h.Retries == 0 {
		h.Retries = d.Retries
	}
	if h.StartPeriod == 0 {
		h.StartPeriod = d.StartPeriod
	}
	return h
}

// Kind is "http", "tcp" or "command".
func (h Health) Kind() string {
	switch {
	case h.HTTP != "":
		return "http"
	case h.TCP:
		return "tcp"
	}
	return "command"
}

// Port maps a public port (on the .onion and the clearnet address) to the port the app listens on.
type Port struct {
	Public uint16 `json:"public"`
	Target uint16 `json:"target"`
	// Container is the container that listens on Target; "" in an app of one container is that one.
	Container string `json:"container,omitempty"`
}

// Volume is a persistent per-app directory mounted into the pod.
type Volume struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

// Clone returns a copy of a that shares no slice or pointer with it.
func (a App) Clone() App {
	a.Containers = slices.Clone(a.Containers)
	for i := range a.Containers {
		c := &a.Containers[i]
		c.Entrypoint, c.Command, c.Env = slices.Clone(c.Entrypoint), slices.Clone(c.Command), slices.Clone(c.Env)
		c.Volumes, c.After = slices.Clone(c.Volumes), slices.Clone(c.After)
		if c.Health != nil {
			h := *c.Health
			h.Command = slices.Clone(h.Command)
			c.Health = &h
		}
	}
	a.Ports = slices.Clone(a.Ports)
	return a
}

// Container returns the app's container of that name.
func (a App) Container(name string) (Container, bool) {
	for _, c := range a.Containers {
		if c.Name == name {
			return c, true
		}
	}
	return Container{}, false
}

// ContainerNames lists the app's containers, in order.
func (a App) ContainerNames() []string {
	out := make([]string, len(a.Containers))
	for i, c := range a.Containers {
		out[i] = c.Name
	}
	return out
}

// PortContainer is the container a port names (the only one when it names none).
func (a App) PortContainer(p Port) string {
	if p.Container == "" && len(a.Containers) == 1 {
		return a.Containers[0].Name
	}
	return p.Container
}

// PortsOf lists the ports container c serves.
func (a App) PortsOf(c string) []Port {
	var out []Port
	for _, p := range a.Ports {
		if a.PortContainer(p) == c {
			out = append(out, p)
		}
	}
	return out
}

// Static reports whether the app is one static site (its only container serves a directory).
func (a App) Static() string {
	if len(a.Containers) == 1 {
		return a.Containers[0].Static
	}
	return ""
}

// Clearnet reports whether the app gets a LAN address and a DNS record.
func (a App) Clearnet() bool { return !a.OnionOnly }

// WantsOnion reports whether the app gets an onion service.
func (a App) WantsOnion() bool { return a.Onion || a.OnionOnly }

// ParsePort reads "80" (public and target the same) or "80:8080" (public 80 to the app's 8080).
func ParsePort(s string) (Port, error) {
	public, target, found := strings.Cut(s, ":")
	p, err := parsePortNumber(public)
	if err != nil {
		return Port{}, errkind.BadInputf("port %q: %v", s, err)
	}
	if !found {
		return Port{Public: p, Target: p}, nil
	}
	t, err := parsePortNumber(target)
	if err != nil {
		return Port{}, errkind.BadInputf("port %q: %v", s, err)
	}
	return Port{Public: p, Target: t}, nil
}

func parsePortNumber(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, errors.New("expected a number from 1 to 65535")
	}
	return uint16(n), nil
}

// ParseVolume reads "NAME:/path/in/pod".
func ParseVolume(s string) (Volume, error) {
	name, path, ok := strings.Cut(s, ":")
	v := Volume{Name: name, Path: path}
	if !ok {
		return Volume{}, errkind.BadInputf("volume %q: expected NAME:/path", s)
	}
	return v, v.validate()
}

func (v Volume) validate() error {
	if !names.IsApp(v.Name) {
		return errkind.BadInputf("volume %q: the name must be a lowercase label (a-z, 0-9, -)", v.Name)
	}
	if !strings.HasPrefix(v.Path, "/") || strings.Contains("/"+v.Path+"/", "/../") || v.Path == "/" {
		return errkind.BadInputf("volume %q: the mount point must be an absolute path other than /, without ..", v.Name+":"+v.Path)
	}
	return nil
}

// ValidateEnv checks K=V entries.
func ValidateEnv(env []string) error {
	for _, e := range env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || !validEnvKey(k) || strings.ContainsAny(e, "\n\x00") {
			return errkind.BadInputf("environment %q: expected KEY=VALUE", e)
		}
	}
	return nil
}

func validEnvKey(k string) bool { return k != "" && !strings.ContainsAny(k, "= \t\n\x00") }

// SetEnv returns env with each K=V of set replacing K's entry (in place) or added at the end;
// the other keys are kept.
func SetEnv(env, set []string) []string {
	out := append([]string(nil), env...)
	for _, kv := range set {
		k, _, _ := strings.Cut(kv, "=")
		i := envIndex(out, k)
		if i < 0 {
			out = append(out, kv)
		} else {
			out[i] = kv
		}
	}
	return out
}

// UnsetEnv returns env without the given keys. A key that is not a valid name is bad input.
func UnsetEnv(env, keys []string) ([]string, error) {
	out := append([]string(nil), env...)
	for _, k := range keys {
		if !validEnvKey(k) {
			return nil, errkind.BadInputf("environment key %q: expected a name without '='", k)
		}
		if i := envIndex(out, k); i >= 0 {
			out = append(out[:i], out[i+1:]...)
		}
	}
	return out, nil
}

func envIndex(env []string, key string) int {
	for i, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			return i
		}
	}
	return -1
}

// Validate checks a whole record before it is stored. Errors match errkind.BadInput and say
// which container and field is wrong.
func (a App) Validate() error {
	if err := names.App(a.Name); err != nil {
		return err
	}
	bad := func(format string, args ...any) error {
		return errkind.BadInputf("app %q: %s", a.Name, fmt.Sprintf(format, args...))
	}
	switch n := len(a.Containers); {
	case n == 0:
		return bad("needs a container (an image or a static directory)")
	case n > MaxContainers:
		return bad("%d containers: at most %d", n, MaxContainers)
	}
	seen := map[string]bool{}
	for _, c := range a.Containers {
		if !names.IsApp(c.Name) {
			return bad("container name %q: lowercase letters, digits and '-' (1-63, no '-' at either end)", c.Name)
		}
		if seen[c.Name] {
			return bad("container %q given twice", c.Name)
		}
		seen[c.Name] = true
	}
	for _, c := range a.Containers {
		if err := c.validate(seen); err != nil {
			return bad("container %q: %v", c.Name, err)
		}
	}
	if err := a.checkOrder(); err != nil {
		return bad("%v", err)
	}
	if err := a.checkVolumes(); err != nil {
		return bad("%v", err)
	}
	if err := a.Limits.Check(); err != nil {
		return bad("%v", err)
	}
	publics := map[uint16]bool{}
	for _, p := range a.Ports {
		if p.Public == 0 || p.Target == 0 {
			return bad("ports must be from 1 to 65535")
		}
		if publics[p.Public] {
			return bad("public port %d given twice", p.Public)
		}
		publics[p.Public] = true
		switch c := a.PortContainer(p); {
		case c == "":
			return bad("port %d: name the container that serves it (the app has %d)", p.Public, len(a.Containers))
		case !seen[c]:
			return bad("port %d: no container %q", p.Public, c)
		}
	}
	for _, c := range a.Containers {
		if h := c.Health; h != nil && h.Port == 0 && len(h.Command) == 0 && len(a.PortsOf(c.Name)) == 0 {
			return bad("container %q: health: the check needs a port (the container serves none)", c.Name)
		}
	}
	if a.WantsOnion() && len(a.Ports) == 0 {
		return bad("an onion service needs at least one --port")
	}
	if a.OnionOnly && a.IPv4 {
		return bad("an onion-only app has no LAN interface, so no IPv4")
	}
	if a.Generation < 0 {
		return bad("generation %d", a.Generation)
	}
	return nil
}

// validate checks one container; names are the app's containers.
func (c Container) validate(names map[string]bool) error {
	if (c.Image == "") == (c.Static == "") {
		return errkind.BadInputf("needs exactly one of an image or a static directory")
	}
	if c.Static != "" && !strings.HasPrefix(c.Static, "/") {
		return errkind.BadInputf("static directory %q must be an absolute path", c.Static)
	}
	if err := c.Images().validate(""); err != nil {
		return err
	}
	if c.RejectedImageID != "" && !imageID.MatchString(c.RejectedImageID) {
		return errkind.BadInputf("rejected_image_id %q: want sha256: and 64 hex digits", c.RejectedImageID)
	}
	if err := genvalue.Check("rejected_reason", c.RejectedReason); err != nil || len(c.RejectedReason) > MaxReason {
		return errkind.BadInputf("rejected_reason: one line of at most %d bytes", MaxReason)
	}
	if err := c.Trial.validate(c); err != nil {
		return err
	}
	if err := c.Backup.validate(c.Volumes); err != nil {
		return err
	}
	for field, argv := range map[string][]string{"entrypoint": c.Entrypoint, "command": c.Command} {
		for i, w := range argv {
			if err := genvalue.Check(fmt.Sprintf("%s[%d]", field, i), w); err != nil {
				return err
			}
		}
	}
	if len(c.Entrypoint) > 0 && c.Entrypoint[0] == "" {
		return errkind.BadInputf("entrypoint: an empty program name")
	}
	if err := ValidateEnv(c.Env); err != nil {
		return err
	}
	paths := map[string]bool{}
	vols := map[string]bool{}
	for _, v := range c.Volumes {
		if err := v.validate(); err != nil {
			return err
		}
		if paths[v.Path] || vols[v.Name] {
			return errkind.BadInputf("volume %q: one mount per volume and per path", v.Name+":"+v.Path)
		}
		paths[v.Path], vols[v.Name] = true, true
	}
	if c.User != "" && c.User != UserOwn {
		return errkind.BadInputf("user %q: \"\" (the app's user, shared by its containers) or %q", c.User, UserOwn)
	}
	for _, o := range c.After {
		if o == c.Name || !names[o] {
			return errkind.BadInputf("after %q: another container of the app", o)
		}
	}
	if c.Health != nil {
		if err := c.Health.validate(); err != nil {
			return err
		}
	}
	return c.Limits.Check()
}

func (h Health) validate() error {
	kinds := 0
	if h.HTTP != "" {
		kinds++
		if !strings.HasPrefix(h.HTTP, "/") || strings.ContainsAny(h.HTTP, " #") || genvalue.Check("health http", h.HTTP) != nil {
			return errkind.BadInputf("health: http %q: a path such as /healthz", h.HTTP)
		}
	}
	if h.TCP {
		kinds++
	}
	if len(h.Command) > 0 {
		kinds++
		if h.Command[0] == "" {
			return errkind.BadInputf("health: command: an empty program name")
		}
		for i, w := range h.Command {
			if err := genvalue.Check(fmt.Sprintf("health: command[%d]", i), w); err != nil {
				return err
			}
		}
	}
	if kinds != 1 {
		return errkind.BadInputf("health: exactly one of http, tcp or command")
	}
	if len(h.Command) > 0 && h.Port != 0 {
		return errkind.BadInputf("health: a command check has no port")
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"interval", h.Interval}, {"timeout", h.Timeout}, {"start_period", h.StartPeriod}} {
		if d.v < 0 || d.v != 0 && d.v < 100*time.Millisecond || d.v > 24*time.Hour {
			return errkind.BadInputf("health: %s %v: from 100ms to 24h", d.field, d.v)
		}
	}
	if h.Retries < 0 || h.Retries > 100 {
		return errkind.BadInputf("health: retries %d: from 1 to 100", h.Retries)
	}
	return nil
}

// checkOrder refuses a cycle in the containers' After.
func (a App) checkOrder() error {
	after := map[string][]string{}
	for _, c := range a.Containers {
		after[c.Name] = c.After
	}
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(n string, path []string) error
	visit = func(n string, path []string) error {
		switch state[n] {
		case 1:
			return errkind.BadInputf("containers start after each other in a circle: %s", strings.Join(append(path, n), " -> "))
		case 2:
			return nil
		}
		state[n] = 1
		for _, m := range after[n] {
			if err := visit(m, append(path, n)); err != nil {
				return err
			}
		}
		state[n] = 2
		return nil
	}
	for _, c := range a.Containers {
		if err := visit(c.Name, nil); err != nil {
			return err
		}
	}
	return nil
}

// checkVolumes refuses a volume shared with a container that runs as its own user (its files
// would belong to one user or the other).
func (a App) checkVolumes() error {
	users := map[string]string{} // volume -> container of its own user that mounts it
	mounts := map[string]int{}
	for _, c := range a.Containers {
		for _, v := range c.Volumes {
			mounts[v.Name]++
			if c.User == UserOwn {
				users[v.Name] = c.Name
			}
		}
	}
	for v, c := range users {
		if mounts[v] > 1 {
			return errkind.BadInputf("volume %q: container %q runs as its own user, so it shares no volume", v, c)
		}
	}
	return nil
}

var imageID = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// validate checks a backup hook: a volume of the container, and two commands.
func (h *BackupHook) validate(vols []Volume) error {
	if h == nil {
		return nil
	}
	if !slices.ContainsFunc(vols, func(v Volume) bool { return v.Name == h.Volume }) {
		return errkind.BadInputf("backup: volume %q: not a volume of the container", h.Volume)
	}
	for field, argv := range map[string][]string{"dump": h.Dump, "restore": h.Restore} {
		if len(argv) == 0 || argv[0] == "" {
			return errkind.BadInputf("backup: %s: a command is needed", field)
		}
		for i, w := range argv {
			if err := genvalue.Check(fmt.Sprintf("backup: %s[%d]", field, i), w); err != nil {
				return err
			}
		}
	}
	return nil
}
