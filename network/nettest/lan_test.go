package nettest_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/netnsfile"
	"github.com/onionpod/onionpod/network/nettest"
)

func TestClientGetsSLAACAddress(t *testing.T) {
	t.Parallel()
	start := time.Now()
	lan := nettest.New(t, nettest.Options{})
	t.Logf("LAN up in %v", time.Since(start))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	addr, err := lan.ClientAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("client %s after %v", addr, time.Since(start))
	if !lan.Prefix().Contains(addr) {
		t.Fatalf("client address %s not in %s", addr, lan.Prefix())
	}
}

func TestClientReachesRouterAndBox(t *testing.T) {
	t.Parallel()
	lan := nettest.New(t, nettest.Options{Prefix: netip.MustParsePrefix("2001:db8:77::/64")})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := lan.ClientAddr(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := lan.ClientExec(ctx, "busybox", "ping", "-6", "-c1", "-W2", lan.RouterAddr().String()); err != nil {
		t.Fatalf("client cannot ping the router: %v", err)
	}
	// The box configures its uplink by SLAAC too, and gets a default route through it.
	out, err := nettest.Exec(ctx, lan.BoxNetns(), "ip", "-6", "route", "show", "default")
	if err != nil || !strings.Contains(string(out), "dev "+lan.Uplink()) {
		t.Fatalf("box has no default route via %s: %v\n%s", lan.Uplink(), err, out)
	}
}

func TestPrefixChange(t *testing.T) {
	t.Parallel()
	lan := nettest.New(t, nettest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	old, err := lan.ClientAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	next := netip.MustParsePrefix("2001:db8:2::/64")
	if err := lan.ChangePrefix(ctx, next); err != nil {
		t.Fatal(err)
	}
	addr, err := lan.ClientAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("client moved %s -> %s in %v", old, addr, time.Since(start))
	if !next.Contains(addr) {
		t.Fatalf("client address %s not in the new prefix %s", addr, next)
	}
	out, _ := lan.ClientExec(ctx, "ip", "-6", "addr", "show", "dev", "eth0")
	if !strings.Contains(string(out), old.String()) || !strings.Contains(string(out), "deprecated") {
		t.Errorf("old address %s should stay, deprecated:\n%s", old, out)
	}
}

func TestDHCPv4(t *testing.T) {
	t.Parallel()
	lan := nettest.New(t, nettest.Options{IPv4: true})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := lan.ClientExec(ctx, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", "/bin/true")
	if err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, out)
	}
	leases, err := lan.DHCPLeases()
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 1 {
		t.Fatalf("dnsmasq leases = %v, want one\nudhcpc: %s", leases, out)
	}
	t.Logf("lease %v", leases[0])
}

// A LAN can use an existing namespace as its box (the lab's systemd): it adds the uplink there and
// takes it away again on Close, leaving the namespace itself alone.
func TestExistingBox(t *testing.T) {
	t.Parallel()
	if why := nettest.Missing(false); why != "" {
		t.Skip(why)
	}
	box := filepath.Join(t.TempDir(), "box")
	if err := netnsfile.Create(box, nil); err != nil {
		t.Fatal(err)
	}
	defer netnsfile.Remove(box)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	lan, err := nettest.Start(ctx, nettest.Options{BoxNetns: box, Uplink: "uplink0"})
	if err != nil {
		t.Fatal(err)
	}
	if lan.BoxNetns() != box || lan.Uplink() != "uplink0" {
		t.Fatalf("box %s uplink %s", lan.BoxNetns(), lan.Uplink())
	}
	if _, err := lan.ClientAddr(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := nettest.Exec(ctx, box, "ip", "link", "show", "uplink0"); err != nil {
		t.Fatalf("no uplink in the box: %v\n%s", err, out)
	}
	if err := lan.Close(); err != nil {
		t.Fatal(err)
	}
	if !netnsfile.Exists(box) {
		t.Fatal("Close removed a box it did not create")
	}
	if out, err := nettest.Exec(ctx, box, "ip", "-o", "link", "show"); err != nil || strings.Contains(string(out), "uplink0") {
		t.Fatalf("uplink left in the box after Close: %v\n%s", err, out)
	}
	if _, err := os.Stat(lan.ClientNetns()); !os.IsNotExist(err) {
		t.Fatalf("client namespace left: %v", err)
	}
}

// Another process (here: another handle) takes the LAN over from its work dir, changes the prefix
// and closes it: the daemons stop and the namespaces go.
func TestReopen(t *testing.T) {
	t.Parallel()
	if why := nettest.Missing(true); why != "" {
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	lan, err := nettest.Start(ctx, nettest.Options{IPv4: true})
	if err != nil {
		t.Fatal(err)
	}
	defer lan.Close()
	again, err := nettest.Reopen(lan.WorkDir())
	if err != nil {
		t.Fatal(err)
	}
	if again.ClientNetns() != lan.ClientNetns() || again.BoxNetns() != lan.BoxNetns() || again.Prefix() != lan.Prefix() {
		t.Fatalf("reopened LAN differs")
	}
	next := netip.MustParsePrefix("2001:db8:99::/64")
	if err := again.ChangePrefix(ctx, next); err != nil {
		t.Fatal(err)
	}
	if addr, err := again.ClientAddr(ctx); err != nil || !next.Contains(addr) {
		t.Fatalf("client after the change: %v %v", addr, err)
	}
	pids := daemonPIDs(t, lan.WorkDir())
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(b), lan.WorkDir()) {
				t.Errorf("daemon %d still running after Close", pid)
			}
		}
	}
	if _, err := os.Stat(lan.ClientNetns()); !os.IsNotExist(err) {
		t.Errorf("client namespace left: %v", err)
	}
}

// daemonPIDs lists the processes whose command line names dir.
func daemonPIDs(t *testing.T, dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); strings.Contains(string(b), dir) {
			pids = append(pids, pid)
		}
	}
	if len(pids) < 2 {
		t.Fatalf("expected radvd and dnsmasq processes naming %s, found %v", dir, pids)
	}
	return pids
}
