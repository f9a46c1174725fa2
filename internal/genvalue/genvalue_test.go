package genvalue

import (
	"strings"
	"testing"

	"github.com/onionpod/onionpod/internal/errkind"
)

func TestCheck(t *testing.T) {
	for _, ok := range []string{"", "plain", "ünïcödé", "a=b c", "/srv/site", "50%", "$HOME"} {
		if err := Check("f", ok); err != nil {
			t.Errorf("Check(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"a\rb", "/\rExecStartPre=+/x", "a\nb", "a\tb", "a\x00b", "a\x7fb",
		"a\u0085b", "a\u2028b", "a\u2029b", "\xff\xfe", "x\x1b[31m"} {
		err := Check("image config WorkingDir", bad)
		if !errkind.IsBadInput(err) {
			t.Errorf("Check(%q) = %v, want bad input", bad, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "image config WorkingDir: ") {
			t.Errorf("error does not name the field: %v", err)
		}
	}
}

func TestCheckNeverRepeatsTheValue(t *testing.T) {
	secret := "hunter2-very-secret\rmore"
	if err := Check("environment DB_PASSWORD", secret); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("err = %v", err)
	}
}

func TestPath(t *testing.T) {
	for _, ok := range []string{"/", "/srv/site", "/var/lib/app-1/data.d", "/ünï"} {
		if err := Path("p", ok); err != nil {
			t.Errorf("Path(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "rel", "/a/../b", "/a//b", "/a/", "/a b", "/a:b", "/a%n", "/a$b",
		"/a\"b", "/a'b", `/a\b`, "/a;b", "/a*", "/d\rExecStartPre=+/x", "/a\nb"} {
		if err := Path("--volume", bad); !errkind.IsBadInput(err) {
			t.Errorf("Path(%q) = %v, want bad input", bad, err)
		}
	}
}
