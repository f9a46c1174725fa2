// Package store keeps onionpod's desired state: one record per app, written atomically under the
// state dir (0600 files in 0700 dirs), with a schema version and an exclusive lock so two writers
// (the daemon, an offline `onion restore`) cannot corrupt it. Observed state is never stored here.
package store

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrInvalid marks bad input in an app record (name, port, volume...). The CLI maps it to exit code 2.
var ErrInvalid = errors.New("invalid input")

// invalidError is bad input: it matches ErrInvalid without repeating "invalid input" in the message.
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

// invalidf formats a bad-input error.
func invalidf(format string, args ...any) error {
	return &invalidError{fmt.Sprintf(format, args...)}
}

// ErrNotFound is returned for an app that has no record.
var ErrNotFound = errors.New("no such app")

// App is the desired state of one app, as the user asked for it.
type App struct {
	Name      string   `json:"name"`
	Image     string   `json:"image,omitempty"`  // OCI image reference or archive path
	Static    string   `json:"static,omitempty"` // directory served by the built-in static server
	Ports     []Port   `json:"ports,omitempty"`
	Env       []string `json:"env,omitempty"`
	Volumes   []Volume `json:"volumes,omitempty"`
	Onion     bool     `json:"onion"`      // publish an onion service
	OnionOnly bool     `json:"onion_only"` // no LAN interface, nothing published on the clearnet
	IPv4      bool     `json:"ipv4"`       // ask the LAN's DHCP for an IPv4 address too
	Stopped   bool     `json:"stopped"`    // the user stopped it: keep everything, run nothing
	// NoOnionLocation leaves Onion-Location out of the app's HTTPS responses (tls.onion_location).
	NoOnionLocation bool      `json:"no_onion_location,omitempty"`
	Created         time.Time `json:"created"`
	Updated         time.Time `json:"updated"`
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

// ValidateName checks that name is a DNS label onionpod can use for an app: lowercase letters,
// digits and '-', 1 to 63 characters, not starting or ending with '-'.
func ValidateName(name string) error {
	switch {
	case name == "":
		return invalidf("app name is empty")
	case len(name) > 63:
		return invalidf("app name %q is longer than 63 characters", name)
	case name[0] == '-' || name[len(name)-1] == '-':
		return invalidf("app name %q must not start or end with '-'", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return invalidf("app name %q may only hold lowercase letters, digits and '-' (it becomes a DNS label)", name)
		}
	}
	return nil
}

// ParsePort reads "80" (public and target the same) or "80:8080" (public 80 to the app's 8080).
func ParsePort(s string) (Port, error) {
	public, target, found := strings.Cut(s, ":")
	p, err := parsePortNumber(public)
	if err != nil {
		return Port{}, invalidf("port %q: %v", s, err)
	}
	if !found {
		return Port{Public: p, Target: p}, nil
	}
	t, err := parsePortNumber(target)
	if err != nil {
		return Port{}, invalidf("port %q: %v", s, err)
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
		return Volume{}, invalidf("volume %q: expected NAME:/path", s)
	}
	return v, v.validate()
}

func (v Volume) validate() error {
	if err := ValidateName(v.Name); err != nil {
		return invalidf("volume %q: the name must be a lowercase label (a-z, 0-9, -)", v.Name)
	}
	if !strings.HasPrefix(v.Path, "/") || strings.Contains("/"+v.Path+"/", "/../") || v.Path == "/" {
		return invalidf("volume %q: the mount point must be an absolute path other than /, without ..", v.Name+":"+v.Path)
	}
	return nil
}

// ValidateEnv checks K=V entries.
func ValidateEnv(env []string) error {
	for _, e := range env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t\n\x00") || strings.ContainsAny(e, "\n\x00") {
			return invalidf("environment %q: expected KEY=VALUE", e)
		}
	}
	return nil
}

// Validate checks a whole record before it is stored.
func (a App) Validate() error {
	if err := ValidateName(a.Name); err != nil {
		return err
	}
	if (a.Image == "") == (a.Static == "") {
		return invalidf("app %q needs exactly one of an image or a static directory", a.Name)
	}
	if a.Static != "" && !strings.HasPrefix(a.Static, "/") {
		return invalidf("app %q: static directory %q must be an absolute path", a.Name, a.Static)
	}
	if a.Image != "" && strings.ContainsAny(a.Image, " \t\n\x00") {
		return invalidf("app %q: %q is not an image reference", a.Name, a.Image)
	}
	seen := map[uint16]bool{}
	for _, p := range a.Ports {
		if p.Public == 0 || p.Target == 0 {
			return invalidf("app %q: ports must be from 1 to 65535", a.Name)
		}
		if seen[p.Public] {
			return invalidf("app %q: public port %d given twice", a.Name, p.Public)
		}
		seen[p.Public] = true
	}
	if a.WantsOnion() && len(a.Ports) == 0 {
		return invalidf("app %q: an onion service needs at least one --port", a.Name)
	}
	for _, v := range a.Volumes {
		if err := v.validate(); err != nil {
			return err
		}
	}
	if a.OnionOnly && a.IPv4 {
		return invalidf("app %q: an onion-only app has no LAN interface, so no IPv4", a.Name)
	}
	return ValidateEnv(a.Env)
}
