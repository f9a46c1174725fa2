// Package appfile reads and writes app files: an app as a declarative TOML file (`onionpod apply
// -f FILE`, `onionpod export APP`). Decoding is strict: an unknown key is an error naming the key
// and its line, and so is every bad value; the result is a store.App, checked as the daemon
// checks a record. Every CLI flag of run and expose has a field.
//
//	version = 1                   # the app file format
//	name = "notes"
//	onion = true                  # an onion service (run --onion; expose sets it)
//	onion_only = false            # --onion-only
//	ipv4 = false                  # --ipv4
//	onion_location = false        # --no-onion-location: no Onion-Location on its HTTPS answers (default true)
//	auto_update = false           # --auto-update: automatic updates (onionpod update --all --auto) may
//	                              # take new images the registries serve under the references
//
//	[limits]                      # defaults of every container (each may set its own)
//	memory = "1G"                 # MemoryMax: bytes (K, M, G, T), a percentage of the box's, or "infinity"
//	cpu = "200%"                  # CPUQuota: 100% is one CPU
//	cpu_weight = 100              # CPUWeight, 1-10000
//	tasks = 512                   # TasksMax (-1: no limit)
//
//	[[containers]]
//	name = "db"                   # a DNS label; the container named like the app keeps onionpod-pod-APP.service
//	image = "postgres.tar"        # --image: a registry reference, a local archive or OCI layout (relative to
//	                              # this file), or the ID (sha256:...) of an image the daemon has
//	# static = "/srv/site"        # --static: a directory of static files instead of an image
//	entrypoint = ["/bin/sh", "-c"]  # replaces the image's entrypoint (and its cmd)
//	command = ["..."]             # replaces the image's cmd
//	env = ["POSTGRES_DB=notes"]   # --env
//	volumes = ["pgdata:/var/lib/postgresql"]  # --volume; two containers naming a volume share it
//	ports = ["80:8080"]           # --port: PUBLIC[:TARGET], served by this container
//	user = "own"                  # a dynamic user of its own (default: the app's, shared)
//	after = ["other"]             # containers this one starts after
//	[containers.health]           # one of http, tcp, command
//	command = ["pg_isready", "-h", "127.0.0.1"]
//	interval = "10s"
//	timeout = "5s"
//	retries = 3
//	start_period = "60s"
//	[containers.limits]
//	memory = "512M"
//	[containers.backup]           # a whole-app backup stores this dump instead of the volume's files
//	volume = "pgdata"
//	dump = ["/usr/local/bin/pg-dump"]        # writes the dump to its standard output
//	restore = ["/usr/local/bin/pg-restore"]  # reads it on its standard input, all or nothing
//
// The daemon's own fields of a record (the resolved image IDs, generations, times) are not in the
// file; applying a file keeps them.
package appfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/pods"
)

// Version is the app file format this build reads and writes.
const Version = 1

// MaxSize bounds an app file.
const MaxSize = 1 << 20

// file is an app file as TOML has it.
type file struct {
	Version       int         `toml:"version"`
	Name          string      `toml:"name"`
	Onion         bool        `toml:"onion"`
	OnionOnly     bool        `toml:"onion_only"`
	IPv4          bool        `toml:"ipv4"`
	OnionLocation *bool       `toml:"onion_location,omitempty"` // false: NoOnionLocation; left out: true
	AutoUpdate    bool        `toml:"auto_update,omitempty"`
	Limits        *limits     `toml:"limits,omitempty"`
	Containers    []container `toml:"containers"`
}

type container struct {
	Name       string   `toml:"name"`
	Image      string   `toml:"image,omitempty"`
	Static     string   `toml:"static,omitempty"`
	Entrypoint []string `toml:"entrypoint,omitempty"`
	Command    []string `toml:"command,omitempty"`
	Env        []string `toml:"env,omitempty"`
	Volumes    []string `toml:"volumes,omitempty"`
	Ports      []string `toml:"ports,omitempty"`
	User       string   `toml:"user,omitempty"`
	After      []string `toml:"after,omitempty"`
	Health     *health  `toml:"health,omitempty"`
	Limits     *limits  `toml:"limits,omitempty"`
	Backup     *backup  `toml:"backup,omitempty"`
}

type backup struct {
	Volume  string   `toml:"volume"`
	Dump    []string `toml:"dump"`
	Restore []string `toml:"restore"`
}

type health struct {
	HTTP        string   `toml:"http,omitempty"`
	TCP         bool     `toml:"tcp,omitempty"`
	Command     []string `toml:"command,omitempty"`
	Port        int      `toml:"port,omitempty"`
	Interval    string   `toml:"interval,omitempty"`
	Timeout     string   `toml:"timeout,omitempty"`
	Retries     int      `toml:"retries,omitempty"`
	StartPeriod string   `toml:"start_period,omitempty"`
}

type limits struct {
	Memory    string `toml:"memory,omitempty"`
	CPU       string `toml:"cpu,omitempty"`
	CPUWeight int    `toml:"cpu_weight,omitempty"`
	Tasks     int    `toml:"tasks,omitempty"`
}

// App is an app read from a file: the record it asks for, and the local images its containers
// name, which the CLI sends to the daemon (their containers' Image is set then).
type App struct {
	store.App
	// Local maps a container to the absolute path of the local archive or OCI layout its image
	// is (resolved against the file's directory).
	Local map[string]string
}

// Parse reads an app file. name is the file's name in messages; dir is the directory local
// image paths are relative to. Every error matches errkind.BadInput and says where.
func Parse(data []byte, name, dir string) (App, error) {
	p := parser{name: name, dir: dir}
	if len(data) > MaxSize {
		return App{}, p.fail(0, "larger than %d bytes", MaxSize)
	}
	f, err := p.decode(data)
	if err != nil {
		return App{}, err
	}
	p.lines = keyLines(data)
	out, err := p.app(f)
	if err != nil {
		return App{}, err
	}
	if err := p.validate(out); err != nil {
		return App{}, err
	}
	return out, nil
}

// parser turns one app file into an App, its errors saying where in the file.
type parser struct {
	name  string         // the file's name in messages
	dir   string         // the directory local image paths are relative to
	lines map[string]int // the line of each key (keyLines)
}

// fail is an error at a line of the file (0: the file as a whole).
func (p *parser) fail(line int, format string, args ...any) error {
	where := "app file " + p.name
	if line > 0 {
		where += fmt.Sprintf(": line %d", line)
	}
	return errkind.BadInputf("%s: %s", where, fmt.Sprintf(format, args...))
}

// at is the line of a key (0 when unknown).
func (p *parser) at(key string) int { return p.lines[key] }

// decode reads the TOML strictly: an unknown key or a syntax error says its line.
func (p *parser) decode(data []byte) (file, error) {
	var f file
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) && len(strict.Errors) > 0 {
			e := strict.Errors[0]
			line, _ := e.Position()
			return file{}, p.fail(line, "unknown key %q", strings.Join(e.Key(), "."))
		}
		var syntax *toml.DecodeError
		if errors.As(err, &syntax) {
			line, col := syntax.Position()
			msg := strings.TrimPrefix(syntax.Error(), "toml: ")
			if k := syntax.Key(); len(k) > 0 {
				msg = fmt.Sprintf("%s: %s", strings.Join(k, "."), msg)
			}
			return file{}, p.fail(line, "column %d: %s", col, msg)
		}
		return file{}, p.fail(0, "%s", strings.TrimPrefix(err.Error(), "toml: "))
	}
	return f, nil
}

// app converts the file's fields, checking each as it goes.
func (p *parser) app(f file) (App, error) {
	if f.Version != 0 && f.Version != Version {
		return App{}, p.fail(p.at("version"), "version %d: this onionpod reads version %d", f.Version, Version)
	}
	out := App{App: store.App{Name: f.Name, Onion: f.Onion, OnionOnly: f.OnionOnly, IPv4: f.IPv4,
		NoOnionLocation: f.OnionLocation != nil && !*f.OnionLocation, AutoUpdate: f.AutoUpdate}, Local: map[string]string{}}
	if f.Name == "" {
		return App{}, p.fail(0, "name: the app's name is missing")
	}
	if f.Limits != nil {
		out.Limits = f.Limits.pods()
		if err := out.Limits.Check(); err != nil {
			return App{}, p.fail(p.at("limits"), "%v", err)
		}
	}
	if len(f.Containers) == 0 {
		return App{}, p.fail(0, "no [[containers]]: an app needs at least one")
	}
	for i, fc := range f.Containers {
		if fc.Name == "" && len(f.Containers) == 1 {
			fc.Name = f.Name // the app's own container
		}
		if err := p.container(&out, fmt.Sprintf("containers[%d]", i), fc, len(f.Containers) > 1); err != nil {
			return App{}, err
		}
	}
	return out, nil
}

// container converts the file's container at key and adds it to out, with its ports (which
// name the container when the app has several) and its image when that is a local file.
func (p *parser) container(out *App, key string, fc container, several bool) error {
	c := store.Container{Name: fc.Name, Static: fc.Static, Entrypoint: fc.Entrypoint, Command: fc.Command,
		Env: fc.Env, User: fc.User, After: fc.After}
	what := fmt.Sprintf("container %q", fc.Name)
	if fc.Name == "" {
		return p.fail(p.at(key), "%s: name: a container of an app of several needs a name", key)
	}
	if fc.Image != "" {
		ref, local, err := imageOf(fc.Image, p.dir)
		if err != nil {
			return p.fail(p.at(key+".image"), "%s: image: %v", what, err)
		}
		if local {
			out.Local[fc.Name] = ref
		} else {
			c.Image = ref
		}
	}
	if fc.Static != "" && !filepath.IsAbs(fc.Static) {
		c.Static = filepath.Join(p.dir, fc.Static)
	}
	if err := store.ValidateEnv(fc.Env); err != nil {
		return p.fail(p.at(key+".env"), "%s: env: %v", what, err)
	}
	for _, v := range fc.Volumes {
		vol, err := store.ParseVolume(v)
		if err != nil {
			return p.fail(p.at(key+".volumes"), "%s: volumes: %v", what, err)
		}
		c.Volumes = append(c.Volumes, vol)
	}
	for _, s := range fc.Ports {
		port, err := store.ParsePort(s)
		if err != nil {
			return p.fail(p.at(key+".ports"), "%s: ports: %v", what, err)
		}
		if several {
			port.Container = fc.Name
		}
		out.Ports = append(out.Ports, port)
	}
	if fc.Health != nil {
		h, field, err := fc.Health.store()
		if err != nil {
			return p.fail(p.at(key+".health."+field), "%s: health.%s: %v", what, field, err)
		}
		c.Health = &h
	}
	if fc.Limits != nil {
		c.Limits = fc.Limits.pods()
	}
	if fc.Backup != nil {
		c.Backup = &store.BackupHook{Volume: fc.Backup.Volume, Dump: fc.Backup.Dump, Restore: fc.Backup.Restore}
	}
	out.Containers = append(out.Containers, c)
	return nil
}

// validate checks what only the whole app can tell (names, order, shared volumes...), as the
// daemon checks a record: images that are local files stand in as their path until sent.
func (p *parser) validate(out App) error {
	check := out.App
	check.Containers = append([]store.Container(nil), out.Containers...)
	for i, c := range check.Containers {
		if _, ok := out.Local[c.Name]; ok {
			check.Containers[i].Image = "local"
		}
	}
	if err := check.Validate(); err != nil {
		return p.fail(lineOf(err.Error(), check, p.lines), "%v", err)
	}
	return nil
}

// lineOf finds the line of what an error of Validate is about: the key of a container it names
// (or the container), or the app's name; 0 when it cannot tell.
func lineOf(msg string, app store.App, lines map[string]int) int {
	if strings.HasPrefix(msg, "app name") {
		return lines["name"]
	}
	for i, c := range app.Containers {
		_, rest, ok := strings.Cut(msg, fmt.Sprintf("container %q: ", c.Name))
		if !ok {
			continue
		}
		key := fmt.Sprintf("containers[%d]", i)
		for _, field := range []string{"after", "health", "limits", "command", "entrypoint", "volume", "user", "image", "static", "env", "backup"} {
			if strings.HasPrefix(rest, field) {
				if field == "volume" {
					field = "volumes"
				}
				if l := lines[key+"."+field]; l > 0 {
					return l
				}
			}
		}
		return lines[key]
	}
	return 0
}

// imageOf tells a local archive or layout (local: its absolute path, relative to dir) from a
// registry reference or an image ID.
func imageOf(ref, dir string) (_ string, local bool, _ error) {
	if strings.HasPrefix(ref, "sha256:") {
		return ref, false, nil
	}
	p := ref
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, ref)
	}
	_, statErr := os.Stat(p)
	if filepath.IsAbs(ref) || strings.HasPrefix(ref, "./") || strings.HasPrefix(ref, "../") ||
		statErr == nil && !strings.Contains(ref, ":") {
		return p, true, nil
	}
	if err := pods.CheckRef(ref); err != nil {
		return "", false, errors.Unwrap(err)
	}
	return ref, false, nil
}

// store converts a health table, naming the field of a bad value.
func (h *health) store() (store.Health, string, error) {
	out := store.Health{HTTP: h.HTTP, TCP: h.TCP, Command: h.Command, Retries: h.Retries}
	if h.Port < 0 || h.Port > 65535 {
		return out, "port", fmt.Errorf("%d: from 1 to 65535", h.Port)
	}
	out.Port = uint16(h.Port)
	for _, d := range []struct {
		field string
		in    string
		out   *time.Duration
	}{{"interval", h.Interval, &out.Interval}, {"timeout", h.Timeout, &out.Timeout}, {"start_period", h.StartPeriod, &out.StartPeriod}} {
		if d.in == "" {
			continue
		}
		v, err := time.ParseDuration(d.in)
		if err != nil || v <= 0 {
			return out, d.field, fmt.Errorf("%q: a duration such as 10s or 1m30s", d.in)
		}
		*d.out = v
	}
	return out, "", nil
}

func (l *limits) pods() pods.Limits {
	return pods.Limits{Memory: l.Memory, CPU: l.CPU, CPUWeight: l.CPUWeight, Tasks: l.Tasks}
}

func limitsOf(l pods.Limits) *limits {
	if l == (pods.Limits{}) {
		return nil
	}
	return &limits{Memory: l.Memory, CPU: l.CPU, CPUWeight: l.CPUWeight, Tasks: l.Tasks}
}

// keyLines maps each key of a TOML document to its line: "name", "limits", "containers[1]",
// "containers[1].health.interval"... (array tables by their index).
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	var p unstable.Parser
	p.Reset(data)
	var table string
	counts := map[string]int{}
	resolve := func(parts []string) string {
		path := ""
		for _, k := range parts {
			if path != "" {
				path += "."
			}
			path += k
			if n := counts[path]; n > 0 {
				path += "[" + strconv.Itoa(n-1) + "]"
			}
		}
		return path
	}
	for p.NextExpression() {
		e := p.Expression()
		var parts []string
		line := 0
		it := e.Key()
		for it.Next() {
			n := it.Node()
			if line == 0 {
				line = p.Shape(p.Range(n.Data)).Start.Line
			}
			parts = append(parts, string(n.Data))
		}
		switch e.Kind {
		case unstable.Table:
			table = resolve(parts)
			lines[table] = line
		case unstable.ArrayTable:
			base := resolve(parts[:len(parts)-1])
			if base != "" {
				base += "."
			}
			base += parts[len(parts)-1]
			counts[base]++
			table = base + "[" + strconv.Itoa(counts[base]-1) + "]"
			lines[table] = line
		case unstable.KeyValue:
			key := strings.Join(parts, ".")
			if table != "" {
				key = table + "." + key
			}
			lines[key] = line
		}
	}
	return lines
}

// Format writes app as an app file: what Parse reads back as the same app (images by their ID or
// reference). The local archives images were sent from are named in comments.
func Format(app store.App) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# onionpod app file of %s: onionpod apply -f FILE\n", app.Name)
	for _, c := range app.Containers {
		if c.Source != "" {
			fmt.Fprintf(&b, "# container %s: its image was sent from %s\n", c.Name, c.Source)
		}
	}
	b.Write(body(app))
	return b.Bytes()
}

// body is Format without its comments: two apps with the same body are the same app file.
func body(app store.App) []byte {
	f := file{Version: Version, Name: app.Name, Onion: app.Onion, OnionOnly: app.OnionOnly, IPv4: app.IPv4,
		AutoUpdate: app.AutoUpdate, Limits: limitsOf(app.Limits)}
	if app.NoOnionLocation {
		f.OnionLocation = new(bool) // false
	}
	for _, c := range app.Containers {
		fc := container{Name: c.Name, Image: c.Image, Static: c.Static, Entrypoint: c.Entrypoint, Command: c.Command,
			Env: c.Env, User: c.User, After: c.After, Limits: limitsOf(c.Limits)}
		for _, v := range c.Volumes {
			fc.Volumes = append(fc.Volumes, v.Name+":"+v.Path)
		}
		for _, p := range app.PortsOf(c.Name) {
			fc.Ports = append(fc.Ports, portString(p))
		}
		if h := c.Health; h != nil {
			fh := health{HTTP: h.HTTP, TCP: h.TCP, Command: h.Command, Port: int(h.Port), Retries: h.Retries}
			for _, d := range []struct {
				in  time.Duration
				out *string
			}{{h.Interval, &fh.Interval}, {h.Timeout, &fh.Timeout}, {h.StartPeriod, &fh.StartPeriod}} {
				if d.in != 0 {
					*d.out = d.in.String()
				}
			}
			fc.Health = &fh
		}
		if b := c.Backup; b != nil {
			fc.Backup = &backup{Volume: b.Volume, Dump: b.Dump, Restore: b.Restore}
		}
		f.Containers = append(f.Containers, fc)
	}
	var b bytes.Buffer
	enc := toml.NewEncoder(&b)
	enc.SetIndentTables(false)
	enc.SetArraysMultiline(false)
	if err := enc.Encode(f); err != nil {
		panic("appfile: encoding an app file: " + err.Error()) // plain strings, ints and bools
	}
	return b.Bytes()
}

func portString(p store.Port) string {
	if p.Public == p.Target {
		return strconv.Itoa(int(p.Public))
	}
	return fmt.Sprintf("%d:%d", p.Public, p.Target)
}

// Same reports whether two apps' files are the same (the daemon's own fields aside).
func Same(a, b store.App) bool { return bytes.Equal(body(a), body(b)) }

// Diff is the difference between the app files of old and new, line by line: "-" for a line of
// old's only, "+" for new's, two lines of context around each change; "" when they are the same.
func Diff(old, new store.App) string {
	a := strings.Split(strings.TrimSuffix(string(body(old)), "\n"), "\n")
	b := strings.Split(strings.TrimSuffix(string(body(new)), "\n"), "\n")
	if old.Name == "" {
		a = nil
	}
	return lineDiff(a, b, 2)
}

// lineDiff compares two lists of lines (longest common subsequence) and shows the changed lines
// with context lines around them.
func lineDiff(a, b []string, context int) string {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type line struct {
		op   byte
		text string
	}
	var lines []line
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			lines = append(lines, line{' ', a[i]})
			i, j = i+1, j+1
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			lines = append(lines, line{'-', a[i]})
			i++
		default:
			lines = append(lines, line{'+', b[j]})
			j++
		}
	}
	show := make([]bool, len(lines))
	changed := false
	for k, l := range lines {
		if l.op != ' ' {
			changed = true
			for c := max(0, k-context); c <= min(len(lines)-1, k+context); c++ {
				show[c] = true
			}
		}
	}
	if !changed {
		return ""
	}
	var out strings.Builder
	for k, l := range lines {
		if !show[k] {
			if k > 0 && show[k-1] {
				out.WriteString("  ...\n")
			}
			continue
		}
		fmt.Fprintf(&out, "%c %s\n", l.op, l.text)
	}
	return out.String()
}

// ReadDir lists the app files of a directory: its *.toml files, sorted.
func ReadDir(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, errkind.BadInputf("app files: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".toml") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return nil, errkind.BadInputf("app files: no *.toml file in %s", dir)
	}
	return out, nil
}
