package network

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/onionpod/onionpod/internal/dirwatch"
)

func testManager(t *testing.T) *Manager {
	dir := t.TempDir()
	return &Manager{
		cfg:       Config{ULAPrefix: netip.MustParsePrefix("fd11:2233:4455:6677::/64")},
		leases:    leaseStore{dir: dir},
		lockFile:  lockFile{path: filepath.Join(dir, "lock")},
		stateTurn: make(chan struct{}, 1),
	}
}

// storeLease writes a lease file as another process would: an onion-only pod's of app on ula.
func storeLease(t *testing.T, m *Manager, app string, ula netip.Addr) {
	t.Helper()
	if err := m.leases.save(onionLease(app, ula)); err != nil {
		t.Fatal(err)
	}
}

func onionLease(app string, ula netip.Addr) *lease {
	return &lease{Version: leaseVersion, App: app, MAC: PredictMAC(app).String(), ULA: ula,
		OnionOnly: true, Netns: "/run/netns/onionpod-" + app}
}

// Two names that derive the same MAC (found by a cycle search over PredictMAC).
const collidingA, collidingB = "m6efa2032f536", "m569c4a153457"

// A lease another process stored counts: its MAC is refused to a colliding app, also when its
// file is damaged (the MAC comes from the name).
func TestHoldRefusesMACCollision(t *testing.T) {
	if PredictMAC(collidingA).String() != PredictMAC(collidingB).String() {
		t.Fatal("the colliding names do not collide")
	}
	for _, damage := range []bool{false, true} {
		m := testManager(t)
		storeLease(t, m, collidingA, ulaFor(m.cfg.ULAPrefix, collidingA, 0))
		if damage {
			if err := os.WriteFile(m.leases.path(collidingA), []byte("{"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, err := m.hold(context.Background(), onionLease(collidingB, netip.Addr{}))
		if !errors.Is(err, ErrMACCollision) {
			t.Fatalf("hold (damaged %t) = %v, want ErrMACCollision", damage, err)
		}
		if l, _ := m.leases.load(collidingB); l != nil {
			t.Fatal("a refused lease was stored")
		}
	}
}

// withAndWithoutWatch runs test on a Manager without a watch and on one that follows its files
// (FollowFiles, as the daemon's does).
func withAndWithoutWatch(t *testing.T, test func(t *testing.T, m *Manager)) {
	t.Run("no watch", func(t *testing.T) { test(t, testManager(t)) })
	t.Run("watch", func(t *testing.T) {
		w, err := dirwatch.New()
		if err != nil {
			t.Skipf("no inotify here: %v", err)
		}
		t.Cleanup(func() { w.Close() })
		m := testManager(t)
		m.FollowFiles(w)
		test(t, m)
	})
}

// A ULA in a lease another process stored (after this Manager last read the leases) is not given
// again.
func TestHoldNeverReusesAHeldULA(t *testing.T) { withAndWithoutWatch(t, holdNeverReusesAHeldULA) }

func holdNeverReusesAHeldULA(t *testing.T, m *Manager) {
	if _, err := m.leases.loadAll(&m.cache); err != nil { // the cache is warm and empty
		t.Fatal(err)
	}
	first := ulaFor(m.cfg.ULAPrefix, "blog", 0)
	storeLease(t, m, "squatter", first)
	l := onionLease("blog", netip.Addr{})
	saved, err := m.hold(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	if err := saved(); err != nil {
		t.Fatal(err)
	}
	if l.ULA == first || l.ULA != ulaFor(m.cfg.ULAPrefix, "blog", 1) {
		t.Fatalf("ULA %s; want the next candidate, not the held %s", l.ULA, first)
	}
	// The lease is on disk, 0600, and loads back.
	info, err := os.Stat(filepath.Join(m.leases.dir, "blog.json"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("lease file: %v %v", info, err)
	}
	loaded, err := m.leases.loadAll(&m.cache)
	if err != nil || loaded.leases["blog"] == nil || loaded.leases["blog"].ULA != l.ULA || loaded.leases["blog"].MAC != l.MAC {
		t.Fatalf("loadAll = %+v, %v", loaded, err)
	}
}

// The lease cache never serves a lease that changed, went away or came on disk, nor a damaged
// file mended.
func TestLeaseCacheFollowsTheDisk(t *testing.T) { withAndWithoutWatch(t, leaseCacheFollowsTheDisk) }

func leaseCacheFollowsTheDisk(t *testing.T, m *Manager) {
	prefix := m.cfg.ULAPrefix
	loadAll := func(step string, want map[string]netip.Addr, bad ...string) {
		t.Helper()
		for range 2 { // the second from the cache, if any
			all, err := m.leases.loadAll(&m.cache)
			if err != nil {
				t.Fatalf("%s: loadAll: %v", step, err)
			}
			got := map[string]netip.Addr{}
			for app, l := range all.leases {
				got[app] = l.ULA
			}
			if !maps.Equal(got, want) || len(all.bad) != len(bad) {
				t.Fatalf("%s: loadAll = %v (bad %v), want %v (bad %v)", step, got, all.bad, want, bad)
			}
		}
	}
	storeLease(t, m, "a", ulaFor(prefix, "a", 0))
	storeLease(t, m, "b", ulaFor(prefix, "b", 0))
	loadAll("two leases", map[string]netip.Addr{"a": ulaFor(prefix, "a", 0), "b": ulaFor(prefix, "b", 0)})
	storeLease(t, m, "a", ulaFor(prefix, "a", 1)) // same size
	if err := m.leases.remove("b"); err != nil {
		t.Fatal(err)
	}
	loadAll("a changed, b removed", map[string]netip.Addr{"a": ulaFor(prefix, "a", 1)})
	storeLease(t, m, "c", ulaFor(prefix, "c", 0))
	loadAll("c came", map[string]netip.Addr{"a": ulaFor(prefix, "a", 1), "c": ulaFor(prefix, "c", 0)})
	if err := os.WriteFile(filepath.Join(m.leases.dir, "d.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	loadAll("d damaged", map[string]netip.Addr{"a": ulaFor(prefix, "a", 1), "c": ulaFor(prefix, "c", 0)}, "d")
	storeLease(t, m, "d", ulaFor(prefix, "d", 0))
	loadAll("d mended", map[string]netip.Addr{"a": ulaFor(prefix, "a", 1), "c": ulaFor(prefix, "c", 0), "d": ulaFor(prefix, "d", 0)})
}

// The lock file's bytes exclude each other across open file descriptions (so across goroutines as
// across processes), different bytes do not, and a wait ends with its context.
func TestLockFile(t *testing.T) {
	f := lockFile{path: filepath.Join(t.TempDir(), "lock")}
	ctx := context.Background()
	unlock, err := f.lock(ctx, appLockOffset("blog"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := f.lock(ctx, appLockOffset("wiki"))
	if err != nil {
		t.Fatal(err)
	}
	other()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := f.lock(short, appLockOffset("blog")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock of a held byte = %v, want a timeout", err)
	}
	got := make(chan time.Time, 1)
	go func() {
		un, err := f.lock(ctx, appLockOffset("blog"))
		if err != nil {
			t.Error(err)
		}
		got <- time.Now()
		un()
	}()
	time.Sleep(50 * time.Millisecond)
	released := time.Now()
	unlock()
	select {
	case at := <-got:
		if at.Before(released) {
			t.Fatal("the waiter got the lock before it was released")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter never got the lock")
	}
}

// Every way a lease file can be cut short, and every byte of it changed, is either found damaged
// (ErrDamagedLease) or reads back as the very same lease (whitespace, the case of a key): never as
// another lease. For a LAN pod's lease (with its conflist) and an onion-only pod's.
func TestEveryDamageIsFound(t *testing.T) {
	m := testManager(t)
	lan := &lease{Version: leaseVersion, App: "web", MAC: PredictMAC("web").String(),
		ULA: ulaFor(m.cfg.ULAPrefix, "web", 0), IPv4: true, Uplink: "lan0", Netns: "/run/netns/onionpod-web",
		Conflist: Conflist("lan0", PredictMAC("web"), "/run/onionpod/dhcp.sock")}
	for _, l := range []*lease{lan, onionLease("hidden", ulaFor(m.cfg.ULAPrefix, "hidden", 0))} {
		if err := m.leases.save(l); err != nil {
			t.Fatal(err)
		}
		good, err := os.ReadFile(m.leases.path(l.App))
		if err != nil {
			t.Fatal(err)
		}
		want, err := parseLease(l.App, good)
		if err != nil {
			t.Fatal(err)
		}
		found, same := 0, 0
		check := func(what string, b []byte) {
			got, err := parseLease(l.App, b)
			switch {
			case err == nil && got.checksum() == want.checksum():
				same++
			case err == nil:
				t.Errorf("%s of %s's lease reads as another lease: %+v", what, l.App, got)
			case !errors.Is(err, ErrDamagedLease):
				t.Errorf("%s of %s's lease: %v, want ErrDamagedLease", what, l.App, err)
			default:
				found++
			}
		}
		for n := range len(good) {
			check(fmt.Sprintf("cut to %d bytes", n), good[:n])
		}
		for i := range good {
			for _, x := range []byte{0x01, 0x02, 0x20, 0x80} {
				b := bytes.Clone(good)
				b[i] ^= x
				check(fmt.Sprintf("byte %d ^ %#x", i, x), b)
			}
		}
		t.Logf("%s: %d damaged versions found, %d harmless", l.App, found, same)
	}
}

// A lease written before leases had a checksum is still read, and still checked field by field.
func TestLeaseWithoutChecksum(t *testing.T) {
	l := onionLease("hidden", ulaFor(netip.MustParsePrefix("fd11:2233:4455:6677::/64"), "hidden", 0))
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseLease("hidden", b); err != nil {
		t.Fatalf("a lease without a checksum: %v", err)
	}
	for name, edit := range map[string]func(*lease){
		"another app's MAC":      func(l *lease) { l.MAC = PredictMAC("web").String() },
		"a ULA not unique local": func(l *lease) { l.ULA = netip.MustParseAddr("2001:db8::5") },
		"another app's netns":    func(l *lease) { l.Netns = "/run/netns/onionpod-web" },
		"a LAN link":             func(l *lease) { l.Uplink = "lan0" },
	} {
		c := *l
		edit(&c)
		b, _ := json.Marshal(&c)
		if _, err := parseLease("hidden", b); !errors.Is(err, ErrDamagedLease) {
			t.Errorf("%s: %v, want ErrDamagedLease", name, err)
		}
	}
}

// stored copies every field a lease file holds (all exported ones but Sum): a field added to the
// lease and forgotten there would be dropped by save and left out of the checksum.
func TestStoredKeepsEveryField(t *testing.T) {
	l := &lease{Version: 1, App: "a", MAC: "m", ULA: netip.MustParseAddr("fd00::2"), OnionOnly: true, IPv4: true,
		Uplink: "u", Netns: "/n", Conflist: json.RawMessage(`{}`), Sum: "s"}
	v := reflect.ValueOf(*l)
	for i := range v.NumField() {
		if f := v.Type().Field(i); f.IsExported() && f.Name != "Sum" && v.Field(i).IsZero() {
			t.Fatalf("the test does not set %s", f.Name)
		}
	}
	got := l.stored()
	g := reflect.ValueOf(got)
	for i := range g.NumField() {
		f := g.Type().Field(i)
		if f.IsExported() && f.Name != "Sum" && !reflect.DeepEqual(g.Field(i).Interface(), v.Field(i).Interface()) {
			t.Errorf("stored drops %s", f.Name)
		}
	}
	if got.Sum != "" {
		t.Error("stored keeps Sum")
	}
}
