// Package names holds the naming rules every part of onionpod shares: an app's name is one DNS
// label (it becomes blog.ZONE, the unit onionpod-pod-blog.service, the netns onionpod-blog, the
// key directory onion/blog), so one rule, checked in one place, keeps them all valid.
package names

import (
	"strings"

	"github.com/onionpod/onionpod/internal/errkind"
)

// MaxApp is the longest app name: one DNS label.
const MaxApp = 63

// App checks an app name: lowercase letters, digits and '-', 1 to 63 characters, not starting or
// ending with '-'. The error matches errkind.BadInput and says what is wrong.
func App(name string) error {
	switch {
	case name == "":
		return errkind.BadInputf("app name is empty")
	case len(name) > MaxApp:
		return errkind.BadInputf("app name %q is longer than %d characters", name, MaxApp)
	case name[0] == '-' || name[len(name)-1] == '-':
		return errkind.BadInputf("app name %q must not start or end with '-'", name)
	}
	for i := 0; i < len(name); i++ {
		if !isAppByte(name[i]) {
			return errkind.BadInputf("app name %q may only hold lowercase letters, digits and '-' (it becomes a DNS label)", name)
		}
	}
	return nil
}

// IsApp reports whether name is a valid app name (App returns nil).
func IsApp(name string) bool { return App(name) == nil }

func isAppByte(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' }

// IsLabel reports whether s is a DNS label of a host name (RFC 952/1123 with digits first
// allowed): letters of either case, digits and '-', 1 to 63 characters, no '-' at either end.
func IsLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAppByte(c) || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// IsHostname reports whether s (with or without the final dot) is a DNS name made of IsLabel
// labels, at most 253 characters.
func IsHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !IsLabel(l) {
			return false
		}
	}
	return true
}
