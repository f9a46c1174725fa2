package podstest_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/onionpod/onionpod/pods/podstest"
)

// TestBootInExistingNetns boots a box in a network namespace made beforehand: a link made in it
// is seen inside the box, and still there after a reboot (the namespace outlives the box's
// systemd, as the lab's LAN and Tor network need).
func TestBootInExistingNetns(t *testing.T) {
	if podstest.Inside() {
		t.Skip("runs on the host")
	}
	if err := podstest.Available(); err != nil {
		t.Skip(err)
	}
	name := podstest.UniqueName("ptns")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "add", "lab0", "type", "veth", "peer", "name", "lab1").CombinedOutput(); err != nil {
		t.Fatalf("veth: %v\n%s", err, out)
	}
	box := podstest.New(t, podstest.Options{Netns: "/run/netns/" + name})
	sees := func() bool {
		out, err := box.Command(t.Context(), "ip", "-o", "link", "show", "lab0").CombinedOutput()
		return err == nil && strings.Contains(string(out), "lab0")
	}
	if !sees() {
		t.Fatal("the box does not see the link of its namespace")
	}
	box.RebootT(t)
	if !sees() {
		t.Fatal("after a reboot the box is not in the same namespace")
	}
}
