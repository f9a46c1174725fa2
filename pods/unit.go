package pods

import (
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/onionpod/onionpod/internal/genvalue"
)

// UnitPrefix starts the name of every unit onionpod owns.
const UnitPrefix = "onionpod-"

// Spec describes one pod: what RenderUnit turns into its unit files.
type Spec struct {
	App          string   // a DNS label: lowercase letters, digits, '-'; 1-63 characters
	Root         string   // absolute host path of the root file system (Image.Root); read-only for the pod
	Netns        string   // absolute path of the pod's network namespace (e.g. /run/netns/NAME)
	Command      []string // argv; argv[0] absolute inside Root (Image.Command resolves it)
	Env          []string // KEY=VALUE, image env merged with the user's (MergeEnv)
	WorkingDir   string   // absolute inside Root; "" = /
	Capabilities []string // e.g. CAP_NET_BIND_SERVICE to bind a port < 1024; empty = none at all
	Volumes      []Volume // persistent per-app directories
	BindReadOnly []Bind   // host paths shown read-only inside the root
	// NetUp and NetDown are the network unit's ExecStart and ExecStop (e.g. `onionpod internal
	// net-up APP`). With NetUp empty there is no network unit: Netns must then exist already.
	NetUp, NetDown []string
}

// Volume is a persistent directory of an app, kept across restarts, reboots and image updates:
// systemd creates it (StateDirectory=onionpod/APP/NAME, owned by the app's dynamic user) at
// VolumeHostDir(APP, NAME) and bind-mounts it at Path inside the root.
type Volume struct {
	Name string // letters, digits, '-', '_', '.'
	Path string // absolute inside the root
}

// Bind is a host path shown inside a pod's root.
type Bind struct {
	Source string // absolute host path
	Target string // absolute path inside the root
}

// Unit is a unit file: its name (e.g. onionpod-pod-blog.service) and its content.
type Unit struct {
	Name    string
	Content []byte
}

// PodUnitName is the name of an app's pod unit.
func PodUnitName(app string) string { return UnitPrefix + "pod-" + app + ".service" }

// NetUnitName is the name of an app's network unit.
func NetUnitName(app string) string { return UnitPrefix + "net-" + app + ".service" }

// VolumeHostDir is where a volume's data lives on the host (systemd's StateDirectory= for a
// DynamicUser= service).
func VolumeHostDir(app, volume string) string {
	return path.Join("/var/lib/private/onionpod", app, volume)
}

var (
	appName    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	volumeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	capName    = regexp.MustCompile(`^CAP_[A-Z_]{2,32}$`)
	envName    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// addressFamily is a socket family systemd knows by name: AF_UNIX, AF_INET6...
	addressFamily = regexp.MustCompile(`^AF_[A-Z0-9]{2,16}$`)
)

// ValidApp checks an app name (a DNS label); the error wraps ErrBadInput.
func ValidApp(app string) error {
	if !appName.MatchString(app) {
		return fmt.Errorf("pods: app name %q: %w: must be a DNS label (lowercase letters, digits, '-'; 1-63 characters)", app, ErrBadInput)
	}
	return nil
}

// Validate checks a spec; its errors wrap ErrBadInput.
func (s Spec) Validate() error {
	if err := ValidApp(s.App); err != nil {
		return err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("pods: %s: %w: %s", s.App, ErrBadInput, fmt.Sprintf(format, args...))
	}
	if err := checkPath(s.Root); err != nil {
		return bad("root: %v", err)
	}
	if s.Netns != "" {
		if err := checkPath(s.Netns); err != nil {
			return bad("netns: %v", err)
		}
	}
	if len(s.Command) == 0 || !path.IsAbs(s.Command[0]) {
		return bad("command %q: argv[0] must be an absolute path inside the root", s.Command)
	}
	for _, a := range append(append(slices.Clone(s.Command), s.NetUp...), s.NetDown...) {
		if strings.ContainsRune(a, 0) {
			return bad("command argument with NUL")
		}
	}
	if len(s.NetUp) > 0 && !path.IsAbs(s.NetUp[0]) || len(s.NetDown) > 0 && !path.IsAbs(s.NetDown[0]) {
		return bad("network commands need an absolute argv[0]")
	}
	for _, e := range s.Env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || !envName.MatchString(k) || strings.ContainsRune(e, 0) {
			return bad("environment %q: want KEY=VALUE", e)
		}
	}
	if s.WorkingDir != "" {
		if err := checkPath(s.WorkingDir); err != nil {
			return bad("working dir: %v", err)
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
		if err := checkPath(v.Path); err != nil || v.Path == "/" {
			return bad("volume %s path %q", v.Name, v.Path)
		}
	}
	for _, b := range s.BindReadOnly {
		if err := checkPath(b.Source); err != nil {
			return bad("bind source: %v", err)
		}
		if err := checkPath(b.Target); err != nil || b.Target == "/" {
			return bad("bind target %q", b.Target)
		}
	}
	return nil
}

// checkPath accepts clean absolute paths that systemd can take unquoted in a BindPaths= list.
func checkPath(p string) error {
	if !path.IsAbs(p) || path.Clean(p) != p {
		return fmt.Errorf("%q is not a clean absolute path", p)
	}
	if strings.ContainsAny(p, ": \t\n\\\"'%$") || strings.ContainsRune(p, 0) {
		return fmt.Errorf("%q contains a character units cannot hold", p)
	}
	return nil
}

// PodUnits validates s and renders its units: the pod unit and, when s.NetUp is set, the
// network unit.
func PodUnits(s Spec) ([]Unit, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	units := []Unit{{Name: PodUnitName(s.App), Content: RenderUnit(s)}}
	if len(s.NetUp) > 0 {
		units = append([]Unit{{Name: NetUnitName(s.App), Content: RenderNetworkUnit(s)}}, units...)
	}
	return units, nil
}

// RenderUnit renders the pod unit of a valid spec (see Spec.Validate).
func RenderUnit(s Spec) []byte {
	var o []*unit.UnitOption
	add := func(section, name, value string) { o = append(o, unit.NewUnitOption(section, name, value)) }
	add("Unit", "Description", "onionpod pod "+s.App)
	if len(s.NetUp) > 0 {
		add("Unit", "BindsTo", NetUnitName(s.App))
		add("Unit", "After", NetUnitName(s.App))
	}

	add("Service", "Type", "exec")
	add("Service", "ExecStart", execLine(s.Command))
	add("Service", "RootDirectory", s.Root)
	add("Service", "MountAPIVFS", "yes")
	if s.Netns != "" {
		add("Service", "NetworkNamespacePath", s.Netns)
	}
	add("Service", "DynamicUser", "yes")
	add("Service", "NoNewPrivileges", "yes")
	add("Service", "CapabilityBoundingSet", strings.Join(s.Capabilities, " "))
	if len(s.Capabilities) > 0 {
		add("Service", "AmbientCapabilities", strings.Join(s.Capabilities, " "))
	}
	// ProtectKernelTunables=, ProtectKernelModules=, ProtectControlGroups= and ProtectHome=yes
	// are left out on purpose: a dynamic user without capabilities can change none of what they
	// protect, the image root has no host /home, and ProtectKernelTunables= alone doubled the
	// start time (about 20 ms of read-only mounts per start, measured).
	add("Service", "ProtectSystem", "strict")
	add("Service", "PrivateDevices", "yes")
	add("Service", "PrivateTmp", "yes")
	add("Service", "RestrictSUIDSGID", "yes")
	add("Service", "LockPersonality", "yes")
	for _, e := range s.Env {
		add("Service", "Environment", quoteWord(e, false))
	}
	if s.WorkingDir != "" {
		add("Service", "WorkingDirectory", s.WorkingDir)
	}
	for _, v := range s.Volumes {
		add("Service", "StateDirectory", path.Join("onionpod", s.App, v.Name))
		add("Service", "BindPaths", VolumeHostDir(s.App, v.Name)+":"+v.Path)
	}
	for _, b := range s.BindReadOnly {
		add("Service", "BindReadOnlyPaths", b.Source+":"+b.Target)
	}
	add("Service", "SyslogIdentifier", s.App)
	add("Service", "Restart", "on-failure")
	add("Service", "TimeoutStopSec", "10s")

	add("Install", "WantedBy", "multi-user.target")
	return serialize(o)
}

// RenderNetworkUnit renders the network unit of a valid spec with NetUp set: a oneshot that
// stays "active" while the pod's network exists, ordered before the pod unit.
func RenderNetworkUnit(s Spec) []byte {
	var o []*unit.UnitOption
	add := func(section, name, value string) { o = append(o, unit.NewUnitOption(section, name, value)) }
	add("Unit", "Description", "onionpod network of "+s.App)
	add("Unit", "After", "network.target")
	add("Unit", "Before", PodUnitName(s.App))
	add("Service", "Type", "oneshot")
	add("Service", "RemainAfterExit", "yes")
	add("Service", "ExecStart", execLine(s.NetUp))
	if len(s.NetDown) > 0 {
		add("Service", "ExecStop", execLine(s.NetDown))
	}
	add("Service", "SyslogIdentifier", "onionpod-net-"+s.App)
	return serialize(o)
}

// HostService is one of onionpod's own helper services (e.g. the managed tor, the CNI DHCP
// daemon), rendered as onionpod-NAME.service, enabled in multi-user.target.
type HostService struct {
	Name        string   // "tor" gives onionpod-tor.service
	Description string   // "" = "onionpod NAME"
	Type        string   // "" = exec; simple, notify, forking, oneshot
	ExecStart   []string // argv, argv[0] absolute
	Environment []string // KEY=VALUE
	User        string   // "" = root
	Restart     string   // "" = on-failure; no, always, ...
	After       []string // ordering (units this one starts after)
	Wants       []string

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
	// BindPaths are bind-mounted onto themselves, writable: a path under a
	// TemporaryFileSystem stays visible this way.
	BindPaths []string
	// BindReadOnlyPaths are bind-mounted onto themselves, read-only.
	BindReadOnlyPaths []string
	// TemporaryFileSystem hides directories: each is an empty read-only tmpfs in the
	// service's view.
	TemporaryFileSystem []string
}

// UnitName is the service's unit name.
func (h HostService) UnitName() string { return UnitPrefix + h.Name + ".service" }

// Unit validates and renders the service's unit file.
func (h HostService) Unit() (Unit, error) {
	bad := func(format string, args ...any) (Unit, error) {
		return Unit{}, fmt.Errorf("pods: service %q: %w: %s", h.Name, ErrBadInput, fmt.Sprintf(format, args...))
	}
	if !appName.MatchString(h.Name) || strings.HasPrefix(h.Name, "pod-") || strings.HasPrefix(h.Name, "net-") {
		return bad("name: a DNS label, not starting with pod- or net-")
	}
	if len(h.ExecStart) == 0 || !path.IsAbs(h.ExecStart[0]) {
		return bad("ExecStart needs an absolute argv[0]")
	}
	for _, e := range h.Environment {
		if k, _, ok := strings.Cut(e, "="); !ok || !envName.MatchString(k) {
			return bad("environment %q", e)
		}
	}
	for _, u := range append(slices.Clone(h.After), h.Wants...) {
		if strings.ContainsAny(u, " \t\n") || u == "" {
			return bad("unit name %q", u)
		}
	}
	if h.User != "" && !volumeName.MatchString(h.User) {
		return bad("user %q", h.User)
	}
	if h.Group != "" && !volumeName.MatchString(h.Group) {
		return bad("group %q", h.Group)
	}
	for _, f := range h.AddressFamilies {
		if !addressFamily.MatchString(f) {
			return bad("address family %q", f)
		}
	}
	for _, paths := range []struct {
		field string
		list  []string
	}{
		{"ReadWritePaths", h.ReadWritePaths}, {"BindPaths", h.BindPaths},
		{"BindReadOnlyPaths", h.BindReadOnlyPaths}, {"TemporaryFileSystem", h.TemporaryFileSystem},
	} {
		for _, p := range paths.list {
			if err := genvalue.Path(fmt.Sprintf("pods: service %q: %s", h.Name, paths.field), p); err != nil {
				return Unit{}, err
			}
		}
	}
	var o []*unit.UnitOption
	add := func(section, name, value string) { o = append(o, unit.NewUnitOption(section, name, value)) }
	desc := h.Description
	if desc == "" {
		desc = "onionpod " + h.Name
	}
	add("Unit", "Description", strings.ReplaceAll(desc, "\n", " "))
	for _, u := range h.Wants {
		add("Unit", "Wants", u)
	}
	for _, u := range h.After {
		add("Unit", "After", u)
	}
	typ := h.Type
	if typ == "" {
		typ = "exec"
	}
	add("Service", "Type", typ)
	add("Service", "ExecStart", execLine(h.ExecStart))
	for _, e := range h.Environment {
		add("Service", "Environment", quoteWord(e, false))
	}
	if h.User != "" {
		add("Service", "User", h.User)
	}
	if h.Group != "" {
		add("Service", "Group", h.Group)
	}
	if h.Sandbox {
		sandboxOptions(add, h.AddressFamilies)
	}
	for _, p := range h.ReadWritePaths {
		add("Service", "ReadWritePaths", p)
	}
	for _, p := range h.TemporaryFileSystem {
		add("Service", "TemporaryFileSystem", p+":ro")
	}
	for _, p := range h.BindPaths {
		add("Service", "BindPaths", p)
	}
	for _, p := range h.BindReadOnlyPaths {
		add("Service", "BindReadOnlyPaths", p)
	}
	restart := h.Restart
	if restart == "" {
		restart = "on-failure"
	}
	add("Service", "Restart", restart)
	add("Install", "WantedBy", "multi-user.target")
	return Unit{Name: h.UnitName(), Content: serialize(o)}, nil
}

// sandboxOptions adds the settings of HostService.Sandbox.
func sandboxOptions(add func(section, name, value string), families []string) {
	if len(families) == 0 {
		families = []string{"AF_UNIX", "AF_INET", "AF_INET6"}
	}
	for _, kv := range [][2]string{
		{"NoNewPrivileges", "yes"},
		{"CapabilityBoundingSet", ""},
		{"AmbientCapabilities", ""},
		{"ProtectSystem", "strict"},
		{"ReadOnlyPaths", "/run"}, // strict leaves /run (and /run/lock, 1777) writable
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
		{"RestrictAddressFamilies", strings.Join(families, " ")},
	} {
		add("Service", kv[0], kv[1])
	}
}

func serialize(o []*unit.UnitOption) []byte {
	b, _ := io.ReadAll(unit.Serialize(o)) // reading a bytes.Buffer cannot fail
	return append([]byte("# Written by onionpod; changes are overwritten.\n"), b...)
}

// execLine renders argv for ExecStart=: each word double-quoted, with C escapes, and '%' and '$'
// doubled so systemd expands neither specifiers nor environment variables.
func execLine(argv []string) string {
	words := make([]string, len(argv))
	for i, a := range argv {
		words[i] = quoteWord(a, true)
	}
	return strings.Join(words, " ")
}

// quoteWord quotes one word of a unit setting. dollar doubles '$' too (ExecStart= expands it).
func quoteWord(s string, dollar bool) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '%':
			b.WriteString("%%")
		case '$':
			if dollar {
				b.WriteString("$$")
			} else {
				b.WriteByte('$')
			}
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}
