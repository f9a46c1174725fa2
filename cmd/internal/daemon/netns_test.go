package daemon_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/cmd/internal/store"
	"github.com/onionpod/onionpod/internal/netnsfile"
)

// TestNetnsHolder: the pods' namespaces are named in onionpod-netns.service's own mount
// namespace, never in PID 1's mount table (which systemd copies at every unit start); when the
// holder is replaced, the daemon stops rather than attach a second namespace to a running pod,
// and the next daemon names the running pod's namespace again from its process: the pod keeps
// running, at the same address.
func TestNetnsHolder(t *testing.T) { inBox(t, "TestInsideNetnsHolder") }

func TestInsideNetnsHolder(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	img := r.upload(r.image("held", "held\n"))
	put, err := r.client.Put(ctx, store.App{Name: "held", Containers: []store.Container{{Name: "held", Image: img}},
		Ports: []store.Port{{Public: 80, Target: 80}}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := r.client.Wait(ctx, "held", api.WaitRunning, put.App.Generation, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	dir := r.cfg.Network.NetnsDir
	holder := netnsfile.HolderPID(dir)
	path := filepath.Join(dir, "onionpod-held")
	if holder == 0 || !netnsfile.Exists(path) {
		t.Fatalf("%s: holder pid %d, the pod's namespace there: %v", dir, holder, netnsfile.Exists(path))
	}
	pid1, _ := os.ReadFile("/proc/1/mountinfo")
	held, _ := os.ReadFile(netnsfile.MountTable(dir))
	if bytes.Contains(pid1, []byte("onionpod-held")) || !bytes.Contains(held, []byte("onionpod-held")) {
		t.Fatalf("the pod's namespace mount: in PID 1's table %v, in the holder's %v",
			bytes.Contains(pid1, []byte("onionpod-held")), bytes.Contains(held, []byte("onionpod-held")))
	}
	unit, err := r.client.App(ctx, "held")
	if err != nil || unit.Unit.MainPID == 0 {
		t.Fatalf("held's unit: %+v, %v", unit.Unit, err)
	}
	podPID := unit.Unit.MainPID
	if !sameFile(path, fmt.Sprintf("/proc/%d/ns/net", podPID)) {
		t.Fatal("the pod does not run in the namespace named for it")
	}

	// The holder replaced: its names are gone; the daemon stops at its next pass.
	if out, err := exec.Command("systemctl", "restart", "onionpod-netns.service").CombinedOutput(); err != nil {
		t.Fatalf("restart the holder: %v: %s", err, out)
	}
	if netnsfile.HolderPID(dir) == holder || netnsfile.Exists(path) {
		t.Fatalf("after the holder's restart: pid %d (was %d), the name still there: %v", netnsfile.HolderPID(dir), holder, netnsfile.Exists(path))
	}
	r.client.Put(ctx, store.App{Name: "nudge", Containers: []store.Container{{Name: "nudge", Image: img}}, Stopped: true})
	select {
	case err := <-r.done:
		if err == nil || !strings.Contains(err.Error(), "holder of the pods' network namespaces changed") {
			t.Fatalf("the daemon ended with %v", err)
		}
		r.stop = nil
	case <-time.After(time.Minute):
		t.Fatal("the daemon went on after its holder was replaced")
	}
	// The next daemon names the running pod's namespace again; the pod was never restarted.
	r.start()
	if _, err := r.client.Wait(ctx, "held", api.WaitRunning, put.App.Generation, time.Minute); err != nil {
		t.Fatal(err)
	}
	again, err := r.client.App(ctx, "held")
	if err != nil {
		t.Fatal(err)
	}
	if !sameFile(path, fmt.Sprintf("/proc/%d/ns/net", podPID)) || again.Unit.MainPID != podPID || again.Network.LAN != st.Network.LAN {
		t.Fatalf("after the new holder: pid %d (was %d), LAN %s (was %s), its namespace named again: %v",
			again.Unit.MainPID, podPID, again.Network.LAN, st.Network.LAN, sameFile(path, fmt.Sprintf("/proc/%d/ns/net", podPID)))
	}
}

// sameFile reports whether a and b are the same file (two names of one namespace).
func sameFile(a, b string) bool {
	var sa, sb unix.Stat_t
	return unix.Stat(a, &sa) == nil && unix.Stat(b, &sb) == nil && sa.Ino == sb.Ino && sa.Dev == sb.Dev
}
