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

// ErrNotFound is returned for an app that has no record.
var ErrNotFound = errors.New("no such app")

// App is the desired state of one app, as the user asked for it.
type App struct {
	Name      string    `json:"name"`
	Image     string    `json:"image,omitempty"`  // OCI image reference or archive path
	Static    string    `json:"static,omitempty"` // directory served by the built-in static server
	Ports     []Port    `json:"ports,omitempty"`
	Env       []string  `json:"env,omitempty"`
	Volumes   []Volume  `json:"volumes,omitempty"`
	Onion     bool      `json:"onion"`      // publish an onion service
	OnionOnly bool      `json:"onion_only"` // no LAN interface, nothing published on the clearnet
	IPv4      bool      `json:"ipv4"`       // ask the LAN's DHCP for an IPv4 address too
	Stopped   bool      `json:"stopped"`    // the user stopped it: keep everything, run nothing
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
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
		return fmt.Errorf("%w: app name is empty", ErrInvalid)
	case len(name) > 63:
		return fmt.Errorf("%w: app name %q is longer than 63 characters", ErrInvalid, name)
	case name[0] == '-' || name[len(name)-1] == '-':
		return fmt.Errorf("%w: app name %q must not start or end with '-'", ErrInvalid, name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("%w: app name %q may only hold lowercase letters, digits and '-' (it becomes a DNS label)", ErrInvalid, name)
		}
	}
	return nil
}

// ParsePort reads "80" (public and target the same) or "80:8080" (public 80 to the app's 8080).
func ParsePort(s string) (Port, error) {
	public, target, found := strings.Cut(s, ":")
	p, err := parsePortNumber(public)
	if err != nil {
		return Port{}, fmt.Errorf("%w: port %q: %w", ErrInvalid, s, err)
	}
	if !found {
		return Port{Public: p, Target: p}, nil
	}
	t, err := parsePortNumber(target)
	if err != nil {
		return Port{}, fmt.Errorf("%w: port %q: %w", ErrInvalid, s, err)
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
		return Volume{}, fmt.Errorf("%w: volume %q: expected NAME:/path", ErrInvalid, s)
	}
	return v, v.validate()
}

func (v Volume) validate() error {
	if err := ValidateName(v.Name); err != nil {
		return fmt.Errorf("%w: volume %q: the name must be a lowercase label (a-z, 0-9, -)", ErrInvalid, v.Name)
	}
	if !strings.HasPrefix(v.Path, "/") || strings.Contains("/"+v.Path+"/", "/../") || v.Path == "/" {
		return fmt.Errorf("%w: volume %q: the mount point must be an absolute path other than /, without ..", ErrInvalid, v.Name+":"+v.Path)
	}
	return nil
}

// ValidateEnv checks K=V entries.
func ValidateEnv(env []string) error {
	for _, e := range env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t\n\x00") || strings.ContainsAny(e, "\n\x00") {
			return fmt.Errorf("%w: environment %q: expected KEY=VALUE", ErrInvalid, e)
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
		return fmt.Errorf("%w: app %q needs exactly one of an image or a static directory", ErrInvalid, a.Name)
	}
	if a.Static != "" && !strings.HasPrefix(a.Static, "/") {
		return fmt.Errorf("%w: app %q: static directory %q must be an absolute path", ErrInvalid, a.Name, a.Static)
	}
	if a.Image != "" && strings.ContainsAny(a.Image, " \t\n\x00") {
		return fmt.Errorf("%w: app %q: %q is not an image reference", ErrInvalid, a.Name, a.Image)
	}
	seen := map[uint16]bool{}
	for _, p := range a.Ports {
		if p.Public == 0 || p.Target == 0 {
			return fmt.Errorf("%w: app %q: ports must be from 1 to 65535", ErrInvalid, a.Name)
		}
		if seen[p.Public] {
			return fmt.Errorf("%w: app %q: public port %d given twice", ErrInvalid, a.Name, p.Public)
		}
		seen[p.Public] = true
	}
	if a.WantsOnion() && len(a.Ports) == 0 {
		return fmt.Errorf("%w: app %q: an onion service needs at least one --port", ErrInvalid, a.Name)
	}
	for _, v := range a.Volumes {
		if err := v.validate(); err != nil {
			return err
		}
	}
	if a.OnionOnly && a.IPv4 {
		return fmt.Errorf("%w: app %q: an onion-only app has no LAN interface, so no IPv4", ErrInvalid, a.Name)
	}
	return ValidateEnv(a.Env)
}
