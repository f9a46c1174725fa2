package network

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

func testManager(t *testing.T) *Manager {
	return &Manager{
		cfg:    Config{ULAPrefix: netip.MustParsePrefix("fd11:2233:4455:6677::/64")},
		held:   map[string]*lease{},
		leases: leaseStore{dir: t.TempDir()},
	}
}

func TestHoldRefusesMACCollision(t *testing.T) {
	m := testManager(t)
	m.held["other"] = &lease{App: "other", MAC: PredictMAC("blog").String(), ULA: ulaFor(m.cfg.ULAPrefix, "other", 0)}
	_, err := m.hold(&lease{Version: leaseVersion, App: "blog", MAC: PredictMAC("blog").String()})
	if !errors.Is(err, ErrMACCollision) {
		t.Fatalf("hold = %v, want ErrMACCollision", err)
	}
	if _, held := m.held["blog"]; held {
		t.Fatal("a refused lease was held")
	}
}

func TestHoldNeverReusesAHeldULA(t *testing.T) {
	m := testManager(t)
	first := ulaFor(m.cfg.ULAPrefix, "blog", 0)
	m.held["squatter"] = &lease{App: "squatter", MAC: PredictMAC("squatter").String(), ULA: first}
	l := &lease{Version: leaseVersion, App: "blog", MAC: PredictMAC("blog").String(), Netns: "/run/netns/onionpod-blog"}
	saved, err := m.hold(l)
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
	loaded, err := m.leases.loadAll()
	if err != nil || loaded["blog"] == nil || loaded["blog"].ULA != l.ULA || loaded["blog"].MAC != l.MAC {
		t.Fatalf("loadAll = %+v, %v", loaded, err)
	}
}
