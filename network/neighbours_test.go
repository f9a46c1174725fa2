package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/network/nettest"
)

func TestNeighbourLimits(t *testing.T) {
	for _, c := range []struct{ pods, need, raiseTo int }{
		{0, 256, 512}, {100, 656, 1312}, {192, 1024, 2048}, {1000, 4256, 8512},
	} {
		if need, raiseTo := neighbourLimits(c.pods); need != c.need || raiseTo != c.raiseTo {
			t.Errorf("neighbourLimits(%d) = %d, %d; want %d, %d", c.pods, need, raiseTo, c.need, c.raiseTo)
		}
	}
}

// The limits are raised when the pods need more room than gc_thresh3 gives, in one step that
// leaves room for twice as many, and never lowered.
func TestRaiseNeighbourLimits(t *testing.T) {
	limits := func(t *testing.T, thresh2, thresh3 string) string {
		dir := t.TempDir()
		for name, v := range map[string]string{"gc_thresh2": thresh2, "gc_thresh3": thresh3} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	pods := func(n int) func() (int, error) { return func() (int, error) { return n, nil } }
	read := func(t *testing.T, dir string) (string, string) {
		b2, _ := os.ReadFile(filepath.Join(dir, "gc_thresh2"))
		b3, _ := os.ReadFile(filepath.Join(dir, "gc_thresh3"))
		return strings.TrimSpace(string(b2)), strings.TrimSpace(string(b3))
	}
	for _, c := range []struct {
		name             string
		thresh2, thresh3 string
		pods             int
		want2, want3     string
	}{
		{"room enough: the kernel's defaults and 100 pods", "512", "1024", 100, "512", "1024"},
		{"1000 pods on the kernel's defaults", "512", "1024", 1000, "4256", "8512"},
		{"never lowered", "50000", "100000", 1000, "50000", "100000"},
		{"a higher gc_thresh2 is kept", "6000", "1024", 1000, "6000", "8512"},
		{"the next step only when needed", "4256", "8512", 2064, "4256", "8512"},
		{"and then the step", "4256", "8512", 2065, "8516", "17032"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := limits(t, c.thresh2, c.thresh3)
			if err := raiseNeighbourLimits(dir, pods(c.pods)); err != nil {
				t.Fatal(err)
			}
			if got2, got3 := read(t, dir); got2 != c.want2 || got3 != c.want3 {
				t.Errorf("gc_thresh2, gc_thresh3 = %s, %s; want %s, %s", got2, got3, c.want2, c.want3)
			}
		})
	}
	t.Run("no limits in this namespace: nothing counted, nothing written", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "absent")
		counted := false
		err := raiseNeighbourLimits(dir, func() (int, error) { counted = true; return 1000, nil })
		if err != nil || counted {
			t.Errorf("err %v, counted %v; want nil, false", err, counted)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s made: %v", dir, err)
		}
	})
	t.Run("a count that fails is an error", func(t *testing.T) {
		dir := limits(t, "512", "1024")
		boom := errors.New("leases unreadable")
		if err := raiseNeighbourLimits(dir, func() (int, error) { return 0, boom }); !errors.Is(err, boom) {
			t.Errorf("err %v; want %v", err, boom)
		}
	})
	t.Run("a garbled limit names its file", func(t *testing.T) {
		dir := limits(t, "512", "lots")
		if err := raiseNeighbourLimits(dir, pods(1000)); err == nil || !strings.Contains(err.Error(), "gc_thresh3") {
			t.Errorf("err %v; want one naming gc_thresh3", err)
		}
	})
}

// The kernel keeps the limits in the initial network namespace only: a namespace of its own (a
// lab's box) has none, so an attach there looks at nothing and leaves them to the host.
func TestNoNeighbourLimitsInANamespaceOfItsOwn(t *testing.T) {
	if why := nettest.Missing(false); why != "" {
		t.Skip(why)
	}
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine, in its own namespace
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		var errs []error
		for _, family := range []string{"ipv6", "ipv4"} {
			counted := false
			err := raiseNeighbourLimits(NeighbourLimitsDir(family), func() (int, error) { counted = true; return 100000, nil })
			if err != nil || counted {
				errs = append(errs, fmt.Errorf("%s: limits looked at in a namespace of its own (err %v)", family, err))
			}
		}
		done <- errors.Join(errs...)
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
