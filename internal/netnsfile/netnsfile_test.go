package netnsfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCreateDoRemove(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	path := filepath.Join(t.TempDir(), "ns")
	var inside string
	err := Create(path, func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/default/accept_dad")
		inside = strings.TrimSpace(string(b))
		return errors.Join(err, Sysctl("net/ipv6/conf/default/accept_dad", "0"))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer Remove(path)
	if !Exists(path) || inside == "" {
		t.Fatalf("namespace not created (exists %v, setup read %q)", Exists(path), inside)
	}
	if err := Create(path, nil); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Create = %v, want ErrExist", err)
	}
	// The setup ran in the new namespace, and Do enters it again.
	var got string
	if err := Do(path, func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/default/accept_dad")
		got = strings.TrimSpace(string(b))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got != "0" {
		t.Fatalf("accept_dad in the namespace = %q, want 0", got)
	}
	mine, _ := os.ReadFile("/proc/sys/net/ipv6/conf/default/accept_dad")
	if strings.TrimSpace(string(mine)) == "0" && inside != "0" {
		t.Fatal("the sysctl leaked into the caller's namespace")
	}
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if Exists(path) {
		t.Fatal("still mounted after Remove")
	}
	if err := Remove(path); err != nil {
		t.Fatalf("second Remove = %v, want nil", err)
	}
}

func TestFailedSetupLeavesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	path := filepath.Join(t.TempDir(), "ns")
	boom := errors.New("boom")
	if err := Create(path, func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Create = %v, want boom", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("path left behind: %v", err)
	}
}

// holdEnv makes the test binary a holder (see TestMain): "INNER LINK".
const holdEnv = "NETNSFILE_TEST_HOLD"

// TestMain runs the tests, or, with holdEnv set, is the holder process of TestHeldDirectory.
func TestMain(m *testing.M) {
	spec := os.Getenv(holdEnv)
	if spec == "" {
		os.Exit(m.Run())
	}
	inner, link, _ := strings.Cut(spec, " ")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := Hold(ctx, inner, link, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	os.Exit(0)
}

// TestHeldDirectory: a holder made by Hold names namespaces in its own mount namespace (see
// checkHeld) through its socket, without nsenter; it refuses a bad name or a file that is not a
// network namespace; its link and socket go when it stops.
func TestHeldDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create namespaces")
	}
	inner, link := heldPaths(t)
	// A holder the way systemd starts one: a mount namespace of its own, a tmpfs at inner.
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
		`mount -t tmpfs netns "$1" && exec "$2"`, "sh", inner, os.Args[0])
	holder.Env = append(os.Environ(), holdEnv+"="+inner+" "+link)
	holder.Stderr = os.Stderr
	if err := holder.Start(); err != nil {
		t.Fatalf("unshare (util-linux): %v", err)
	}
	exited := make(chan struct{})
	var holderErr error
	go func() { holderErr = holder.Wait(); close(exited) }()
	defer func() {
		holder.Process.Signal(syscall.SIGTERM)
		<-exited
	}()
	for HolderPID(link) != holder.Process.Pid {
		select {
		case <-exited:
			t.Fatalf("the holder exited: %v", holderErr)
		case <-time.After(10 * time.Millisecond):
		}
	}

	// The holder makes the mounts itself, asked on its socket: no nsenter is run (none is found).
	t.Setenv("PATH", "")
	checkHeld(t, inner, link)
	h, _ := heldDir(link)
	ns := filepath.Join(link, "asked")
	if f, err := os.Create(ns); err != nil {
		t.Fatal(err)
	} else {
		f.Close()
	}
	for _, c := range []struct{ name, source, want string }{
		{"../x", "/proc/self/ns/net", "bad name"},
		{"asked", "/etc/hostname", "not a namespace file"},
		{"asked", "/proc/self/ns/mnt", "not a network namespace"},
		{"missing", "/proc/self/ns/net", "is not a file made for the name"},
	} {
		if err := h.ask(link, "bind", c.name, c.source); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("bind %s to %s: %v, want %q", c.source, c.name, err, c.want)
		}
	}
	os.Remove(ns)

	holder.Process.Signal(syscall.SIGTERM)
	if <-exited; holderErr != nil {
		t.Fatalf("holder: %v", holderErr)
	}
	for _, p := range []string{link, socketOf(link)} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s outlived its holder: %v", p, err)
		}
	}
}

// TestHeldDirectoryWithoutSocket: a holder without a socket (one an older onionpod started)
// is reached through nsenter, the same way.
func TestHeldDirectoryWithoutSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create namespaces")
	}
	inner, link := heldPaths(t)
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
		`mount -t tmpfs netns "$1" && ln -s "/proc/$$/root$1" "$2" && exec sleep 600`, "sh", inner, link)
	holder.Stderr = os.Stderr
	if err := holder.Start(); err != nil {
		t.Fatalf("unshare (util-linux): %v", err)
	}
	defer func() {
		holder.Process.Kill()
		holder.Wait()
	}()
	for HolderPID(link) != holder.Process.Pid {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Lstat(socketOf(link)); err == nil {
		t.Fatal("the shell holder has a socket")
	}
	checkHeld(t, inner, link)
}

// heldPaths makes the directory a test holder mounts its tmpfs on (inner) and names the link to
// it, in a temporary directory.
func heldPaths(t *testing.T) (inner, link string) {
	dir := t.TempDir()
	inner, link = filepath.Join(dir, "inner"), filepath.Join(dir, "link")
	if err := os.Mkdir(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	return inner, link
}

// checkHeld: namespaces named in the held directory link (into inner) are mounted in the
// holder's mount namespace, not the caller's, and are found, entered and removed through the
// link as in a plain directory.
func checkHeld(t *testing.T, inner, link string) {
	t.Helper()
	ns := filepath.Join(link, "ns")
	if err := Create(ns, func() error { return Sysctl("net/ipv6/conf/default/accept_dad", "0") }); err != nil {
		t.Fatal(err)
	}
	if !Exists(ns) {
		t.Fatal("the held namespace is not found through the link")
	}
	mine, _ := os.ReadFile("/proc/self/mountinfo")
	held, _ := os.ReadFile(MountTable(link))
	if bytes.Contains(mine, []byte(inner)) || !bytes.Contains(held, []byte(filepath.Join(inner, "ns"))) {
		t.Fatalf("the mount is in the caller's table (%v) or not in the holder's (%v)",
			bytes.Contains(mine, []byte(inner)), bytes.Contains(held, []byte(filepath.Join(inner, "ns"))))
	}
	var got string
	if err := Do(ns, func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/default/accept_dad")
		got = strings.TrimSpace(string(b))
		return err
	}); err != nil || got != "0" {
		t.Fatalf("inside the held namespace: accept_dad %q, %v", got, err)
	}
	// Pin names the same namespace again.
	again := filepath.Join(link, "again")
	if err := Pin(again, ns); err != nil {
		t.Fatal(err)
	}
	var a, b unix.Stat_t
	if unix.Stat(ns, &a) != nil || unix.Stat(again, &b) != nil || a.Ino != b.Ino {
		t.Fatal("Pin named another namespace")
	}
	if err := Create(ns, nil); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Create over a held name = %v, want ErrExist", err)
	}
	for _, p := range []string{ns, again} {
		if err := Remove(p); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(p); Exists(p) || !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s left after Remove: %v", p, err)
		}
	}
	if held, _ := os.ReadFile(MountTable(link)); bytes.Contains(held, []byte(filepath.Join(inner, "ns"))) {
		t.Fatal("still mounted in the holder after Remove")
	}
	if err := Remove(ns); err != nil {
		t.Fatalf("second Remove = %v", err)
	}

	// A holder in the mount namespace of the units' PID 1 is refused (here: of this process).
	if err := notInMountNamespaceOf("/proc/self"); err == nil || !strings.Contains(err.Error(), "runs in the mount namespace of /proc/self") {
		t.Fatalf("holding in the caller's own mount namespace = %v", err)
	}
}
