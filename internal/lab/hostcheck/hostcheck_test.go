package hostcheck

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestMissingNamesEachPartAndWraps(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no tool is found
	err := Missing(Tor, Radvd, Radvd, Dig)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Missing = %v, want ErrUnavailable", err)
	}
	msg := err.Error()
	for _, want := range []string{"tor not installed (apt-get install tor)", "radvd not installed (apt-get install radvd)",
		"dig not installed (apt-get install bind9-dnsutils)"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not say %q", msg, want)
		}
	}
	if strings.Count(msg, "radvd not installed") != 1 {
		t.Errorf("a part asked twice is reported twice: %q", msg)
	}
}

func TestNothingMissing(t *testing.T) {
	if err := Missing(); err != nil {
		t.Fatalf("Missing() = %v", err)
	}
	if err := Missing(Namespaces); err != nil {
		t.Skip(err) // a kernel without namespaces runs no harness at all
	}
}

// The probe runs in a namespace of its own: the caller's namespace has no probe link afterwards.
func TestLinksProbeLeavesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the link probe needs root")
	}
	if err := Missing(Links); err != nil {
		t.Fatalf("this machine's kernel (veth, bridge, macvlan built in): %v", err)
	}
	b, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "probe") {
		t.Fatalf("a probe link leaked into the caller's namespace:\n%s", b)
	}
}

func TestEveryPartHasANameAndACheck(t *testing.T) {
	for p := Root; p <= Mmdebstrap; p++ {
		if strings.HasPrefix(p.String(), "part(") {
			t.Errorf("part %d has no name", int(p))
		}
		if why := p.check(); strings.HasPrefix(why, "unknown part") {
			t.Errorf("part %s has no check", p)
		}
	}
}
