package debimage

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/genvalue"
)

// Recipe says what goes into an image: a layer of Debian packages (optional), a layer of files,
// and the image's config. Everything in it is part of the cache key.
type Recipe struct {
	// Ref is the reference the archive carries, e.g. "onionpod.test/postgres:15" (a tag).
	Ref string
	// Debian, when set, is the image's first layer: packages from the Debian archive, unpacked
	// by mmdebstrap.
	Debian *Debian
	// Files make the image's last layer, in order, over the Debian one. Parent directories that
	// no layer has are created by whoever unpacks the image (mode 0755).
	Files []File
	// Config is how the image runs.
	Config Config
}

// Debian is a layer of Debian packages.
type Debian struct {
	// Suite is the Debian release, e.g. "bookworm".
	Suite string
	// Sources are apt source lines in one-line format ("deb [signed-by=K] URI SUITE main").
	// Empty: the suite, SUITE-updates and SUITE-security from deb.debian.org, the mirrors
	// mmdebstrap adds by itself for a stable release.
	Sources []string
	// Variant is mmdebstrap's: "extract" (the default: Packages and their dependencies unpacked,
	// no maintainer script run: the smallest root), "custom", "essential", "apt", "required" or
	// "minbase" (Essential: yes packages and more, installed with their scripts).
	Variant string
	// Packages are installed with their hard dependencies (no recommends).
	Packages []string
	// Exclude drops paths from the layer: shell globs (path.Match) on absolute paths; a
	// pattern that matches a directory drops what is below it too ("/usr/share/doc").
	Exclude []string
}

// File is one entry of the files layer.
type File struct {
	Path string      // absolute path in the image
	Mode fs.FileMode // permission bits (setuid/setgid/sticky as fs.Mode*), plus fs.ModeDir or fs.ModeSymlink; 0 = a 0644 file
	Data []byte      // a file's content, or a symlink's target
	UID  int         // owner (0 = root)
	GID  int
}

// Config is the image's run configuration (the OCI image config's "config").
type Config struct {
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	Env          []string          `json:"env,omitempty"` // KEY=VALUE
	WorkingDir   string            `json:"working_dir,omitempty"`
	User         string            `json:"user,omitempty"`
	ExposedPorts []string          `json:"exposed_ports,omitempty"` // "5432/tcp"
	Volumes      []string          `json:"volumes,omitempty"`       // absolute paths
	Labels       map[string]string `json:"labels,omitempty"`
	StopSignal   string            `json:"stop_signal,omitempty"` // e.g. SIGINT ("" = SIGTERM)
}

// Variants are the mmdebstrap variants a Debian layer may use.
var Variants = []string{"extract", "custom", "essential", "apt", "required", "minbase"}

var (
	suiteRE   = regexp.MustCompile(`^[a-z][a-z0-9.-]{0,63}$`)
	packageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?(=[A-Za-z0-9.+~:-]+)?$`)
	envKeyRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	portRE    = regexp.MustCompile(`^[0-9]{1,5}(/(tcp|udp|sctp))?$`)
	signalRE  = regexp.MustCompile(`^SIG[A-Z0-9+]{2,12}$`)
)

// Validate checks a recipe; its errors match errkind.BadInput and name the field.
func (r Recipe) Validate() error {
	if _, err := name.NewTag(r.Ref, name.StrictValidation); err != nil {
		return r.bad("ref: want a tag such as registry.example/name:1: %v", err)
	}
	if r.Debian == nil && len(r.Files) == 0 {
		return r.bad("neither Debian packages nor files")
	}
	if r.Debian != nil {
		if err := r.validateDebian(*r.Debian); err != nil {
			return err
		}
	}
	if err := r.validateFiles(); err != nil {
		return err
	}
	return r.validateConfig()
}

// bad is an error about the recipe.
func (r Recipe) bad(format string, args ...any) error {
	return errkind.BadInputf("debimage: recipe %q: "+format, append([]any{r.Ref}, args...)...)
}

// validateDebian checks the suite, variant, packages, sources and excludes of d.
func (r Recipe) validateDebian(d Debian) error {
	if !suiteRE.MatchString(d.Suite) {
		return r.bad("debian suite %q", d.Suite)
	}
	if d.Variant != "" && !slices.Contains(Variants, d.Variant) {
		return r.bad("debian variant %q (one of %s)", d.Variant, strings.Join(Variants, ", "))
	}
	if (d.Variant == "" || d.Variant == "extract" || d.Variant == "custom") && len(d.Packages) == 0 {
		return r.bad("debian packages: none given")
	}
	for _, p := range d.Packages {
		if !packageRE.MatchString(p) {
			return r.bad("debian package %q", p)
		}
	}
	for i, s := range d.Sources {
		if err := genvalue.Check("debian sources", s); err != nil {
			return r.bad("debian sources[%d]: %v", i, err)
		}
		if !strings.HasPrefix(s, "deb ") {
			return r.bad("debian sources[%d]: want a one-line \"deb URI SUITE COMPONENT...\" entry", i)
		}
	}
	for _, x := range d.Exclude {
		if _, err := path.Match(x, "/"); err != nil || !path.IsAbs(x) {
			return r.bad("debian exclude %q: want an absolute glob", x)
		}
	}
	return nil
}

// validateFiles checks each file's path (clean, absolute, once), mode, data and owner.
func (r Recipe) validateFiles() error {
	seen := map[string]bool{}
	for i, f := range r.Files {
		if err := genvalue.Check("file path", f.Path); err != nil {
			return r.bad("files[%d]: %v", i, err)
		}
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return r.bad("files[%d] path %q: want a clean absolute path", i, f.Path)
		}
		if seen[f.Path] {
			return r.bad("files[%d] path %q: twice", i, f.Path)
		}
		seen[f.Path] = true
		if f.Mode&^(fs.ModePerm|fs.ModeDir|fs.ModeSymlink|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 ||
			f.Mode&fs.ModeDir != 0 && f.Mode&fs.ModeSymlink != 0 {
			return r.bad("files[%d] %s: mode %v", i, f.Path, f.Mode)
		}
		if f.Mode&fs.ModeSymlink != 0 && len(f.Data) == 0 || f.Mode&fs.ModeDir != 0 && len(f.Data) != 0 {
			return r.bad("files[%d] %s: a symlink needs a target, a directory no data", i, f.Path)
		}
		if f.UID < 0 || f.GID < 0 || f.UID > 1<<31-1 || f.GID > 1<<31-1 {
			return r.bad("files[%d] %s: owner %d:%d", i, f.Path, f.UID, f.GID)
		}
	}
	return nil
}

// validateConfig checks the image config: something to run, env, working dir, ports, stop
// signal and volumes.
func (r Recipe) validateConfig() error {
	c := r.Config
	if len(c.Entrypoint) == 0 && len(c.Cmd) == 0 {
		return r.bad("config: no entrypoint and no cmd")
	}
	for _, e := range c.Env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || !envKeyRE.MatchString(k) {
			return r.bad("config env %q: want KEY=VALUE", k)
		}
	}
	if c.WorkingDir != "" && !path.IsAbs(c.WorkingDir) {
		return r.bad("config working dir %q: want an absolute path", c.WorkingDir)
	}
	for _, p := range c.ExposedPorts {
		if !portRE.MatchString(p) {
			return r.bad("config exposed port %q: want PORT or PORT/tcp", p)
		}
	}
	if c.StopSignal != "" && !signalRE.MatchString(c.StopSignal) {
		return r.bad("config stop signal %q: want a name such as SIGINT", c.StopSignal)
	}
	for _, v := range c.Volumes {
		if !path.IsAbs(v) {
			return r.bad("config volume %q: want an absolute path", v)
		}
	}
	return nil
}

// variant is the layer's mmdebstrap variant.
func (d Debian) variant() string {
	if d.Variant == "" {
		return "extract"
	}
	return d.Variant
}

// sources is the layer's apt sources, defaults filled in. keyring is the Debian archive keyring
// the default sources are signed with ("" to let apt use its trusted keys).
func (d Debian) sources(keyring string) []string {
	if len(d.Sources) > 0 {
		return d.Sources
	}
	opt := ""
	if keyring != "" {
		opt = "[signed-by=" + keyring + "] "
	}
	lines := []string{"deb " + opt + "http://deb.debian.org/debian " + d.Suite + " main"}
	switch d.Suite {
	case "sid", "unstable", "experimental", "rc-buggy":
	default:
		lines = append(lines,
			"deb "+opt+"http://deb.debian.org/debian "+d.Suite+"-updates main",
			"deb "+opt+"http://deb.debian.org/debian-security "+d.Suite+"-security main")
	}
	return lines
}

// hashJSON is the hex SHA-256 of v's JSON encoding: the cache keys.
func hashJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic("debimage: hash: " + err.Error()) // only plain data is hashed
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func hashBytes(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
