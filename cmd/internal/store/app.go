// Package store keeps onionpod's desired state: one record per app, written atomically under the
// state dir (0600 files in 0700 dirs), with a schema version and an exclusive lock so two writers
// (the daemon, an offline `onion restore`) cannot corrupt it. Records change only inside a
// transaction (Update). Observed state is never stored here.
package store

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/onionpod/onionpod/internal/errkind"
	"github.com/onionpod/onionpod/internal/names"
)

// Error kinds of the store (aliases of internal/errkind's, so errors.Is works with either).
var (
	// ErrInvalid marks bad input in an app record (name, port, volume...).
	ErrInvalid = errkind.BadInput
	// ErrNotFound is returned for an app that has no record.
	ErrNotFound = errkind.NotFound
)

// App is the desired state of one app, as the user asked for it.
type App struct {
	Name      string   `json:"name"`
	Image     string   `json:"image,omitempty"`  // registry reference, or the ID ("sha256:...") of an image sent to the daemon
	Source    string   `json:"source,omitempty"` // the local archive or layout the image was sent from (shown, never opened)
	Static    string   `json:"static,omitempty"` // directory served by the built-in static server
	Ports     []Port   `json:"ports,omitempty"`
	Env       []string `json:"env,omitempty"`
	Volumes   []Volume `json:"volumes,omitempty"`
	Onion     bool     `json:"onion"`      // publish an onion service
	OnionOnly bool     `json:"onion_only"` // no LAN interface, nothing published on the clearnet
	IPv4      bool     `json:"ipv4"`       // ask the LAN's DHCP for an IPv4 address too
	Stopped   bool     `json:"stopped"`    // the user stopped it: keep everything, run nothing
	// NoOnionLocation leaves Onion-Location out of the app's HTTPS responses (tls.onion_location).
	NoOnionLocation bool `json:"no_onion_location,omitempty"`
	// Generation counts the accepted changes of the record: 1 for a new app, one more on each
	// change. A change sent to the daemon carries the generation it was based on (0: a new app).
	Generation int64     `json:"generation"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
}

// Port maps a public port (on the .onion and the clearnet address) to the port the app listens on.
type Port struct {
	Public uint16 `json:"public"`
	Target uint16 `json:"target"`
}

// Volume is a persistent per-app directory mounted into the pod.
type Volume struct {
	Name string `json:"name"`
	Path string `json:"path"`
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

// Validate checks a whole record before it is stored.
func (a App) Validate() error {
	if err := names.App(a.Name); err != nil {
		return err
	}
	if (a.Image == "") == (a.Static == "") {
		return errkind.BadInputf("app %q needs exactly one of an image or a static directory", a.Name)
	}
	if a.Static != "" && !strings.HasPrefix(a.Static, "/") {
		return errkind.BadInputf("app %q: static directory %q must be an absolute path", a.Name, a.Static)
	}
	if a.Image != "" && strings.ContainsAny(a.Image, " \t\n\x00") {
		return errkind.BadInputf("app %q: %q is not an image reference", a.Name, a.Image)
	}
	seen := map[uint16]bool{}
	for _, p := range a.Ports {
		if p.Public == 0 || p.Target == 0 {
			return errkind.BadInputf("app %q: ports must be from 1 to 65535", a.Name)
		}
		if seen[p.Public] {
			return errkind.BadInputf("app %q: public port %d given twice", a.Name, p.Public)
		}
		seen[p.Public] = true
	}
	if a.WantsOnion() && len(a.Ports) == 0 {
		return errkind.BadInputf("app %q: an onion service needs at least one --port", a.Name)
	}
	for _, v := range a.Volumes {
		if err := v.validate(); err != nil {
			return err
		}
	}
	if a.OnionOnly && a.IPv4 {
		return errkind.BadInputf("app %q: an onion-only app has no LAN interface, so no IPv4", a.Name)
	}
	if a.Generation < 0 {
		return errkind.BadInputf("app %q: generation %d", a.Name, a.Generation)
	}
	return ValidateEnv(a.Env)
}
