package network

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
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

// storeLease writes a lease file as another process would.
func storeLease(t *testing.T, m *Manager, l *lease) {
	t.Helper()
	l.Version = leaseVersion
	if err := m.leases.save(l); err != nil {
		t.Fatal(err)
	}
}

// A lease another process stored counts: its MAC is refused to a colliding app.
func TestHoldRefusesMACCollision(t *testing.T) {
	m := testManager(t)
	storeLease(t, m, &lease{App: "other", MAC: PredictMAC("blog").String(), ULA: ulaFor(m.cfg.ULAPrefix, "other", 0)})
	_, err := m.hold(context.Background(), &lease{Version: leaseVersion, App: "blog", MAC: PredictMAC("blog").String()})
	if !errors.Is(err, ErrMACCollision) {
		t.Fatalf("hold = %v, want ErrMACCollision", err)
	}
	if l, _ := m.leases.load("blog"); l != nil {
		t.Fatal("a refused lease was stored")
	}
}

// A ULA in a lease another process stored (after this Manager last read the leases) is not given
// again.
func TestHoldNeverReusesAHeldULA(t *testing.T) {
	m := testManager(t)
	if _, err := m.leases.loadAll(&m.cache); err != nil { // the cache is warm and empty
		t.Fatal(err)
	}
	first := ulaFor(m.cfg.ULAPrefix, "blog", 0)
	storeLease(t, m, &lease{App: "squatter", MAC: PredictMAC("squatter").String(), ULA: first})
	l := &lease{Version: leaseVersion, App: "blog", MAC: PredictMAC("blog").String(), Netns: "/run/netns/onionpod-blog"}
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
	if err != nil || loaded["blog"] == nil || loaded["blog"].ULA != l.ULA || loaded["blog"].MAC != l.MAC {
		t.Fatalf("loadAll = %+v, %v", loaded, err)
	}
}

// The lease cache never serves a lease that changed or went away on disk.
func TestLeaseCacheFollowsTheDisk(t *testing.T) {
	m := testManager(t)
	prefix := m.cfg.ULAPrefix
	storeLease(t, m, &lease{App: "a", MAC: PredictMAC("a").String(), ULA: ulaFor(prefix, "a", 0)})
	storeLease(t, m, &lease{App: "b", MAC: PredictMAC("b").String(), ULA: ulaFor(prefix, "b", 0)})
	if all, err := m.leases.loadAll(&m.cache); err != nil || len(all) != 2 {
		t.Fatalf("loadAll = %v, %v", all, err)
	}
	storeLease(t, m, &lease{App: "a", MAC: PredictMAC("a").String(), ULA: ulaFor(prefix, "a", 1)}) // same size
	if err := m.leases.remove("b"); err != nil {
		t.Fatal(err)
	}
	all, err := m.leases.loadAll(&m.cache)
	if err != nil || len(all) != 1 || all["a"].ULA != ulaFor(prefix, "a", 1) {
		t.Fatalf("loadAll after changes = %v, %v; want only a with its new ULA", all, err)
	}
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
