package names

import (
	"strings"
	"testing"

	"github.com/onionpod/onionpod/internal/errkind"
)

func TestApp(t *testing.T) {
	for _, ok := range []string{"blog", "a", "my-app-2", "0day", strings.Repeat("a", 63)} {
		if err := App(ok); err != nil {
			t.Errorf("App(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Blog_1", "Blog", "my_app", "-x", "x-", "a.b", "ünï", "a b", "../etc",
		"a\rb", "a\x00", strings.Repeat("a", 64)} {
		err := App(bad)
		if !errkind.IsBadInput(err) {
			t.Errorf("App(%q) = %v, want bad input", bad, err)
		}
		if IsApp(bad) {
			t.Errorf("IsApp(%q) = true", bad)
		}
	}
}

func TestLabelAndHostname(t *testing.T) {
	for _, ok := range []string{"box", "Box", "a-1", "1a"} {
		if !IsLabel(ok) {
			t.Errorf("IsLabel(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "-a", "a-", "a_b", "a.b", "a b", strings.Repeat("x", 64)} {
		if IsLabel(bad) {
			t.Errorf("IsLabel(%q) = true", bad)
		}
	}
	for _, ok := range []string{"box.example", "box.example.", "a"} {
		if !IsHostname(ok) {
			t.Errorf("IsHostname(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", ".", "box..example", "box.exa mple", "-a.example", strings.Repeat("a.", 127) + "aa"} {
		if IsHostname(bad) {
			t.Errorf("IsHostname(%q) = true", bad)
		}
	}
}
