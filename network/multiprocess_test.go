package network_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/onionpod/onionpod/network"
	"github.com/onionpod/onionpod/network/nettest"
)

// These tests run a second process on the Manager's state dir (the test binary re-executed, see
// otherprocess_test.go), as `onionpod internal net-up/net-down` run next to the daemon.

// A pod another process attached is attached for this Manager too, although this Manager was
// created before: Attached and Addresses report it, Check passes, and Attach returns it without
// redoing anything (same namespace, same links, no second CNI ADD). When the other process
// detaches it, it is gone here as well, and Detach is "already gone".
func TestOtherProcessAttachAndDetachAreSeen(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nettest.Options{})
	e.waitForBox(t)
	other := startOtherProcess(t, e.cfg)
	ctx := context.Background()

	for _, a := range []network.Attachment{{App: "web"}, {App: "hidden", OnionOnly: true}} {
		theirs := other.attach(t, a.App, a.OnionOnly)
		if apps, err := e.m.Attached(ctx); err != nil || !slices.Contains(apps, a.App) {
			t.Fatalf("Attached = %v, %v; want it to include %s", apps, err, a.App)
		}
		seen, err := e.m.Addresses(context.Background(), a.App)
		if err != nil || !sameAttachment(seen, theirs) {
			t.Fatalf("Addresses(%s) = %+v, %v; want %+v", a.App, seen, err, theirs)
		}
		serveHTTP(t, theirs.Netns, a.App)
		before := snapshot(t, e, theirs.Netns)
		mine := e.attach(t, a)
		if !sameAttachment(mine, theirs) {
			t.Fatalf("Attach of %s attached by the other process = %+v, want %+v", a.App, mine, theirs)
		}
		if after := snapshot(t, e, theirs.Netns); after != before {
			t.Fatalf("Attach of %s redid the other process's work:\nbefore %s\nafter  %s", a.App, before, after)
		}
		if err := e.m.Check(ctx, a.App); err != nil {
			t.Fatal(err)
		}
		fetchEventually(t, e.lan.BoxNetns(), httpURL(theirs.ULA), a.App) // the same server: the same namespace
	}

	for _, app := range []string{"web", "hidden"} {
		other.detach(t, app)
		assertGone(t, e, app)
	}

	// `onionpod rm`: this Manager attached the pod, the other process (net-down) detaches it; this
	// Manager sees it gone and may attach it again at once.
	mine := e.attach(t, network.Attachment{App: "blog"})
	other.detach(t, "blog")
	assertGone(t, e, "blog")
	again := e.attach(t, network.Attachment{App: "blog"})
	if again.ULA != mine.ULA || again.MAC.String() != mine.MAC.String() {
		t.Fatalf("re-attach moved the pod: %+v -> %+v", mine, again)
	}
	serveHTTP(t, again.Netns, "blog again")
	fetchEventually(t, e.lan.BoxNetns(), httpURL(again.ULA), "blog again")
}

// Two processes attach and detach the same apps and apps of their own, all at once: no operation
// fails, every lease left is a working pod with a ULA of its own, and (after newEnv's cleanup
// detached everything) nothing is leaked.
func TestTwoProcessesChurn(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nettest.Options{})
	e.waitForBox(t)
	other := startOtherProcess(t, e.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	shared := []string{"s1", "s2", "s3", "o4", "o5"} // "o": onion-only
	mine := append([]string{"a1", "oa2"}, shared...)
	theirs := append([]string{"b1", "ob2"}, shared...)
	const rounds = 8
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	start := time.Now()
	otherErr := make(chan error, 1)
	go func() {
		_, err := other.do(fmt.Sprintf("churn %d %d %s", seed, rounds, strings.Join(theirs, " ")))
		otherErr <- err
	}()
	if err := churn(ctx, e.m, seed+1, rounds, mine); err != nil {
		t.Error(err)
	}
	if err := <-otherErr; err != nil {
		t.Error(err)
	}
	t.Logf("%d attach/detach calls in two processes took %v", rounds*(len(mine)+len(theirs)), time.Since(start))
	if t.Failed() {
		return
	}
	other.close(t) // its background teardown (links, shim) is done

	leases := storedLeases(t, e.cfg.StateDir)
	byULA := map[string]string{}
	lan, onion := 0, 0
	for app, ula := range leases {
		if prev, taken := byULA[ula]; taken {
			t.Errorf("ULA %s leased to %s and %s", ula, prev, app)
		}
		byULA[ula] = app
		if strings.HasPrefix(app, "o") {
			onion++
		} else {
			lan++
		}
	}
	apps, err := e.m.Attached(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := sortedKeys(leases); !slices.Equal(apps, want) {
		t.Errorf("Attached = %v; the leases are %v (a namespace without a lease, or the reverse)", apps, want)
	}
	t.Logf("left attached: %v (%d LAN, %d onion-only)", apps, lan, onion)
	for app, ula := range leases {
		if err := e.m.Check(ctx, app); err != nil {
			t.Errorf("left in a broken state: %v", err)
			continue
		}
		res, err := e.m.Addresses(context.Background(), app)
		if err != nil || res.ULA.String() != ula {
			t.Fatalf("Addresses(%s) = %+v, %v; lease says %s", app, res, err, ula)
		}
		serveHTTP(t, res.Netns, app)
		fetchEventually(t, e.lan.BoxNetns(), httpURL(res.ULA), app)
	}
	// The box's links are what the leases say: the shim while a LAN pod is leased, a veth per
	// onion-only pod (this process's own background teardown may still be deleting some).
	deadline := time.Now().Add(5 * time.Second)
	for {
		links := boxLinks(t, e)
		shim, veths := slices.Contains(links, "onionpod0"), 0
		for _, l := range links {
			if strings.HasPrefix(l, "opv") {
				veths++
			}
		}
		if shim == (lan > 0) && veths == onion {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("box links %v; want the shim %v and %d veths", links, lan > 0, onion)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A Watch reports the LAN address of a pod another process attached, before the Watch started or
// after, and follows it into the new namespace when the other process attaches it again.
func TestWatchFollowsOtherProcess(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nettest.Options{})
	e.waitForBox(t)
	other := startOtherProcess(t, e.cfg)
	other.attach(t, "early", false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	changes := e.m.Watch(ctx)
	slaac := func(app string) netip.Addr { return network.SLAACAddress(e.lan.Prefix(), network.PredictMAC(app)) }
	next(t, changes, func(c network.AddressChange) bool { return c.App == "early" && c.LAN == slaac("early") })

	start := time.Now()
	other.attach(t, "blog", false)
	next(t, changes, func(c network.AddressChange) bool { return c.App == "blog" && c.LAN == slaac("blog") })
	t.Logf("address of a pod attached by the other process reported %v after its attach", time.Since(start))

	other.detach(t, "blog")
	other.attach(t, "blog", false) // a new namespace at the same path
	next(t, changes, func(c network.AddressChange) bool { return c.App == "blog" && c.LAN == slaac("blog") })

	cancel()
	for range changes {
	}
}

// The shim stays while another process has a LAN pod: a Manager that knew nothing of that pod when
// it was created detaches its own last LAN pod and waits for its background teardown; the other
// pod is still reachable from the box. When the other process detaches its pod, the shim goes.
func TestShimStaysWhileAnotherProcessHasALANPod(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nettest.Options{})
	e.waitForBox(t)
	other := startOtherProcess(t, e.cfg)
	ctx := context.Background()
	early, err := network.New(e.cfg) // like the daemon: up before the other process's attach
	if err != nil {
		t.Fatal(err)
	}
	theirs := other.attach(t, "theirs", false)
	serveHTTP(t, theirs.Netns, "theirs")
	if _, err := early.Attach(ctx, network.Attachment{App: "mine"}); err != nil {
		t.Fatal(err)
	}
	if err := early.Detach(ctx, "mine"); err != nil {
		t.Fatal(err)
	}
	if err := early.Close(); err != nil { // waits for the shim decision
		t.Fatal(err)
	}
	if !slices.Contains(boxLinks(t, e), "onionpod0") {
		t.Fatal("the shim was removed while the other process's LAN pod is attached")
	}
	fetchEventually(t, e.lan.BoxNetns(), httpURL(theirs.ULA), "theirs")

	other.detach(t, "theirs")
	other.close(t)
	if slices.Contains(boxLinks(t, e), "onionpod0") {
		t.Fatal("the shim outlived the last LAN pod")
	}
}

func sameAttachment(a, b network.Result) bool {
	return a.Netns == b.Netns && a.ULA == b.ULA && a.MAC.String() == b.MAC.String()
}

// assertGone checks that this Manager sees app detached, and that detaching it is a success.
func assertGone(t *testing.T, e *testEnv, app string) {
	t.Helper()
	ctx := context.Background()
	if apps, err := e.m.Attached(ctx); err != nil || slices.Contains(apps, app) {
		t.Fatalf("Attached = %v, %v after the other process detached %s", apps, err, app)
	}
	if _, err := e.m.Addresses(context.Background(), app); !errors.Is(err, network.ErrNotFound) {
		t.Fatalf("Addresses(%s) = %v, want ErrNotFound", app, err)
	}
	if err := e.m.Check(ctx, app); !errors.Is(err, network.ErrNotFound) {
		t.Fatalf("Check(%s) = %v, want ErrNotFound", app, err)
	}
	if err := e.m.Detach(ctx, app); err != nil {
		t.Fatalf("Detach of %s, detached by the other process: %v", app, err)
	}
}

// snapshot describes what an attach created, so that a second attach that redid anything shows:
// the pod's namespace (inode), its links, the box's links (shim, veths) and the CNI cache.
func snapshot(t *testing.T, e *testEnv, netns string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(netns, &st); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "netns inode %d; pod links", st.Ino)
	for _, ns := range []string{netns, e.lan.BoxNetns()} {
		out, err := nettest.Exec(context.Background(), ns, "ip", "-o", "link", "show")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			if len(f) > 1 {
				fmt.Fprintf(&b, " %s%s", f[0], f[1]) // "7:eth0@if3:"
			}
		}
		b.WriteString("; box links")
	}
	cache, _ := os.ReadDir(filepath.Join(e.cfg.StateDir, "cni-cache", "results"))
	b.WriteString("; CNI cache")
	for _, c := range cache {
		info, err := c.Info()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, " %s@%d/%d", c.Name(), info.Sys().(*syscall.Stat_t).Ino, info.ModTime().UnixNano())
	}
	return b.String()
}

// boxLinks lists the names of the links in the box.
func boxLinks(t *testing.T, e *testEnv) []string {
	t.Helper()
	out, err := nettest.Exec(context.Background(), e.lan.BoxNetns(), "ip", "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			names = append(names, name)
		}
	}
	return names
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
