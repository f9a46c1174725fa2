package pods

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
)

// UnitPrefix starts the name of every unit onionpod owns.
const UnitPrefix = "onionpod-"

// Spec describes one container of a pod: what PodUnits (one container) and AppUnits (several
// sharing the pod's network namespace) turn into unit files.
type Spec struct {
	App string // a DNS label: lowercase letters, digits, '-'; 1-63 characters
	// Container names the container within its app (the same rule as an app's name); "" or App
	// is the app's own container, whose unit is onionpod-pod-APP.service (ContainerUnitName).
	Container    string
	Root         string   // absolute host path of the root file system (Image.Root); read-only for the pod
	Netns        string   // absolute path of the pod's network namespace (e.g. /run/netns/NAME)
	Command      []string // argv; argv[0] absolute inside Root (Image.Command resolves it)
	Env          []string // KEY=VALUE, image env merged with the user's (MergeEnv); in an environment file
	WorkingDir   string   // absolute inside Root; "" = /
	Capabilities []string // e.g. CAP_NET_BIND_SERVICE to bind a port < 1024; empty = none at all
	Volumes      []Volume // persistent per-app directories
	BindReadOnly []Bind   // host paths shown read-only inside the root
	// NetUp and NetDown are the network unit's ExecStart and ExecStop (e.g. `onionpod internal
	// net-up APP`). With NetUp empty there is no network unit: Netns must then exist already.
	// The network unit runs only where Netns does not exist (ConditionPathExists=!Netns): at
	// boot, or after the namespace was lost. Where the caller made the namespace before the
	// start (the daemon attaches a pod's network before it starts the pod), systemd skips it, and
	// the pod starts without waiting for a process that would find its work done; NetDown then
	// does not run either (the namespace is the caller's to undo). Netns must be on a file system
	// that ends with the boot (/run): a name left over from the last boot would skip NetUp.
	NetUp, NetDown []string
	// NetAfter are units the network unit wants and starts after (the holder of the pods'
	// namespaces, onionpod-netns.service).
	NetAfter []string
	// NetBoot is the unit that makes every pod's network at boot in one process (the daemon's
	// onionpod-networks.service): the network unit starts after it where both start (at boot),
	// and is then skipped where it made the namespace. Unlike NetAfter, it is not wanted: a
	// network unit started later (with its pod) does not pull it in.
	NetBoot string
	// OwnUser runs the container as a dynamic user of its own (ContainerUser) instead of the
	// one every container of the app shares (AppUser): it then shares no volume with another.
	OwnUser bool
	// After names the containers of the same app this one starts after (After= and Wants=: the
	// order of starts, not a wait for their health).
	After []string
	// KillSignal is the signal that stops the container (the image's StopSignal, e.g. SIGINT);
	// "" is SIGTERM. SIGKILL follows after TimeoutStopSec.
	KillSignal string
	// Limits are the container's resource limits (a zero field takes DefaultLimits').
	Limits Limits
}

// Volume is a persistent directory of an app, kept across restarts, reboots and image updates:
// systemd creates it (StateDirectory=onionpod-volumes/APP/NAME, owned by the app's dynamic user)
// at VolumeHostDir(APP, NAME) and bind-mounts it at Path inside the root.
type Volume struct {
	Name string // letters, digits, '-', '_', '.'
	Path string // absolute inside the root
}

// Bind is a host path shown inside a pod's root.
type Bind struct {
	Source string // absolute host path
	Target string // absolute path inside the root
}

// Unit is a unit file: its name (e.g. onionpod-pod-blog.service), its content and, for a pod
// with environment variables, the content of its environment file.
type Unit struct {
	Name    string
	Content []byte
	// Env is the unit's environment file (EnvironmentFile=), nil when it has none. It may hold
	// secrets, so it never goes into the unit itself (world-readable, and shown by `systemctl
	// show`): Systemd.Apply writes it root-only (0600) at EnvFile(Name), and Remove deletes it.
	Env []byte
	// Volumes names the volumes a container's unit mounts (Systemd.Apply moves any of them
	// still at the place of an older onionpod first: MigrateVolumes).
	Volumes []string
}

// EnvDir holds the pods' environment files (mode 0700, root's).
const EnvDir = "/etc/onionpod/env"

// EnvFile is where the environment file of the unit name lives: EnvDir/NAME.env, NAME being the
// unit's name without ".service".
func EnvFile(unitName string) string {
	return path.Join(EnvDir, strings.TrimSuffix(unitName, ".service")+".env")
}

// PodUnitName is the name of an app's own container's unit (ContainerUnitName(app, app)).
func PodUnitName(app string) string { return UnitPrefix + "pod-" + app + ".service" }

// ContainerUnitName is the unit of a container: onionpod-pod-APP.service for the app's own
// container (named "" or like the app: every app `onionpod run` makes), and
// onionpod-pod-APP_CONTAINER.service for the others. No app or container name holds '_', so the
// units of two apps never meet.
func ContainerUnitName(app, container string) string {
	if container == "" || container == app {
		return PodUnitName(app)
	}
	return UnitPrefix + "pod-" + app + "_" + container + ".service"
}

// PodRef names one container's unit: its app and its container (Container is the app's name for
// the app's own container).
type PodRef struct {
	App       string
	Container string
}

// Unit is the unit's name.
func (r PodRef) Unit() string { return ContainerUnitName(r.App, r.Container) }

// ParsePodUnit tells the app and container of a pod unit's name (ContainerUnitName's inverse).
func ParsePodUnit(unitName string) (PodRef, bool) {
	stem, ok := strings.CutPrefix(unitName, UnitPrefix+"pod-")
	if !ok {
		return PodRef{}, false
	}
	if stem, ok = strings.CutSuffix(stem, ".service"); !ok {
		return PodRef{}, false
	}
	app, container, found := strings.Cut(stem, "_")
	if !found {
		container = app
	}
	if !names.IsApp(app) || !names.IsApp(container) || found && container == app {
		return PodRef{}, false
	}
	return PodRef{App: app, Container: container}, true
}

// ParseNetUnit tells the app of a network unit's name (NetUnitName's inverse).
func ParseNetUnit(unitName string) (app string, ok bool) {
	stem, ok := strings.CutPrefix(unitName, UnitPrefix+"net-")
	if !ok {
		return "", false
	}
	if app, ok = strings.CutSuffix(stem, ".service"); !ok || !names.IsApp(app) {
		return "", false
	}
	return app, true
}

// maxUserName is the longest user name systemd takes for User= (UT_NAMESIZE - 1).
const maxUserName = 31

// AppUser is the dynamic user every container of app runs as (DynamicUser=yes with User=): one
// uid for the app's containers, which so share its volumes; another app's is always another.
// A name too long for a user name is shortened with a hash ("onionpod-" and the app's first
// four characters, "__", 16 hex digits), which no app's own name can give ('_' is in none).
func AppUser(app string) string {
	if u := "onionpod-" + app; len(u) <= maxUserName {
		return u
	}
	sum := sha256.Sum256([]byte("app:" + app))
	return "onionpod-" + app[:4] + "__" + hex.EncodeToString(sum[:8])
}

// ContainerUser is the dynamic user of a container that runs as its own (Spec.OwnUser):
// onionpod-APP_CONTAINER, or "onionpod_" and 22 hex digits of a hash when that is too long.
// It is never any app's AppUser, nor another container's.
func ContainerUser(app, container string) string {
	if u := "onionpod-" + app + "_" + container; len(u) <= maxUserName {
		return u
	}
	sum := sha256.Sum256([]byte("container:" + app + "/" + container))
	return "onionpod_" + hex.EncodeToString(sum[:])[:22]
}

// unitName is the spec's unit.
func (s Spec) unitName() string { return ContainerUnitName(s.App, s.Container) }

// containerName is the spec's container name (the app's for its own container).
func (s Spec) containerName() string {
	if s.Container == "" {
		return s.App
	}
	return s.Container
}

// user is the dynamic user the container runs as.
func (s Spec) user() string {
	if s.OwnUser {
		return ContainerUser(s.App, s.containerName())
	}
	return AppUser(s.App)
}

// NetUnitName is the name of an app's network unit.
func NetUnitName(app string) string { return UnitPrefix + "net-" + app + ".service" }

// volumeRoot is the StateDirectory= of every volume: a namespace of its own. (Volumes were once
// at onionpod/APP/VOLUME, which the state dir /var/lib/onionpod shares: systemd then moved, and
// handed to an app's dynamic user, the directory of the state dir an app and volume name matched,
// such as onion/APP, another app's onion key. MigrateVolumes moves such volumes.)
const volumeRoot = "onionpod-volumes"

// volumeStateDir is a volume's StateDirectory=, relative to /var/lib.
func volumeStateDir(app, volume string) string { return path.Join(volumeRoot, app, volume) }

// VolumeHostDir is where a volume's data lives on the host (systemd's StateDirectory= for a
// DynamicUser= service, in /var/lib/private).
func VolumeHostDir(app, volume string) string {
	return path.Join("/var/lib/private", volumeStateDir(app, volume))
}

// legacyVolumeHostDir is where a volume's data lived before volumeRoot, and legacyVolumeLink
// the public symlink systemd made to it.
func legacyVolumeHostDir(app, volume string) string {
	return path.Join("/var/lib/private/onionpod", app, volume)
}

func legacyVolumeLink(app, volume string) string { return path.Join("/var/lib/onionpod", app, volume) }

var (
	volumeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	capName    = regexp.MustCompile(`^CAP_[A-Z_]{2,32}$`)
	envName    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// addressFamily is a socket family systemd knows by name: AF_UNIX, AF_INET6...
	addressFamily = regexp.MustCompile(`^AF_[A-Z0-9]{2,16}$`)
)

// ValidApp checks an app name (internal/names.App: one DNS label); the error matches ErrBadInput.
func ValidApp(app string) error {
	if err := names.App(app); err != nil {
		return fmt.Errorf("pods: %w", err)
	}
	return nil
}

// Validate checks a spec: that PodUnits can render it. Its errors match ErrBadInput.
func (s Spec) Validate() error {
	_, err := PodUnits(s)
	return err
}

// checkShape checks what the unit writer cannot see: names, absolute commands, unique volumes.
// The characters of every value are checked as they are written (unitValue).
func (s Spec) checkShape() error {
	if err := ValidApp(s.App); err != nil {
		return err
	}
	bad := func(format string, args ...any) error {
		if s.Container != "" && s.Container != s.App {
			return errkind.BadInputf("pods: app %q: container %q: %s", s.App, s.Container, fmt.Sprintf(format, args...))
		}
		return errkind.BadInputf("pods: app %q: %s", s.App, fmt.Sprintf(format, args...))
	}
	if s.Container != "" && !names.IsApp(s.Container) {
		return bad("container name %q: lowercase letters, digits and '-'", s.Container)
	}
	for _, a := range s.After {
		if !names.IsApp(a) || a == s.containerName() {
			return bad("after %q: another container of the app", a)
		}
	}
	if s.KillSignal != "" && NormalizeSignal(s.KillSignal) != s.KillSignal {
		return bad("kill signal %q: a signal name such as SIGINT", s.KillSignal)
	}
	if err := s.Limits.Check(); err != nil {
		return bad("%v", err)
	}
	if len(s.Command) == 0 || !path.IsAbs(s.Command[0]) {
		return bad("command: argv[0] must be an absolute path inside the root")
	}
	if len(s.NetUp) > 0 && !path.IsAbs(s.NetUp[0]) || len(s.NetDown) > 0 && !path.IsAbs(s.NetDown[0]) {
		return bad("network commands need an absolute argv[0]")
	}
	for _, e := range s.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || !envName.MatchString(k) {
			return bad("environment: want KEY=VALUE with KEY letters, digits and '_'")
		}
	}
	for _, c := range s.Capabilities {
		if !capName.MatchString(c) {
			return bad("capability %q", c)
		}
	}
	seen := map[string]bool{}
	for _, v := range s.Volumes {
		if !volumeName.MatchString(v.Name) || seen[v.Name] {
			return bad("volume name %q (letters, digits, '-', '_', '.'; unique)", v.Name)
		}
		seen[v.Name] = true
		if v.Path == "/" {
			return bad("volume %s: path /", v.Name)
		}
	}
	for _, b := range s.BindReadOnly {
		if b.Target == "/" {
			return bad("bind target /")
		}
	}
	return nil
}

// PodUnits checks s and renders its units: the network unit when s.NetUp is set, then the pod
// unit (with its environment file when s.Env is not empty). Nothing is written.
func PodUnits(s Spec) ([]Unit, error) { return AppUnits(s) }

// AppUnits checks the specs of one app's containers, which share its network namespace, and
// renders their units: the network unit (once, when NetUp is set), then one unit per container
// in the order given (each with its environment file when it has an environment). The specs
// must agree on App, Netns, NetUp and NetDown, name distinct containers, and name only each
// other in After. Nothing is written.
func AppUnits(specs ...Spec) ([]Unit, error) {
	if len(specs) == 0 {
		return nil, errkind.BadInputf("pods: no container")
	}
	first := specs[0]
	seen := map[string]bool{}
	for _, s := range specs {
		if err := s.checkShape(); err != nil {
			return nil, err
		}
		if s.App != first.App || s.Netns != first.Netns || s.NetBoot != first.NetBoot || !slices.Equal(s.NetUp, first.NetUp) || !slices.Equal(s.NetDown, first.NetDown) {
			return nil, errkind.BadInputf("pods: app %q: its containers must share the app, network namespace and network unit", first.App)
		}
		if seen[s.containerName()] {
			return nil, errkind.BadInputf("pods: app %q: container %q given twice", first.App, s.containerName())
		}
		seen[s.containerName()] = true
	}
	for _, s := range specs {
		for _, a := range s.After {
			if !seen[a] {
				return nil, errkind.BadInputf("pods: app %q: container %q starts after %q, which the app does not have", first.App, s.containerName(), a)
			}
		}
	}
	fail := func(err error) ([]Unit, error) { return nil, fmt.Errorf("pods: app %q: %w", first.App, err) }
	var out []Unit
	if len(first.NetUp) > 0 {
		net := Unit{Name: NetUnitName(first.App)}
		var err error
		if net.Content, err = netUnit(first, specs).bytes(); err != nil {
			return fail(err)
		}
		out = append(out, net)
	}
	for _, s := range specs {
		pod := Unit{Name: s.unitName()}
		for _, v := range s.Volumes {
			pod.Volumes = append(pod.Volumes, v.Name)
		}
		var err error
		if len(s.Env) > 0 {
			if pod.Env, err = envFileContent(s.Env); err != nil {
				return fail(err)
			}
		}
		if pod.Content, err = podUnit(s).bytes(); err != nil {
			return fail(err)
		}
		out = append(out, pod)
	}
	return out, nil
}

// podUnit builds the pod unit of a spec that passed checkShape.
func podUnit(s Spec) *unitBuilder {
	b := &unitBuilder{}
	desc := "onionpod pod " + s.App
	if s.containerName() != s.App {
		desc += ", container " + s.containerName()
	}
	b.set("Unit", "Description", textValue, "description", desc)
	if len(s.NetUp) > 0 {
		// Requires=, not BindsTo=: a network unit skipped by its condition (the namespace was
		// there) stays inactive, which BindsTo= would stop the pod for.
		b.fixed("Unit", "Requires", NetUnitName(s.App))
		b.fixed("Unit", "After", NetUnitName(s.App))
	}
	for _, a := range s.After {
		b.fixed("Unit", "Wants", ContainerUnitName(s.App, a))
		b.fixed("Unit", "After", ContainerUnitName(s.App, a))
	}

	b.fixed("Service", "Type", "exec")
	b.set("Service", "ExecStart", commandValue, "command", s.Command...)
	b.set("Service", "RootDirectory", pathValue, "root", s.Root)
	b.fixed("Service", "MountAPIVFS", "yes")
	if s.Netns != "" {
		b.set("Service", "NetworkNamespacePath", pathValue, "netns", s.Netns)
	}
	b.fixed("Service", "DynamicUser", "yes")
	// One user for the app's containers (unless one runs as its own): they share volumes.
	b.fixed("Service", "User", s.user())
	b.fixed("Service", "NoNewPrivileges", "yes")
	b.set("Service", "CapabilityBoundingSet", tokensValue, "capabilities", s.Capabilities...)
	if len(s.Capabilities) > 0 {
		b.set("Service", "AmbientCapabilities", tokensValue, "capabilities", s.Capabilities...)
	}
	// ProtectKernelTunables=, ProtectKernelModules=, ProtectControlGroups= and ProtectHome=yes
	// are left out on purpose: a dynamic user without capabilities can change none of what they
	// protect, the image root has no host /home, and ProtectKernelTunables= alone doubled the
	// start time (about 20 ms of read-only mounts per start, measured).
	b.fixed("Service", "ProtectSystem", "strict")
	b.fixed("Service", "PrivateDevices", "yes")
	b.fixed("Service", "PrivateTmp", "yes")
	b.fixed("Service", "RestrictSUIDSGID", "yes")
	b.fixed("Service", "LockPersonality", "yes")
	if len(s.Env) > 0 {
		// Read by systemd (as root) before the sandbox is set up: the file stays root-only.
		b.set("Service", "EnvironmentFile", pathValue, "environment file", EnvFile(s.unitName()))
	}
	if s.WorkingDir != "" {
		b.set("Service", "WorkingDirectory", pathValue, "working directory", s.WorkingDir)
	}
	for _, v := range s.Volumes {
		b.set("Service", "StateDirectory", relPathValue, "volume "+v.Name, volumeStateDir(s.App, v.Name))
		b.set("Service", "BindPaths", bindValue, "volume "+v.Name+" path", VolumeHostDir(s.App, v.Name), v.Path)
	}
	for _, m := range s.BindReadOnly {
		b.set("Service", "BindReadOnlyPaths", bindValue, "read-only bind", m.Source, m.Target)
	}
	for _, l := range s.Limits.directives() {
		b.set("Service", l[0], limitValue, "limits "+l[0], l[1])
	}
	b.fixed("Service", "SyslogIdentifier", strings.TrimSuffix(strings.TrimPrefix(s.unitName(), UnitPrefix+"pod-"), ".service"))
	b.fixed("Service", "Restart", "on-failure")
	if s.KillSignal != "" {
		b.fixed("Service", "KillSignal", s.KillSignal)
	}
	b.fixed("Service", "TimeoutStopSec", "10s")

	b.fixed("Install", "WantedBy", "multi-user.target")
	return b
}

// netUnit builds the network unit of a spec with NetUp set: a oneshot, ordered before the
// containers' units, that makes the pod's network where its namespace does not exist yet and
// then stays "active" (where it existed, systemd skips it: Spec.NetUp).
func netUnit(s Spec, containers []Spec) *unitBuilder {
	b := &unitBuilder{}
	b.set("Unit", "Description", textValue, "description", "onionpod network of "+s.App)
	if s.Netns != "" {
		b.set("Unit", "ConditionPathExists", absentPathValue, "netns", s.Netns)
	}
	b.fixed("Unit", "After", "network.target")
	for _, u := range s.NetAfter {
		b.set("Unit", "Wants", tokensValue, "network unit wants", u)
		b.set("Unit", "After", tokensValue, "network unit after", u)
	}
	if s.NetBoot != "" {
		b.set("Unit", "After", tokensValue, "network boot unit", s.NetBoot)
	}
	for _, c := range containers {
		b.fixed("Unit", "Before", c.unitName())
	}
	b.fixed("Service", "Type", "oneshot")
	b.fixed("Service", "RemainAfterExit", "yes")
	b.set("Service", "ExecStart", commandValue, "network command", s.NetUp...)
	if len(s.NetDown) > 0 {
		b.set("Service", "ExecStop", commandValue, "network stop command", s.NetDown...)
	}
	b.fixed("Service", "SyslogIdentifier", "onionpod-net-"+s.App)
	return b
}

// HostService is one of onionpod's own helper services (e.g. the managed tor, the CNI DHCP
// daemon), rendered as onionpod-NAME.service, enabled in multi-user.target.
type HostService struct {
	Name        string   // "tor" gives onionpod-tor.service
	Description string   // "" = "onionpod NAME"
	Type        string   // "" = exec; simple, notify, forking, oneshot
	ExecStart   []string // argv, argv[0] absolute
	Environment []string // KEY=VALUE (not secrets: they are in the unit file)
	User        string   // "" = root
	Restart     string   // "" = on-failure; no, always, ...
	After       []string // ordering (units this one starts after)
	Wants       []string

	// RemainAfterExit keeps a oneshot "active" once its command has run (started again only
	// after a stop, or at the next boot).
	RemainAfterExit bool

	// Group runs the service with this group ("" = User's primary group).
	Group string
	// Sandbox confines the service (for one that needs no privilege, such as the managed tor):
	// the whole file system read-only but ReadWritePaths and BindPaths, no /home, private /tmp
	// and /dev, no capabilities at all and no way to gain any, no kernel tunables, modules,
	// logs, clock, hostname or namespaces, native @system-service system calls only, sockets
	// of AddressFamilies only.
	Sandbox bool
	// AddressFamilies is RestrictAddressFamilies= with Sandbox ("" = AF_UNIX AF_INET AF_INET6).
	AddressFamilies []string
	// ReadWritePaths stay writable under Sandbox.
	ReadWritePaths []string
	// RuntimeDirectories are directories under /run that systemd makes (0700, owned by User)
	// before each start and keeps when the service stops (RuntimeDirectory=): /run is empty at
	// boot, and a service started before whatever else would make them (as tor at boot, before
	// the daemon) finds them there. Writable under Sandbox.
	RuntimeDirectories []string
	// BindPaths are bind-mounted onto themselves, writable: a path under a
	// TemporaryFileSystem stays visible this way.
	BindPaths []string
	// BindReadOnlyPaths are bind-mounted onto themselves, read-only.
	BindReadOnlyPaths []string
	// TemporaryFileSystem hides directories: each is an empty read-only tmpfs in the
	// service's view.
	TemporaryFileSystem []string
	// OwnTmpfs are writable tmpfs of the service's own (mode 0755), in a mount namespace of its
	// own: what the holder of the pods' namespaces keeps their mounts in, out of PID 1's table.
	OwnTmpfs []string

	// NetworkNamespacePath runs the service in that network namespace (e.g. a pod's).
	NetworkNamespacePath string
	// DynamicUser runs the service as a user systemd allocates while it runs (named User, or
	// after the unit): it owns nothing on disk, and shares no uid with another service.
	DynamicUser bool
	// Credentials are files systemd reads (as root) at each start and gives the service, in its
	// own $CREDENTIALS_DIRECTORY readable by it only (LoadCredential=): how a root-only file
	// reaches a dynamic user, and nothing else of its directory.
	Credentials []Credential
	// Requires and PartOf tie the service to other units: it starts them (Requires) and stops
	// when they are stopped (both), and restarts with them (PartOf). Each is also ordered
	// After. (Not BindsTo=: a pod's network unit, skipped by its condition where the namespace
	// exists, stays inactive, which BindsTo= would stop the service for.)
	Requires, PartOf []string
	// Capabilities the service keeps (ambient and bounding; under Sandbox too), e.g.
	// CAP_NET_BIND_SERVICE to bind :443; empty = none.
	Capabilities []string
}

// Credential is one LoadCredential= of a HostService.
type Credential struct {
	Name string // the file's name in $CREDENTIALS_DIRECTORY
	Path string // absolute host path, read by systemd at start
}

// UnitName is the service's unit name.
func (h HostService) UnitName() string { return UnitPrefix + h.Name + ".service" }

// Unit validates and renders the service's unit file. Its errors match ErrBadInput.
func (h HostService) Unit() (Unit, error) {
	if err := h.check(); err != nil {
		return Unit{}, fmt.Errorf("pods: service %q: %w", h.Name, err)
	}
	b := &unitBuilder{}
	h.unitSection(b)
	h.serviceSection(b)
	b.fixed("Install", "WantedBy", "multi-user.target")
	content, err := b.bytes()
	if err != nil {
		return Unit{}, fmt.Errorf("pods: service %q: %w", h.Name, err)
	}
	return Unit{Name: h.UnitName(), Content: content}, nil
}

// check refuses a name that is not the service's own, a relative command, and users, groups,
// address families or capabilities that are not names.
func (h HostService) check() error {
	if err := names.App(h.Name); err != nil || strings.HasPrefix(h.Name, "pod-") || strings.HasPrefix(h.Name, "net-") {
		return errkind.BadInputf("name: a DNS label, not starting with pod- or net-")
	}
	if len(h.ExecStart) == 0 || !path.IsAbs(h.ExecStart[0]) {
		return errkind.BadInputf("ExecStart needs an absolute argv[0]")
	}
	if h.User != "" && !volumeName.MatchString(h.User) {
		return errkind.BadInputf("user %q", h.User)
	}
	if h.Group != "" && !volumeName.MatchString(h.Group) {
		return errkind.BadInputf("group %q", h.Group)
	}
	for _, f := range h.AddressFamilies {
		if !addressFamily.MatchString(f) {
			return errkind.BadInputf("address family %q", f)
		}
	}
	for _, c := range h.Capabilities {
		if !capName.MatchString(c) {
			return errkind.BadInputf("capability %q", c)
		}
	}
	return nil
}

// unitSection writes the [Unit] section: the description and the ordering and dependencies.
func (h HostService) unitSection(b *unitBuilder) {
	desc := h.Description
	if desc == "" {
		desc = "onionpod " + h.Name
	}
	b.set("Unit", "Description", textValue, "description", desc)
	for _, u := range h.Wants {
		b.set("Unit", "Wants", tokensValue, "wants", u)
	}
	for _, u := range h.After {
		b.set("Unit", "After", tokensValue, "after", u)
	}
	for _, u := range h.Requires {
		b.set("Unit", "Requires", tokensValue, "requires", u)
		b.set("Unit", "After", tokensValue, "after", u)
	}
	for _, u := range h.PartOf {
		b.set("Unit", "PartOf", tokensValue, "part of", u)
		b.set("Unit", "After", tokensValue, "after", u)
	}
}

// serviceSection writes the [Service] section: the command, its identity and environment, its
// sandbox and file system, and the restart policy.
func (h HostService) serviceSection(b *unitBuilder) {
	b.set("Service", "Type", tokensValue, "type", cmp.Or(h.Type, "exec"))
	b.set("Service", "ExecStart", commandValue, "ExecStart", h.ExecStart...)
	if h.RemainAfterExit {
		b.fixed("Service", "RemainAfterExit", "yes")
	}
	for _, e := range h.Environment {
		b.set("Service", "Environment", assignmentValue, "environment", e)
	}
	if h.User != "" {
		b.set("Service", "User", tokensValue, "user", h.User)
	}
	if h.Group != "" {
		b.set("Service", "Group", tokensValue, "group", h.Group)
	}
	if h.DynamicUser {
		b.fixed("Service", "DynamicUser", "yes")
	}
	if h.NetworkNamespacePath != "" {
		b.set("Service", "NetworkNamespacePath", pathValue, "network namespace", h.NetworkNamespacePath)
	}
	for _, c := range h.Credentials {
		b.set("Service", "LoadCredential", credentialValue, "credential", c.Name, c.Path)
	}
	if h.Sandbox {
		sandboxOptions(b, h.AddressFamilies, h.Capabilities)
	} else if len(h.Capabilities) > 0 {
		b.set("Service", "CapabilityBoundingSet", tokensValue, "capabilities", h.Capabilities...)
		b.set("Service", "AmbientCapabilities", tokensValue, "capabilities", h.Capabilities...)
	}
	h.fileSystemOptions(b)
	b.set("Service", "Restart", tokensValue, "restart", cmp.Or(h.Restart, "on-failure"))
}

// fileSystemOptions writes the paths the service may write, the tmpfs it gets and the paths
// bound into its view.
func (h HostService) fileSystemOptions(b *unitBuilder) {
	for _, p := range h.ReadWritePaths {
		b.set("Service", "ReadWritePaths", pathValue, "ReadWritePaths", p)
	}
	if len(h.RuntimeDirectories) > 0 {
		for _, p := range h.RuntimeDirectories {
			rel, ok := strings.CutPrefix(p, "/run/")
			if !ok && b.err == nil {
				b.err = errkind.BadInputf("pods: RuntimeDirectory %q is not under /run", p)
			}
			b.set("Service", "RuntimeDirectory", relPathValue, "RuntimeDirectory", rel)
		}
		b.fixed("Service", "RuntimeDirectoryMode", "0700")
		b.fixed("Service", "RuntimeDirectoryPreserve", "yes")
	}
	for _, p := range h.TemporaryFileSystem {
		b.set("Service", "TemporaryFileSystem", readOnlyTmpfsValue, "TemporaryFileSystem", p)
	}
	for _, p := range h.OwnTmpfs {
		b.set("Service", "TemporaryFileSystem", ownTmpfsValue, "TemporaryFileSystem", p)
	}
	for _, p := range h.BindPaths {
		b.set("Service", "BindPaths", pathValue, "BindPaths", p)
	}
	for _, p := range h.BindReadOnlyPaths {
		b.set("Service", "BindReadOnlyPaths", pathValue, "BindReadOnlyPaths", p)
	}
}

// sandboxOptions adds the settings of HostService.Sandbox.
func sandboxOptions(b *unitBuilder, families, caps []string) {
	if len(families) == 0 {
		families = []string{"AF_UNIX", "AF_INET", "AF_INET6"}
	}
	for _, kv := range [][2]string{
		{"NoNewPrivileges", "yes"},
		{"CapabilityBoundingSet", ""},
		{"AmbientCapabilities", ""},
		{"ProtectSystem", "strict"},
		{"ProtectHome", "yes"},
		{"PrivateTmp", "yes"},
		{"PrivateDevices", "yes"},
		{"ProtectKernelTunables", "yes"},
		{"ProtectKernelModules", "yes"},
		{"ProtectKernelLogs", "yes"},
		{"ProtectControlGroups", "yes"},
		{"ProtectClock", "yes"},
		{"ProtectHostname", "yes"},
		{"ProtectProc", "invisible"},
		{"RestrictNamespaces", "yes"},
		{"RestrictRealtime", "yes"},
		{"RestrictSUIDSGID", "yes"},
		{"LockPersonality", "yes"},
		{"MemoryDenyWriteExecute", "yes"},
		{"RemoveIPC", "yes"},
		{"UMask", "0077"},
		{"SystemCallArchitectures", "native"},
		{"SystemCallFilter", "@system-service"},
		{"SystemCallErrorNumber", "EPERM"},
	} {
		switch {
		case kv[1] == "" && len(caps) > 0:
			b.set("Service", kv[0], tokensValue, "capabilities", caps...)
		case kv[1] == "":
			b.fixed("Service", kv[0])
		default:
			b.fixed("Service", kv[0], kv[1])
		}
		if kv[0] == "ProtectSystem" {
			// strict leaves /run (and /run/lock, 1777) writable
			b.set("Service", "ReadOnlyPaths", pathValue, "ReadOnlyPaths", "/run")
		}
	}
	b.set("Service", "RestrictAddressFamilies", tokensValue, "address families", families...)
}
